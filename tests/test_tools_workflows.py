"""omnivae.tl: predictions with intervals, Bayesian differential expression, loggers."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

import omnivae


@pytest.fixture(scope="module")
def trained():
    """600 simulated cells (RNA 200 genes + protein, 3 cell types, 2 batches, 30 % of the
    cells missing one modality) and a model trained on them."""
    sim, truth = omnivae.datasets.simulate(
        600, modalities=("rna", "adt"), n_batches=2, n_cell_types=3, n_features={"rna": 200},
        missing_fraction=0.3, seed=3, return_truth=True)
    model = omnivae.Model(sim, batch_key="batch", n_latent=8, seed=0)
    model.train(max_epochs=40, progress_bar=False)
    return sim, truth, model


def _true_lfc(truth, modality, a, b):
    x = truth[modality].X.toarray()
    x = x / x.sum(axis=1, keepdims=True).clip(1)
    types = truth[modality].obs["cell_type"].astype(str).to_numpy()
    eps = 0.01 / x.shape[1]
    return np.log2(x[types == a].mean(0) + eps) - np.log2(x[types == b].mean(0) + eps)


@pytest.mark.parametrize("modality", ["rna", "adt"])
def test_differential_expression_recovers_simulated_changes(trained, modality):
    sim, truth, model = trained
    de = omnivae.tl.differential_expression(sim, model, groupby="cell_type", group1="type-0",
                                            group2="type-1", modality=modality, seed=0)
    true_lfc = _true_lfc(truth, modality, "type-0", "type-1")
    de = de.loc[truth[modality].var_names]
    assert spearmanr(de["lfc_mean"], true_lfc)[0] > 0.8
    changed, unchanged = np.abs(true_lfc) > 1, np.abs(true_lfc) < 0.5
    if unchanged.sum() >= 3:
        keep = changed | unchanged
        assert roc_auc_score(changed[keep], de["proba_de"].to_numpy()[keep]) > 0.8
    called = de["is_de_fdr"].to_numpy()
    assert called.sum() > 0 and (np.abs(true_lfc[called]) > 0.25).mean() > 0.85  # delta = 0.25
    params = sim.uns["omnivae_de"]["params"]
    assert params["modality"] == modality and params["group2"] == "type-1"
    # cells lacking the modality are included (imputed): every cell of both groups counts
    types = sim.obs["cell_type"].astype(str)
    assert params["cells"] == [int((types == "type-0").sum()), int((types == "type-1").sum())]


def test_differential_expression_null_calls_little(trained):
    sim, _, model = trained
    null = sim.copy()
    type0 = null.obs_names[null.obs["cell_type"] == "type-0"]
    halves = pd.Series("other", index=null.obs_names)
    halves[type0[::2]], halves[type0[1::2]] = "half-a", "half-b"
    null.obs["halves"] = halves
    de = omnivae.tl.differential_expression(null, model, groupby="halves", group1="half-a",
                                            group2="half-b", modality="rna", delta=0.5)
    assert de["is_de_fdr"].mean() < 0.05
    with pytest.raises(ValueError, match="No cells with halves == 'nope'"):
        omnivae.tl.differential_expression(null, model, groupby="halves", group1="nope",
                                           modality="rna")


def test_predict_writes_modality_with_intervals(trained):
    sim, truth, model = trained
    out = omnivae.tl.predict(sim, model, target="adt", n_samples=60, interval=0.9, copy=True)
    assert "adt_imputed" not in sim.mod  # copy=True leaves the input alone
    imputed = out["adt_imputed"]
    assert imputed.n_obs == sim.n_obs and list(imputed.var_names) == list(sim["adt"].var_names)
    assert imputed.obs["observed"].sum() == sim["adt"].n_obs
    lower, upper, mean = imputed.layers["lower"], imputed.layers["upper"], imputed.X
    assert (lower <= mean + 1e-7).mean() > 0.99 and (mean <= upper + 1e-7).mean() > 0.99
    assert out.uns["adt_imputed"]["params"]["interval"] == 0.9
    omnivae.tl.predict(sim, model, target="adt", n_samples=60, interval=0.9, predictive=True,
                       key_added="adt_predictive")
    width = upper - lower
    predictive_width = sim["adt_predictive"].layers["upper"] - sim["adt_predictive"].layers["lower"]
    assert np.median(predictive_width) > np.median(width)  # counting noise widens intervals
    # withheld-looking cells: prediction correlates with the true protein of cells lacking it
    missing = sim.uns["simulation"]["missing"]["adt"]
    rows = sim.obs_names.get_indexer(missing)
    x = truth["adt"][missing].X.toarray()
    x = x / x.sum(1, keepdims=True)
    r = np.mean([np.corrcoef(sim["adt_predictive"].X[rows, j], x[:, j])[0, 1]
                 for j in range(x.shape[1])])
    assert r > 0.3
    with pytest.raises(ValueError, match="interval"):
        omnivae.tl.predict(sim, model, target="adt", interval=0.9)


def test_csv_logger_writes_every_loss_term(tmp_path):
    sim = omnivae.datasets.simulate(80, modalities=("rna",), seed=0)
    model = omnivae.Model(sim, n_latent=3)
    model.train(max_epochs=2, progress_bar=False, logger="csv", log_dir=tmp_path)
    metrics = pd.read_csv(next(tmp_path.rglob("metrics.csv")))
    assert {"train_elbo", "validation_elbo", "train_kl"} <= set(metrics.columns)
    with pytest.raises(ValueError, match="Unknown logger"):
        model.train(max_epochs=1, logger="wandb-typo")
    from lightning.pytorch.loggers import CSVLogger

    from omnivae.train.loggers import make_logger

    mine = CSVLogger(str(tmp_path / "mine"))
    assert make_logger(mine) is mine  # any Lightning Logger passes through
    assert make_logger(False) is False and make_logger(True).__class__ is CSVLogger
    if importlib.util.find_spec("tensorboard") is not None:
        assert type(make_logger("TensorBoard", tmp_path)).__name__ == "TensorBoardLogger"


def test_a_new_model_ignores_predicted_modalities():
    """tl.predict writes "adt_imputed" (proportions) into the MuData: a model built on it
    afterwards uses the measured modalities only (the README quick start does this)."""
    sim = omnivae.datasets.simulate(80, modalities=("rna", "adt"), seed=0)
    model = omnivae.Model(sim, n_latent=3)
    omnivae.tl.predict(sim, model, target="adt")
    assert "adt_imputed" in sim.mod
    again = omnivae.Model(sim, n_latent=3)
    assert again.setup.modalities == ("rna", "adt")
