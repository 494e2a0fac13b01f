"""Posterior predictive intervals and their conformal calibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import omnivae
from omnivae.data.splits import withhold_modality
from omnivae.model.prediction.calibration import (
    conformal_level,
    interval_from_draws,
    randomized_pit,
)
from omnivae.model.prediction.intervals import coverage_table, prediction_intervals


def test_randomized_pit_is_uniform_for_a_correct_discrete_predictive():
    g = torch.Generator().manual_seed(0)
    rate = torch.rand(1, 300, 40, generator=g) * 3  # many zeros and ties
    draws = torch.poisson(rate.expand(400, -1, -1).contiguous(), generator=g)
    y = torch.poisson(rate[0], generator=g)
    u = randomized_pit(draws, y, g).flatten().numpy()
    for level in (0.8, 0.9, 0.95):
        assert abs((np.abs(2 * u - 1) <= level).mean() - level) < 0.015


def test_conformal_level_is_the_finite_sample_quantile():
    scores = np.arange(1, 20, dtype=float)[:, None] / 20  # n = 19
    assert conformal_level(scores, 0.9)[0] == pytest.approx(18 / 20)  # ceil(20 * 0.9) = 18
    assert conformal_level(scores, 0.99)[0] == 1.0  # rank 20 > n
    with pytest.raises(ValueError, match="coverage"):
        conformal_level(scores, 1.5)


def test_interval_from_draws_per_feature_levels():
    draws = torch.arange(101.0).reshape(101, 1, 1).expand(-1, 2, 2)
    low, high = interval_from_draws(draws, torch.tensor([0.5, 0.9]))
    assert low[0].tolist() == [25.0, 5.0] and high[0].tolist() == [75.0, 95.0]


@pytest.fixture(scope="module")
def withheld():
    sim = omnivae.datasets.simulate(400, modalities=("rna", "adt"), missing_fraction=0.0, seed=2)
    masked, truth = withhold_modality(sim, "adt", fraction=0.5, seed=0)
    model = omnivae.Model(masked, n_latent=4, seed=0)
    model.train(max_epochs=15, progress_bar=False)
    return masked, truth, model


def test_conformal_coverage_is_near_nominal_on_withheld_cells(withheld):
    masked, truth, model = withheld
    calib, test = truth[:100], truth[100:]
    fitted = model.calibrate("adt", calib, n_samples=100)
    table = coverage_table(model.module, model.setup, model.cells, "adt", test,
                           obs_names=masked.obs_names, calibration=fitted,
                           n_samples=100).set_index("nominal")
    for level in (0.8, 0.9, 0.95):
        assert abs(table.loc[level, "calibrated"] - level) < 0.04
        # inclusive bounds cover at least as often, up to the noise of independent draws
        assert table.loc[level, "calibrated_inclusive"] >= table.loc[level, "calibrated"] - 0.02
    assert table["median_width"].is_monotonic_increasing


def test_predict_with_interval_adds_bounds(withheld):
    masked, truth, model = withheld
    pred = model.predict("adt", interval=0.9, calibrate_on=truth[:100])
    assert pred.layers["lower"].shape == pred.shape
    assert (pred.layers["lower"] <= pred.layers["upper"]).all()
    assert pred.uns["omnivae"]["interval"]["calibrated"] is True
    rows = masked.obs_names.get_indexer(truth.obs_names[100:])
    y = truth[100:].X.toarray()
    inside = (pred.layers["lower"][rows] <= y) & (y <= pred.layers["upper"][rows])
    assert 0.86 < inside.mean() < 0.99


def test_calibration_cells_seen_in_training_are_refused(withheld):
    masked, _, model = withheld
    seen = masked["adt"][:20]
    with pytest.raises(ValueError, match="seen their counts"):
        model.calibrate("adt", seen)
    with pytest.raises(KeyError, match="Unknown source"):
        prediction_intervals(model.module, model.setup, model.cells, "adt", 0.9,
                             sources=["protein"])
