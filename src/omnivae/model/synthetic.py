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
from typing import TYPE_CHECKING, Any

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from sklearn.mixture import GaussianMixture

from omnivae.data.setup import obs_column

if TYPE_CHECKING:
    from omnivae.model.core import ModelCore as Model


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
    """

    label_key: str | None
    mixtures: dict[str, Any]
    cells: dict[str, np.ndarray]


@torch.no_grad()
def fit_latent_density(model: Model, *, label_key: str | None = "cell_type",
                       n_components: int = 8, draws_per_cell: int = 5,
                       seed: int = 0) -> LatentDensity:
    """Fit a Gaussian mixture per label group to the model's aggregated posterior.

    Parameters
    ----------
    model
        A trained model (its training data are used).
    label_key
        Label column of ``model.mdata`` (``None``: one mixture for all cells).
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
    >>> density = fit_latent_density(model, label_key="cell_type", n_components=2)
    >>> sorted(density.mixtures) == sorted(sim.obs["cell_type"].astype(str).unique())
    True
    """
    data = model.cells
    labels = _labels(model, label_key)
    generator = torch.Generator(device=model.device).manual_seed(seed)
    model.module.eval()
    draws = []
    for start in range(0, data.n_cells, 2048):
        batch = data.batch(np.arange(start, min(start + 2048, data.n_cells)))
        fused = model.module.posterior(batch.to(model.device))
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
    return LatentDensity(label_key, mixtures, cells)


def _labels(model: Model, label_key: str | None) -> np.ndarray:
    if label_key is None:
        return np.full(model.cells.n_cells, "all", dtype=object)
    try:
        column = obs_column(model.mdata, label_key)
    except KeyError as error:
        raise KeyError(f"No label column {label_key!r} to sample cell types from; pass "
                       f"label_key=<column of mdata.obs> or label_key=None.") from error
    values = column.astype(str).to_numpy().astype(object)
    values[column.isna().to_numpy()] = "nan"
    return values


def sample_cells(
    model: Model, n: int, *, cell_type: str | Sequence[str] | None = None,
    batch: str | None = None, label_key: str | None = "cell_type", n_components: int = 8,
    seed: int = 0, density: LatentDensity | None = None,
) -> md.MuData:
    """``n`` synthetic cells with counts in every modality (see the module docstring).

    Parameters
    ----------
    model
        A trained :class:`omnivae.Model`.
    n
        Number of cells.
    cell_type
        One label or several (drawn in proportion to their frequency); default: all.
    batch
        Batch whose decoders generate the cells; default: drawn per cell from the
        group's batch frequencies.
    label_key
        Label column defining the groups (``None``: no labels).
    n_components
        Mixture components per group (the density is fitted once and cached on the model).
    seed
        Seed of every draw.
    density
        A latent density to sample from instead (anything whose ``mixtures`` have
        ``sample(k) -> (z, _)``, e.g. to compare with prior draws).

    Returns
    -------
    MuData with one AnnData per modality (raw counts in ``X``, CSR), ``obs[label_key]`` and
    ``obs["batch"]`` in every modality and in ``mdata.obs``; ``uns["omnivae_synthetic"]``
    records the settings.

    Examples
    --------
    >>> import omnivae
    >>> sim = omnivae.datasets.simulate(150, modalities=("rna", "adt"), n_batches=2, seed=0)
    >>> model = omnivae.Model(sim, batch_key="batch", n_latent=3)
    >>> fake = model.sample(20, cell_type=sim.obs["cell_type"].iloc[0], batch="batch-0")
    >>> fake.n_obs, list(fake.mod), set(fake.obs["batch"])
    (20, ['rna', 'adt'], {'batch-0'})
    """
    if n < 1:
        raise ValueError(f"n must be a positive number of cells, got {n}.")
    if density is None:
        cache_key = (label_key, n_components)
        cache = model.latent_densities
        if cache_key not in cache:
            cache[cache_key] = fit_latent_density(model, label_key=label_key,
                                                  n_components=n_components, seed=seed)
        density = cache[cache_key]
    rng = np.random.default_rng(seed)
    groups = _chosen_groups(density, cell_type)
    sizes = np.array([len(density.cells[g]) for g in groups], dtype=float)
    picked = rng.choice(len(groups), size=n, p=sizes / sizes.sum())
    data, setup = model.cells, model.setup
    categories = list(setup.batch_categories) or ["all"]
    if batch is not None and batch not in categories:
        raise KeyError(f"Unknown batch {batch!r}; the model knows {categories}.")
    z = np.zeros((n, model.config.n_latent), dtype=np.float32)
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
        model.module.eval()
        zt, bt = torch.from_numpy(z), torch.from_numpy(batch_codes)
        for m, name in enumerate(setup.modalities):
            depth = _depths(model, density, groups, picked, batch_codes, m, rng)
            dist = model.module.decoder(name)(zt, bt, torch.from_numpy(depth).unsqueeze(-1))
            counts[name] = sp.csr_matrix(dist.sample(generator).numpy())
    obs = pd.DataFrame({label_key or "label": pd.Categorical(labels),
                        "batch": pd.Categorical(np.array(categories)[batch_codes])},
                       index=pd.Index([f"synthetic_{i}" for i in range(n)]))
    mods = {name: ad.AnnData(X=counts[name], obs=obs.copy(),
                             var=pd.DataFrame(index=pd.Index(setup.var_names[name])))
            for name in setup.modalities}
    out = md.MuData(mods)
    out.obs = obs.copy()
    out.uns["omnivae_synthetic"] = {"label_key": str(label_key), "n_components": n_components,
                                    "seed": seed}
    return out


def _chosen_groups(density: LatentDensity, cell_type: str | Sequence[str] | None) -> list[str]:
    if cell_type is None:
        return list(density.mixtures)
    wanted = [cell_type] if isinstance(cell_type, str) else list(cell_type)
    unknown = [t for t in wanted if t not in density.mixtures]
    if unknown:
        raise KeyError(f"Unknown cell types {unknown} in {density.label_key!r}; known: "
                       f"{sorted(density.mixtures)}.")
    return wanted


def _depths(model: Model, density: LatentDensity, groups: list[str], picked: np.ndarray,
            batch_codes: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """Observed depths of modality ``m`` in real cells of the same group and batch."""
    data = model.cells
    name = model.setup.modalities[m]
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
