"""Training curves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from omnivae.pl._utils import AxesArg, finish, panels

if TYPE_CHECKING:
    from omnivae.model.model import Model


def history(
    model_or_history: Model | pd.DataFrame, *, columns: Sequence[str] | None = None,
    ax: AxesArg | None = None, show: bool | None = None, save: str | Path | None = None,
    return_fig: bool = False, path: str | Path | None = None,
) -> Any:
    """Training curves, one panel per quantity (train and validation together).

    Parameters
    ----------
    model_or_history
        A trained :class:`omnivae.Model` or its ``history`` DataFrame (one row per epoch).
    columns
        Columns to plot (default: ELBOs, KL, batch penalty and the batch-information probe
        ``validation_mi_*``).
    ax
        Draw into these Axes, one per panel (a single Axes when only one quantity
        is plotted, e.g. ``columns=["train_elbo", "validation_elbo"]``), instead of a new
        figure.
    show, save, return_fig
        As in scanpy: show the figure (default: when matplotlib is interactive, e.g. in
        Jupyter), save it to a path (format from the suffix), return the Figure. The full
        rule: :mod:`omnivae.pl`.
    path
        Deprecated name of ``save`` (returns the open Figure, as it used to).

    Returns
    -------
    The Figure with ``return_fig=True``; the Axes (a list for several panels) with
    ``show=False`` or ``ax=``; otherwise None (the figure is closed).

    Examples
    --------
    >>> import pandas as pd, omnivae
    >>> h = pd.DataFrame({"train_elbo": [3.0, 2.0], "validation_elbo": [3.5, 2.5],
    ...                   "train_kl": [1.0, 1.2]}, index=pd.Index([0.0, 1.0], name="epoch"))
    >>> fig = omnivae.pl.history(h, return_fig=True)
    >>> [ax.get_title() for ax in fig.axes]
    ['elbo', 'kl']
    """
    frame = model_or_history if isinstance(model_or_history, pd.DataFrame) \
        else model_or_history.history
    if frame.empty:
        raise ValueError("The history is empty: train the model first (model.train()).")
    if columns is None:
        wanted = ("elbo", "kl", "batch_penalty", "mi_")
        columns = [c for c in frame.columns if any(w in c for w in wanted) and c != "kl_weight"]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KeyError(f"History has no columns {missing}; it has {list(frame.columns)}.")
    groups: dict[str, list[str]] = {}
    for column in columns:
        groups.setdefault(column.split("_", 1)[1] if "_" in column else column, []).append(column)
    fig, axes, owned = panels(ax, len(groups), what="history", figsize=(4.5 * len(groups), 3.6))
    for panel, (title, names) in zip(axes, groups.items(), strict=True):
        for name in names:
            series = frame[name].dropna()
            panel.plot(series.index, series.to_numpy(), marker="." if len(series) < 40 else None,
                       label=name)
        panel.set_title(title + (" (nats)" if title.startswith("mi_") else ""))
        panel.set_xlabel("epoch")
        panel.legend(fontsize=7, frameon=False)
    return finish(fig, axes, owned=owned, name="history", save=save, show=show,
                  return_fig=return_fig, path=path, dpi=110)
