"""Plot empirical against nominal coverage of prediction intervals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from omnivae.pl._utils import finish

SERIES = (("raw", "posterior predictive (raw)", "tab:gray"),
          ("calibrated", "conformal (randomised)", "tab:blue"),
          ("calibrated_inclusive", "conformal, lower <= y <= upper", "tab:orange"))


def plot_calibration(table: pd.DataFrame, *, by: str | None = None,
                     path: str | Path | None = None) -> Any:
    """Calibration plot: empirical coverage against nominal coverage, with the diagonal.

    Parameters
    ----------
    table
        :func:`omnivae.model.prediction.intervals.coverage_table` output (columns ``nominal``, ``raw``,
        ``calibrated``, ``calibrated_inclusive``), optionally stacked with a ``by`` column.
    by
        Column splitting ``table`` into panels (e.g. ``"dataset"``).
    path
        Save the figure there too (PNG, PDF or SVG by the suffix; folders are created).

    Returns
    -------
    The matplotlib :class:`~matplotlib.figure.Figure`.

    Examples
    --------
    >>> import pandas as pd, tempfile, os
    >>> t = pd.DataFrame({"nominal": [0.8, 0.9], "raw": [0.6, 0.7], "calibrated": [0.8, 0.9],
    ...                   "calibrated_inclusive": [0.85, 0.93]})
    >>> path = os.path.join(tempfile.mkdtemp(), "c.png")
    >>> fig = plot_calibration(t, path=path)
    >>> [ax.get_xlabel() for ax in fig.axes], os.path.getsize(path) > 0
    (['nominal coverage'], True)
    """
    import matplotlib.pyplot as plt

    groups = list(table.groupby(by, sort=False)) if by else [("", table)]
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 4), squeeze=False)
    for ax, (name, part) in zip(axes[0], groups, strict=True):
        lo = min(part["nominal"].min(), part["raw"].min()) - 0.05
        ax.plot([lo, 1], [lo, 1], color="black", lw=0.8, ls="--", label="nominal")
        for column, label, color in SERIES:
            if column in part and part[column].notna().any():
                ax.plot(part["nominal"], part[column], marker="o", color=color, label=label)
        ax.set_xlabel("nominal coverage")
        ax.set_ylabel("empirical coverage")
        ax.set_title(str(name), fontsize=10)
        ax.legend(fontsize=7, frameon=False)
    return finish(fig, path, dpi=110)
