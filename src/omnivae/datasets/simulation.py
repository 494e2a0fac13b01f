"""The generative multi-omics simulator behind :func:`omnivae.datasets.simulate`: mosaic counts
of any modality kinds from one shared latent, with batches, cell types and ground truth.

Mosaic convention: a cell that lacks a modality is absent from that modality's AnnData
(MuData membership); it is never represented by an all-zero row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, overload

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp

from omnivae.data.files import mudata_defaults

__all__ = ["simulate"]

# kind -> (default n_features, var-name prefix, min digits, 10x feature_types)
_KINDS = {"rna": (1000, "gene", 4, "Gene Expression"), "atac": (2000, "peak", 4, "Peaks"),
          "adt": (30, "protein", 2, "Antibody Capture"), "other": (200, "feature", 4, "Custom")}
_ALIASES = {"rna": "rna", "gex": "rna", "atac": "atac", "peaks": "atac", "adt": "adt", "protein": "adt"}
# kind -> (sd base log-abundance, log mean library, sd log library, marker fraction, marker lfc,
#          map scale, activity offset, activity slope, NB inverse dispersion (0: Poisson));
# adt: base is the log background, lfc/offset act on the logit of the foreground probability
_PARAMS: dict[str, tuple[float, ...]] = {
    "rna": (1.0, np.log(3000.0), 0.35, 0.02, 1.0, 1.0, -1.8, 8.0, 2.0),
    "atac": (0.5, np.log(110.0), 0.45, 0.05, 2.0, 1.0, -1.0, 4.0, 0.0),
    "other": (1.0, np.log(1000.0), 0.35, 0.05, 2.0, 1.0, -1.0, 4.0, 2.0),
    "adt": (0.6, np.log(25.0), 0.3, 0.25, 3.0, 2.0, -1.5, 1.0, 10.0),
}
_LATENT_DIM, _CHUNK = 10, 8192
_CENTRE_SCALE, _WITHIN_SD, _BATCH_LATENT = 1.2, 1.0, 1.0


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _nb(rng: np.random.Generator, mu: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Negative-binomial draws (mean ``mu``, inverse dispersion ``theta``) as a gamma-Poisson."""
    return rng.poisson(rng.gamma(theta, mu / theta))


class _Map:
    """Random 2-layer softplus map latent -> per-feature scores (standardised on ``z_ref``,
    times ``scale``) plus a type-specific marker boost on a random subset of features."""

    def __init__(self, rng: np.random.Generator, z_ref: np.ndarray, n_out: int, n_types: int,
                 scale: float, marker_frac: float, marker_lfc: float, hidden: int = 32) -> None:
        self.w1 = rng.normal(0.0, 1.0 / np.sqrt(_LATENT_DIM), (_LATENT_DIM, hidden))
        self.b1 = rng.normal(0.0, 0.5, hidden)
        self.w2 = rng.normal(0.0, 1.0 / np.sqrt(hidden), (hidden, n_out))
        ref = _softplus(z_ref @ self.w1 + self.b1) @ self.w2
        self.mu, self.sd = ref.mean(axis=0), ref.std(axis=0) / scale + 1e-8
        n_mark = max(1, round(marker_frac * n_out))
        self.markers = np.zeros((n_types, n_out))
        for t in range(n_types):
            idx = rng.choice(n_out, n_mark, replace=False)
            self.markers[t, idx] = rng.normal(marker_lfc, 0.3 * marker_lfc, n_mark)

    def __call__(self, z: np.ndarray, types: np.ndarray) -> np.ndarray:
        return (_softplus(z @ self.w1 + self.b1) @ self.w2 - self.mu) / self.sd + self.markers[types]


