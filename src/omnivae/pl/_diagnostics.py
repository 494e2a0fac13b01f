"""Plot the posterior-collapse diagnostics tracked during training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from omnivae.pl._utils import finish

PANELS = (("kl_", "KL of each unimodal posterior (nats)"),
          ("precision_share_", "share of the joint precision"),
          ("active_units", "active latent units"))


def plot_diagnostics(history: pd.DataFrame, *, split: str = "validation",
                     path: str | Path | None = None) -> Any:
    """Per-modality KL, precision share and active units over the epochs of training.

    Parameters
    ----------
    history
        ``model.history`` (columns ``<split>_kl_<m>``, ``<split>_precision_share_<m>``,
        ``<split>_active_units[_<m>]``, logged every epoch).
    split
        ``"validation"`` (default) or ``"train"``.
    path
        Save the figure there too (PNG, PDF or SVG by the suffix; folders are created).

    Returns
    -------
    The matplotlib :class:`~matplotlib.figure.Figure`.

    Examples
    --------
    >>> import pandas as pd, tempfile, os
    >>> h = pd.DataFrame({"validation_kl_rna": [5.0, 9.0], "validation_precision_share_rna":
    ...                   [0.5, 0.6], "validation_active_units": [3.0, 8.0]})
    >>> path = os.path.join(tempfile.mkdtemp(), "d.png")
    >>> fig = plot_diagnostics(h, path=path)
    >>> [ax.get_title() for ax in fig.axes][1], os.path.getsize(path) > 0
    ('share of the joint precision', True)
    """
    import matplotlib.pyplot as plt

    prefix = f"{split}_"
    panels = [(key, title, [c for c in history.columns if c.startswith(prefix + key)])
              for key, title in PANELS]
    panels = [p for p in panels if p[2]]
    if not panels:
        raise ValueError(f"history has no {prefix}kl_/precision_share_/active_units columns; "
                         "train the model first (they are logged every epoch).")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.4), squeeze=False)
    for ax, (_, title, columns) in zip(axes[0], panels, strict=True):
        for column in columns:
            series = history[column].dropna()
            label = column[len(prefix):]
            ax.plot(series.index, series.to_numpy(), label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7, frameon=False)
    return finish(fig, path, dpi=110)
