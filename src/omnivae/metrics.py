"""Evaluation: clustering agreement, cross-modal prediction scores and simple baselines."""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, roc_auc_score
from sklearn.neighbors import KNeighborsRegressor

_RESOLUTIONS = (0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.5, 2.0)


def neighbors_graph(embedding: np.ndarray, *, n_neighbors: int = 15, seed: int = 0) -> ad.AnnData:
    """An AnnData holding ``embedding`` in ``obsm["X_emb"]`` and scanpy's kNN graph of it.

    Examples
    --------
    >>> import numpy as np
    >>> neighbors_graph(np.random.default_rng(0).normal(size=(30, 4))).obsp["connectivities"].shape
    (30, 30)
    """
    import scanpy as sc

    adata = ad.AnnData(np.zeros((len(embedding), 1), dtype=np.float32))
    adata.obsm["X_emb"] = np.asarray(embedding, dtype=np.float32)
    sc.pp.neighbors(adata, use_rep="X_emb", n_neighbors=n_neighbors, random_state=seed)
    return adata


def leiden_agreement(
    embedding: np.ndarray, labels: Sequence, *, resolutions: Sequence[float] = _RESOLUTIONS,
    n_neighbors: int = 15, seed: int = 0, n_repeats: int = 1,
) -> dict[str, float]:
    """ARI and NMI between Leiden clusters of ``embedding`` and ``labels``.

    As in scib, the resolution is chosen to maximise NMI over ``resolutions``, so every
    embedding is judged at its best clustering. Leiden's result depends on its random seed;
    ``n_repeats > 1`` averages the scores over that many Leiden seeds (``seed``,
    ``seed + 1``, ...), so two embeddings are compared rather than two clustering draws.

    Returns
    -------
    ``{"ari": ..., "nmi": ..., "resolution": ..., "n_clusters": ...}`` (means over repeats).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> emb = np.concatenate([rng.normal(0, 1, (50, 5)), rng.normal(8, 1, (50, 5))])
    >>> leiden_agreement(emb, ["a"] * 50 + ["b"] * 50)["ari"] > 0.9
    True
    """
    import scanpy as sc

    label_array = np.asarray(labels).astype(str)
    adata = neighbors_graph(embedding, n_neighbors=n_neighbors, seed=seed)
    repeats = []
    for repeat in range(n_repeats):
        best = {"ari": -1.0, "nmi": -1.0, "resolution": float("nan"), "n_clusters": 0.0}
        for resolution in resolutions:
            sc.tl.leiden(adata, resolution=resolution, random_state=seed + repeat,
                         key_added="_leiden", flavor="igraph", n_iterations=2, directed=False)
            clusters = adata.obs["_leiden"].to_numpy()
            nmi = normalized_mutual_info_score(label_array, clusters)
            if nmi > best["nmi"]:
                best = {"ari": float(adjusted_rand_score(label_array, clusters)),
                        "nmi": float(nmi), "resolution": float(resolution),
                        "n_clusters": float(len(np.unique(clusters)))}
        repeats.append(best)
    return {key: float(np.mean([r[key] for r in repeats])) for key in repeats[0]}


def _dense(matrix: np.ndarray | sp.spmatrix) -> np.ndarray:
    return np.asarray(matrix.toarray() if sp.issparse(matrix) else matrix, dtype=np.float64)  # type: ignore[union-attr]


def log_normalize(counts: np.ndarray | sp.spmatrix, target_sum: float = 1e4) -> np.ndarray:
    """``log1p(target_sum * x / x.sum(row))`` as a dense array (rows with no counts stay 0)."""
    x = _dense(counts)
    total = x.sum(axis=1, keepdims=True)
    return np.log1p(target_sum * x / np.where(total > 0, total, 1.0))


def pca_embedding(counts: np.ndarray | sp.spmatrix, n_comps: int = 30, seed: int = 0) -> np.ndarray:
    """PCA of log-normalised counts (the standard single-cell baseline)."""
    from sklearn.decomposition import PCA

    x = log_normalize(counts)
    n_comps = min(n_comps, x.shape[0] - 1, x.shape[1] - 1)
    return PCA(n_comps, random_state=seed).fit_transform(x)


def mean_feature_pearson(predicted: np.ndarray, observed_counts: np.ndarray | sp.spmatrix) -> float:
    """Mean over features of Pearson r between ``log1p(1e4 * predicted)`` and the observed
    ``log1p(1e4 * x / x.sum)``, over cells (features constant in either are skipped).

    ``predicted`` holds normalised expression (rows summing to one).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).poisson(5, (40, 6)).astype(float)
    >>> round(mean_feature_pearson(x / x.sum(1, keepdims=True), x), 6)
    1.0
    """
    pred = np.log1p(1e4 * np.asarray(predicted, dtype=np.float64))
    obs = log_normalize(observed_counts)
    pred_c, obs_c = pred - pred.mean(0), obs - obs.mean(0)
    denom = np.sqrt((pred_c**2).sum(0) * (obs_c**2).sum(0))
    ok = denom > 0
    if not ok.any():
        return float("nan")
    return float(np.mean((pred_c * obs_c).sum(0)[ok] / denom[ok]))


def auroc(predicted: np.ndarray, observed_counts: np.ndarray | sp.spmatrix) -> float:
    """AUROC of ``predicted`` scores against ``observed > 0`` over all (cell, feature) pairs."""
    obs = _dense(observed_counts)
    return float(roc_auc_score((obs > 0).ravel(), np.asarray(predicted).ravel()))


def knn_predict(
    train_inputs: np.ndarray, train_targets: np.ndarray | sp.spmatrix, query_inputs: np.ndarray,
    *, n_neighbors: int = 15,
) -> np.ndarray:
    """kNN regression baseline: average the neighbours' normalised target profiles.

    Returns normalised expression (rows summing to one) for the query cells.
    """
    target = _dense(train_targets)
    total = target.sum(axis=1, keepdims=True)
    target = target / np.where(total > 0, total, 1.0)
    k = min(n_neighbors, len(train_inputs))
    model = KNeighborsRegressor(n_neighbors=k, weights="distance").fit(train_inputs, target)
    pred = np.clip(model.predict(query_inputs), 0, None)
    return pred / np.maximum(pred.sum(axis=1, keepdims=True), 1e-12)
