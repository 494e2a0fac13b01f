"""Plot the posterior-collapse diagnostics tracked during training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

PANELS = (("kl_", "KL of each unimodal posterior (nats)"),
          ("precision_share_", "share of the joint precision"),
          ("active_units", "active latent units"))


def plot_diagnostics(history: pd.DataFrame, path: str | Path | None = None, *,
                     split: str = "validation") -> Any:
    """Per-modality KL, precision share and active units over the epochs of training.

    Parameters
    ----------
    history
        ``model.history`` (columns ``<split>_kl_<m>``, ``<split>_precision_share_<m>``,
        ``<split>_active_units[_<m>]``, logged every epoch).
    path
        Save the figure as PNG here (and close it); ``None`` returns the open figure.
    split
        ``"validation"`` (default) or ``"train"``.

    Returns
    -------
    The matplotlib figure, or the path it was saved to.

    Examples
    --------
    >>> import pandas as pd, tempfile, os
    >>> h = pd.DataFrame({"validation_kl_rna": [5.0, 9.0], "validation_precision_share_rna":
    ...                   [0.5, 0.6], "validation_active_units": [3.0, 8.0]})
    >>> os.path.getsize(plot_diagnostics(h, os.path.join(tempfile.mkdtemp(), "d.png"))) > 0
    True
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg")
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
    if path is None:
        return fig
    from omnivae.report import _save

    return _save(fig, path, dpi=110)
