"""Reference mapping: query cells from an unseen batch, RNA-only queries, smaller panels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

import omnivae
from omnivae.data.setup import SetupInfo, obs_column, refresh
from omnivae.model.mapping.fill import fill_unmeasured
from omnivae.model.setup import setup_new_cells
from tests.conftest import shared_file

QUERY_BATCH = "p4_0"  # one of the two paired CITE-seq donors of the mosaic PBMC data


@pytest.fixture(scope="module")
def reference_and_query():
    """Reference: three donors of quickstart_pbmc_mosaic (RNA-only, ADT-only, paired);
    query: the fourth donor (paired), a batch the reference never saw."""
    shared_file("quickstart_pbmc_mosaic")
    mdata = omnivae.datasets.load("quickstart_pbmc_mosaic")
    ref = mdata[mdata.obs["batch"] != QUERY_BATCH].copy()
    for name in list(ref.mod):
        ref.mod[name] = ref[name][ref[name].obs["batch"] != QUERY_BATCH].copy()
    refresh(ref)
    query = mdata[mdata.obs["batch"] == QUERY_BATCH].copy()
    model = omnivae.Model(ref, batch_key="batch", n_latent=16, seed=0)
    model.train(max_epochs=40, progress_bar=False)
    labels = obs_column(ref, "celltype").astype(str).to_numpy()
    knn = KNeighborsClassifier(15).fit(model.get_latent_representation(), labels)
    return model, query, knn


def _label_transfer(knn, query_model, mdata) -> tuple[float, float]:
    truth = obs_column(mdata, "celltype").astype(str).to_numpy()
    accuracy = float(np.mean(knn.predict(query_model.get_latent_representation()) == truth))
    chance = max(float(np.mean(truth == c)) for c in set(truth))
    return accuracy, chance


@pytest.mark.realdata
def test_new_batch_lands_on_reference_cell_types_and_only_new_parameters_change(
        reference_and_query):
    model, query, knn = reference_and_query
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    query = query.copy()
    mapped = omnivae.tl.map_query(query, model, max_epochs=20, progress_bar=False,
                                  return_model=True)
    np.testing.assert_array_equal(query.obsm["X_omnivae"], mapped.get_latent_representation())
    assert query.uns["X_omnivae"]["params"]["new_batches"] == [QUERY_BATCH]
    accuracy, chance = _label_transfer(knn, mapped, query)
    assert accuracy > chance + 0.35, (accuracy, chance)
    changed_new = 0
    for name, param in mapped.module.named_parameters():
        frozen = mapped.frozen[name]
        old = before.get(name)
        if old is not None:  # every reference entry is bit-identical after training
            assert torch.equal(param.detach()[tuple(slice(0, s) for s in old.shape)], old), name
        changed_new += int((param.detach()[~frozen] != 0).sum()) if name.endswith(
            "batch_shift") else 0
    assert changed_new > 0  # the new batch's encoder offsets were fitted (they start at zero)
    assert mapped.n_trainable < 0.05 * sum(p.numel() for p in mapped.module.parameters())
    # the reference model itself is untouched and still embeds as before
    assert all(torch.equal(v, before[k]) for k, v in model.module.state_dict().items())
    imputed = mapped.predict("adt")
    assert imputed.n_obs == query.n_obs and np.allclose(imputed.X.sum(axis=1), 1.0, atol=1e-4)


@pytest.mark.realdata
def test_rna_only_query_and_smaller_protein_panel(reference_and_query):
    model, query, knn = reference_and_query
    rna_only = query.copy()
    del rna_only.mod["adt"]
    refresh(rna_only)
    rna_only = rna_only[rna_only.obs_names.isin(query["rna"].obs_names)].copy()
    mapped = model.map_query(rna_only, max_epochs=10, progress_bar=False)
    accuracy, chance = _label_transfer(knn, mapped, rna_only)
    assert accuracy > chance + 0.3, (accuracy, chance)
    assert not mapped.cells.mask[:, mapped.setup.modalities.index("adt")].any()
    assert mapped.predict("adt").n_vars == len(model.var_names["adt"])

    half = query.copy()
    half.mod["adt"] = half["adt"][:, ::2].copy()  # every second protein measured
    refresh(half)
    filled = omnivae.Model.load_query(model, half)
    assert filled.measured["adt"].sum() == half["adt"].n_vars
    adt = filled.cells.counts["adt"].toarray()
    rows = half.obs_names.get_indexer(half["adt"].obs_names)
    assert (adt[rows][:, ~filled.measured["adt"]] > 0).mean() > 0.9  # unmeasured: filled
    np.testing.assert_array_equal(adt[rows][:, filled.measured["adt"]],
                                  half["adt"].X.toarray())        # measured: untouched
    accuracy, chance = _label_transfer(knn, filled, half)
    assert accuracy > chance + 0.35, (accuracy, chance)
    # protein-only cells with half the panel: filling the unmeasured proteins (and
    # renormalising the library) embeds them far better than zero-filling
    adt_only = half.copy()
    del adt_only.mod["rna"]
    refresh(adt_only)
    accuracy, _ = _label_transfer(knn, omnivae.Model.load_query(model, adt_only), adt_only)
    accuracy_zero, _ = _label_transfer(
        knn, omnivae.Model.load_query(model, adt_only, fill_steps=0), adt_only)
    assert accuracy > chance + 0.3 and accuracy > accuracy_zero + 0.1, (accuracy, accuracy_zero)


@pytest.mark.realdata
def test_protein_only_quarter_panel_lands_on_reference_cell_types(reference_and_query):
    """A protein-only query measuring every fourth antibody: the fill must not drift to one
    cell type (it called nearly every cell NK, 0.04 accuracy, when re-encoding the filled
    panel from a zero-filled start), and filling again (after training) must not renormalise
    the library a second time."""
    model, query, knn = reference_and_query
    quarter = query.copy()
    quarter.mod["adt"] = quarter["adt"][:, ::4].copy()
    del quarter.mod["rna"]
    refresh(quarter)
    mapped = omnivae.Model.load_query(model, quarter)
    accuracy, chance = _label_transfer(knn, mapped, quarter)
    assert accuracy > chance + 0.15, (accuracy, chance)
    library = mapped.cells.library["adt"]
    again = fill_unmeasured(mapped.module, mapped.cells, mapped.measured, steps=20)
    assert 0.8 < float(np.median(again.library["adt"] / library)) < 1.25
    measured = again.counts["adt"].toarray()[:, mapped.measured["adt"]]
    np.testing.assert_array_equal(measured, quarter["adt"].X.toarray())



@pytest.mark.realdata
def test_query_of_a_batchless_reference_codes_paired_and_rna_only_cells_alike():
    """A reference trained without batch_key: its query cells are one new batch ("query",
    fitted by the query training) whatever modalities they have. New cells through the query
    model were coded as the reference's batch when paired and as the query's when RNA-only;
    now both are the query's, and they embed and predict as the query model's own cells."""
    shared_file("neurips2021_bmmc_cite_starter")
    mdata = omnivae.datasets.load("neurips2021_bmmc_cite_starter")
    order = np.random.default_rng(0).permutation(mdata.n_obs)
    ref, query = mdata[np.sort(order[:400])].copy(), mdata[np.sort(order[400:])].copy()
    model = omnivae.Model(ref, n_latent=8, n_hidden=32, seed=0)
    model.train(max_epochs=3, progress_bar=False)
    query.mod["adt"] = query["adt"][:100].copy()  # 100 paired cells, 100 RNA-only cells
    refresh(query)
    mapped = model.map_query(query, max_epochs=3, progress_bar=False)
    assert mapped.setup.batch_categories == ("reference", "query")
    assert mapped.setup.implicit_batch == "query"
    assert mapped.n_trainable > 0
    paired = query[:100].copy()
    rna_only = query[100:].copy()
    del rna_only.mod["adt"]
    refresh(rna_only)
    for cells in (paired, rna_only, query):
        codes = setup_new_cells(cells, mapped.setup, None).batch_index
        assert set(codes.tolist()) == {1}, codes  # the query's batch, never the reference's
    assert set(mapped.cells.batch_index.tolist()) == {1}
    z = mapped.get_latent_representation()
    assert z.shape == (200, 8) and np.isfinite(z).all()
    for cells, rows in ((paired, slice(0, 100)), (rna_only, slice(100, 200))):
        np.testing.assert_allclose(mapped.get_latent_representation(cells), z[rows],
                                   rtol=1e-4, atol=1e-5)
        predicted = mapped.predict("adt", mdata=cells)
        assert predicted.shape == (100, 134) and np.isfinite(predicted.X).all()
        np.testing.assert_allclose(predicted.X, mapped.predict("adt").X[rows], rtol=1e-4,
                                   atol=1e-6)


def test_query_errors_name_the_problem():
    ref = omnivae.datasets.simulate(80, modalities=("rna",), n_batches=2, seed=0)
    model = omnivae.Model(ref, batch_key="batch", n_latent=3)
    other = omnivae.datasets.simulate(20, modalities=("adt",), seed=0)
    with pytest.raises(ValueError, match="none of the reference's modalities"):
        omnivae.Model.load_query(model, other)
    query = omnivae.Model.load_query(model, ref)
    assert query.n_trainable == 0  # known batches: nothing new to fit
    with pytest.raises(ValueError, match="weight_decay"):
        query.train(max_epochs=1, weight_decay=1e-3)
    two = omnivae.datasets.simulate(60, modalities=("rna", "adt"), n_batches=2,
                                    missing_fraction=0, seed=0)
    paired = omnivae.Model(two, batch_key="batch", n_latent=3)
    rna_only = two.copy()
    del rna_only.mod["adt"]
    assert paired.get_latent_representation(rna_only).shape == (60, 3)  # known batches
    rna_only.obs["batch"] = "unseen"
    with pytest.raises(ValueError, match=r"never saw: map them with omnivae\.Model\.load_query"):
        paired.get_latent_representation(rna_only)
    renamed = ref.copy()
    renamed.mod["rna"].var_names = [f"x{i}" for i in range(renamed["rna"].n_vars)]
    with pytest.raises(ValueError, match="shares no features"):
        omnivae.Model.load_query(model, renamed)


def test_saved_reference_maps_query(tmp_path):
    sim = omnivae.datasets.simulate(120, modalities=("rna", "adt"), n_batches=3, seed=0)
    ref = sim[sim.obs["batch"] != "batch-2"].copy()
    model = omnivae.Model(ref, batch_key="batch", n_latent=3)
    model.save(tmp_path / "ref")
    query = sim[sim.obs["batch"] == "batch-2"].copy()
    from_disk = omnivae.Model.load_query(tmp_path / "ref", query)
    in_memory = omnivae.Model.load_query(model, query)
    np.testing.assert_allclose(from_disk.get_latent_representation(),
                               in_memory.get_latent_representation(), rtol=1e-5)


def test_query_model_saves_and_loads(tmp_path):
    sim = omnivae.datasets.simulate(120, modalities=("rna", "adt"), n_batches=3, seed=0)
    model = omnivae.Model(sim[sim.obs["batch"] != "batch-2"].copy(), batch_key="batch",
                          n_latent=3)
    query = sim[sim.obs["batch"] == "batch-2"].copy()
    mapped = model.map_query(query, max_epochs=2, progress_bar=False)
    mapped.save(tmp_path / "query_model")
    loaded = omnivae.Model.load(tmp_path / "query_model", query)
    np.testing.assert_allclose(loaded.get_latent_representation(),
                               mapped.get_latent_representation(), rtol=1e-5, atol=1e-6)


def test_query_model_of_a_batchless_reference_keeps_the_query_batch_through_save_and_load(
        tmp_path):
    """The query model's cells are the query's batch (its setup says so in ``implicit_batch``,
    not by a batch name), after a save and load, and when its setup was saved before the field
    existed."""
    sim = omnivae.datasets.simulate(120, modalities=("rna", "adt"), missing_fraction=0, seed=0)
    model = omnivae.Model(sim[:80].copy(), n_latent=3, seed=0)
    model.train(max_epochs=1, progress_bar=False)
    query = sim[80:].copy()
    mapped = model.map_query(query, max_epochs=2, progress_bar=False)
    assert model.setup.implicit_batch is None
    assert mapped.setup.implicit_batch == "query"
    mapped.save(tmp_path / "query_model")
    loaded = omnivae.Model.load(tmp_path / "query_model", query)
    assert loaded.setup == mapped.setup
    assert set(setup_new_cells(query, loaded.setup, None).batch_index.tolist()) == {1}
    np.testing.assert_allclose(loaded.get_latent_representation(query),
                               mapped.get_latent_representation(), rtol=1e-5, atol=1e-6)
    old_format = mapped.setup.to_dict()
    del old_format["implicit_batch"]
    assert SetupInfo.from_dict(old_format) == mapped.setup
    reference_only = model.setup.to_dict()
    del reference_only["implicit_batch"]
    assert SetupInfo.from_dict(reference_only).implicit_batch is None


def test_query_model_with_a_smaller_panel_saves_and_loads(tmp_path):
    sim = omnivae.datasets.simulate(150, modalities=("rna", "adt"), n_batches=3, seed=0)
    model = omnivae.Model(sim[sim.obs["batch"] != "batch-2"].copy(), batch_key="batch",
                          n_latent=3)
    model.train(max_epochs=2, progress_bar=False)
    query = sim[sim.obs["batch"] == "batch-2"].copy()
    query.mod["adt"] = query["adt"][:, ::3].copy()  # a third of the antibody panel
    refresh(query)
    mapped = model.map_query(query, max_epochs=2, progress_bar=False)
    mapped.save(tmp_path / "query_model")
    loaded = omnivae.Model.load(tmp_path / "query_model", query)
    assert isinstance(loaded, type(mapped)) and loaded.n_trainable == mapped.n_trainable
    np.testing.assert_array_equal(loaded.measured["adt"], mapped.measured["adt"])
    np.testing.assert_allclose(loaded.get_latent_representation(),
                               mapped.get_latent_representation(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(loaded.predict("adt").X, mapped.predict("adt").X,
                               rtol=1e-4, atol=1e-6)
    unseen = query.copy()
    unseen.obs["batch"] = "batch-9"
    with pytest.raises(ValueError, match="never saw"):
        omnivae.Model.load(tmp_path / "query_model", unseen)



@pytest.fixture(scope="module")
def shrunk_reference():
    """A barely trained reference (3 epochs) whose validation cells chose weights below 1 for
    both targets, and the cells of a batch it never saw."""
    sim = omnivae.datasets.simulate(200, modalities=("rna", "adt"), n_batches=3, seed=1)
    model = omnivae.Model(sim[sim.obs["batch"] != "batch-2"].copy(), batch_key="batch",
                          n_latent=3, seed=0)
    model.train(max_epochs=3, progress_bar=False, validation_fraction=0.2)
    assert all(s.weight < 1.0 and s.n_cells >= 5 for s in model.shrinkage.values())
    return model, sim[sim.obs["batch"] == "batch-2"].copy()


def _assert_same_shrinkage(got, expected):
    assert sorted(got) == sorted(expected)
    for target, fitted in expected.items():
        assert (got[target].weight, got[target].n_cells) == (fitted.weight, fitted.n_cells)
        np.testing.assert_array_equal(got[target].profile, fitted.profile)


def test_rna_only_query_predicts_the_missing_modality_with_the_reference_shrinkage(
        shrunk_reference, tmp_path):
    """An RNA-only query cannot fit a protein weight itself; its protein prediction comes
    from the reference decoder and is shrunk by the reference's weight toward the reference's
    training-cell profile (it was left unshrunk before)."""
    model, query = shrunk_reference
    rna_only = query.copy()
    del rna_only.mod["adt"]
    refresh(rna_only)
    fitted = model.shrinkage["adt"]
    _assert_same_shrinkage(omnivae.Model.load_query(model, rna_only).shrinkage, model.shrinkage)
    mapped = model.map_query(rna_only, max_epochs=2, progress_bar=False)
    assert mapped.n_trainable > 0
    _assert_same_shrinkage(mapped.shrinkage, model.shrinkage)
    shrunk, raw = mapped.predict("adt"), mapped.predict("adt", shrink=False)
    np.testing.assert_allclose(shrunk.X, fitted.weight * raw.X + (1 - fitted.weight)
                               * fitted.profile, rtol=1e-5, atol=1e-7)
    assert np.abs(shrunk.X - raw.X).max() > 1e-3
    assert shrunk.uns["omnivae"]["shrinkage_weight"] == fitted.weight
    # a reference given as a saved folder carries its weights too
    model.save(tmp_path / "ref")
    from_disk = omnivae.Model.load_query(tmp_path / "ref", rna_only)
    _assert_same_shrinkage(from_disk.shrinkage, model.shrinkage)


def test_paired_query_keeps_the_reference_shrinkage_and_saves_it(shrunk_reference, tmp_path):
    """Where the query has the target, its own validation cells could fit a weight; the query
    model keeps the reference's (re-fitting on a query's few cells did worse on balance), and a
    save/load round trip keeps it."""
    model, query = shrunk_reference
    mapped = model.map_query(query, max_epochs=2, progress_bar=False, validation_fraction=0.3)
    _assert_same_shrinkage(mapped.shrinkage, model.shrinkage)
    mapped.save(tmp_path / "query_model")
    loaded = omnivae.Model.load(tmp_path / "query_model", query)
    _assert_same_shrinkage(loaded.shrinkage, model.shrinkage)
    for target in ("rna", "adt"):
        shrunk = loaded.predict(target)
        np.testing.assert_allclose(shrunk.X, mapped.predict(target).X, rtol=1e-4, atol=1e-6)
        assert np.abs(shrunk.X - loaded.predict(target, shrink=False).X).max() > 1e-3


def test_cli_map_writes_query_embedding_predictions_and_model(tmp_path, capsys):
    import mudata as md

    from omnivae.cli import main

    sim = omnivae.datasets.simulate(150, modalities=("rna", "adt"), n_batches=3, seed=0)
    model = omnivae.Model(sim[sim.obs["batch"] != "batch-2"].copy(), batch_key="batch",
                          n_latent=3)
    model.train(max_epochs=2, progress_bar=False)
    model.save(tmp_path / "ref")
    query = sim[sim.obs["batch"] == "batch-2"].copy()
    query.mod["adt"] = query["adt"][:, ::2].copy()  # half the antibody panel
    query.obs["lab"] = "new_lab"
    del query.obs["batch"]
    for name in query.mod:
        query[name].obs = query[name].obs.drop(columns=["batch"], errors="ignore")
    refresh(query)
    query.write_h5mu(tmp_path / "query.h5mu")
    args = ["map", str(tmp_path / "ref"), str(tmp_path / "query.h5mu"), "-o",
            str(tmp_path / "out.h5mu"), "--max-epochs", "2", "--no-progress"]
    assert main(args) == 2  # the reference's batch column is missing: the error says what to do
    assert "--batch-key" in capsys.readouterr().err
    assert not (tmp_path / "out.h5mu").exists()
    assert main([*args, "--batch-key", "lab", "--save-model", str(tmp_path / "q")]) == 0
    result = md.read_h5mu(tmp_path / "out.h5mu")
    assert result.obsm["X_omnivae"].shape == (query.n_obs, 3)
    assert result.uns["X_omnivae"]["params"]["new_batches"] == ["new_lab"]
    assert result["adt_imputed"].shape == (query.n_obs, sim["adt"].n_vars)
    assert "rna_imputed" in result.mod
    loaded = omnivae.Model.load(tmp_path / "q", result)
    np.testing.assert_allclose(loaded.get_latent_representation(), result.obsm["X_omnivae"],
                               rtol=1e-4, atol=1e-5)
    assert main(["map", str(tmp_path / "nowhere"), str(tmp_path / "query.h5mu"), "-o",
                 str(tmp_path / "x.h5mu")]) == 2
    assert "not an omnivae model folder" in capsys.readouterr().err
