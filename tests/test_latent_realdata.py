"""Evidence, collapse diagnostics and calibrated intervals on the real NeurIPS CITE starter."""

from __future__ import annotations

import warnings

import mudata as md
import numpy as np
import pytest

import omnivae
from omnivae.data.splits import withhold_modality
from omnivae.model.diagnostics import PosteriorCollapseWarning
from omnivae.model.prediction.intervals import (
    coverage_table,
    latent_posterior,
    prediction_intervals,
)

pytestmark = pytest.mark.realdata
CITE = "neurips2021_bmmc_cite_starter"


def shared_file(name: str):
    """The shared dataset's path, or skip (``tests.conftest`` can be shadowed by a site-packages
    ``tests`` package, so this module does not import it)."""
    try:
        return omnivae.datasets.locate(name, download=False)
    except (FileNotFoundError, ValueError):
        pytest.skip(f"shared dataset {name} not available")


@pytest.fixture(scope="module")
def cite():
    mdata = md.read_h5mu(shared_file(CITE))
    model = omnivae.Model(mdata, batch_key="batch", seed=0)
    model.train(max_epochs=60, progress_bar=False)
    return mdata, model


def test_posterior_from_one_modality_is_wider_than_from_two(cite):
    _, model = cite
    _, both = latent_posterior(model.module, model.cells, ["rna", "adt"])
    for single in (["rna"], ["adt"]):
        _, one = latent_posterior(model.module, model.cells, single)
        assert (one > both).all(), single
        assert np.median(one / both) > 1.05, single


def test_predictions_from_fewer_modalities_carry_wider_intervals(cite):
    _, model = cite
    for target, other in (("adt", "rna"), ("rna", "adt")):
        kwargs = {"n_samples": 60, "seed": 0, "scale": "normalized"}
        parts = (model.module, model.setup, model.cells, target, 0.9)
        lo1, hi1, _ = prediction_intervals(*parts, sources=[other], **kwargs)
        lo2, hi2, _ = prediction_intervals(*parts, sources=[other, target], **kwargs)
        width_one = (hi1 - lo1).mean(axis=1)  # per cell
        width_two = (hi2 - lo2).mean(axis=1)
        assert np.mean(width_one > width_two) > 0.8, target
        assert width_one.mean() > 1.1 * width_two.mean(), target


def test_diagnostics_on_real_data_find_no_collapse(cite):
    _, model = cite
    with warnings.catch_warnings():
        warnings.simplefilter("error", PosteriorCollapseWarning)
        table = model.diagnostics()
    assert (table.loc[["rna", "adt"], "precision_share"] > 0.05).all()
    assert (table.loc[["rna", "adt"], "kl"] > 1.0).all()
    assert table.loc["joint", "active_units"] >= 5
    assert model.history["validation_precision_share_adt"].notna().all()


@pytest.mark.slow
def test_calibrated_protein_intervals_cover_within_three_points():
    mdata = md.read_h5mu(shared_file(CITE))
    masked, truth = withhold_modality(mdata, "adt", fraction=0.5, seed=0)
    order = np.random.default_rng(0).permutation(truth.n_obs)
    calib, test = truth[np.sort(order[:150])], truth[np.sort(order[150:])]
    model = omnivae.Model(masked, batch_key="batch", seed=0)
    model.train(progress_bar=False)
    model.calibrate("adt", calib)
    table = coverage_table(model.module, model.setup, model.cells, "adt", test,
                           obs_names=masked.obs_names,
                           calibration=model.calibrations["adt"]).set_index("nominal")
    for level in (0.8, 0.9, 0.95):
        assert abs(table.loc[level, "calibrated"] - level) <= 0.03, table


@pytest.mark.slow
def test_learned_priors_cost_less_kl_than_the_standard_normal():
    mdata = md.read_h5mu(shared_file(CITE))
    kl = {}
    for prior in ("normal", "mog", "vamp"):
        model = omnivae.Model(mdata, batch_key="batch", prior=prior, seed=0)
        model.train(progress_bar=False)
        kl[prior] = model.diagnostics(warn=False).loc["joint", "kl"]
    assert kl["mog"] < kl["normal"] and kl["vamp"] < kl["normal"], kl


@pytest.mark.slow
def test_synthetic_cells_pass_closer_to_real_than_prior_draws():
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    from omnivae.model.synthetic import LatentDensity, sample_cells

    class PriorDraws:
        random_state = 0

        def sample(self, k):
            return np.random.default_rng(0).standard_normal((k, 20)), None

    mdata = md.read_h5mu(shared_file(CITE))
    model = omnivae.Model(mdata, batch_key="batch", seed=0)
    model.train(progress_bar=False)
    posterior = model.sample(mdata.n_obs, seed=0)
    density = model.latent_densities[("cell_type", 8)]
    prior = sample_cells(model.module, model.cells, model.setup, mdata.n_obs, LatentDensity(
        "cell_type", dict.fromkeys(density.mixtures, PriorDraws()), density.cells))

    def features(data, pcas):
        x = [np.log1p(data[m].X.toarray() / data[m].X.sum(1).A.clip(1) * 1e4) for m in pcas]
        return np.hstack([pcas[m].transform(v) for m, v in zip(pcas, x, strict=True)])

    pcas = {m: PCA(20, random_state=0).fit(
        np.log1p(mdata[m].X.toarray() / mdata[m].X.sum(1).A.clip(1) * 1e4)) for m in ("rna", "adt")}
    real = features(mdata, pcas)
    accuracy = {}
    for name, fake in (("posterior", posterior), ("prior", prior)):
        x = np.vstack([real, features(fake, pcas)])
        y = np.r_[np.zeros(len(real)), np.ones(len(real))]
        accuracy[name] = cross_val_score(LogisticRegression(max_iter=3000), x, y, cv=5).mean()
    assert accuracy["posterior"] < 0.7 and accuracy["posterior"] < accuracy["prior"] - 0.1, accuracy
