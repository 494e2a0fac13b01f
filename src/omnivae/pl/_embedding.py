"""UMAP (or any 2-d embedding) of the cells, coloured by cell-level columns."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd

from omnivae.data.setup import obs_column
from omnivae.pl._colors import palette
from omnivae.pl._utils import AxesArg, finish, panels

_REMOVED = ("use_rep", "key_added", "n_neighbors", "seed")


def latent_umap(
    mdata: md.MuData | ad.AnnData, *, color: str | Sequence[str] = "batch",
    basis: str = "X_umap", ax: AxesArg | None = None, show: bool | None = None,
    save: str | Path | None = None, return_fig: bool = False,
    path: str | Path | None = None, **removed: Any,
) -> Any:
    """The cells' UMAP coordinates ``obsm[basis]``, one panel per ``color`` column (batch,
    cell type, clusters...).

    Plotting computes nothing: compute the UMAP first with :func:`omnivae.tl.umap` (from the
    embedding ``obsm["X_omnivae"]``) or scanpy (``sc.pp.neighbors(mdata,
    use_rep="X_omnivae")``, then ``sc.tl.umap(mdata)``); both write ``obsm["X_umap"]``.

    Categorical columns take their colours from ``uns[f"{column}_colors"]`` when it holds at
    least one colour per category (as scanpy); otherwise omnivae picks distinct colours
    (tab10, tab20, then more) and stores them there, so scanpy's plots of the
    same column match. Numeric columns with more than 20 values use a colour bar.

    Parameters
    ----------
    mdata
        Cells with ``obsm[basis]``; a MuData (columns from ``obs`` or a modality's ``obs``) or
        an AnnData.
    color
        Cell-level column(s), categorical or numeric: one panel each.
    basis
        The ``obsm`` key of the 2-d coordinates (``"umap"`` means ``"X_umap"``, as in scanpy).
    ax
        Draw into this Axes (one ``color``), or these Axes (a list with one per ``color``),
        instead of a new figure.
    show, save, return_fig
        As in scanpy: show the figure (default: when matplotlib is interactive, e.g. in
        Jupyter), save it to a path (format from the suffix), return the Figure. The full
        rule: :mod:`omnivae.pl`.
    path
        Deprecated name of ``save`` (returns the open Figure, as it used to).

    Returns
    -------
    The Figure with ``return_fig=True``; the Axes (a list for several colours) with
    ``show=False`` or ``ax=``; otherwise None (the figure is closed).

    Examples
    --------
    >>> import numpy as np, omnivae
    >>> sim = omnivae.datasets.simulate(80, modalities=("rna",), seed=0)
    >>> sim.obsm["X_omnivae"] = np.random.default_rng(0).normal(size=(80, 4))
    >>> omnivae.tl.umap(sim)                     # writes obsm["X_umap"]
    >>> fig = omnivae.pl.latent_umap(sim, color=["batch", "cell_type"], return_fig=True)
    >>> [ax.get_title() for ax in fig.axes], list(sim.uns["batch_colors"])
    (['batch', 'cell_type'], ['#1f77b4', '#ff7f0e', '#2ca02c'])
    """
    if removed:
        names = ", ".join(f"{k}=" for k in removed)
        hint = " latent_umap no longer computes the UMAP: run omnivae.tl.umap(mdata, " \
            "use_rep=..., n_neighbors=..., seed=..., key_added=...) first and pass basis=." \
            if set(removed) <= set(_REMOVED) else ""
        raise TypeError(f"latent_umap got unexpected keyword arguments {names}.{hint}")
    key = basis if basis in mdata.obsm or f"X_{basis}" not in mdata.obsm else f"X_{basis}"
    if key not in mdata.obsm:
        raise KeyError(
            f"mdata.obsm has no {basis!r} (it has {list(mdata.obsm)}): plotting computes no "
            "UMAP. Run omnivae.tl.umap(mdata) (UMAP of obsm['X_omnivae']) or sc.tl.umap(mdata) "
            "after sc.pp.neighbors first, or pass basis= naming the coordinates.")
    coords = np.asarray(mdata.obsm[key])[:, :2]
    columns = [color] if isinstance(color, str) else list(color)
    values = {column: obs_column(mdata, column) for column in columns}
    widths = [_panel_width(values[column]) for column in columns]
    fig, axes, owned = panels(ax, len(columns), what="latent_umap", figsize=(sum(widths), 4.8),
                              gridspec_kw={"width_ratios": widths})
    for panel, column in zip(axes, columns, strict=True):
        if _is_continuous(values[column]):
            points = panel.scatter(*coords.T, c=values[column].to_numpy(dtype=float), s=4,
                                   cmap="viridis", rasterized=True)
            fig.colorbar(points, ax=panel, shrink=0.7)
        else:
            _categorical(panel, coords, values[column], palette(mdata, column, values[column]))
        panel.set_title(column)
        panel.set_xticks([])
        panel.set_yticks([])
        panel.set_xlabel("UMAP 1")
        panel.set_ylabel("UMAP 2")
    return finish(fig, axes, owned=owned, name="latent_umap", save=save, show=show,
                  return_fig=return_fig, path=path)


def _is_continuous(values: pd.Series) -> bool:
    return bool(pd.api.types.is_numeric_dtype(values) and values.nunique() > 20)


def _panel_width(values: pd.Series) -> float:
    """Inches for one panel: wider when its legend needs several columns."""
    if _is_continuous(values):
        return 5.5
    n = values.astype(str).nunique()
    return 5.5 + 1.6 * (int(np.ceil(n / 25)) - 1 if n <= 60 else 0)


def _categorical(ax: Any, coords: np.ndarray, values: pd.Series,
                 colors: dict[str, str]) -> None:
    """One scatter per category present, in the category order of ``colors``; missing
    values in light grey, labelled ``NA``."""
    labels = values.astype(object).where(values.notna(), None).to_numpy()
    text = np.array(["" if v is None else str(v) for v in labels])
    shown = [c for c in colors if (text == c).any()]
    for category in shown:
        sel = text == category
        ax.scatter(*coords[sel].T, s=4, color=colors[category], label=category,
                   rasterized=True)
    missing = pd.isna(values.to_numpy())
    if missing.any():
        ax.scatter(*coords[missing].T, s=4, color="lightgray", label="NA", rasterized=True)
    n = len(shown) + int(missing.any())
    if n <= 60:  # beside the panel, in columns of at most 25 entries
        ax.legend(markerscale=3, fontsize=7 if n <= 25 else 6, frameon=False, loc="center left",
                  bbox_to_anchor=(1.0, 0.5), ncol=int(np.ceil(n / 25)))
        return
    for category in shown:  # too many for a legend: name on the data
        x, y = np.median(coords[text == category], axis=0)
        ax.annotate(category, (x, y), fontsize=5, ha="center", va="center")

