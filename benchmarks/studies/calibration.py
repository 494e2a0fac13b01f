"""Coverage of calibrated cross-modal prediction intervals on the NeurIPS 2021 starters.

Usage::

    python benchmarks/run.py --study calibration [--draws 200] [--epochs N]

For each dataset the target modality (CITE: protein, Multiome: ATAC) is withheld from half of
the paired cells (:func:`omnivae.data.splits.withhold_modality`, seed 0); those cells are split at
random into a calibration half and a test half. The default model is trained on the rest of
the data (the withheld cells keep their RNA), calibrated on the calibration cells
(:meth:`omnivae.Model.calibrate`, split conformal per feature, procedure in
:mod:`omnivae.model.prediction.calibration`) and its 80/90/95 % intervals are scored on the test cells.

On CITE it also compares the model with and without the evidence-aware penalty
(``confidence_penalty=1``): how often the RNA-only posterior's central 90 % region contains
the RNA+protein posterior mean, and the raw (uncalibrated) coverage of protein predictions.

Writes ``benchmarks/results/calibration.md`` and ``calibration.png``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: suite, studies

import omnivae
from omnivae.data.splits import withhold_modality
from omnivae.model.prediction.intervals import coverage_table, latent_posterior
from omnivae.pl import plot_calibration
from suite.report import markdown_table

RESULTS = Path(__file__).resolve().parents[1] / "results"
DATASETS = {"neurips2021_bmmc_cite_starter": ("adt", "rna"),
            "neurips2021_bmmc_multiome_starter": ("atac", "rna")}


def split_truth(truth, seed: int = 0):
    order = np.random.default_rng(seed).permutation(truth.n_obs)
    half = truth.n_obs // 2
    return truth[np.sort(order[:half])].copy(), truth[np.sort(order[half:])].copy()


def train(masked, epochs: int | None, penalty: float = 0.0) -> omnivae.Model:
    model = omnivae.Model(masked, batch_key="batch", confidence_penalty=penalty, seed=0)
    model.train(max_epochs=epochs, progress_bar=False)
    return model


def latent_coverage(model, full: list[str], partial: list[str], cells: np.ndarray) -> float:
    """Fraction of (cell, dim) where the full-evidence mean lies in the partial posterior's
    central 90 % interval."""
    mean_full, _ = latent_posterior(model.module, model.cells, full)
    mean_part, var_part = latent_posterior(model.module, model.cells, partial)
    z = np.abs(mean_full[cells] - mean_part[cells]) / np.sqrt(var_part[cells])
    return float((z <= 1.6449).mean())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    tables, lines, evidence = [], [], []
    for name, (target, other) in DATASETS.items():
        mdata = omnivae.datasets.load(name)
        masked, truth = withhold_modality(mdata, target, fraction=0.5, seed=0)
        calib, test = split_truth(truth)
        start = time.perf_counter()
        model = train(masked, args.epochs)
        model.calibrate(target, calib, n_samples=args.draws)
        table = coverage_table(model.module, model.setup, model.cells, target, test,
                               obs_names=masked.obs_names,
                               calibration=model.calibrations[target], n_samples=args.draws)
        seconds = time.perf_counter() - start
        table.insert(0, "dataset", f"{name.split('_')[2]} -> {target}")
        tables.append(table)
        lines.append(f"- {name}: target `{target}`, {calib.n_obs} calibration and {test.n_obs} "
                     f"test cells x {truth.n_vars} features; train + calibrate + score "
                     f"{seconds:.0f} s")
        if target == "adt":
            paired = np.flatnonzero(masked.obs_names.isin(masked[target].obs_names)
                                    & masked.obs_names.isin(masked[other].obs_names))
            for penalty in (0.0, 1.0):
                m = model if penalty == 0.0 else train(masked, args.epochs, penalty)
                raw = coverage_table(m.module, m.setup, m.cells, target, test,
                                     obs_names=masked.obs_names,
                                     calibration=m.calibrations.get(target), levels=(0.9,),
                                     n_samples=args.draws)
                _, var_one = latent_posterior(m.module, m.cells, [other])
                _, var_two = latent_posterior(m.module, m.cells, [other, target])
                evidence.append({
                    "confidence_penalty": penalty,
                    "latent_coverage_90": latent_coverage(m, [other, target], [other], paired),
                    "var_ratio_one_to_two": float(np.median(var_one[paired] / var_two[paired])),
                    "raw_protein_coverage_90": float(raw["raw"].iloc[0]),
                    "median_width_90": float(raw["median_width"].iloc[0]),
                })
    result = pd.concat(tables, ignore_index=True)
    RESULTS.mkdir(exist_ok=True)
    plot_calibration(result, by="dataset", save=RESULTS / "calibration.png", show=False)
    text = [
        "# Calibrated prediction intervals (benchmarks/run.py --study calibration)", "",
        "Target withheld from half of the paired cells; those split into calibration and test "
        "halves. Coverage on the test cells (per cell and feature). `raw`: posterior predictive "
        "quantiles at the nominal level; `calibrated`: after split conformal calibration per "
        "feature (randomised PIT, the quantity conformal prediction guarantees); "
        "`calibrated_inclusive`: fraction with lower <= y <= upper; `feature_p5`/"
        "`feature_median`: 5th percentile / median over features of the calibrated coverage; "
        f"`median_width` in counts. {args.draws} predictive draws per cell.", "",
        *lines, "",
        markdown_table(result.to_dict(orient="records")), "",
        "![calibration](calibration.png)", "",
        "## Evidence-aware penalty (CITE, protein withheld from half the cells)", "",
        "`latent_coverage_90`: fraction of (cell, latent dimension) of paired cells where the "
        "RNA+protein posterior mean lies in the central 90 % interval of the RNA-only posterior; "
        "`var_ratio_one_to_two`: median ratio of RNA-only to RNA+protein posterior variance; "
        "`raw_protein_coverage_90`: uncalibrated coverage of 90 % protein intervals on the test "
        "cells.", "",
        markdown_table(evidence),
    ]
    (RESULTS / "calibration.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
