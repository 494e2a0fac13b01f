"""Withhold a modality for some cells to measure cross-modal prediction honestly."""

from __future__ import annotations

import anndata as ad
import mudata as md
import numpy as np

from omnivae.data.files import copy_mudata
from omnivae.data.setup import refresh


def withhold_modality(
    mdata: md.MuData, modality: str, *, fraction: float = 0.25, seed: int = 0,
    require: tuple[str, ...] = (),
) -> tuple[md.MuData, ad.AnnData]:
    """Remove ``modality`` from a seeded random ``fraction`` of the cells that have it.

    Only cells that also have every modality in ``require`` (and at least one other modality,
    so they keep some data) are eligible. The removed cells stay in the MuData with their other
    modalities; membership, not zeros, records the removal.

    Returns
    -------
    The masked copy of ``mdata`` and an AnnData with the withheld cells' true counts.

    Examples
    --------
    >>> import omnivae
    >>> sim = omnivae.datasets.simulate(100, modalities=("rna", "adt"), missing_fraction=0, seed=0)
    >>> masked, truth = withhold_modality(sim, "adt", fraction=0.25, seed=0)
    >>> truth.n_obs, masked["adt"].n_obs, masked.n_obs
    (25, 75, 100)
    """
    if modality not in mdata.mod:
        raise KeyError(f"No modality {modality!r} in mdata (it has {list(mdata.mod)}).")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}.")
    target = mdata[modality]
    others = [m for m in mdata.mod if m != modality]
    has_other = np.zeros(target.n_obs, dtype=bool)
    for m in others:
        has_other |= target.obs_names.isin(mdata[m].obs_names)
    eligible = has_other.copy()
    for m in require:
        eligible &= target.obs_names.isin(mdata[m].obs_names)
    candidates = np.flatnonzero(eligible)
    n = round(fraction * len(candidates))
    if n == 0:
        raise ValueError(f"No cells of {modality!r} are eligible to withhold (they need another modality).")
    chosen = np.random.default_rng(seed).choice(candidates, size=n, replace=False)
    keep = np.ones(target.n_obs, dtype=bool)
    keep[chosen] = False
    masked = copy_mudata(mdata)
    truth = target[~keep].copy()
    masked.mod[modality] = masked[modality][keep].copy()
    refresh(masked)
    return masked, truth
