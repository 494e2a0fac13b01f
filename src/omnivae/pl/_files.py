"""Figures written straight to files (reports and benchmarks): UMAP panels, training curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def plot_umap(
    coordinates: np.ndarray, colors: Mapping[str, Sequence], path: str | Path, *,
    title: str = "",
) -> Path:
    """Scatter ``coordinates`` once per entry of ``colors`` (side by side) and save a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(colors), figsize=(5.5 * len(colors), 5), squeeze=False)
    for ax, (name, values) in zip(axes[0], colors.items(), strict=True):
        labels = pd.Categorical(np.asarray(values).astype(str))
        cmap = plt.get_cmap("tab20" if len(labels.categories) > 10 else "tab10")
        for i, category in enumerate(labels.categories):
            sel = labels == category
            ax.scatter(*coordinates[sel].T, s=4, color=cmap(i % cmap.N), label=category,
                       rasterized=True)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("UMAP 1")
        ax.set_ylabel("UMAP 2")
        if len(labels.categories) <= 25:
            ax.legend(markerscale=3, fontsize=7, frameon=False, loc="center left",
                      bbox_to_anchor=(1.0, 0.5))
    if title:
        fig.suptitle(title)
    return save_figure(fig, path, dpi=120)


def save_figure(fig: Any, path: str | Path, *, dpi: int) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_history(
    history: pd.DataFrame, path: str | Path, *, columns: Sequence[str] | None = None,
) -> Path:
    """Plot training curves, one panel per column (default: ELBOs, KL, batch penalty and the
    batch-information probe ``validation_mi_*``), and save a PNG.

    Examples
    --------
    >>> import pandas as pd, tempfile, os
    >>> h = pd.DataFrame({"train_elbo": [3.0, 2.0], "validation_elbo": [3.5, 2.5]},
    ...                  index=pd.Index([0.0, 1.0], name="epoch"))
    >>> os.path.getsize(plot_history(h, os.path.join(tempfile.mkdtemp(), "h.png"))) > 0
    True
    """
    import matplotlib

    matplotlib.use("Agg")

    from omnivae.pl._history import history as history_figure

    return save_figure(history_figure(history, columns=columns), path, dpi=110)
