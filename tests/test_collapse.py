"""Posterior-collapse diagnostics: measurements, history columns, warnings."""

from __future__ import annotations

import warnings

import pytest
import torch

import omnivae
from omnivae.model.diagnostics import PosteriorCollapseWarning
from omnivae.module.collapse import active_units, precision_shares


@pytest.fixture(scope="module")
def trained():
    sim = omnivae.datasets.simulate(300, modalities=("rna", "adt"), n_cell_types=4,
                                    missing_fraction=0.0, seed=3)
    model = omnivae.Model(sim, n_latent=4, seed=0)
    model.train(max_epochs=40, progress_bar=False)
    return sim, model


def test_active_units_follow_the_covariance_criterion():
    means = torch.zeros(100, 3)
    means[:, 0] = torch.linspace(-1, 1, 100)  # variance ~0.34: active
    means[:, 1] = torch.linspace(-0.05, 0.05, 100)  # variance ~0.001: inactive
    assert active_units(means) == 1
    assert active_units(means, threshold=1e-4) == 2


def test_precision_shares_sum_with_the_prior_to_one():
    logvar = torch.randn(3, 10, 4)
    shares = precision_shares(logvar, torch.ones(10, 3, dtype=torch.bool))
    prior = (1 / (1 + torch.exp(-logvar).sum(0))).mean()
    assert torch.isclose(shares.sum() + prior, torch.tensor(1.0), atol=1e-5)


def test_history_tracks_collapse_terms_every_epoch(trained):
    _, model = trained
    for column in ("validation_kl_rna", "validation_kl_adt", "validation_precision_share_adt",
                   "validation_active_units", "train_active_units_rna"):
        assert model.history[column].notna().all(), column
    assert model.history["validation_active_units"].iloc[-1] >= 2


def test_healthy_model_has_no_warnings_and_uses_every_modality(trained):
    _, model = trained
    with warnings.catch_warnings():
        warnings.simplefilter("error", PosteriorCollapseWarning)
        table = model.diagnostics()
    assert list(table.index) == ["rna", "adt", "joint"]
    assert (table.loc[["rna", "adt"], "decoder_gain"] > 0.005).all()
    assert (table.loc[["rna", "adt"], "precision_share"] > 0.02).all()
    assert table.loc["joint", "active_units"] >= 2
    assert table.attrs["warnings"] == []


def test_a_decoder_that_ignores_z_is_reported(trained):
    sim, model = trained
    broken = omnivae.Model(sim, n_latent=4, seed=0)
    broken.module.load_state_dict(model.module.state_dict())
    with torch.no_grad():  # cut z out of the protein decoder
        broken.module.decoder("adt").body.layers[0].weight[:, :4] = 0.0
    with pytest.warns(PosteriorCollapseWarning, match="decoder of 'adt' ignores the latent"):
        table = broken.diagnostics()
    assert abs(table.loc["adt", "decoder_gain"]) < 1e-6


def test_a_modality_ignored_by_the_joint_posterior_is_reported(trained):
    sim, model = trained
    broken = omnivae.Model(sim, n_latent=4, seed=0)
    broken.module.load_state_dict(model.module.state_dict())
    with torch.no_grad():  # protein expert claims almost no precision
        broken.module.encoders["adt"].logvar.bias.fill_(8.0)
        broken.module.encoders["adt"].logvar.weight.zero_()
    with pytest.warns(PosteriorCollapseWarning, match="joint posterior ignores 'adt'"):
        table = broken.diagnostics()
    assert table.loc["adt", "precision_share"] < 0.02


def test_plot_diagnostics_writes_a_figure(trained, tmp_path):
    from omnivae.pl import plot_diagnostics

    fig = plot_diagnostics(trained[1].history, path=tmp_path / "plots" / "d.png")
    assert (tmp_path / "plots" / "d.png").stat().st_size > 5000
    assert "share of the joint precision" in [ax.get_title() for ax in fig.axes]
    with pytest.raises(ValueError, match="train the model first"):
        plot_diagnostics(trained[1].history[["validation_elbo"]])
