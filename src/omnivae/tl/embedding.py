"""Clusters and UMAP coordinates of an embedding (scanpy), for reports and plots."""

from __future__ import annotations

import numpy as np
import pandas as pd

from omnivae.metrics import neighbors_graph


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
