"""Plots of omnivae results (scanpy style: data first, keyword-only options).

Every function returns the matplotlib :class:`~matplotlib.figure.Figure` and, given
``path=``, also saves it (PNG, PDF or SVG by the suffix).

- :func:`history` — training curves (ELBO, KL, batch penalty, batch-information probe).
- :func:`latent_umap` — UMAP of the joint embedding coloured by batch, label, cluster.
- :func:`predicted_vs_observed` — imputed against measured values, per feature.
"""

from omnivae.pl._embedding import latent_umap
from omnivae.pl._history import history
from omnivae.pl._prediction import predicted_vs_observed

__all__ = ["history", "latent_umap", "predicted_vs_observed"]
