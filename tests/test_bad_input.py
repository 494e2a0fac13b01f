"""Every bad-input case of docs/reliability.md: correct handling, or an error naming what is
wrong, where (modality, cells, features, column) and the fix."""

from __future__ import annotations

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import omnivae
from omnivae.data.setup import refresh, setup_mudata

TINY = {"n_latent": 3, "n_hidden": 8}


def _mdata(rna=None, adt=None, rna_cells=None, adt_cells=None, batch=True) -> md.MuData:
    """RNA on cells c0..c5, protein on c2..c7 (so c0, c1 lack protein, c6, c7 lack RNA)."""
    rng = np.random.default_rng(0)
    rna = rng.poisson(3, (6, 5)).astype(np.float32) if rna is None else rna
    adt = rng.poisson(20, (6, 4)).astype(np.float32) if adt is None else adt
    rna_cells = rna_cells or [f"c{i}" for i in range(rna.shape[0])]
    adt_cells = adt_cells or [f"c{i + 2}" for i in range(adt.shape[0])]
    a = ad.AnnData(rna, obs=pd.DataFrame(index=rna_cells),
                   var=pd.DataFrame(index=[f"g{i}" for i in range(rna.shape[1])]))
    b = ad.AnnData(adt, obs=pd.DataFrame(index=adt_cells),
                   var=pd.DataFrame(index=[f"p{i}" for i in range(adt.shape[1])]))
    mdata = md.MuData({"rna": a, "adt": b})
    if batch:
        mdata.obs["batch"] = ["x", "y"] * (mdata.n_obs // 2) + ["x"] * (mdata.n_obs % 2)
    return mdata


def _train(mdata, **kwargs) -> omnivae.Model:
    model = omnivae.Model(mdata, **{**TINY, **kwargs})
    model.train(max_epochs=2, progress_bar=False, batch_size=4)
    return model


# --------------------------------------------------------------------------- counts


@pytest.mark.parametrize("likelihood", ["nb", "zinb", "poisson", "nb_mixture"])
@pytest.mark.parametrize(("value", "what"), [
    (0.5, "non-integer values"), (-2.0, "negative values"), (np.nan, "NaN or infinite"),
    (np.inf, "NaN or infinite"), (-np.inf, "NaN or infinite"),
])
@pytest.mark.parametrize("storage", [np.asarray, sp.csr_matrix])
def test_bad_counts_name_modality_cells_and_fix(likelihood, value, what, storage):
    rna = np.ones((6, 5), np.float32)
    rna[3, 1] = value
    mdata = _mdata(rna=storage(rna))
    with pytest.raises(ValueError, match=what) as err:
        setup_mudata(mdata, likelihoods={"rna": likelihood})
    text = str(err.value)
    assert "'rna'" in text and "'c3'" in text and f"'{likelihood}'" in text
    assert "layer=" in text or "remove or fix" in text  # the fix


def test_bad_counts_in_a_layer_name_the_layer():
    mdata = _mdata()
    counts = mdata["rna"].X.copy()
    counts[0, 0] = 0.25
    mdata["rna"].layers["counts"] = counts
    with pytest.raises(ValueError, match="layer 'counts'"):
        setup_mudata(mdata, layer={"rna": "counts", "adt": None})


def test_bernoulli_accepts_non_integer_non_negative_values():
    rna = np.full((6, 5), 0.3, np.float32)
    data, _ = setup_mudata(_mdata(rna=rna), likelihoods={"rna": "bernoulli"})
    assert data.counts["rna"].nnz == 30


def test_non_numeric_matrix_is_a_clear_error():
    mdata = _mdata()
    mdata["adt"].X = mdata["adt"].X.astype(str).astype(object)
    with pytest.raises(ValueError, match=r"'adt'.*not numbers"):
        setup_mudata(mdata)


def test_all_zero_cells_and_features_train_to_finite_results():
    rna = np.random.default_rng(1).poisson(3, (6, 5)).astype(np.float32)
    rna[2] = 0  # an observed cell with no counts: data, not a missing modality
    rna[:, 4] = 0  # a feature never detected
    mdata = _mdata(rna=rna)
    model = _train(mdata)
    assert model.cells.mask[list(mdata.obs_names).index("c2"), 0]
    z = model.get_latent_representation()
    pred = model.predict("rna")
    assert np.isfinite(z).all() and np.isfinite(pred.X).all()
    assert np.isfinite(model.history["train_loss"]).all()


# --------------------------------------------------------------------------- names and shapes


def test_duplicate_cell_names_are_an_error():
    mdata = _mdata()
    with pytest.raises(ValueError, match=r"Cell names are not unique.*obs_names_make_unique"):
        setup_mudata(md.MuData({"rna": mdata["rna"], "rna2": mdata["rna"][[0, 0, 1]].copy()}))


def test_duplicate_feature_names_are_an_error():
    mdata = _mdata()
    mdata["adt"].var_names = ["p0", "p0", "p1", "p2"]
    with pytest.raises(ValueError, match=r"'adt' has duplicate.*var_names_make_unique"):
        setup_mudata(mdata)


def test_same_feature_name_in_two_modalities_is_fine():
    mdata = _mdata()
    mdata["adt"].var_names = ["g0", "g1", "p2", "p3"]  # e.g. a gene and its protein
    refresh(mdata)
    _, info = setup_mudata(mdata)
    assert info.var_names["adt"][:2] == ["g0", "g1"]


def test_modality_with_no_features_or_no_cells():
    mdata = _mdata()
    mdata.mod["adt"] = mdata["adt"][:, []].copy()
    refresh(mdata)
    with pytest.raises(ValueError, match="'adt' has no features; drop it with modalities="):
        setup_mudata(mdata)
    mdata = _mdata()
    with pytest.raises(ValueError, match="'adt' has no cells"):
        setup_mudata(md.MuData({"rna": mdata["rna"], "adt": mdata["adt"][[]].copy()}))


def test_cells_without_any_selected_modality():
    with pytest.raises(ValueError, match=r"2 cells have no data.*'c6'.*drop them"):
        setup_mudata(_mdata(), modalities=["rna"])


def test_a_single_cell_trains_and_embeds():
    mdata = _mdata(rna=np.array([[1, 0, 3, 2, 0]], np.float32), adt=np.array([[5, 9, 0, 1]], np.float32),
                   rna_cells=["only"], adt_cells=["only"])
    model = _train(mdata)
    z = model.get_latent_representation()
    assert z.shape == (1, 3) and np.isfinite(z).all()
    assert model.history.shape[0] == 2 and "validation_elbo" not in model.history  # no val cells


def test_unknown_modality_likelihood_layer_and_target():
    with pytest.raises(KeyError, match=r"\['atac'\] are not in mdata"):
        setup_mudata(_mdata(), modalities=["rna", "atac"])
    with pytest.raises(ValueError, match="Unknown likelihood 'gauss'"):
        setup_mudata(_mdata(), likelihoods={"rna": "gauss"})
    with pytest.raises(KeyError, match=r"no layer 'counts'.*layer=None"):
        setup_mudata(_mdata(), layer="counts")
    model = omnivae.Model(_mdata(), **TINY)
    with pytest.raises(KeyError, match="Unknown target 'atac'"):
        model.predict("atac")


# --------------------------------------------------------------------------- batch column


def test_missing_batch_column_lists_the_columns():
    with pytest.raises(KeyError, match=r"'donor'.*Available columns: batch"):
        setup_mudata(_mdata(), batch_key="donor")


def test_missing_values_in_the_batch_column():
    mdata = _mdata()
    mdata.obs.loc[["c1", "c4"], "batch"] = np.nan
    with pytest.raises(ValueError, match=r"'batch' is missing for 2 cells.*'c1'.*fill it"):
        setup_mudata(mdata, batch_key="batch")


def test_batch_label_unseen_in_training():
    model = omnivae.Model(_mdata(), batch_key="batch", **TINY)
    new = _mdata()
    new.obs["batch"] = "z"
    with pytest.raises(ValueError, match=r"Labels \['z'\] in column 'batch' were not seen"):
        model.get_latent_representation(new)


def test_batch_values_that_disagree_between_modalities():
    mdata = _mdata(batch=False)
    mdata["rna"].obs["batch"] = "x"
    mdata["adt"].obs["batch"] = "y"
    with pytest.raises(ValueError, match="'batch' disagrees between modalities for cells"):
        setup_mudata(mdata, batch_key="batch")


# --------------------------------------------------------------------------- saved model vs new data


def test_features_that_differ_from_a_saved_model(tmp_path):
    mdata = _mdata()
    model = omnivae.Model(mdata, **TINY)
    model.save(tmp_path / "m")
    fewer = mdata.copy()
    fewer.mod["adt"] = fewer["adt"][:, ["p0", "p2"]].copy()
    refresh(fewer)
    with pytest.raises(ValueError, match=r"'adt' has 2 features but the model was trained on 4: "
                                         r"2 missing \(e.g. \['p1', 'p3'\]\)"):
        omnivae.Model.load(tmp_path / "m", fewer)
    renamed = mdata.copy()
    renamed["adt"].var_names = ["p0", "p1", "p2", "CD99"]
    with pytest.raises(ValueError, match=r"1 not in the model \(e.g. \['CD99'\]\)"):
        model.get_latent_representation(renamed)


def test_same_features_in_another_order_are_reordered():
    mdata = _mdata()
    model = omnivae.Model(mdata, **TINY)
    shuffled = mdata.copy()
    shuffled.mod["rna"] = shuffled["rna"][:, ["g3", "g0", "g4", "g1", "g2"]].copy()
    refresh(shuffled)
    np.testing.assert_array_equal(model.get_latent_representation(shuffled),
                                  model.get_latent_representation())


# --------------------------------------------------------------------------- matrix types


MATRIX_TYPES = {
    "dense_float32": lambda x: x.astype(np.float32),
    "dense_float64": lambda x: x.astype(np.float64),
    "dense_int32": lambda x: x.astype(np.int32),
    "dense_int64": lambda x: x.astype(np.int64),
    "csr_float64": lambda x: sp.csr_matrix(x.astype(np.float64)),
    "csr_int64": lambda x: sp.csr_matrix(x.astype(np.int64)),
    "csc_float32": lambda x: sp.csc_matrix(x.astype(np.float32)),
    "csc_int32": lambda x: sp.csc_matrix(x.astype(np.int32)),
    "csr_array": lambda x: sp.csr_array(x.astype(np.float32)),
}


@pytest.mark.parametrize("kind", sorted(MATRIX_TYPES))
def test_dense_sparse_integer_and_float_matrices_give_identical_inputs(kind):
    reference, _ = setup_mudata(_mdata())
    base = _mdata()
    mdata = _mdata(rna=MATRIX_TYPES[kind](base["rna"].X), adt=MATRIX_TYPES[kind](base["adt"].X))
    data, _ = setup_mudata(mdata)
    for m in ("rna", "adt"):
        assert data.counts[m].dtype == np.float32 and sp.isspmatrix_csr(data.counts[m])
        assert (data.counts[m] != reference.counts[m]).nnz == 0
        np.testing.assert_array_equal(data.library[m], reference.library[m])


def test_matrix_type_does_not_change_the_trained_model():
    base = _mdata()
    z_dense = _train(base, seed=4).get_latent_representation()
    sparse = _mdata(rna=sp.csc_matrix(base["rna"].X.astype(np.int64)),
                    adt=sp.csr_matrix(base["adt"].X.astype(np.float64)))
    np.testing.assert_array_equal(_train(sparse, seed=4).get_latent_representation(), z_dense)


def test_backed_files_read_like_in_memory(tmp_path):
    mdata = _mdata(rna=sp.csr_matrix(_mdata()["rna"].X))  # sparse X on disk, dense protein
    mdata.write_h5mu(tmp_path / "x.h5mu")
    backed = md.read_h5mu(tmp_path / "x.h5mu", backed=True)
    assert backed.isbacked and not isinstance(backed["rna"].X, sp.spmatrix)
    memory = md.read_h5mu(tmp_path / "x.h5mu")
    got, _ = setup_mudata(backed, batch_key="batch")
    want, _ = setup_mudata(memory, batch_key="batch")
    for m in ("rna", "adt"):
        assert (got.counts[m] != want.counts[m]).nnz == 0
    z = _train(backed, batch_key="batch").get_latent_representation()
    assert z.shape == (backed.n_obs, 3) and np.isfinite(z).all()


# --------------------------------------------------------------------------- training arguments


def test_bad_training_arguments():
    model = omnivae.Model(_mdata(), **TINY)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        model.train(max_epochs=1, batch_size=0, progress_bar=False)
    with pytest.raises(ValueError, match=r"validation_fraction must be a number in \[0, 1\), got 1.5"):
        model.train(max_epochs=1, validation_fraction=1.5, progress_bar=False)
    with pytest.raises(ValueError, match="resume=True needs checkpoint_dir"):
        model.train(max_epochs=1, resume=True, progress_bar=False)
    with pytest.raises(ValueError, match="num_threads must be an integer >= 1"):
        model.train(max_epochs=1, num_threads=0, progress_bar=False)


@pytest.mark.parametrize(("argument", "value", "message"), [
    ("n_latent", 0, "n_latent must be an integer >= 1, got 0"),
    ("n_latent", -3, "n_latent must be an integer >= 1, got -3"),
    ("n_hidden", 0, "n_hidden must be an integer >= 1, got 0"),
    ("n_layers", 0, "n_layers must be an integer >= 1, got 0"),
    ("n_latent", 2.5, "n_latent must be an integer >= 1, got 2.5"),
    ("dropout", 1.0, r"dropout must be a number in \[0, 1\), got 1.0"),
    ("prior_components", -1, "prior_components must be an integer >= 0"),
    ("penalty_weight", -5.0, r"penalty_weight must be a number >= 0 \(or None .*got -5.0"),
])
def test_architecture_sizes_out_of_range_name_the_argument(argument, value, message):
    with pytest.raises(ValueError, match=message):
        omnivae.Model(_mdata(), batch_key="batch", **{**TINY, argument: value})


@pytest.mark.parametrize("backed", [False, True])
def test_a_modality_without_any_count_warns(tmp_path, backed):
    mdata = _mdata()
    adt = mdata.mod["adt"]
    adt.X = adt.X * 0
    source = mdata
    if backed:
        source = tmp_path / "zero.h5mu"
        mdata.write_h5mu(source)
    with pytest.warns(UserWarning, match=r"Modality 'adt' \(X\) has no counts at all.*layer="):
        omnivae.Model(source, **TINY)


@pytest.mark.parametrize(("options", "message"), [
    ({"max_epochs": 0}, r"max_epochs must be an integer >= 1 \(or None to choose"),
    ({"max_epochs": -1}, r"max_epochs must be an integer >= 1 .*got -1"),
    ({"max_epochs": 1.5}, r"max_epochs must be an integer >= 1 .*got 1.5"),
    ({"max_epochs": True}, r"max_epochs must be an integer >= 1 .*got True"),
    ({"lr": 0}, r"lr must be a number > 0, got 0"),
    ({"lr": float("nan")}, r"lr must be a number > 0, got nan"),
    ({"weight_decay": -1.0}, r"weight_decay must be a number >= 0"),
    ({"kl_warmup_epochs": -2}, r"kl_warmup_epochs must be a number >= 0"),
    ({"patience": -1}, r"patience must be an integer >= 0"),
    ({"gradient_clip_val": 0}, r"gradient_clip_val must be a number > 0 \(or None for no"),
    ({"batch_size": 2.5}, r"batch_size must be an integer >= 1, got 2.5"),
])
def test_training_numbers_out_of_range_name_the_argument_and_range(options, message):
    model = omnivae.Model(_mdata(), **TINY)
    with pytest.raises(ValueError, match=message):
        model.train(progress_bar=False, **options)
    assert not model.is_trained


def test_inference_numbers_out_of_range_name_the_argument_and_range():
    model = omnivae.Model(_mdata(), **TINY)
    with pytest.raises(ValueError, match=r"batch_size must be an integer >= 1, got 0"):
        model.get_latent_representation(batch_size=0)
    with pytest.raises(ValueError, match=r"n_samples must be an integer >= 0, got -1"):
        model.predict("adt", n_samples=-1)
    with pytest.raises(ValueError, match=r"interval must be a number in \(0, 1\) .*got 90"):
        model.predict("adt", interval=90)
