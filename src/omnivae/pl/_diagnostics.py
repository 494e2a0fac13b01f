"""Plot the posterior-collapse diagnostics tracked during training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from omnivae.pl._utils import AxesArg, finish, panels

PANELS = (("kl_", "KL of each unimodal posterior (nats)"),
          ("precision_share_", "share of the joint precision"),
          ("active_units", "active latent units"))


def plot_diagnostics(
    history: pd.DataFrame, *, split: str = "validation",
    ax: AxesArg | None = None, show: bool | None = None, save: str | Path | None = None,
    return_fig: bool = False, path: str | Path | None = None,
) -> Any:
    """Per-modality KL, precision share and active units over the epochs of training.

    Parameters
    ----------
    history
        ``model.history`` (columns ``<split>_kl_<m>``, ``<split>_precision_share_<m>``,
        ``<split>_active_units[_<m>]``, logged every epoch).
    split
        ``"validation"`` (default) or ``"train"``.
    ax
        Draw into these Axes, one per panel (KL, precision share, active units: those
        the history has), instead of a new figure.
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
    >>> h = pd.DataFrame({"validation_kl_rna": [5.0, 9.0], "validation_precision_share_rna":
    ...                   [0.5, 0.6], "validation_active_units": [3.0, 8.0]})
    >>> path = os.path.join(tempfile.mkdtemp(), "d.png")
    >>> fig = plot_diagnostics(h, save=path, return_fig=True)
    >>> [ax.get_title() for ax in fig.axes][1], os.path.getsize(path) > 0
    ('share of the joint precision', True)
    """
    prefix = f"{split}_"
    found = [(key, title, [c for c in history.columns if c.startswith(prefix + key)])
             for key, title in PANELS]
    found = [p for p in found if p[2]]
    if not found:
        raise ValueError(f"history has no {prefix}kl_/precision_share_/active_units columns; "
                         "train the model first (they are logged every epoch).")
    fig, axes, owned = panels(ax, len(found), what="diagnostics",
                              figsize=(4.5 * len(found), 3.4))
    for panel, (_, title, columns) in zip(axes, found, strict=True):
        for column in columns:
            series = history[column].dropna()
            label = column[len(prefix):]
            panel.plot(series.index, series.to_numpy(), label=label)
        panel.set_title(title, fontsize=10)
        panel.set_xlabel("epoch")
        panel.legend(fontsize=7, frameon=False)
    return finish(fig, axes, owned=owned, name="diagnostics", save=save, show=show,
                  return_fig=return_fig, path=path, dpi=110)
