"""Plots of omnivae results, with scanpy's conventions: data first, keyword-only options,
``ax=``, ``show=``, ``save=``, ``return_fig=``.

- :func:`history` — training curves (ELBO, KL, batch penalty, batch-information probe).
- :func:`latent_umap` — the cells' UMAP (``obsm["X_umap"]``, from :func:`omnivae.tl.umap` or
  scanpy) coloured by batch, label, cluster; colours shared with scanpy through ``uns``.
- :func:`predicted_vs_observed` — imputed against measured values, per feature.
- :func:`calibration` — empirical against nominal coverage of prediction intervals.
- :func:`diagnostics` — posterior-collapse diagnostics over training: per-modality KL, active
  units and each modality's share of the joint posterior.
- :func:`modality_share` — each modality's share of the joint posterior per group of cells
  (e.g. cell type).
- :func:`plot_umap`, :func:`plot_history`, :func:`save_figure` — for scripts writing figures to
  files (the path second, positionally; the path written is returned).

What every plot does after drawing:

- ``ax=``: draw into the caller's Axes (one, or a list with one per panel for multi-panel
  plots; the wrong number is a ``ValueError`` saying how many). That figure is the caller's:
  it is neither shown (unless ``show=True``) nor closed, and the Axes are returned.
- ``save=path``: write the whole figure there, atomically, in the format of the suffix
  (``.png``, ``.pdf``, ``.svg``...; folders created). ``path=`` is its deprecated old name
  (``DeprecationWarning``; it still returns the open Figure, as before).
- ``return_fig=True``: return the :class:`~matplotlib.figure.Figure`, open and not shown.
- ``show=False``: return the Axes (one Axes for a one-panel plot, else a list) and leave the
  figure open to edit, as scanpy; with ``save=`` it is closed after saving (as scanpy).
- Otherwise the figure is shown when ``show=True``, or by default (``show=None``) when
  matplotlib is interactive (Jupyter, IPython with ``%matplotlib``, ``plt.ion()``); then
  closed (a window of an interactive session stays), and None is returned.

So a notebook shows each plot once, and a script leaves no figure open. Nothing here switches
matplotlib's backend (saving works on any), and no plot computes neighbours or a UMAP.

Examples
--------
>>> import numpy as np, matplotlib.pyplot as plt, omnivae
>>> sim = omnivae.datasets.simulate(60, modalities=("rna",), seed=0)
>>> sim.obsm["X_umap"] = np.random.default_rng(0).normal(size=(60, 2))
>>> fig, (left, right) = plt.subplots(1, 2)
>>> omnivae.pl.latent_umap(sim, color="batch", ax=left) is left
True
>>> omnivae.pl.latent_umap(sim, color="cell_type", show=False).get_title()
'cell_type'
>>> plt.close("all")
"""

from omnivae.pl._calibration import plot_calibration
from omnivae.pl._diagnostics import plot_diagnostics
from omnivae.pl._embedding import latent_umap
from omnivae.pl._files import plot_history, plot_umap, save_figure
from omnivae.pl._history import history
from omnivae.pl._prediction import predicted_vs_observed
from omnivae.pl._share import modality_share

calibration = plot_calibration
diagnostics = plot_diagnostics

__all__ = [
    "calibration",
    "diagnostics",
    "history",
    "latent_umap",
    "modality_share",
    "plot_calibration",
    "plot_diagnostics",
    "plot_history",
    "plot_umap",
    "predicted_vs_observed",
    "save_figure",
]
