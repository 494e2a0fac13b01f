"""Clusters and UMAP coordinates of an embedding (scanpy), for reports and plots; :func:`umap`
writes them where :func:`omnivae.pl.latent_umap` reads them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from omnivae.metrics import neighbors_graph

if TYPE_CHECKING:
    import anndata as ad
    import mudata as md


def cluster_embedding(
    embedding: np.ndarray, *, resolution: float = 1.0, n_neighbors: int = 15, seed: int = 0
) -> pd.Categorical:
    """Leiden clusters of an embedding (scanpy neighbours graph).

    Examples
    --------
    >>> import numpy as np
    >>> emb = np.concatenate([np.zeros((30, 2)), np.full((30, 2), 9.0)])
    >>> emb += np.random.default_rng(0).normal(0, 0.1, emb.shape)
    >>> len(cluster_embedding(emb, resolution=0.1).categories)
    2
    """
    import scanpy as sc

    adata = neighbors_graph(embedding, n_neighbors=n_neighbors, seed=seed)
    sc.tl.leiden(adata, resolution=resolution, random_state=seed, flavor="igraph",
                 n_iterations=2, directed=False)
    return pd.Categorical(adata.obs["leiden"].astype(str))


def umap_coordinates(embedding: np.ndarray, *, n_neighbors: int = 15, seed: int = 0) -> np.ndarray:
    """Two-dimensional UMAP of an embedding (scanpy)."""
    import scanpy as sc

    adata = neighbors_graph(embedding, n_neighbors=n_neighbors, seed=seed)
    sc.tl.umap(adata, random_state=seed)
    return np.asarray(adata.obsm["X_umap"])


def umap(
    mdata: md.MuData | ad.AnnData, *, use_rep: str = "X_omnivae", n_neighbors: int = 15,
    seed: int = 0, key_added: str = "X_umap", copy: bool = False,
) -> md.MuData | ad.AnnData | None:
    """UMAP of the embedding ``obsm[use_rep]``, written to ``obsm[key_added]`` for
    :func:`omnivae.pl.latent_umap` (and ``sc.pl.umap``); parameters in
    ``uns[key_added]["params"]``.

    The neighbours graph (scanpy's, ``n_neighbors``) is built on a scratch copy of the
    embedding, so a graph you made with ``sc.pp.neighbors`` (``obsp``, ``uns["neighbors"]``) is
    left alone; to draw the UMAP of that graph instead, run ``sc.tl.umap(mdata)``.

    Parameters
    ----------
    mdata
        A MuData or AnnData with ``obsm[use_rep]`` (e.g. from :func:`omnivae.tl.integrate`).
    use_rep
        The embedding.
    n_neighbors, seed
        Neighbours of the graph; random seed of the UMAP (the same seed, the same coordinates).
    key_added
        ``obsm`` key of the coordinates and ``uns`` key of the parameters.
    copy
        Return a modified copy instead of writing into ``mdata``.

    Returns
    -------
    None, or the copy with ``copy=True``.

    Examples
    --------
    >>> import numpy as np, omnivae
    >>> sim = omnivae.datasets.simulate(60, modalities=("rna",), seed=0)
    >>> sim.obsm["X_omnivae"] = np.random.default_rng(0).normal(size=(60, 4))
    >>> omnivae.tl.umap(sim, n_neighbors=10)
    >>> sim.obsm["X_umap"].shape, sim.uns["X_umap"]["params"]["use_rep"]
    ((60, 2), 'X_omnivae')
    """
    if use_rep not in mdata.obsm:
        raise KeyError(f"mdata.obsm has no {use_rep!r} (it has {list(mdata.obsm)}); run "
                       "omnivae.tl.integrate(mdata) first, or pass use_rep= naming the embedding.")
    target = mdata.copy() if copy else mdata
    target.obsm[key_added] = umap_coordinates(np.asarray(target.obsm[use_rep]),
                                              n_neighbors=n_neighbors, seed=seed)
    target.uns[key_added] = {"params": {"use_rep": use_rep, "n_neighbors": n_neighbors,
                                        "seed": seed}}
    return target if copy else None
