"""New cells through a trained Model (``get_latent_representation(mdata)``, ``predict``):
cells may lack any of the model's modalities (MuData membership, as in training), their
batches are coded as in training (one batch without ``batch_key``), unknown batch labels are
an error pointing to reference mapping, and modalities the model does not know are ignored
with a warning."""

from __future__ import annotations

import anndata as ad
import mudata as md
import numpy as np
import pytest

import omnivae
from omnivae.data.setup import refresh
from tests.conftest import shared_file

SMALL = {"n_latent": 4, "n_hidden": 16}


@pytest.fixture(scope="module")
def cells():
    """Training cells (paired) and 60 other cells (paired, with their truth)."""
    sim = omnivae.datasets.simulate(220, modalities=("rna", "adt"), n_batches=2,
                                    n_features={"rna": 120, "adt": 12}, missing_fraction=0,
                                    seed=3)
    return sim[:160].copy(), sim[160:].copy()


@pytest.fixture(scope="module", params=[None, "batch"])
def model(request, cells):
    model = omnivae.Model(cells[0], batch_key=request.param, **SMALL)
    model.train(max_epochs=2, progress_bar=False)
    return model


def _mosaic(new: md.MuData, n_paired: int) -> md.MuData:
    """``new`` with protein for its first ``n_paired`` cells only (membership, no zero rows)."""
    out = new.copy()
    out.mod["adt"] = out["adt"][:n_paired].copy()
    refresh(out)
    return out


def _peaks(new: md.MuData, n_cells: int | None = None) -> ad.AnnData:
    """A modality the model was not trained on, for the first ``n_cells`` cells of ``new``."""
    peaks = new["rna"][:n_cells, :30].copy()
    peaks.var_names = [f"peak-{i}" for i in range(30)]
    return peaks


def _rna_only(new: md.MuData) -> md.MuData:
    rna_only = md.MuData({"rna": new["rna"].copy()})
    rna_only.obs["batch"] = new.obs["batch"].to_numpy()
    return rna_only


def test_rna_only_new_cells_embed_as_cells_lacking_protein(model, cells):
    """With or without batch_key: the RNA-only cells' embedding is the one they get inside a
    mosaic MuData whose protein they are absent from, and differs from their paired one."""
    new = cells[1]
    z_rna = model.get_latent_representation(_rna_only(new))
    z_mosaic = model.get_latent_representation(_mosaic(new, 20))
    z_paired = model.get_latent_representation(new)
    assert z_rna.shape == (new.n_obs, model.config.n_latent)
    np.testing.assert_allclose(z_rna[20:], z_mosaic[20:], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(z_mosaic[:20], z_paired[:20], rtol=1e-5, atol=1e-6)
    assert np.abs(z_rna - z_paired).max(axis=1).min() > 1e-4  # protein changes every cell


def test_rna_only_new_cells_get_protein_predictions(model, cells):
    new = cells[1]
    pred = model.predict("adt", mdata=_rna_only(new))
    mosaic = model.predict("adt", mdata=_mosaic(new, 20))
    assert pred.shape == (new.n_obs, new["adt"].n_vars)
    assert list(pred.obs_names) == list(new.obs_names)
    assert not pred.obs["observed"].any() and mosaic.obs["observed"].sum() == 20
    assert np.isfinite(pred.X).all()
    np.testing.assert_allclose(pred.X.sum(axis=1), 1.0, rtol=1e-4)
    np.testing.assert_allclose(pred.X[20:], mosaic.X[20:], rtol=1e-5, atol=1e-7)


def test_a_modality_the_model_does_not_know_is_ignored_with_a_warning(model, cells):
    new = cells[1]
    extra = md.MuData({"rna": new["rna"].copy(), "adt": new["adt"].copy(),
                       "atac": _peaks(new)})
    extra.obs["batch"] = new.obs["batch"].to_numpy()
    with pytest.warns(UserWarning, match=r"Modalities \['atac'\] are not among the model's"):
        z = model.get_latent_representation(extra)
    np.testing.assert_allclose(z, model.get_latent_representation(new), rtol=1e-5, atol=1e-6)
    rna_and_extra = md.MuData({"rna": new["rna"].copy(), "atac": _peaks(new)})
    rna_and_extra.obs["batch"] = new.obs["batch"].to_numpy()
    with pytest.warns(UserWarning, match="ignored"):
        z = model.get_latent_representation(rna_and_extra)
    np.testing.assert_allclose(z, model.get_latent_representation(_rna_only(new)), rtol=1e-5,
                               atol=1e-6)
    only_extra = md.MuData({"rna": new["rna"][:10].copy(), "atac": _peaks(new)})
    only_extra.obs["batch"] = new.obs["batch"].to_numpy()
    with pytest.warns(UserWarning, match="ignored"), \
            pytest.raises(ValueError, match=r"50 cells have no data in any of the modalities"):
        model.get_latent_representation(only_extra)


def test_unknown_batch_labels_of_new_cells_are_an_error_that_points_to_mapping(cells):
    train, new = cells
    model = omnivae.Model(train, batch_key="batch", **SMALL)
    for unseen in (_rna_only(new), new.copy()):  # cells lacking protein or not: one rule
        unseen.obs["batch"] = ["lab-9"] * 10 + list(new.obs["batch"][10:])
        with pytest.raises(ValueError, match=(
                r"Labels \['lab-9'\] in column 'batch' were not seen in training \(known: "
                r"\['batch-0', 'batch-1'\]; 10 of 60 cells have them\)\. .* never saw: map "
                r"them with omnivae\.Model\.load_query")):
            model.get_latent_representation(unseen)


def test_backed_new_cells_lacking_a_modality_are_a_clear_error(model, cells, tmp_path):
    path = tmp_path / "rna_only.h5mu"
    _rna_only(cells[1]).write(path)
    with pytest.raises(ValueError, match=r"lack the model's modalities \['adt'\].*read_h5mu"):
        model.get_latent_representation(md.read_h5mu(path, backed=True))
    z = model.get_latent_representation(md.read_h5mu(path))
    assert z.shape == (cells[1].n_obs, model.config.n_latent)


@pytest.mark.realdata
def test_rna_only_cells_of_the_cite_starter_embed_without_batch_key():
    """The report's case: a model trained without batch_key on paired CITE-seq cells embeds
    and predicts other cells from their RNA alone."""
    mdata = md.read_h5mu(shared_file("neurips2021_bmmc_cite_starter"))
    order = np.random.default_rng(0).permutation(mdata.n_obs)
    train, new = mdata[np.sort(order[:450])].copy(), mdata[np.sort(order[450:])].copy()
    model = omnivae.Model(train, n_latent=8, n_hidden=32, seed=7)
    model.train(max_epochs=2, progress_bar=False)
    rna_only = md.MuData({"rna": new["rna"].copy()})
    z = model.get_latent_representation(rna_only)
    z_mosaic = model.get_latent_representation(_mosaic(new, 50))
    np.testing.assert_allclose(z[50:], z_mosaic[50:], rtol=1e-5, atol=1e-6)
    assert np.abs(z - model.get_latent_representation(new)).max(axis=1).min() > 1e-4
    pred = model.predict("adt", mdata=rna_only)
    assert pred.shape == (new.n_obs, 134) and np.isfinite(pred.X).all()
