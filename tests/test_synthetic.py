"""Synthetic cells from the aggregated posterior."""

from __future__ import annotations

import numpy as np
import pytest

import omnivae
from omnivae.model.synthetic import fit_latent_density, group_labels


@pytest.fixture(scope="module")
def trained():
    sim = omnivae.datasets.simulate(400, modalities=("rna", "adt"), n_batches=2, n_cell_types=4,
                                    missing_fraction=0.0, seed=5)
    model = omnivae.Model(sim, batch_key="batch", n_latent=4, seed=0)
    model.train(max_epochs=40, progress_bar=False)
    return sim, model


def _centroids(mdata, modality):
    x = np.log1p(mdata[modality].X.toarray())
    labels = mdata.obs["cell_type"].astype(str).to_numpy()
    return {t: x[labels == t].mean(0) for t in np.unique(labels)}


def test_sampled_cell_types_look_like_their_real_type(trained):
    sim, model = trained
    real = _centroids(sim, "adt")
    fake = model.sample(200, seed=1)
    x = np.log1p(fake["adt"].X.toarray())
    asked = fake.obs["cell_type"].astype(str).to_numpy()
    types = sorted(real)
    nearest = np.array(types)[np.argmin(
        [[np.sum((row - real[t]) ** 2) for t in types] for row in x], axis=1)]
    assert (nearest == asked).mean() > 0.6  # chance is 0.25
    assert set(fake.mod) == {"rna", "adt"} and fake["rna"].n_vars == sim["rna"].n_vars


def test_requested_type_and_batch_are_respected(trained):
    sim, model = trained
    fake = model.sample(30, cell_type="type-1", batch="batch-1", seed=2)
    assert set(fake.obs["cell_type"]) == {"type-1"} and set(fake.obs["batch"]) == {"batch-1"}
    depth = np.asarray(fake["rna"].X.sum(1)).ravel()
    real_depth = np.asarray(sim["rna"].X.sum(1)).ravel()
    assert 0.3 < np.median(depth) / np.median(real_depth) < 3
    with pytest.raises(KeyError, match="Unknown cell types"):
        model.sample(5, cell_type="neuron")
    with pytest.raises(KeyError, match="Unknown batch"):
        model.sample(5, batch="batch-9")


def test_density_has_one_mixture_per_label(trained):
    sim, model = trained
    labels = group_labels(sim, "cell_type", sim.n_obs)
    density = fit_latent_density(model.module, model.cells, labels, n_components=3)
    assert sorted(density.mixtures) == sorted(sim.obs["cell_type"].astype(str).unique())
    assert sum(len(v) for v in density.cells.values()) == sim.n_obs
