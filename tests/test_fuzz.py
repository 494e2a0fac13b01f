"""Fuzz test: random MuData (shapes, sparsity, storage, dtypes, missing modalities, bad values,
batch columns) through setup, training, embedding and prediction. Every outcome is a finite
result or a ValueError/KeyError with a message, and which one is predicted from the input."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import omnivae
from omnivae.module.likelihoods import LIKELIHOOD_NAMES

STORAGE = {"dense": np.asarray, "csr": sp.csr_matrix, "csc": sp.csc_matrix}
DTYPES = ("int32", "int64", "float32", "float64")
BAD_VALUES = {"nan": np.nan, "inf": np.inf, "negative": -3.0, "fraction": 0.5}


@dataclass
class Case:
    mdata: md.MuData
    likelihoods: dict[str, str]
    modalities: list[str] | None
    batch_key: str | None
    fusion: str
    expect_error: bool


@st.composite
def cases(draw) -> Case:
    n_cells = draw(st.integers(1, 24))
    names = [f"m{i}" for i in range(draw(st.integers(1, 3)))]
    cells = np.array([f"cell{i}" for i in range(n_cells)])
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    mods, likelihoods, invalid = {}, {}, {}
    for name in names:
        members = cells[rng.random(n_cells) < draw(st.sampled_from([0.0, 0.5, 0.9, 1.0, 1.0, 1.0]))]
        n_features = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 6]))
        counts = rng.poisson(draw(st.sampled_from([0.0, 0.3, 3.0, 50.0])), (len(members), n_features))
        dtype = draw(st.sampled_from(DTYPES))
        bad = draw(st.sampled_from([None] * 12 + sorted(BAD_VALUES)))
        likelihoods[name] = draw(st.sampled_from(LIKELIHOOD_NAMES))
        invalid[name] = n_features == 0 or len(members) == 0
        if bad is not None and counts.size and (dtype.startswith("float") or bad == "negative"):
            counts = counts.astype(np.float64)
            counts[rng.integers(len(members)), rng.integers(n_features)] = BAD_VALUES[bad]
            # a Bernoulli modality binarizes non-negative values, fractions included
            invalid[name] |= not (bad == "fraction" and likelihoods[name] == "bernoulli")
        matrix = STORAGE[draw(st.sampled_from(sorted(STORAGE)))](counts.astype(dtype))
        mods[name] = ad.AnnData(matrix, obs=pd.DataFrame(index=members),
                                var=pd.DataFrame(index=[f"{name}_f{j}" for j in range(n_features)]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mdata = md.MuData(mods)
    chosen = (draw(st.sets(st.sampled_from(names), min_size=1).map(sorted))
              if draw(st.integers(0, 3)) == 0 else None)
    used = chosen if chosen is not None else names
    covered = set().union(*(set(mods[m].obs_names) for m in used))
    # cells outside the chosen modalities have no data: an error, as is any invalid modality
    expect_error = any(invalid[m] for m in used) or len(covered) < mdata.n_obs
    batch_key = draw(st.sampled_from([None, "batch", "batch", "batch_with_gaps"]))
    if batch_key is not None and mdata.n_obs:
        labels = rng.choice(["a", "b", "c"], mdata.n_obs).astype(object)
        if batch_key == "batch_with_gaps":
            labels[rng.integers(mdata.n_obs)] = None
            expect_error = True
        mdata.obs[batch_key] = labels
    return Case(mdata, {m: likelihoods[m] for m in used}, chosen, batch_key,
                draw(st.sampled_from(["poe", "moe", "mopoe"])), expect_error)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          derandomize=True)
@given(cases())
def test_every_input_gives_a_finite_result_or_a_clear_error(case):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = omnivae.Model(case.mdata, modalities=case.modalities,
                                  likelihoods=case.likelihoods, batch_key=case.batch_key,
                                  fusion=case.fusion, n_latent=2, n_hidden=4, seed=0)
            model.train(max_epochs=1, batch_size=8, progress_bar=False, batch_probe_every=0)
            z = model.get_latent_representation()
            target = model.setup.modalities[0]
            pred = model.predict(target, n_samples=2)
        except (ValueError, KeyError) as err:
            message = err.args[0] if err.args else ""
            assert isinstance(message, str) and len(message) > 30, repr(err)
            assert case.expect_error, f"unexpected error on valid input: {message}"
            return
    assert not case.expect_error, "bad input was accepted silently"
    assert z.shape == (case.mdata.n_obs, 2) and np.isfinite(z).all()
    assert np.isfinite(pred.X).all() and np.isfinite(pred.layers["std"]).all()
    np.testing.assert_allclose(pred.X.sum(1), 1.0, rtol=1e-4)


def test_fuzz_generator_covers_both_outcomes():
    """The strategy produces valid inputs and each kind of bad input (not a vacuous fuzz)."""
    seen = {"ok": 0, "error": 0}

    @settings(max_examples=60, deadline=None, derandomize=True)
    @given(cases())
    def count(case):
        seen["error" if case.expect_error else "ok"] += 1

    count()
    assert seen["ok"] >= 10 and seen["error"] >= 10, seen


@pytest.mark.parametrize("bad", sorted(BAD_VALUES))
def test_each_bad_value_is_reported_for_an_observed_cell(bad):
    counts = np.ones((4, 3))
    counts[2, 1] = BAD_VALUES[bad]
    mdata = md.MuData({"m0": ad.AnnData(counts, obs=pd.DataFrame(index=list("abcd")))})
    with pytest.raises(ValueError, match=r"'m0'.*e.g. in cells \['c'\]"):
        omnivae.Model(mdata, likelihoods={"m0": "nb"})
