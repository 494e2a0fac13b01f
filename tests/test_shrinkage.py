"""Cross-modal predictions shrunk toward the population profile (omnivae.model.prediction.shrinkage)."""

import numpy as np
import pytest

import omnivae
import omnivae.model.prediction.shrinkage
from omnivae.data.splits import withhold_modality
from omnivae.model.prediction.shrinkage import WEIGHTS, Shrinkage, fit_shrinkage, heldout_loglik


def _binarized_poisson_loglik(q: np.ndarray, counts: np.ndarray) -> float:
    y = counts > 0
    rate = np.clip(y.sum(1, keepdims=True) * q, 1e-8, None)
    return float(np.where(y, np.log(-np.expm1(-rate)), -rate).sum() / len(y))


@pytest.fixture(scope="module")
def unrelated():
    """RNA and ATAC of different cells (ATAC rows shuffled): RNA says nothing about ATAC, so
    any cell-to-cell difference in a predicted ATAC profile is memorised noise."""
    sim = omnivae.datasets.simulate(240, modalities=("rna", "atac"), missing_fraction=0,
                                    n_batches=1, seed=3)
    atac = sim["atac"]
    atac.X = atac.X[np.random.default_rng(0).permutation(atac.n_obs)]
    masked, truth = withhold_modality(sim, "atac", fraction=0.25, seed=0)
    model = omnivae.Model(masked, n_latent=6, seed=0)
    model.train(max_epochs=60, early_stopping=False, progress_bar=False, batch_probe_every=0)
    return model, masked, truth


def test_the_weight_shrinks_a_prediction_that_is_noise_and_helps_on_withheld_cells(unrelated):
    model, _, truth = unrelated
    fitted = model.shrinkage["atac"]
    assert fitted.n_cells > 0 and fitted.weight < 1.0
    shrunk = np.asarray(model.predict("atac", n_samples=5)[truth.obs_names].X)
    raw = np.asarray(model.predict("atac", n_samples=5, shrink=False)[truth.obs_names].X)
    np.testing.assert_allclose(shrunk.sum(1), 1.0, rtol=1e-4)
    np.testing.assert_allclose(shrunk, fitted.apply(raw), rtol=1e-5, atol=1e-8)
    counts = truth.X.toarray()
    # withheld cells were never seen: the shrunk prediction explains them better
    assert _binarized_poisson_loglik(shrunk, counts) > _binarized_poisson_loglik(raw, counts)


def test_cells_predicted_from_their_own_target_are_not_shrunk(unrelated):
    model = unrelated[0]
    raw = np.random.default_rng(0).dirichlet(np.ones(model.module.decoder("atac").head.out_features),
                                              size=3).astype(np.float32)
    t = model.setup.modalities.index("atac")
    mask = np.ones((3, len(model.setup.modalities)), dtype=bool)
    mask[1] = False
    mask[1, t] = True  # cell 1 has only ATAC: its prediction is a reconstruction
    out, _ = model.shrinkage["atac"].apply_cross_modal(raw, mask, t)
    np.testing.assert_array_equal(out[1], raw[1])
    np.testing.assert_allclose(out[[0, 2]], model.shrinkage["atac"].apply(raw[[0, 2]]))


def test_shrinkage_survives_save_and_load(unrelated, tmp_path):
    model, masked, _ = unrelated
    model.save(tmp_path / "m")
    loaded = omnivae.Model.load(tmp_path / "m", masked)
    assert loaded.shrinkage["atac"].weight == model.shrinkage["atac"].weight
    np.testing.assert_allclose(loaded.predict("atac").X, model.predict("atac").X, rtol=1e-5)


def test_no_validation_cells_means_no_shrinkage():
    sim = omnivae.datasets.simulate(80, modalities=("rna", "atac"), missing_fraction=0, seed=0)
    model = omnivae.Model(sim, n_latent=3)
    model.train(max_epochs=2, validation_fraction=0.0, progress_bar=False, batch_probe_every=0)
    assert model.shrinkage == {}
    assert model.predict("atac").uns["omnivae"]["shrinkage_weight"] == 1.0


def test_heldout_loglik_picks_the_population_profile_for_noise():
    rng = np.random.default_rng(0)
    profile = np.full(4, 0.25)
    predicted = rng.dirichlet(np.full(4, 0.3), size=200)  # confident and unrelated to the counts
    counts = rng.multinomial(20, profile, size=200).astype(float)
    ll = heldout_loglik(predicted, profile, counts, counts.sum(1), bernoulli=False)
    assert WEIGHTS[int(np.argmax(ll))] <= 0.1
    assert Shrinkage(1.0, profile, 0).apply(predicted) is predicted


def test_a_weight_is_fitted_on_at_most_max_validation_cells(unrelated, monkeypatch):
    model = unrelated[0]
    rows = np.arange(model.cells.n_cells)
    monkeypatch.setattr(omnivae.model.prediction.shrinkage, "MAX_VALIDATION_CELLS", 7)
    capped = fit_shrinkage(model.module, model.cells, "atac", rows, rows, seed=0)
    assert capped.n_cells == 7 and len(capped.loglik) == len(WEIGHTS)


def test_the_weight_is_fitted_on_the_cells_training_held_out(unrelated):
    from omnivae.train.loaders import split_cells

    model = unrelated[0]
    _, held_out = split_cells(model.cells.n_cells, 0.1, seed=0)  # train()'s defaults
    t = model.setup.modalities.index("atac")
    with_atac = int(model.cells.mask[held_out, t].sum())  # every cell here also has RNA
    assert 0 < with_atac < len(held_out)  # some held-out cells had their ATAC withheld
    assert model.shrinkage["atac"].n_cells == with_atac
