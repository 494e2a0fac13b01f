"""Plots (matplotlib): posterior-collapse diagnostics and prediction-interval calibration."""

from omnivae.pl._calibration import plot_calibration
from omnivae.pl._diagnostics import plot_diagnostics

__all__ = ["plot_calibration", "plot_diagnostics"]
