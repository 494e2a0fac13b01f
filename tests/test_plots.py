"""omnivae.pl: figures are produced, saved, and show what they claim."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import omnivae


def test_history_plots_each_quantity_and_saves(tmp_path):
    sim = omnivae.datasets.simulate(120, modalities=("rna", "adt"), n_batches=2, seed=0)
    model = omnivae.Model(sim, batch_key="batch", n_latent=3)
    model.train(max_epochs=3, progress_bar=False, batch_probe_every=1)
    fig = omnivae.pl.history(model, path=tmp_path / "history.png")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:2] == ["elbo", "kl"] and any(t.startswith("mi_batch") for t in titles)
    elbo_lines = {line.get_label() for line in fig.axes[0].get_lines()}
    assert elbo_lines == {"train_elbo", "validation_elbo"}
    assert len(fig.axes[0].get_lines()[0].get_xdata()) == len(model.history) == 3
    assert (tmp_path / "history.png").stat().st_size > 5_000
    with pytest.raises(ValueError, match="train the model first"):
        omnivae.pl.history(pd.DataFrame())


def test_latent_umap_colours_by_columns_and_reuses_coordinates(tmp_path):
    sim = omnivae.datasets.simulate(90, modalities=("rna",), n_batches=3, seed=0)
    sim.obsm["X_omnivae"] = np.random.default_rng(0).normal(size=(sim.n_obs, 4))
    fig = omnivae.pl.latent_umap(sim, color=["batch", "cell_type"], path=tmp_path / "u.pdf")
    batch_ax = fig.axes[0]
    assert batch_ax.get_title() == "batch"
    legend = [t.get_text() for t in batch_ax.get_legend().get_texts()]
    assert legend == ["batch-0", "batch-1", "batch-2"]
    assert sum(len(c.get_offsets()) for c in batch_ax.collections) == sim.n_obs
    coords = sim.obsm["X_omnivae_umap"].copy()
    omnivae.pl.latent_umap(sim, color="cell_type")
    np.testing.assert_array_equal(sim.obsm["X_omnivae_umap"], coords)  # reused
    assert (tmp_path / "u.pdf").is_file()
    with pytest.raises(KeyError, match=r"tl\.integrate"):
        omnivae.pl.latent_umap(sim, use_rep="X_missing")


def test_latent_umap_legends_many_cell_types_with_distinct_colours():
    sim = omnivae.datasets.simulate(300, modalities=("rna",), seed=0)
    sim.obs["fine"] = [f"type {i % 41:02d}" for i in range(sim.n_obs)]  # like the CITE starter
    sim.obs["many"] = [f"c{i % 70}" for i in range(sim.n_obs)]
    sim.obsm["X_omnivae"] = np.random.default_rng(0).normal(size=(sim.n_obs, 4))
    fig = omnivae.pl.latent_umap(sim, color=["fine", "many"])
    fine_ax, many_ax = fig.axes
    legend = fine_ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == sorted(set(sim.obs["fine"]))
    colours = {tuple(np.round(c.get_facecolors()[0], 4)) for c in fine_ax.collections}
    assert len(colours) == 41  # no colour shared by two cell types
    assert many_ax.get_legend() is None  # 70 names: written on the data instead
    assert len(many_ax.texts) == 70


def test_predicted_vs_observed_shows_pearson_per_feature():
    sim = omnivae.datasets.simulate(60, modalities=("rna", "adt"), missing_fraction=0, seed=0)
    adt = sim["adt"].X.toarray()
    proportions = adt / adt.sum(1, keepdims=True)
    imputed = sim["adt"].copy()
    imputed.X = proportions  # a perfect prediction: r = 1 in every panel
    sim.mod["adt_imputed"] = imputed
    features = list(sim["adt"].var_names[:4])
    fig = omnivae.pl.predicted_vs_observed(sim, modality="adt", features=features)
    assert [ax.get_title() for ax in fig.axes] == [f"{f} (r = 1.00)" for f in features]
    np.testing.assert_allclose(fig.axes[0].collections[0].get_offsets()[:, 0], proportions[:, 0])
    with pytest.raises(KeyError, match=r"tl\.predict"):
        omnivae.pl.predicted_vs_observed(sim, modality="rna")


def test_modality_share_per_group(tmp_path):
    from omnivae.model.diagnostics import modality_shares

    sim = omnivae.datasets.simulate(150, modalities=("rna", "adt"), seed=0)
    model = omnivae.Model(sim, n_latent=3)
    model.train(max_epochs=2, progress_bar=False)
    shares = modality_shares(model.module, model.cells, sim.obs_names)
    np.testing.assert_allclose(shares.sum(axis=1), 1.0, atol=1e-5)
    adt_rows = ~sim.obs_names.isin(sim["adt"].obs_names)  # cells without protein hold none
    assert adt_rows.any() and (shares.loc[adt_rows, "adt"] == 0).all()
    fig = omnivae.pl.modality_share(sim, model, groupby="cell_type",
                                    path=tmp_path / "plots" / "share.png")
    assert (tmp_path / "plots" / "share.png").stat().st_size > 0
    n_groups = sim.obs["cell_type"].nunique()
    assert len(fig.axes[0].patches) == 3 * n_groups  # rna, adt, prior per group
    complete = sim[sim.obs_names.isin(sim["adt"].obs_names)
                   & sim.obs_names.isin(sim["rna"].obs_names)].copy()
    with pytest.raises(ValueError, match="no encoder per modality"):
        early = omnivae.Model(complete, model="early", n_latent=3)
        modality_shares(early.module, early.cells, complete.obs_names)
