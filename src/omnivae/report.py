"""Clusters, UMAP pictures and evaluation tables for trained models."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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


def plot_umap(
    coordinates: np.ndarray, colors: Mapping[str, Sequence], path: str | Path, *,
    title: str = "",
) -> Path:
    """Scatter ``coordinates`` once per entry of ``colors`` (side by side) and save a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(colors), figsize=(5.5 * len(colors), 5), squeeze=False)
    for ax, (name, values) in zip(axes[0], colors.items(), strict=True):
        labels = pd.Categorical(np.asarray(values).astype(str))
        cmap = plt.get_cmap("tab20" if len(labels.categories) > 10 else "tab10")
        for i, category in enumerate(labels.categories):
            sel = labels == category
            ax.scatter(*coordinates[sel].T, s=4, color=cmap(i % cmap.N), label=category,
                       rasterized=True)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("UMAP 1")
        ax.set_ylabel("UMAP 2")
        if len(labels.categories) <= 25:
            ax.legend(markerscale=3, fontsize=7, frameon=False, loc="center left",
                      bbox_to_anchor=(1.0, 0.5))
    if title:
        fig.suptitle(title)
    return _save(fig, path, dpi=120)


def _save(fig: Any, path: str | Path, *, dpi: int) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def markdown_table(rows: Sequence[Mapping[str, object]], digits: int = 3) -> str:
    """A list of dicts as a GitHub markdown table.

    Examples
    --------
    >>> print(markdown_table([{"method": "a", "ari": 0.51234}]))
    | method | ari |
    |---|---|
    | a | 0.512 |
    """
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [f"{v:.{digits}f}" if isinstance(v, float) else str(v) for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_history(
    history: pd.DataFrame, path: str | Path, *, columns: Sequence[str] | None = None,
) -> Path:
    """Plot training curves, one panel per column (default: ELBOs, KL, batch penalty and the
    batch-information probe ``validation_mi_*``), and save a PNG.

    Examples
    --------
    >>> import pandas as pd, tempfile, os
    >>> h = pd.DataFrame({"train_elbo": [3.0, 2.0], "validation_elbo": [3.5, 2.5]},
    ...                  index=pd.Index([0.0, 1.0], name="epoch"))
    >>> os.path.getsize(plot_history(h, os.path.join(tempfile.mkdtemp(), "h.png"))) > 0
    True
    """
    import matplotlib

    matplotlib.use("Agg")

    from omnivae.pl import history as history_figure

    return _save(history_figure(history, columns=columns), path, dpi=110)
