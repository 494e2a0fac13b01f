"""Plots of omnivae results (scanpy style: data first, keyword-only options).

Every function returns the matplotlib :class:`~matplotlib.figure.Figure` and, given
``path=``, also saves it (PNG, PDF or SVG by the suffix).

- :func:`history` — training curves (ELBO, KL, batch penalty, batch-information probe).
- :func:`latent_umap` — UMAP of the joint embedding coloured by batch, label, cluster.
- :func:`predicted_vs_observed` — imputed against measured values, per feature.
- :func:`calibration` — empirical against nominal coverage of prediction intervals.
- :func:`diagnostics` — posterior-collapse diagnostics over training: per-modality KL, active
  units and each modality's share of the joint posterior.
- :func:`modality_share` — each modality's share of the joint posterior per group of cells
  (e.g. cell type).
- :func:`plot_umap`, :func:`plot_history`, :func:`save_figure` — figures written straight to
  files (reports, benchmarks).
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
