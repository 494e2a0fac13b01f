"""Synthetic data shaped like a real file, at any number of cells, for the scaling benchmark."""

from __future__ import annotations

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd


def shaped_like(real: md.MuData, n_cells: int, *, seed: int = 0) -> md.MuData:
    """``n_cells`` cells drawn with replacement from ``real``'s cells that have every modality,
    each count then thinned binomially (keep probability 0.9) so no two cells are identical.

    The result has ``real``'s modalities and feature counts, and per cell about 90 % of a real
    cell's library size with nearly its sparsity; its ``obs`` has no columns (no batches).

    Examples
    --------
    >>> import omnivae
    >>> sim = omnivae.datasets.simulate(50, modalities=("rna", "adt"), missing_fraction=0, seed=0)
    >>> big = shaped_like(sim, 120)
    >>> big.n_obs, big["rna"].n_vars == sim["rna"].n_vars
    (120, True)
    """
    rng = np.random.default_rng(seed)
    paired = real.obs_names
    for modality in real.mod:
        paired = paired[paired.isin(real[modality].obs_names)]
    if len(paired) == 0:
        raise ValueError("shaped_like needs cells that have every modality; none do.")
    picks = paired[rng.integers(0, len(paired), size=n_cells)]
    names = pd.Index([f"synthetic_{i}" for i in range(n_cells)])
    mods = {}
    for modality, adata in real.mod.items():
        x = adata[picks].X.tocsr().astype(np.float32)
        x.data = rng.binomial(x.data.astype(np.int64), 0.9).astype(np.float32)
        x.eliminate_zeros()
        mods[modality] = ad.AnnData(x, obs=pd.DataFrame(index=names),
                                    var=pd.DataFrame(index=adata.var_names))
    return md.MuData(mods)
