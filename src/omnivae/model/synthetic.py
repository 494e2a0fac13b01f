"""Fully synthetic multimodal cells from a density fitted to the aggregated posterior.

A VAE's prior is a poor sampler: the encoders never fill N(0, I) evenly, so decoding prior
draws produces cells unlike any real one. Instead (the "model the latent space a posteriori"
advice), after training we fit a Gaussian mixture to the *aggregated posterior*
``q(z) = 1/N Σ_i q(z | x_i)``: ``draws_per_cell`` draws of every training cell's fused
posterior, one mixture per label group (e.g. cell type) so a synthetic cell can be asked for
by type. A synthetic cell is then::

    group ~ label frequencies (or the requested cell types)
    batch ~ the group's batch frequencies (or the requested batch)
    z     ~ GaussianMixture_group
    depth_m ~ observed depths of modality m in real cells of that group and batch
    x_m   ~ p(x_m | z, batch, depth_m)      for every modality m (the decoders' likelihoods)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from sklearn.mixture import GaussianMixture

from omnivae.data.backed import BackedCellData
from omnivae.data.cells import CellData
from omnivae.data.setup import SetupInfo, obs_column
from omnivae.module.vae import MultimodalVAE

#: mixture components per label group of :meth:`omnivae.Model.sample`'s density
DEFAULT_COMPONENTS = 8


@dataclass
class LatentDensity:
    """Per-group Gaussian mixtures of the aggregated posterior, with what sampling needs.

    Attributes
    ----------
    label_key
        The label column the groups come from (``None``: one group, ``"all"``).
    mixtures
        Group -> fitted :class:`sklearn.mixture.GaussianMixture`.
    cells
        Group -> positions of the training cells of the group.
    n_components
        Mixture components per group asked for (``None`` for a density made by hand).
    """

    label_key: str | None
    mixtures: dict[str, Any]
    cells: dict[str, np.ndarray]
    n_components: int | None = None


@torch.no_grad()
def fit_latent_density(module: MultimodalVAE, data: CellData | BackedCellData,
                       labels: np.ndarray, *, label_key: str | None = None,
                       n_components: int = DEFAULT_COMPONENTS, draws_per_cell: int = 5,
                       seed: int = 0) -> LatentDensity:
    """Fit a Gaussian mixture per label group to the aggregated posterior of ``data``.

    Parameters
    ----------
    module, data
        A trained network and the cells it was trained on (``model.module``,
        ``model.cells``).
    labels
        The group of every cell (:func:`group_labels`).
    label_key
        The label column ``labels`` came from, recorded in the density.
    n_components
        Mixture components per group (fewer for small groups: at most one per 10 draws).
    draws_per_cell
        Posterior draws per cell that the mixtures are fitted to.
    seed
        Seed of the draws and of the mixture fits.

    Examples
    --------
    >>> import omnivae
    >>> sim = omnivae.datasets.simulate(120, modalities=("rna", "adt"), seed=0)
    >>> model = omnivae.Model(sim, n_latent=3)
    >>> labels = group_labels(sim, "cell_type", sim.n_obs)
    >>> density = fit_latent_density(model.module, model.cells, labels, n_components=2)
    >>> sorted(density.mixtures) == sorted(sim.obs["cell_type"].astype(str).unique())
    True
    """
    device = next(module.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    module.eval()
    draws = []
    for start in range(0, data.n_cells, 2048):
        batch = data.batch(np.arange(start, min(start + 2048, data.n_cells)))
        fused = module.posterior(batch.to(device))
        draws.append(torch.stack([fused.sample(generator) for _ in range(draws_per_cell)], 1).cpu())
    z = torch.cat(draws).numpy()  # (n, draws, d)
    mixtures, cells = {}, {}
    for group in pd.unique(labels):
        rows = np.flatnonzero(labels == group)
        points = z[rows].reshape(-1, z.shape[-1]).astype(np.float64)
        k = int(max(1, min(n_components, len(points) // 10)))
        mixtures[group] = GaussianMixture(k, covariance_type="full", reg_covar=1e-3,
                                          random_state=seed).fit(points)
        cells[group] = rows
    return LatentDensity(label_key, mixtures, cells, n_components)


def group_labels(mdata: md.MuData, label_key: str | None, n_cells: int) -> np.ndarray:
    """The label of every cell of ``mdata`` in column ``label_key`` as strings (``"nan"`` for
    missing ones); ``"all"`` for every cell when ``label_key`` is ``None``.

    Examples
    --------
    >>> import omnivae
    >>> sim = omnivae.datasets.simulate(20, modalities=("rna",), seed=0)
    >>> group_labels(sim, None, 3).tolist()
    ['all', 'all', 'all']
    """
    if label_key is None:
        return np.full(n_cells, "all", dtype=object)
    try:
        column = obs_column(mdata, label_key)
    except KeyError as error:
        raise KeyError(f"No label column {label_key!r} to sample cell types from; pass "
                       f"label_key=<column of mdata.obs> or label_key=None.") from error
    values = column.astype(str).to_numpy().astype(object)
    values[column.isna().to_numpy()] = "nan"
    return values


def sample_cells(
    module: MultimodalVAE, data: CellData | BackedCellData, setup: SetupInfo, n: int,
    density: LatentDensity, *, cell_type: str | Sequence[str] | None = None,
    batch: str | None = None, seed: int = 0,
) -> md.MuData:
    """``n`` synthetic cells with counts in every modality (see the module docstring).

    Parameters
    ----------
    module, data, setup
        A trained network, the cells it was trained on and their setup (``model.module``,
        ``model.cells``, ``model.setup``).
    n
        Number of cells.
    density
        The latent density to sample from (:func:`fit_latent_density`; anything whose
        ``mixtures`` have ``sample(k) -> (z, _)`` does, e.g. to compare with prior draws).
    cell_type
        One label or several (drawn in proportion to their frequency); default: all.
    batch
        Batch whose decoders generate the cells; default: drawn per cell from the
        group's batch frequencies.
    seed
        Seed of every draw.

    Returns
    -------
    MuData with one AnnData per modality (raw counts in ``X``, CSR), ``obs[label_key]`` (the
    density's; ``"label"`` without one) and
    ``obs["batch"]`` in every modality and in ``mdata.obs``; ``uns["omnivae_synthetic"]``
    records the settings.

    Examples
    --------
    >>> import omnivae
    >>> sim = omnivae.datasets.simulate(150, modalities=("rna", "adt"), n_batches=2, seed=0)
    >>> model = omnivae.Model(sim, batch_key="batch", n_latent=3)
    >>> density = fit_latent_density(model.module, model.cells,
    ...                              group_labels(sim, "cell_type", sim.n_obs), label_key="cell_type")
    >>> fake = sample_cells(model.module, model.cells, model.setup, 20, density,
    ...                     cell_type=sim.obs["cell_type"].iloc[0], batch="batch-0")
    >>> fake.n_obs, list(fake.mod), set(fake.obs["batch"])
    (20, ['rna', 'adt'], {'batch-0'})
    """
    check_cell_count(n)
    label_key = density.label_key
    rng = np.random.default_rng(seed)
    groups = _chosen_groups(density, cell_type)
    sizes = np.array([len(density.cells[g]) for g in groups], dtype=float)
    picked = rng.choice(len(groups), size=n, p=sizes / sizes.sum())
    categories = list(setup.batch_categories) or ["all"]
    if batch is not None and batch not in categories:
        raise KeyError(f"Unknown batch {batch!r}; the model knows {categories}.")
    z = np.zeros((n, module.config.n_latent), dtype=np.float32)
    batch_codes = np.zeros(n, dtype=np.int64)
    for g_idx in np.unique(picked):
        rows = np.flatnonzero(picked == g_idx)
        mixture = density.mixtures[groups[g_idx]]
        mixture.random_state = int(rng.integers(2**31))
        draws, _ = mixture.sample(len(rows))
        z[rows] = draws[rng.permutation(len(rows))]
        real = density.cells[groups[g_idx]]
        batch_codes[rows] = (categories.index(batch) if batch is not None
                             else data.batch_index[rng.choice(real, size=len(rows))])
    generator = torch.Generator().manual_seed(seed)
    labels = np.array(groups, dtype=object)[picked]
    counts = {}
    with torch.no_grad():
        module.eval()
        zt, bt = torch.from_numpy(z), torch.from_numpy(batch_codes)
        for m, name in enumerate(setup.modalities):
            depth = _depths(data, name, density, groups, picked, batch_codes, m, rng)
            dist = module.decoder(name)(zt, bt, torch.from_numpy(depth).unsqueeze(-1))
            counts[name] = sp.csr_matrix(dist.sample(generator).numpy())
    obs = pd.DataFrame({label_key or "label": pd.Categorical(labels),
                        "batch": pd.Categorical(np.array(categories)[batch_codes])},
                       index=pd.Index([f"synthetic_{i}" for i in range(n)]))
    mods = {name: ad.AnnData(X=counts[name], obs=obs.copy(),
                             var=pd.DataFrame(index=pd.Index(setup.var_names[name])))
            for name in setup.modalities}
    out = md.MuData(mods)
    out.obs = obs.copy()
    out.uns["omnivae_synthetic"] = {"label_key": str(label_key),
                                    "n_components": density.n_components, "seed": seed}
    return out


def check_cell_count(n: int) -> None:
    """A ValueError unless ``n`` is a positive number of cells to sample."""
    if n < 1:
        raise ValueError(f"n must be a positive number of cells, got {n}.")


def _chosen_groups(density: LatentDensity, cell_type: str | Sequence[str] | None) -> list[str]:
    if cell_type is None:
        return list(density.mixtures)
    wanted = [cell_type] if isinstance(cell_type, str) else list(cell_type)
    unknown = [t for t in wanted if t not in density.mixtures]
    if unknown:
        raise KeyError(f"Unknown cell types {unknown} in {density.label_key!r}; known: "
                       f"{sorted(density.mixtures)}.")
    return wanted


def _depths(data: CellData | BackedCellData, name: str, density: LatentDensity,
            groups: list[str], picked: np.ndarray, batch_codes: np.ndarray, m: int,
            rng: np.random.Generator) -> np.ndarray:
    """Observed depths of modality ``m`` (``name``) in real cells of the same group and
    batch."""
    has = data.mask[:, m]
    pool_all = np.flatnonzero(has)
    out = np.empty(len(picked), dtype=np.float32)
    for g_idx, b in {(int(g), int(b)) for g, b in zip(picked, batch_codes, strict=True)}:
        rows = np.flatnonzero((picked == g_idx) & (batch_codes == b))
        real = density.cells[groups[g_idx]]
        pool = real[has[real] & (data.batch_index[real] == b)]
        if len(pool) == 0:
            pool = real[has[real]] if has[real].any() else pool_all
        out[rows] = data.library[name][rng.choice(pool, size=len(rows))]
    return out
