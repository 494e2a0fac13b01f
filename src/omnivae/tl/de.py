"""``omnivae.tl.differential_expression``: a Bayesian change test on any modality.

After scvi-tools' ``mode="change"``: for each feature, the posterior distribution of the log
fold change between two groups of cells is built from posterior draws of the normalised
expression ``h`` (the decoder's proportions, for every cell: a modality a cell did not
measure is imputed from its others, so measured and imputed cells count alike)::

    lfc = log2(h_a + eps) - log2(h_b + eps),   h_a from a random cell of group 1 at a random
                                               posterior draw, h_b likewise from group 2

and summarised as ``P(|lfc| > delta)`` (``proba_de``), its Bayes factor
``log(p / (1 - p))``, the mean/median/sd of ``lfc``. Features are called DE (``is_de_fdr``)
while the posterior expected false discovery proportion of the called set, the mean of
``1 - proba_de`` over it, stays below ``fdr``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import mudata as md
import numpy as np
import pandas as pd
import torch

from omnivae.data.setup import obs_column
from omnivae.module.sampling import sample_normalized

if TYPE_CHECKING:
    from omnivae.model.model import Model


def differential_expression(
    mdata: md.MuData,
    model: Model,
    *,
    groupby: str,
    group1: str,
    group2: str | None = None,
    modality: str,
    delta: float = 0.25,
    fdr: float = 0.05,
    n_samples: int = 10,
    n_pairs: int = 5000,
    max_cells: int = 500,
    pseudocount: float | None = None,
    seed: int = 0,
    key_added: str = "omnivae_de",
) -> pd.DataFrame:
    """Bayesian differential expression of ``modality`` between two groups of cells.

    Parameters
    ----------
    mdata
        The cells (as given to ``model``).
    model
        A trained :class:`omnivae.Model`.
    groupby
        Cell-level column (in ``mdata.obs`` or a modality's ``obs``) holding the groups.
    group1, group2
        The groups compared (``lfc > 0``: higher in ``group1``); ``group2=None`` compares with
        all other cells.
    modality
        Any modality of the model; every cell of the groups counts (imputed where it lacks it).
    delta
        Smallest |log2 fold change| that counts as a change.
    fdr
        Target posterior expected false discovery proportion of ``is_de_fdr``.
    n_samples, n_pairs, max_cells
        Posterior draws per cell, random (cell, draw) pairs compared per feature, and at most
        this many randomly chosen cells per group.
    pseudocount
        ``eps`` added to proportions before the log (default: 1 % of the mean proportion,
        ``0.01 / n_features``), so features near zero in both groups do not look changed.
    seed
        Seed of the cell choice, the draws and the pairing.
    key_added
        The results and parameters go to ``mdata.uns[key_added]`` (``"results"``,
        ``"params"``).

    Returns
    -------
    DataFrame indexed by feature, sorted by ``proba_de``: ``proba_de``, ``bayes_factor``,
    ``lfc_mean``, ``lfc_median``, ``lfc_std``, ``scale1``, ``scale2`` (mean proportions),
    ``is_de_fdr``.

    Examples
    --------
    >>> import omnivae
    >>> sim = omnivae.datasets.simulate(200, modalities=("rna", "adt"), seed=0)
    >>> model = omnivae.Model(sim, n_latent=4)
    >>> model.train(max_epochs=2, progress_bar=False)
    >>> de = omnivae.tl.differential_expression(sim, model, groupby="cell_type",
    ...                                         group1="type-0", modality="adt")
    >>> list(de.columns[:3]), de.shape[0] == sim["adt"].n_vars
    (['proba_de', 'bayes_factor', 'lfc_mean'], True)
    """
    if modality not in model.setup.modalities:
        raise KeyError(f"Unknown modality {modality!r}; the model has {list(model.setup.modalities)}.")
    groups = obs_column(mdata, groupby).astype(str).to_numpy()
    in1 = groups == str(group1)
    in2 = ~in1 if group2 is None else groups == str(group2)
    for name, chosen in ((group1, in1), (group2 or "rest", in2)):
        if not chosen.any():
            raise ValueError(f"No cells with {groupby} == {name!r}; groups present: "
                             f"{sorted(set(groups))[:10]}.")
    rng = np.random.default_rng(seed)
    generator = torch.Generator(device=model.device).manual_seed(seed)
    data = model.cell_data(mdata)
    pools = []
    for chosen in (in1, in2):
        cells = np.flatnonzero(chosen)
        if len(cells) > max_cells:
            cells = np.sort(rng.choice(cells, max_cells, replace=False))
        draws = []
        for start in range(0, len(cells), 512):
            batch = data.batch(cells[start:start + 512]).to(model.device)
            draws.append(sample_normalized(model.module.eval(), batch, modality, n_samples,
                                           cross_modal=False, generator=generator).cpu())
        pools.append(torch.cat(draws, dim=1).reshape(-1, draws[0].shape[-1]).numpy())
    n_features = pools[0].shape[1]
    eps = 0.01 / n_features if pseudocount is None else pseudocount
    a = pools[0][rng.integers(0, len(pools[0]), n_pairs)]
    b = pools[1][rng.integers(0, len(pools[1]), n_pairs)]
    lfc = np.log2(a + eps) - np.log2(b + eps)  # (n_pairs, n_features)
    proba = (np.abs(lfc) > delta).mean(axis=0)
    results = pd.DataFrame({
        "proba_de": proba,
        "bayes_factor": np.log(proba + 1e-8) - np.log(1 - proba + 1e-8),
        "lfc_mean": lfc.mean(axis=0), "lfc_median": np.median(lfc, axis=0),
        "lfc_std": lfc.std(axis=0),
        "scale1": pools[0].mean(axis=0), "scale2": pools[1].mean(axis=0),
    }, index=pd.Index(model.setup.var_names[modality], name="feature"))
    results = results.sort_values("proba_de", ascending=False, kind="stable")
    expected_false = np.cumsum(1 - results["proba_de"].to_numpy()) / np.arange(1, n_features + 1)
    results["is_de_fdr"] = expected_false <= fdr
    mdata.uns[key_added] = {"results": results, "params": {
        "groupby": groupby, "group1": str(group1), "group2": str(group2 or "rest"),
        "modality": modality, "delta": delta, "fdr": fdr, "n_samples": n_samples,
        "n_pairs": n_pairs, "pseudocount": eps, "seed": seed,
        "cells": [int(in1.sum()), int(in2.sum())]}}
    return results
