"""MuData setup: membership, alignment, likelihood defaults and clear errors on bad input."""

from __future__ import annotations

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from omnivae.data.setup import default_likelihood, obs_column, setup_mudata


def _mdata(rna_cells=("a", "b", "c"), adt_cells=("b", "c", "d"), rna=None, adt=None):
    rng = np.random.default_rng(0)
    rna = rna if rna is not None else rng.poisson(2, (len(rna_cells), 5)).astype(np.float32)
    adt = adt if adt is not None else rng.poisson(9, (len(adt_cells), 3)).astype(np.float32)
    a = ad.AnnData(sp.csr_matrix(rna), obs=pd.DataFrame(index=list(rna_cells)),
                   var=pd.DataFrame(index=[f"g{i}" for i in range(rna.shape[1])]))
    b = ad.AnnData(sp.csr_matrix(adt), obs=pd.DataFrame(index=list(adt_cells)),
                   var=pd.DataFrame(index=[f"p{i}" for i in range(adt.shape[1])]))
    a.obs["batch"] = ["x", "y", "x"][: len(rna_cells)]
    mdata = md.MuData({"rna": a, "adt": b})
    return mdata


def test_membership_defines_the_mask_and_rows_are_aligned():
    mdata = _mdata()
    data, info = setup_mudata(mdata)
    names = list(mdata.obs_names)
    mask = dict(zip(names, data.mask.tolist(), strict=True))
    assert mask["a"] == [True, False] and mask["d"] == [False, True] and mask["b"] == [True, True]
    row = names.index("c")
    np.testing.assert_array_equal(data.counts["rna"][row].toarray()[0], mdata["rna"]["c"].X.toarray()[0])
    assert info.likelihoods == {"rna": "nb", "adt": "nb"}


def test_all_zero_row_is_observed_not_missing():
    rna = np.zeros((3, 5), np.float32)
    rna[0, 0] = 3
    data, _ = setup_mudata(_mdata(rna=rna))
    assert data.mask[:, 0].sum() == 3  # zeros are data; membership says the cells have RNA


def test_default_likelihood_by_name_and_feature_type():
    assert default_likelihood("atac", ad.AnnData(np.zeros((1, 1)))) == "bernoulli"
    x = ad.AnnData(np.zeros((1, 2)))
    x.var["feature_types"] = ["Antibody Capture"] * 2
    assert default_likelihood("panel7", x) == "nb"  # proteins: plain NB
    x.var["feature_types"] = ["Peaks"] * 2
    assert default_likelihood("panel7", x) == "bernoulli"
    assert default_likelihood("adt", ad.AnnData(np.zeros((1, 1)))) == "nb"
    assert default_likelihood("whatever", ad.AnnData(np.zeros((1, 1)))) == "nb"


@pytest.mark.parametrize(("value", "message"), [
    (0.5, "non-integer values"), (-1.0, "negative values"), (np.nan, "NaN or infinite"),
    (np.inf, "NaN or infinite"),
])
def test_bad_counts_are_named(value, message):
    rna = np.ones((3, 5), np.float32)
    rna[1, 2] = value
    with pytest.raises(ValueError, match=message) as err:
        setup_mudata(_mdata(rna=rna))
    assert "'rna'" in str(err.value) and "'b'" in str(err.value)


def test_bernoulli_accepts_non_integer_values():
    rna = np.ones((3, 5), np.float32) * 0.5
    data, _ = setup_mudata(_mdata(rna=rna), likelihoods={"rna": "bernoulli"})
    # the library of a Bernoulli modality is the number of non-zero features; 1 where absent
    assert data.library["rna"].tolist() == [5.0, 5.0, 5.0, 1.0]


def test_missing_batch_column_lists_columns():
    with pytest.raises(KeyError, match="Available columns"):
        setup_mudata(_mdata(), batch_key="donor")


def test_batch_from_a_modality_obs_and_nan_batch_is_an_error():
    mdata = _mdata(rna_cells=("a", "b", "c"), adt_cells=("a", "b", "c"))
    _, info = setup_mudata(mdata, batch_key="batch")
    assert info.batch_categories == ("x", "y")
    mdata2 = _mdata()  # cell "d" has no RNA, hence no batch value
    with pytest.raises(ValueError, match="missing for 1 cells"):
        setup_mudata(mdata2, batch_key="batch")


def test_unknown_modality_and_likelihood():
    with pytest.raises(KeyError, match="not in mdata"):
        setup_mudata(_mdata(), modalities=["rna", "atac"])
    with pytest.raises(ValueError, match="Unknown likelihood"):
        setup_mudata(_mdata(), likelihoods={"rna": "gaussian"})


def test_modality_with_no_features():
    mdata = _mdata()
    mdata.mod["adt"] = mdata["adt"][:, []].copy()
    mdata.update()
    with pytest.raises(ValueError, match="no features"):
        setup_mudata(mdata)


def test_cells_with_no_data_in_selected_modalities():
    with pytest.raises(ValueError, match="no data in any"):
        setup_mudata(_mdata(), modalities=["rna"])


def test_feature_mismatch_against_reference():
    _, info = setup_mudata(_mdata())
    other = _mdata()
    other.mod["adt"] = other["adt"][:, ["p0", "p2"]].copy()
    other.update()
    with pytest.raises(ValueError, match="model was trained on 3"):
        setup_mudata(other, reference=info)


def test_obs_column_conflict_between_modalities():
    mdata = _mdata()
    mdata["adt"].obs["batch"] = ["z", "z", "z"]
    mdata.obs.drop(columns=[c for c in mdata.obs if "batch" in c], inplace=True)
    with pytest.raises(ValueError, match="disagrees"):
        obs_column(mdata, "batch")
