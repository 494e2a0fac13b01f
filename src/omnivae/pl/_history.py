"""Training curves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from omnivae.pl._utils import finish

if TYPE_CHECKING:
    from omnivae.model.model import Model


def history(
    model_or_history: Model | pd.DataFrame, *, columns: Sequence[str] | None = None,
    path: str | Path | None = None,
) -> Any:
    """Training curves, one panel per quantity (train and validation together).

    Parameters
    ----------
    model_or_history
        A trained :class:`omnivae.Model` or its ``history`` DataFrame (one row per epoch).
    columns
        Columns to plot (default: ELBOs, KL, batch penalty and the batch-information probe
        ``validation_mi_*``).
    path
        Save the figure there too.

    Examples
    --------
    >>> import pandas as pd, omnivae
    >>> h = pd.DataFrame({"train_elbo": [3.0, 2.0], "validation_elbo": [3.5, 2.5],
    ...                   "train_kl": [1.0, 1.2]}, index=pd.Index([0.0, 1.0], name="epoch"))
    >>> fig = omnivae.pl.history(h)
    >>> [ax.get_title() for ax in fig.axes]
    ['elbo', 'kl']
    """
    import matplotlib.pyplot as plt

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
    fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.6), squeeze=False)
    for ax, (title, names) in zip(axes[0], groups.items(), strict=True):
        for name in names:
            series = frame[name].dropna()
            ax.plot(series.index, series.to_numpy(), marker="." if len(series) < 40 else None,
                    label=name)
        ax.set_title(title + (" (nats)" if title.startswith("mi_") else ""))
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7, frameon=False)
    return finish(fig, path, dpi=110)
