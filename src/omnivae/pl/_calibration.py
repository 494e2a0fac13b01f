"""Plot empirical against nominal coverage of prediction intervals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from omnivae.pl._utils import AxesArg, finish, panels

SERIES = (("raw", "posterior predictive (raw)", "tab:gray"),
          ("calibrated", "conformal (randomised)", "tab:blue"),
          ("calibrated_inclusive", "conformal, lower <= y <= upper", "tab:orange"))


def plot_calibration(
    table: pd.DataFrame, *, by: str | None = None,
    ax: AxesArg | None = None, show: bool | None = None, save: str | Path | None = None,
    return_fig: bool = False, path: str | Path | None = None,
) -> Any:
    """Calibration plot: empirical coverage against nominal coverage, with the diagonal.

    Parameters
    ----------
    table
        :func:`omnivae.model.prediction.intervals.coverage_table` output (columns ``nominal``, ``raw``,
        ``calibrated``, ``calibrated_inclusive``), optionally stacked with a ``by`` column.
    by
        Column splitting ``table`` into panels (e.g. ``"dataset"``).
    ax
        Draw into this Axes (without ``by``), or these Axes (one per group of ``by``).
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
    >>> import pandas as pd, tempfile, os
    >>> t = pd.DataFrame({"nominal": [0.8, 0.9], "raw": [0.6, 0.7], "calibrated": [0.8, 0.9],
    ...                   "calibrated_inclusive": [0.85, 0.93]})
    >>> path = os.path.join(tempfile.mkdtemp(), "c.png")
    >>> fig = plot_calibration(t, save=path, return_fig=True)
    >>> [ax.get_xlabel() for ax in fig.axes], os.path.getsize(path) > 0
    (['nominal coverage'], True)
    """
    groups = list(table.groupby(by, sort=False)) if by else [("", table)]
    fig, axes, owned = panels(ax, len(groups), what="calibration",
                              figsize=(4.2 * len(groups), 4))
    for panel, (name, part) in zip(axes, groups, strict=True):
        lo = min(part["nominal"].min(), part["raw"].min()) - 0.05
        panel.plot([lo, 1], [lo, 1], color="black", lw=0.8, ls="--", label="nominal")
        for column, label, color in SERIES:
            if column in part and part[column].notna().any():
                panel.plot(part["nominal"], part[column], marker="o", color=color, label=label)
        panel.set_xlabel("nominal coverage")
        panel.set_ylabel("empirical coverage")
        panel.set_title(str(name), fontsize=10)
        panel.legend(fontsize=7, frameon=False)
    return finish(fig, axes, owned=owned, name="calibration", save=save, show=show,
                  return_fig=return_fig, path=path, dpi=110)
