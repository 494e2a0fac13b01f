"""The batch-penalty curve script's grid, subsampling, choice rule and report (no training here:
the scib scoring it calls is exercised end to end by the benchmark quick mode)."""

from __future__ import annotations

import numpy as np
import pandas as pd

import omnivae
from tests.conftest import benchmark_script


def _curve_module():
    return benchmark_script("batch_penalty_curve")


def _rows(points: dict[tuple[str, str, float], tuple[float, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"dataset": d, "seed": 0, "estimator": e, "weight": w,
                          "bio conservation": bio, "batch correction": batch}
                         for (d, e, w), (bio, batch) in points.items()])


def test_rule_refuses_settings_that_cost_biology_or_miss_a_dataset():
    curve = _curve_module()
    rows = _rows({
        ("a", "none", 0.0): (0.60, 0.70), ("b", "none", 0.0): (0.50, 0.60),
        # biggest batch gain, but bio drops by 0.03 on b: refused
        ("a", "hsic", 1.0): (0.60, 0.90), ("b", "hsic", 1.0): (0.47, 0.90),
        # measured on a only: refused however good
        ("a", "adversarial", 1.0): (0.61, 0.95),
        # within 0.01 on both: chosen
        ("a", "mmd", 1.0): (0.595, 0.75), ("b", "mmd", 1.0): (0.495, 0.70),
    })
    choice, gains = curve.choose_default(rows)
    assert choice == ("mmd", 1.0)
    hsic = gains[gains["estimator"] == "hsic"].iloc[0]
    assert np.isclose(hsic["worst_bio_change"], -0.03)
    assert np.isclose(hsic["mean_batch_change"], 0.25)


def test_rule_keeps_no_penalty_when_nothing_improves_batch_correction():
    curve = _curve_module()
    rows = _rows({("a", "none", 0.0): (0.60, 0.70), ("a", "mmd", 1.0): (0.60, 0.69)})
    assert curve.choose_default(rows)[0] is None


def test_grid_scales_each_estimators_default_weight():
    curve = _curve_module()
    grid = curve.settings(["hsic", "pairwise_kl"], [0.1, 10.0])
    weights = curve.BASE_WEIGHTS
    assert grid == [("none", 0.0), ("hsic", weights["hsic"] * 0.1),
                    ("hsic", weights["hsic"] * 10), ("pairwise_kl", weights["pairwise_kl"] * 0.1),
                    ("pairwise_kl", weights["pairwise_kl"] * 10)]


def test_subsample_keeps_the_most_detected_features_and_the_labels():
    curve = _curve_module()
    sim = omnivae.datasets.simulate(n_cells=300, modalities=("rna", "adt"), seed=0)
    small = curve.subsample(sim, 120, 25, seed=0)
    assert small.n_obs == 120 and small["rna"].n_vars == 25
    assert set(small.obs_names) <= set(sim.obs_names)
    rna = sim["rna"][small["rna"].obs_names]
    detected = np.asarray((rna.X > 0).sum(axis=0)).ravel()
    kept = rna.var_names.isin(small["rna"].var_names)
    assert detected[kept].min() >= detected[~kept].max()  # the top 25 by detection
    assert {"batch", "cell_type"} <= set(small.obs.columns)


def test_report_names_the_rule_pick_and_every_row():
    curve = _curve_module()
    rows = _rows({("a", "none", 0.0): (0.60, 0.70), ("a", "mmd", 100.0): (0.60, 0.80)})
    rows["total"] = 0.6 * rows["bio conservation"] + 0.4 * rows["batch correction"]
    rows["fit seconds"], rows["data"] = 1.0, "10 cells"
    text = curve.report(rows.to_dict("records"), "note")
    assert "The rule picks **mmd at weight 100**" in text
    assert "| mmd | 100 | 0 | 0.600 | 0.800 |" in text
