"""The model family through the public API: training on real data with missing modalities,
embeddings, cross-modal predictions, save/load, name resolution, CLI and tools."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import omnivae
from omnivae.cli import main
from omnivae.module.models import MODELS, OBJECTIVES, resolve_model

OPTIONS = {"mmvae": {"n_samples": 2}, "mmvae+": {"n_samples": 2, "n_private": 3},
           "cmvae": {"n_samples": 2, "n_private": 3, "n_clusters": 8}}


@pytest.fixture(scope="module")
def mosaic():
    """240 cells of the PBMC mosaic: 160 paired, 40 RNA-only, 40 ADT-only."""
    try:
        mdata = omnivae.datasets.load("quickstart_pbmc_mosaic", download=False)
    except FileNotFoundError:
        pytest.skip("shared dataset quickstart_pbmc_mosaic not available")
    names = mdata.obs_names
    rna, adt = names.isin(mdata["rna"].obs_names), names.isin(mdata["adt"].obs_names)
    rng = np.random.default_rng(0)
    pick = np.concatenate([rng.choice(np.where(a)[0], k, replace=False)
                           for a, k in ((rna & adt, 160), (rna & ~adt, 40), (~rna & adt, 40))])
    return mdata[names[np.sort(pick)]].copy()


@pytest.fixture(scope="module")
def paired(mosaic):
    names = mosaic.obs_names
    keep = names.isin(mosaic["rna"].obs_names) & names.isin(mosaic["adt"].obs_names)
    return mosaic[names[keep]].copy()


@pytest.fixture(scope="module", params=MODELS)
def trained(request, mosaic, paired):
    name = request.param
    data = paired if OBJECTIVES[name].needs_complete_cells else mosaic
    model = omnivae.Model(data, model=name, batch_key="batch", n_latent=6, n_hidden=32, seed=0,
                          model_options=OPTIONS.get(name))
    model.train(15, batch_size=64, progress_bar=False, early_stopping=False,
                batch_probe_every=0)
    return name, data, model


@pytest.mark.realdata
def test_training_lowers_the_objective_on_real_data(trained):
    name, _, model = trained
    history = model.history
    assert model.config.model == name
    assert history["train_elbo"].iloc[-1] < 0.8 * history["train_elbo"].iloc[0]
    assert history["validation_elbo"].iloc[-1] < history["validation_elbo"].iloc[0]


@pytest.mark.realdata
def test_embeds_and_predicts_every_cell_including_those_lacking_a_modality(trained):
    _, data, model = trained
    z = model.get_latent_representation()
    assert z.shape == (data.n_obs, 6) and np.isfinite(z).all()
    assert z.std(axis=0).min() > 0  # cells are told apart
    if model.config.model == "cmvae":  # cluster posteriors, from a trained cluster prior
        probs = model.module.objective.cluster_probabilities(torch.from_numpy(z))
        torch.testing.assert_close(probs.sum(1), torch.ones(len(z)))
        untrained = omnivae.Model(data, model="cmvae", batch_key="batch", n_latent=6,
                                  n_hidden=32, seed=0, model_options=OPTIONS["cmvae"])
        assert not torch.allclose(untrained.module.objective.cluster_means,
                                  model.module.objective.cluster_means)
    for target in ("rna", "adt"):
        pred = model.predict(target, n_samples=2)
        assert pred.shape == (data.n_obs, data[target].n_vars)
        np.testing.assert_allclose(pred.X.sum(axis=1), 1.0, rtol=1e-4)
        assert np.isfinite(pred.layers["std"]).all()
        assert pred.X.std(axis=0).max() > 0  # predictions depend on the cell
        assert pred.obs["observed"].sum() == data[target].n_obs


@pytest.mark.realdata
def test_save_load_round_trip_gives_identical_embeddings_and_predictions(trained, tmp_path):
    _, data, model = trained
    model.save(tmp_path / "m")
    loaded = omnivae.Model.load(tmp_path / "m", data)
    assert loaded.config == model.config
    np.testing.assert_array_equal(loaded.get_latent_representation(),
                                  model.get_latent_representation())
    np.testing.assert_array_equal(loaded.predict("adt").X, model.predict("adt").X)


def test_model_and_fusion_resolution():
    assert resolve_model(None, None) == ("mopoe", "mopoe")
    assert resolve_model(None, "poe") == ("elbo", "poe")  # what fusion="poe" always trained
    assert resolve_model("MVAE", "PoE") == ("mvae", "poe")
    assert resolve_model("elbo", "moe") == ("elbo", "moe")
    assert resolve_model("early", None) == ("early", "poe")
    with pytest.raises(ValueError, match=r"aggregates with fusion='poe'.*contradicts"):
        resolve_model("mvae", "moe")
    with pytest.raises(ValueError, match=r"fuses no experts"):
        resolve_model("early", "mopoe")
    with pytest.raises(ValueError, match=r"Unknown model 'vae'.*mmvae\+"):
        resolve_model("vae", None)


def test_bad_model_options_and_incomplete_cells_are_clear_errors():
    sim = omnivae.datasets.simulate(60, modalities=("rna", "adt"), missing_fraction=0.2, seed=0)
    with pytest.raises(ValueError, match=r"Unknown model_options \['k'\].*n_samples"):
        omnivae.Model(sim, model="mmvae", model_options={"k": 3})
    with pytest.raises(ValueError, match=r"estimator"):
        omnivae.Model(sim, model="mmvae", model_options={"estimator": "vimco"})
    with pytest.raises(ValueError, match=r"jmvae.*lack one"):
        omnivae.Model(sim, model="jmvae")


def test_models_saved_before_the_family_load_as_the_generic_elbo(tmp_path):
    sim = omnivae.datasets.simulate(80, modalities=("rna", "adt"), seed=0)
    model = omnivae.Model(sim, fusion="poe", n_latent=3, n_hidden=16)
    model.train(2, progress_bar=False)
    model.save(tmp_path / "m")
    meta_file = tmp_path / "m" / "omnivae.json"
    meta = json.loads(meta_file.read_text())
    del meta["module"]["model"], meta["module"]["model_options"]  # an older file
    del meta["description_sha256"]  # (older files had no checksum of the description)
    meta_file.write_text(json.dumps(meta))
    loaded = omnivae.Model.load(tmp_path / "m", sim)
    assert (loaded.config.model, loaded.config.fusion) == ("elbo", "poe")
    np.testing.assert_array_equal(loaded.get_latent_representation(),
                                  model.get_latent_representation())


def test_cli_and_integrate_take_a_model_name(tmp_path, capsys):
    sim = omnivae.datasets.simulate(60, modalities=("rna", "adt"), seed=0)
    src = tmp_path / "in.h5mu"
    sim.write_h5mu(src)
    code = main(["fit", str(src), "-o", str(tmp_path / "out.h5mu"), "--model", "mvtcae",
                 "--max-epochs", "1", "--n-latent", "3", "--no-progress", "--no-impute",
                 "--save-model", str(tmp_path / "model")])
    assert code == 0
    meta = json.loads((tmp_path / "model" / "omnivae.json").read_text())
    assert meta["module"]["model"] == "mvtcae"
    assert main(["fit", str(src), "-o", str(tmp_path / "x.h5mu"), "--model", "mmvae",
                 "--fusion", "poe"]) == 2
    assert "contradicts" in capsys.readouterr().err
    omnivae.tl.integrate(sim, model="early", n_latent=3, max_epochs=1, progress_bar=False)
    assert sim.uns["X_omnivae"]["params"]["model"] == "early"
    assert sim.obsm["X_omnivae"].shape == (60, 3)


@pytest.mark.realdata
def test_nexus_latent_survives_the_default_batch_penalty():
    """On RNA + ATAC with batches, the MMD penalty on the embedding (the default) outweighs the
    top-level term at MultiVae's ``gamma=1``: the nexus latent collapses onto the prior (no
    active unit). The default ``gamma`` keeps it organised."""
    try:
        mdata = omnivae.datasets.load("neurips2021_bmmc_multiome_starter", download=False)
    except FileNotFoundError:
        pytest.skip("shared dataset neurips2021_bmmc_multiome_starter not available")
    active = {}
    for options in ({"gamma": 1.0}, None):
        model = omnivae.Model(mdata, model="nexus", batch_key="batch", seed=0,
                              model_options=options)
        assert model.config.batch_penalty == "mmd"
        model.train(30, progress_bar=False, early_stopping=False)
        latent = model.get_latent_representation()
        active[options is None] = int((latent.var(axis=0) > 0.01).sum())
    assert active[False] == 0
    assert active[True] >= 10
