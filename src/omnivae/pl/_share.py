"""Each modality's share of the joint posterior, per group of cells."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import mudata as md

from omnivae.data.setup import obs_column
from omnivae.pl._utils import AxesArg, finish, panels

if TYPE_CHECKING:
    from omnivae.model.model import Model


def modality_share(
    mdata: md.MuData, model: Model, *, groupby: str,
    ax: AxesArg | None = None, show: bool | None = None, save: str | Path | None = None,
    return_fig: bool = False, path: str | Path | None = None,
) -> Any:
    """Stacked bars: how much of each group's joint posterior comes from each modality.

    The shares are :func:`omnivae.model.diagnostics.modality_shares` (each modality's share of the
    posterior precision, the prior holding the rest), averaged over the cells of each group.
    Over training, the same quantity per modality is in :func:`omnivae.pl.diagnostics`.

    Parameters
    ----------
    mdata
        The cells (the model's training data, or new cells of known batches).
    model
        A trained model with one encoder per modality.
    groupby
        Column of ``mdata.obs`` or a modality's ``obs`` grouping the cells (e.g. cell type).
    ax
        Draw into this Axes instead of a new figure.
    show, save, return_fig
        As in scanpy: show the figure (default: when matplotlib is interactive, e.g. in
        Jupyter), save it to a path (format from the suffix), return the Figure. The full
        rule: :mod:`omnivae.pl`.
    path
        Deprecated name of ``save`` (returns the open Figure, as it used to).

    Returns
    -------
    The Figure with ``return_fig=True``; the Axes with ``show=False`` or ``ax=``; otherwise
    None (the figure is closed). The per-cell table it averages:
    :func:`omnivae.model.diagnostics.modality_shares`.

    Examples
    --------
    >>> import omnivae
    >>> sim = omnivae.datasets.simulate(120, modalities=("rna", "adt"), seed=0)
    >>> model = omnivae.Model(sim, n_latent=3)
    >>> model.train(max_epochs=2, progress_bar=False)
    >>> ax = omnivae.pl.modality_share(sim, model, groupby="cell_type", show=False)
    >>> [t.get_text() for t in ax.get_legend().get_texts()], ax.get_xlabel()
    (['rna', 'adt', 'prior'], 'share of the joint posterior precision')
    """
    import matplotlib.pyplot as plt

    from omnivae.model.diagnostics import modality_shares

    shares = modality_shares(model.module, model.cell_data(mdata), mdata.obs_names)
    groups = obs_column(mdata, groupby).astype(str).to_numpy()
    table = shares.groupby(groups).mean().sort_index()
    fig, axes, owned = panels(ax, 1, what="modality_share",
                              figsize=(6.5, 0.9 + 0.32 * len(table)))
    panel = axes[0]
    left = 0.0
    colors = plt.get_cmap("tab10")
    for k, column in enumerate(table.columns):
        color = "lightgray" if column == "prior" else colors(k % 10)
        panel.barh(table.index, table[column], left=left, color=color, label=column)
        left = left + table[column].to_numpy()
    panel.set_xlim(0, 1)
    panel.invert_yaxis()
    panel.set_xlabel("share of the joint posterior precision")
    panel.set_title(f"each modality's share, by {groupby}", fontsize=10)
    panel.legend(fontsize=7, frameon=False, loc="lower right")
    return finish(fig, axes, owned=owned, name="modality_share", save=save, show=show,
                  return_fig=return_fig, path=path)
