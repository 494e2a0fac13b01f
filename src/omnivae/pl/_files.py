"""Plots for scripts that write figures to files (reports, benchmarks): the output path comes
second, positionally; given it, the file's :class:`~pathlib.Path` is returned."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from omnivae.pl._colors import category_colors
from omnivae.pl._utils import AxesArg, finish, panels, save_atomic


def plot_umap(
    coordinates: np.ndarray, colors: Mapping[str, Sequence], save: str | Path | None = None,
    *, title: str = "", ax: AxesArg | None = None, show: bool | None = None,
    return_fig: bool = False,
) -> Any:
    """Scatter 2-d ``coordinates`` once per entry of ``colors`` (panel title -> one category
    per cell), side by side.

    For cells in a MuData or AnnData use :func:`omnivae.pl.latent_umap`, which reads
    ``obsm["X_umap"]`` and shares colours with scanpy through ``uns``.

    Parameters
    ----------
    coordinates
        ``(n_cells, 2)`` coordinates, e.g. from :func:`omnivae.tl.embedding.umap_coordinates`.
    colors
        Panel title -> the category of every cell.
    save
        Write the figure there (format from the suffix; folders created, written atomically).
    title
        Title above the panels.
    ax, show, return_fig
        As in :func:`omnivae.pl.latent_umap` (``ax``: one Axes per entry of ``colors``).

    Returns
    -------
    The Figure with ``return_fig=True``; the Axes (a list for several panels) with
    ``show=False`` or ``ax=``; otherwise the path written (``save``), or None.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> xy = np.random.default_rng(0).normal(size=(40, 2))
    >>> out = plot_umap(xy, {"group": ["a", "b"] * 20}, os.path.join(tempfile.mkdtemp(), "u.png"))
    >>> out.suffix, out.stat().st_size > 0
    ('.png', True)
    """
    fig, axes, owned = panels(ax, len(colors), what="plot_umap",
                              figsize=(5.5 * len(colors), 5))
    for panel, (name, values) in zip(axes, colors.items(), strict=True):
        labels = pd.Categorical(np.asarray(values).astype(str))
        palette = category_colors(len(labels.categories))
        for i, category in enumerate(labels.categories):
            sel = np.asarray(labels == category)
            panel.scatter(*coordinates[sel].T, s=4, color=palette[i], label=category,
                          rasterized=True)
        panel.set_title(name)
        panel.set_xticks([])
        panel.set_yticks([])
        panel.set_xlabel("UMAP 1")
        panel.set_ylabel("UMAP 2")
        if len(labels.categories) <= 25:
            panel.legend(markerscale=3, fontsize=7, frameon=False, loc="center left",
                         bbox_to_anchor=(1.0, 0.5))
    if title and owned:
        fig.suptitle(title)
    result = finish(fig, axes, owned=owned, name="plot_umap", save=save, show=show,
                    return_fig=return_fig, dpi=120)
    return Path(save) if result is None and save is not None else result


def plot_history(
    history: pd.DataFrame, save: str | Path | None = None, *,
    columns: Sequence[str] | None = None, ax: AxesArg | None = None, show: bool | None = None,
    return_fig: bool = False,
) -> Any:
    """:func:`omnivae.pl.history` with the output path second: training curves, one panel per
    quantity (default: ELBOs, KL, batch penalty and the batch-information probe
    ``validation_mi_*``).

    Returns
    -------
    As :func:`omnivae.pl.history`, except the path written (``save``) instead of None.

    Examples
    --------
    >>> import pandas as pd, tempfile, os
    >>> h = pd.DataFrame({"train_elbo": [3.0, 2.0], "validation_elbo": [3.5, 2.5]},
    ...                  index=pd.Index([0.0, 1.0], name="epoch"))
    >>> os.path.getsize(plot_history(h, os.path.join(tempfile.mkdtemp(), "h.png"))) > 0
    True
    """
    from omnivae.pl._history import history as history_plot

    result = history_plot(history, columns=columns, ax=ax, show=show, save=save,
                          return_fig=return_fig)
    return Path(save) if result is None and save is not None else result


def save_figure(fig: Any, path: str | Path, *, dpi: int = 120) -> Path:
    """Lay out ``fig``, write it to ``path`` atomically (format from the suffix; folders
    created) and close it; returns the path.

    Examples
    --------
    >>> import matplotlib.pyplot as plt, tempfile, os
    >>> fig, ax = plt.subplots()
    >>> out = save_figure(fig, os.path.join(tempfile.mkdtemp(), "f.pdf"))
    >>> out.stat().st_size > 0, plt.fignum_exists(fig.number)
    (True, False)
    """
    import matplotlib.pyplot as plt

    fig.tight_layout()
    try:
        return save_atomic(fig, path, dpi=dpi)
    finally:
        plt.close(fig)
