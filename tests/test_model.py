"""User-facing model: training lowers the loss, embeddings, predictions, save/load, tools, CLI."""

from __future__ import annotations

import numpy as np
import pytest

import omnivae
from omnivae.cli import main


@pytest.fixture(scope="module")
def trained(small_sim):
    model = omnivae.Model(small_sim, batch_key="batch", n_latent=6, n_hidden=32)
    model.train(max_epochs=12, progress_bar=False)
    return model


def test_training_lowers_the_validation_elbo(trained):
    elbo = trained.history["validation_elbo"].to_numpy()
    assert elbo[-1] < elbo[0] * 0.9


def test_latent_covers_every_cell_and_is_deterministic(trained, small_sim):
    z = trained.get_latent_representation()
    assert z.shape == (small_sim.n_obs, 6)
    assert np.isfinite(z).all()
    np.testing.assert_array_equal(z, trained.get_latent_representation())


def test_predict_every_cell_including_those_lacking_the_target(trained, small_sim):
    pred = trained.predict("adt", n_samples=4)
    assert pred.shape == (small_sim.n_obs, small_sim["adt"].n_vars)
    np.testing.assert_allclose(pred.X.sum(1), 1.0, rtol=1e-4)
    lacking = ~small_sim.obs_names.isin(small_sim["adt"].obs_names)
    assert lacking.any() and (pred.obs["observed"].to_numpy() == ~lacking).all()
    assert (pred.layers["std"] > 0).all()


def test_unknown_target_is_a_clear_error(trained):
    with pytest.raises(KeyError, match="trained on modalities"):
        trained.predict("hic")


def test_save_load_round_trip_gives_identical_embeddings(trained, small_sim, tmp_path):
    trained.save(tmp_path / "m")
    loaded = omnivae.Model.load(tmp_path / "m", small_sim)
    np.testing.assert_array_equal(loaded.get_latent_representation(), trained.get_latent_representation())
    assert loaded.is_trained and len(loaded.history) == len(trained.history)
    with pytest.raises(FileExistsError):
        trained.save(tmp_path / "m")
    trained.save(tmp_path / "m", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temp folders left behind


def test_load_refuses_other_features(trained, small_sim, tmp_path):
    trained.save(tmp_path / "m")
    other = small_sim.copy()
    other.mod["rna"] = other["rna"][:, 1:].copy()
    other.update()
    with pytest.raises(ValueError, match="features"):
        omnivae.Model.load(tmp_path / "m", other)


def test_same_seed_same_embedding(small_sim):
    def run():
        model = omnivae.Model(small_sim, n_latent=3, n_hidden=16, seed=7)
        model.train(max_epochs=2, progress_bar=False)
        return model.get_latent_representation()

    np.testing.assert_array_equal(run(), run())


def test_integrate_and_impute_write_into_mudata(small_sim):
    mdata = small_sim.copy()
    model = omnivae.tl.integrate(mdata, batch_key="batch", n_latent=4, max_epochs=2,
                                 progress_bar=False, key_added="X_test", return_model=True)
    assert mdata.obsm["X_test"].shape == (mdata.n_obs, 4)
    assert mdata.uns["X_test"]["params"]["batch_key"] == "batch"
    omnivae.tl.impute(mdata, model, target="atac")
    assert mdata["atac_imputed"].n_obs == mdata.n_obs


def test_cli_fit_writes_embedding_and_predictions(small_sim, tmp_path, capsys):
    import mudata as md

    src, out = tmp_path / "in.h5mu", tmp_path / "out.h5mu"
    small_sim.write_h5mu(src)
    code = main(["fit", str(src), "-o", str(out), "--batch-key", "batch", "--max-epochs", "2",
                 "--n-latent", "4", "--no-progress", "--save-model", str(tmp_path / "model")])
    assert code == 0
    result = md.read_h5mu(out)
    assert result.obsm["X_omnivae"].shape == (small_sim.n_obs, 4)
    assert "omnivae_leiden" in result.obs and "adt_imputed" in result.mod
    assert (tmp_path / "model" / "omnivae.json").is_file()


def test_cli_reports_bad_input_without_traceback(small_sim, tmp_path, capsys):
    src = tmp_path / "in.h5mu"
    small_sim.write_h5mu(src)
    code = main(["fit", str(src), "-o", str(tmp_path / "o.h5mu"), "--batch-key", "donor", "--no-progress"])
    assert code == 2
    assert "donor" in capsys.readouterr().err
    assert not (tmp_path / "o.h5mu").exists()


def test_cli_help_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = capsys.readouterr().out
    for option in ("--modalities", "--batch-key", "--fusion", "--likelihood", "--max-epochs", "--layer",
                   "--batch-penalty", "--penalty-keys", "--penalty-label-key", "--mixture-sampling"):
        assert option in text


@pytest.mark.gpu
def test_gpu_training_matches_cpu_quality(small_sim):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    model = omnivae.Model(small_sim, batch_key="batch", n_latent=6, n_hidden=32)
    model.train(max_epochs=12, accelerator="gpu", devices=1, progress_bar=False)
    elbo = model.history["validation_elbo"].to_numpy()
    assert elbo[-1] < elbo[0] * 0.9
    pred = model.predict("adt", n_samples=3)
    np.testing.assert_allclose(pred.X.sum(1), 1.0, rtol=1e-4)
