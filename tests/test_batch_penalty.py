"""The batch mutual-information penalty, used through omnivae.Model on a strong batch effect."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

import omnivae
from omnivae.data.setup import obs_column
from omnivae.model.choices import DEFAULT_BATCH_PENALTY, DEFAULT_PENALTY_WEIGHTS


@pytest.fixture(scope="module")
def strong_batch():
    sim = omnivae.datasets.simulate(900, modalities=("rna", "adt"), n_batches=3, n_cell_types=5,
                                    batch_effect=1.5, missing_fraction=0.1, seed=3)
    sim.obs["site"] = np.where(obs_column(sim, "batch").astype(str) == "batch-0", "A", "B")
    return sim


def _accuracy(z, labels):
    return cross_val_score(LogisticRegression(max_iter=2000), z, labels, cv=3).mean()


def _fit(mdata, **kwargs):
    model = omnivae.Model(mdata, batch_key="batch", n_latent=10, seed=0, **kwargs)
    model.train(max_epochs=40, progress_bar=False)
    return model


@pytest.fixture(scope="module")
def unpenalised(strong_batch):
    model = _fit(strong_batch, batch_penalty=None)
    z = model.get_latent_representation()
    return {"batch": _accuracy(z, obs_column(strong_batch, "batch").astype(str)),
            "type": _accuracy(z, obs_column(strong_batch, "cell_type").astype(str)),
            "mi": model.history["validation_mi_batch"].dropna().iloc[-1]}


@pytest.mark.parametrize("penalty", ["hsic", "mmd", "adversarial", "pairwise_kl"])
def test_penalty_removes_batch_from_latent_and_keeps_cell_types(strong_batch, unpenalised, penalty):
    # a batch effect this strong, removed in 40 epochs, takes ten times the default weight
    # (the defaults are chosen on real data: benchmarks/results/batch_penalty_curve.md)
    model = _fit(strong_batch, batch_penalty=penalty,
                 penalty_weight=10 * DEFAULT_PENALTY_WEIGHTS[penalty])
    z = model.get_latent_representation()
    batch_acc = _accuracy(z, obs_column(strong_batch, "batch").astype(str))
    type_acc = _accuracy(z, obs_column(strong_batch, "cell_type").astype(str))
    assert unpenalised["batch"] > 0.85  # the batch effect is strong without the penalty
    assert batch_acc < unpenalised["batch"] - 0.25, (penalty, batch_acc, unpenalised)
    assert type_acc > unpenalised["type"] - 0.06, (penalty, type_acc, unpenalised)
    assert "train_batch_penalty" in model.history and np.isfinite(model.history["train_batch_penalty"]).all()
    # the held-out probe logged each 5th epoch sees the batch information go down
    mi = model.history["validation_mi_batch"]
    assert mi.notna().sum() >= 8 and mi.isna().sum() > 0
    assert mi.dropna().iloc[-1] < 0.5 * unpenalised["mi"], (mi.dropna().iloc[-1], unpenalised["mi"])


def test_history_plot_shows_the_probe(strong_batch, unpenalised, tmp_path):
    from omnivae.pl import plot_history

    model = _fit(strong_batch, batch_penalty="mmd", penalty_weight=1000.0)
    path = plot_history(model.history, tmp_path / "history.png")
    assert path.stat().st_size > 10_000
    assert unpenalised["mi"] > 0.5  # nats; log(3) = 1.10 is the most there is


def test_several_batch_keys_and_label_conditioning_round_trip(strong_batch, tmp_path):
    model = omnivae.Model(strong_batch, batch_key="batch", batch_penalty="hsic",
                          penalty_keys=["batch", "site"], penalty_label_key="cell_type",
                          n_latent=4, seed=0)
    assert model.config.penalty_n_batches == (3, 2) and model.config.penalty_n_labels == 5
    model.train(max_epochs=2, progress_bar=False)
    model.save(tmp_path / "m")
    loaded = omnivae.Model.load(tmp_path / "m", strong_batch)
    assert loaded.setup.penalty_keys == ("batch", "site")
    np.testing.assert_array_equal(loaded.get_latent_representation(), model.get_latent_representation())


def test_adversarial_classifiers_are_trained_and_saved(strong_batch, tmp_path):
    model = omnivae.Model(strong_batch, batch_key="batch", batch_penalty="adversarial", n_latent=4)
    before = [p.detach().clone() for p in model.module.batch_classifiers.parameters()]
    model.train(max_epochs=2, progress_bar=False)
    after = list(model.module.batch_classifiers.parameters())
    assert any(not np.allclose(a.detach().numpy(), b.numpy()) for a, b in zip(after, before, strict=True))
    assert (model.history["train_classifier_loss"] > 0).all()


def test_penalty_argument_errors(strong_batch):
    with pytest.raises(ValueError, match="Unknown penalty"):
        omnivae.Model(strong_batch, batch_key="batch", batch_penalty="mine")
    with pytest.raises(ValueError, match="needs penalty_keys"):
        omnivae.Model(strong_batch, batch_penalty="hsic")
    with pytest.raises(ValueError, match="need batch_penalty"):
        omnivae.Model(strong_batch, batch_key="batch", batch_penalty=None, penalty_keys=["site"])
    with pytest.raises(KeyError, match="donor"):
        omnivae.Model(strong_batch, batch_key="batch", batch_penalty="mmd", penalty_keys=["donor"])


def test_penalty_name_is_case_insensitive_everywhere(strong_batch):
    model = omnivae.Model(strong_batch, batch_key="batch", batch_penalty="Adversarial", n_latent=4)
    assert model.config.batch_penalty == "adversarial"
    assert len(model.module.batch_classifiers) == 1  # the classifier exists for the mixed-case name


def test_default_is_the_curves_choice_when_there_are_batches(strong_batch):
    model = omnivae.Model(strong_batch, batch_key="batch", n_latent=4)
    assert (model.config.batch_penalty, model.config.penalty_weight) == (
        DEFAULT_BATCH_PENALTY, DEFAULT_PENALTY_WEIGHTS[DEFAULT_BATCH_PENALTY])
    assert model.setup.penalty_keys == ("batch",)
    for off in (None, "none", "None"):
        assert omnivae.Model(strong_batch, batch_key="batch", batch_penalty=off,
                             n_latent=4).config.batch_penalty is None
    assert omnivae.Model(strong_batch, n_latent=4).config.batch_penalty is None  # no batches
    one_batch = strong_batch[obs_column(strong_batch, "batch").astype(str) == "batch-0"].copy()
    assert omnivae.Model(one_batch, batch_key="batch", n_latent=4).config.batch_penalty is None
    explicit = omnivae.Model(strong_batch, batch_key="batch", penalty_weight=3.0, n_latent=4)
    assert (explicit.config.batch_penalty, explicit.config.penalty_weight) == ("mmd", 3.0)