def _simulate_modality(rng: np.random.Generator, kind: str, n_feat: int, z: np.ndarray,
                       z_ref: np.ndarray, types: np.ndarray, batches: np.ndarray, n_types: int,
                       n_batches: int, batch_effect: float) -> sp.csr_matrix:
    """Draw one modality's counts for all cells (chunked over cells to bound memory)."""
    n = z.shape[0]
    base_sd, lib_mu, lib_sd, frac, lfc, scale, offset, slope, th = _PARAMS[kind]
    # per-batch log-shifts with sd ``batch_effect`` per feature: mostly low-rank (a coherent
    # shift, as in real batches) plus an independent per-feature part
    low_rank = rng.normal(0.0, 1.0, (n_batches, 2)) @ rng.normal(0.0, np.sqrt(0.5), (2, n_feat))
    noise = rng.normal(0.0, 1.0, (n_batches, n_feat))
    b_feat = batch_effect * (np.sqrt(0.75) * low_rank + 0.5 * noise)
    b_lib = rng.normal(0.0, 0.5 * batch_effect, n_batches)
    lib = np.exp(rng.normal(lib_mu if kind != "adt" else 0.0, lib_sd, n) + b_lib[batches])
    fmap = _Map(rng, z_ref, n_feat, n_types, scale, frac, lfc)
    base = rng.normal(lib_mu if kind == "adt" else 0.0, base_sd, n_feat)
    theta = rng.lognormal(np.log(max(th, 1e-3)), 0.3, n_feat)
    fold = rng.normal(2.0, 0.5, n_feat)  # adt: log foreground/background ratio
    blocks = []
    for s in range(0, n, _CHUNK):
        sl = slice(s, min(s + _CHUNK, n))
        eta = fmap(z[sl], types[sl])
        if kind == "adt":  # background/foreground NB mixture; per-batch background levels
            mu = np.exp(base + b_feat[batches[sl]]) * lib[sl, None]
            fg = rng.random(eta.shape) < 1.0 / (1.0 + np.exp(-(eta + offset)))
            counts = _nb(rng, np.where(fg, mu * np.exp(fold), mu), np.where(fg, theta / 2, theta))
        else:
            # saturating activity: "on" features share the library, "off" ones decay smoothly
            logit = base + b_feat[batches[sl]] - _softplus(-slope * (eta + offset))
            rho = np.exp(logit - logit.max(axis=1, keepdims=True))
            mu = rho * (lib[sl, None] / rho.sum(axis=1, keepdims=True))
            counts = rng.poisson(mu) if th == 0 else _nb(rng, mu, theta)
        blocks.append(sp.csr_matrix(counts.astype(np.float32)))
    return sp.vstack(blocks, format="csr", dtype=np.float32)


@overload
def simulate(n_cells: int = ..., *, modalities: Sequence[str] = ..., n_batches: int = ...,
             n_cell_types: int = ..., n_features: Mapping[str, int] | None = ...,
             missing_fraction: float = ..., batch_effect: float = ..., seed: int = ...,
             return_truth: Literal[False] = ...) -> md.MuData: ...
@overload
def simulate(n_cells: int = ..., *, modalities: Sequence[str] = ..., n_batches: int = ...,
             n_cell_types: int = ..., n_features: Mapping[str, int] | None = ...,
             missing_fraction: float = ..., batch_effect: float = ..., seed: int = ...,
             return_truth: Literal[True]) -> tuple[md.MuData, dict[str, ad.AnnData]]: ...
