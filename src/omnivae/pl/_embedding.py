"""UMAP of the joint embedding."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd

from omnivae.data.setup import obs_column


def latent_umap(
    mdata: md.MuData | ad.AnnData, *, use_rep: str = "X_omnivae", color: str | Sequence[str] = "batch",
    key_added: str | None = None, n_neighbors: int = 15, seed: int = 0,
    path: str | Path | None = None,
) -> Any:
    """UMAP of an embedding, one panel per ``color`` column (batch, cell type, clusters...).

    The 2-d coordinates are computed once and stored in ``mdata.obsm[key_added]`` (default
    ``f"{use_rep}_umap"``), parameters in ``mdata.uns[key_added]["params"]``; later calls
    reuse them.

    Parameters
    ----------
    mdata
        Cells with ``obsm[use_rep]`` (e.g. from :func:`omnivae.tl.integrate`); an AnnData
        works too (its ``obs`` holds the ``color`` columns).
    use_rep
        The embedding.
    color
        Cell-level columns (``mdata.obs`` or a modality's ``obs``), categorical or numeric.
    key_added, n_neighbors, seed
        Where the coordinates go; UMAP settings (scanpy's neighbours graph and UMAP).
    path
        Save the figure there too.

    Examples
    --------
    >>> import numpy as np, omnivae
    >>> sim = omnivae.datasets.simulate(80, modalities=("rna",), seed=0)
    >>> sim.obsm["X_omnivae"] = np.random.default_rng(0).normal(size=(80, 4))
    >>> fig = omnivae.pl.latent_umap(sim, color=["batch", "cell_type"])
    >>> [ax.get_title() for ax in fig.axes], sim.obsm["X_omnivae_umap"].shape
    (['batch', 'cell_type'], (80, 2))
    """
    import matplotlib.pyplot as plt

    from omnivae.tl.embedding import umap_coordinates

    if use_rep not in mdata.obsm:
        raise KeyError(f"mdata.obsm has no {use_rep!r} (it has {list(mdata.obsm)}); run "
                       "omnivae.tl.integrate(mdata) or pass use_rep=.")
    key = key_added or f"{use_rep}_umap"
    if key not in mdata.obsm:
        mdata.obsm[key] = umap_coordinates(np.asarray(mdata.obsm[use_rep]),
                                           n_neighbors=n_neighbors, seed=seed)
        mdata.uns[key] = {"params": {"use_rep": use_rep, "n_neighbors": n_neighbors,
                                     "seed": seed}}
    coords = np.asarray(mdata.obsm[key])
    columns = [color] if isinstance(color, str) else list(color)
    widths = [_panel_width(obs_column(mdata, column)) for column in columns]
    fig, axes = plt.subplots(1, len(columns), figsize=(sum(widths), 4.8), squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    for ax, column in zip(axes[0], columns, strict=True):
        values = obs_column(mdata, column)
        if pd.api.types.is_numeric_dtype(values) and values.nunique() > 20:
            points = ax.scatter(*coords.T, c=values.to_numpy(), s=4, cmap="viridis",
                                rasterized=True)
            fig.colorbar(points, ax=ax, shrink=0.7)
        else:
            _categorical(ax, coords, values.astype(str).fillna("NA").to_numpy())
        ax.set_title(column)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("UMAP 1")
        ax.set_ylabel("UMAP 2")
    from omnivae.pl._utils import finish

    return finish(fig, path)


def _panel_width(values: pd.Series) -> float:
    """Inches for one panel: wider when its legend needs several columns."""
    if pd.api.types.is_numeric_dtype(values) and values.nunique() > 20:
        return 5.5
    n = values.astype(str).nunique()
    return 5.5 + 1.6 * (int(np.ceil(n / 25)) - 1 if n <= 60 else 0)


def category_colors(n: int) -> list[tuple[float, float, float, float]]:
    """``n`` distinct colours: tab10 up to 10 categories, tab20 up to 20, then tab20, tab20b and
    tab20c (60 colours); beyond 60 the hues of a continuous map (distinct, less separable).

    Examples
    --------
    >>> colors = category_colors(41)
    >>> len(colors), len(set(colors))
    (41, 41)
    """
    import matplotlib.pyplot as plt

    if n <= 20:
        cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
        return [cmap(i) for i in range(n)]
    if n <= 60:
        maps = [plt.get_cmap(name) for name in ("tab20", "tab20b", "tab20c")]
        return [maps[i // 20](i % 20) for i in range(n)]
    cmap = plt.get_cmap("gist_ncar")
    return [cmap(x) for x in np.linspace(0.02, 0.95, n)]


def _categorical(ax: Any, coords: np.ndarray, values: np.ndarray) -> None:
    labels = pd.Categorical(values)
    n = len(labels.categories)
    colors = category_colors(n)
    for i, category in enumerate(labels.categories):
        sel = np.asarray(labels == category)
        ax.scatter(*coords[sel].T, s=4, color=colors[i], label=category, rasterized=True)
    if n <= 60:  # beside the panel, in columns of at most 25 entries
        ax.legend(markerscale=3, fontsize=7 if n <= 25 else 6, frameon=False, loc="center left",
                  bbox_to_anchor=(1.0, 0.5), ncol=int(np.ceil(n / 25)))
        return
    for category in labels.categories:  # too many for a legend: name on the data
        x, y = np.median(coords[np.asarray(labels == category)], axis=0)
        ax.annotate(str(category), (x, y), fontsize=5, ha="center", va="center")
