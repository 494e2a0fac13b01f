"""Predicted against observed values, per feature."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mudata as md
import numpy as np
import scipy.sparse as sp

from omnivae.pl._utils import AxesArg, finish, panels


def predicted_vs_observed(
    mdata: md.MuData, *, modality: str, imputed_key: str | None = None,
    features: Sequence[str] | None = None, n_features: int = 6, layer: str | None = None,
    cells: Sequence[str] | None = None, ax: AxesArg | None = None, show: bool | None = None, save: str | Path | None = None,
    return_fig: bool = False, path: str | Path | None = None,
) -> Any:
    """Scatter of predicted against measured expression, one panel per feature.

    Measured counts are normalised like the predictions (proportions summing to one per
    cell); each panel's title gives the feature and the Pearson r over the cells shown.

    Parameters
    ----------
    mdata
        Cells with the measured ``modality`` and its prediction ``imputed_key`` (default
        ``f"{modality}_imputed"``, from :func:`omnivae.tl.predict`).
    features
        Features to show (default: the ``n_features`` most variable measured ones).
    layer
        Layer of the measured counts (default ``X``).
    cells
        Cells to show (default: every cell that measured ``modality``); pass e.g. withheld
        cells to judge genuine predictions.
    ax
        Draw into this Axes (one feature), or these Axes (one per feature), instead of a
        new figure (three panels a row).
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
    >>> import omnivae
    >>> sim = omnivae.datasets.simulate(150, modalities=("rna", "adt"), seed=0)
    >>> model = omnivae.Model(sim, n_latent=4)
    >>> model.train(max_epochs=2, progress_bar=False)
    >>> omnivae.tl.predict(sim, model, target="adt")
    >>> fig = omnivae.pl.predicted_vs_observed(sim, modality="adt", n_features=3,
    ...                                        return_fig=True)
    >>> len(fig.axes), fig.axes[0].get_xlabel()
    (3, 'observed (proportion)')
    """
    key = imputed_key or f"{modality}_imputed"
    for name in (modality, key):
        if name not in mdata.mod:
            raise KeyError(f"mdata has no modality {name!r} (it has {list(mdata.mod)}); "
                           "run omnivae.tl.predict(mdata, model, target=...) first.")
    measured = mdata[modality]
    names = list(cells) if cells is not None else list(measured.obs_names)
    observed = measured[names]
    x = observed.layers[layer] if layer is not None else observed.X
    x = x.toarray() if sp.issparse(x) else np.asarray(x)
    x = x / np.clip(x.sum(axis=1, keepdims=True), 1, None)
    predicted = mdata[key][names]
    columns = predicted.var_names.get_indexer(observed.var_names)
    y = np.asarray(predicted.X)[:, columns]
    var_names = list(observed.var_names)
    if features is None:
        order = np.argsort(-x.var(axis=0))[:n_features]
        features = [var_names[i] for i in order]
    unknown = [f for f in features if f not in var_names]
    if unknown:
        raise KeyError(f"Features {unknown[:5]} are not in modality {modality!r}.")
    n = len(features)
    ncols = min(n, 3)
    nrows = int(np.ceil(n / ncols))
    fig, axes, owned = panels(ax, n, what="predicted_vs_observed", nrows=nrows, ncols=ncols,
                              figsize=(3.6 * ncols, 3.3 * nrows))
    for panel, feature in zip(axes, features, strict=True):
        j = var_names.index(feature)
        r = float(np.corrcoef(x[:, j], y[:, j])[0, 1]) if x[:, j].std() and y[:, j].std() \
            else float("nan")
        panel.scatter(x[:, j], y[:, j], s=4, alpha=0.5, rasterized=True)
        top = max(x[:, j].max(), y[:, j].max())
        panel.plot([0, top], [0, top], color="grey", lw=0.8, ls="--")
        panel.set_title(f"{feature} (r = {r:.2f})", fontsize=9)
        panel.set_xlabel("observed (proportion)")
        panel.set_ylabel("predicted (proportion)")
    return finish(fig, axes, owned=owned, name="predicted_vs_observed", save=save, show=show,
                  return_fig=return_fig, path=path)