def simulate(n_cells: int = 2000, *, modalities: Sequence[str] = ("rna", "atac", "adt"),
             n_batches: int = 3, n_cell_types: int = 6, n_features: Mapping[str, int] | None = None,
             missing_fraction: float = 0.2, batch_effect: float = 0.5, seed: int = 0,
             return_truth: bool = False) -> md.MuData | tuple[md.MuData, dict[str, ad.AnnData]]:
    """Simulate mosaic single-cell multi-omics counts from a shared latent.

    Each cell has a 10-d latent (cell type centre plus within-type variation) and a batch
    (balanced, random). A random 2-layer softplus map with type markers turns the latent into
    per-feature rates for each modality, whose kind follows its name: ``"rna"``/``"gex"``:
    negative-binomial gene counts (log-normal library ~3000 UMI, ~88 % zeros);
    ``"atac"``/``"peaks"``: Poisson peak counts (~95 % zeros, mostly 0/1/2);
    ``"adt"``/``"protein"``: background/foreground negative-binomial mixture with per-batch
    background; any other name: negative-binomial counts. Batches shift each feature
    multiplicatively (log-normal, sd ``batch_effect``), the library size, and slightly the
    latent programme.

    Parameters
    ----------
    n_cells
        Number of cells (``>= 1``), named ``"cell-00000"``, ...
    modalities
        Unique modality names.
    n_batches, n_cell_types
        Numbers of batches (``"batch-0"``, ...) and cell types (``"type-0"``, ...).
    n_features
        Per-modality feature counts overriding the defaults (rna 1000, atac 2000, adt 30, 200).
    missing_fraction
        Fraction of cells (in ``[0, 1)``) that each lose one random modality, becoming absent
        from its AnnData. No cell loses all modalities: with one modality nothing is removed.
    batch_effect
        Scale of the batch effects (``>= 0``; 0 disables them).
    seed
        Random seed; the output is a deterministic function of all arguments.
    return_truth
        Also return the full counts before removal as ``{mod: AnnData}`` (all cells, in
        ``mdata.obs_names`` order).

    Returns
    -------
    mudata.MuData or tuple
        Integer counts as float32 CSR in each ``X``; var ``feature_types`` as in 10x;
        categorical ``obs["batch"]``, ``obs["cell_type"]`` in ``mdata.obs`` and each modality;
        ``uns["simulation"]`` holds the settings and the removed cells per modality.
        ``(mdata, truth)`` if ``return_truth``.

    Examples
    --------
    >>> mdata, truth = simulate(300, n_features={"atac": 500}, seed=1, return_truth=True)
    >>> mdata.n_obs, list(mdata.mod), truth["atac"].shape
    (300, ['rna', 'atac', 'adt'], (300, 500))
    >>> all(mdata[m].n_obs < 300 for m in mdata.mod)
    True
    """
    mods = list(modalities)
    if isinstance(modalities, str) or not mods:
        raise ValueError("modalities must be a non-empty sequence of names, e.g. ('rna', 'adt')")
    if len(set(mods)) != len(mods):
        raise ValueError(f"modalities must be unique, got {mods}")
    if int(n_cells) < 1 or int(n_batches) < 1 or int(n_cell_types) < 1:
        raise ValueError(f"n_cells, n_batches and n_cell_types must be >= 1, got "
                         f"{n_cells}, {n_batches}, {n_cell_types}")
    if not 0.0 <= missing_fraction < 1.0:
        raise ValueError(f"missing_fraction must be in [0, 1), got {missing_fraction}")
    if batch_effect < 0:
        raise ValueError(f"batch_effect must be >= 0, got {batch_effect}")
    n_features = dict(n_features or {})
    if set(n_features) - set(mods) or any(int(v) < 1 for v in n_features.values()):
        raise ValueError(f"n_features must map simulated modalities to counts >= 1, got {n_features}")
    rng = np.random.default_rng(seed)
    n, k_types, n_b = int(n_cells), int(n_cell_types), int(n_batches)
    centres = rng.normal(0.0, _CENTRE_SCALE, (k_types, _LATENT_DIM))
    types = rng.choice(k_types, n, p=rng.dirichlet(np.full(k_types, 4.0)))
    batches = rng.permutation(np.arange(n) % n_b)
    z = centres[types] + rng.normal(0.0, _WITHIN_SD, (n, _LATENT_DIM))
    z_ref = centres[rng.integers(0, k_types, 512)] + rng.normal(0.0, _WITHIN_SD, (512, _LATENT_DIM))
    z += _BATCH_LATENT * batch_effect * rng.normal(0.0, 1.0, (n_b, _LATENT_DIM))[batches]
    names = pd.Index([f"cell-{i:05d}" for i in range(n)])
    obs = pd.DataFrame({
        "batch": pd.Categorical.from_codes(batches, [f"batch-{b}" for b in range(n_b)]),
        "cell_type": pd.Categorical.from_codes(types, [f"type-{t}" for t in range(k_types)]),
    }, index=names)
    truth: dict[str, ad.AnnData] = {}
    prefixes: set[str] = set()
    for mod in mods:
        kind = _ALIASES.get(mod.lower(), "other")
        default, prefix, digits, ftype = _KINDS[kind]
        n_feat = int(n_features.get(mod, default))
        x = _simulate_modality(rng, kind, n_feat, z, z_ref, types, batches, k_types, n_b, batch_effect)
        prefix = f"{mod}-{prefix}" if prefix in prefixes else prefix  # unique across modalities
        prefixes.add(prefix)
        width = max(digits, len(str(n_feat)))
        var = pd.DataFrame({"feature_types": pd.Categorical([ftype] * n_feat)},
                           index=[f"{prefix}-{j + 1:0{width}d}" for j in range(n_feat)])
        truth[mod] = ad.AnnData(x, obs=obs.copy(), var=var)
    keep = np.ones((n, len(mods)), dtype=bool)
    if len(mods) > 1:  # each lost cell loses exactly one modality, so keeps at least one
        lost = rng.choice(n, round(missing_fraction * n), replace=False)
        keep[lost, rng.integers(0, len(mods), lost.size)] = False
    with mudata_defaults():  # keeps obs_names in cell order
        mdata = md.MuData({m: truth[m][keep[:, i]].copy() for i, m in enumerate(mods)}, obs=obs)
    mdata.uns["simulation"] = {
        "seed": int(seed), "n_cell_types": k_types, "n_batches": n_b,
        "batch_effect": float(batch_effect), "missing_fraction": float(missing_fraction),
        "missing": {m: names[~keep[:, i]].tolist() for i, m in enumerate(mods)},
    }
    return (mdata, truth) if return_truth else mdata
