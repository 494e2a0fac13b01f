"""Cluster cells with a trained CMVAE's Gaussian-mixture prior (:func:`omnivae.tl.cluster`)."""

from __future__ import annotations

import mudata as md
import pandas as pd

from omnivae.model.inference import modality_latent_means
from omnivae.model.model import Model
from omnivae.module.models.cmvae import CMVAE
from omnivae.module.models.cmvae_selection import select_clusters

__all__ = ["cluster"]


def cluster(
    mdata: md.MuData,
    model: Model,
    *,
    select_n_clusters: bool = True,
    beta: float = 1.0,
    key_added: str = "omnivae_cluster",
    batch_size: int = 2048,
    copy: bool = False,
) -> md.MuData | None:
    """Assign every cell of ``mdata`` to a cluster of a trained ``model="cmvae"`` model.

    CMVAE's prior over the shared latent is a mixture of ``n_clusters`` Gaussians; a cell's
    cluster is the component with the highest ``q(c | z)``, averaged over the cell's
    modalities (each encoded on its own, so a cell lacking a modality is clustered from the
    ones it has). With ``select_n_clusters`` the components are first pruned by the paper's
    post-hoc selection over these cells (:mod:`omnivae.module.models.cmvae_selection`), so train
    with more components than the cell types you expect, as the paper does (e.g.
    ``model_options={"n_clusters": 50}``; on omnivae's benchmark 50 instead of the default 10
    helped on fine labels and hurt on coarse ones, see ``benchmarks/results/cmvae_clusters.md``).

    Parameters
    ----------
    mdata
        Cells to cluster: the training data or new cells (as in
        :meth:`omnivae.Model.get_latent_representation`).
    model
        A trained :class:`omnivae.Model` with ``model="cmvae"``.
    select_n_clusters
        Prune the mixture's components to the selected number; ``False`` keeps them all.
    beta
        Weight of the selection's entropy term against the log-density term (1, as the
        objective's KL weight after warm-up).
    key_added
        ``obs`` key of the cluster labels (categorical; the label is the component's index),
        ``obsm[f"{key_added}_probabilities"]`` the ``(n_cells, n_kept)`` cluster
        probabilities, and ``uns`` key of the parameters and the selection: ``clusters``
        (the kept components, the columns of the probabilities), ``n_clusters``, ``pruned``
        (components in pruning order) and ``criterion`` (with 0, 1, ... pruned).
    batch_size
        Cells per forward pass.
    copy
        Return a modified copy instead of writing into ``mdata``.

    Examples
    --------
    >>> import omnivae
    >>> sim = omnivae.datasets.simulate(150, modalities=("rna", "adt"), seed=0)
    >>> model = omnivae.Model(sim, model="cmvae", n_latent=4,
    ...                       model_options={"n_clusters": 6, "n_samples": 2})
    >>> model.train(max_epochs=2, progress_bar=False)
    >>> omnivae.tl.cluster(sim, model)
    >>> info = sim.uns["omnivae_cluster"]
    >>> 2 <= info["n_clusters"] <= 6, len(info["criterion"])
    (True, 6)
    >>> set(sim.obs["omnivae_cluster"].astype(int)) <= set(info["clusters"])
    True
    """
    objective = model.module.objective
    if not isinstance(objective, CMVAE):
        raise ValueError(
            f"omnivae.tl.cluster needs a model trained with model='cmvae' (its mixture prior "
            f"defines the clusters); this model is {model.config.model!r}. For any other "
            f"model, cluster its embedding with scanpy: sc.pp.neighbors(mdata, "
            f"use_rep='X_omnivae'); sc.tl.leiden(mdata).")
    if not model.is_trained:
        raise ValueError("The model is not trained, so its mixture prior holds no clusters "
                         "yet: call model.train() first.")
    if beta < 0:
        raise ValueError(f"beta must be non-negative, got {beta}.")
    z, observed = modality_latent_means(model.module, model.cell_data(mdata),
                                        batch_size=batch_size, num_threads=model.num_threads)
    result = select_clusters(objective.cluster_logits.detach().cpu(),
                             objective.cluster_means.detach().cpu(), z, observed, beta=beta,
                             prune=select_n_clusters)
    target = mdata.copy() if copy else mdata
    target.obs[key_added] = pd.Categorical.from_codes(  # codes index the kept components
        result.probabilities.argmax(dim=-1).numpy(), categories=[str(c) for c in result.kept])
    target.obsm[f"{key_added}_probabilities"] = result.probabilities.numpy()
    target.uns[key_added] = {
        "params": {"select_n_clusters": select_n_clusters, "beta": beta,
                   "n_components": int(objective.cluster_means.shape[0])},
        "clusters": [int(c) for c in result.kept], "n_clusters": len(result.kept),
        "pruned": list(result.pruned), "criterion": list(result.criterion),
    }
    return target if copy else None
