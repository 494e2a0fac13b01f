"""What users hold, in: an AnnData of RNA (+ proteins in obsm, totalVI's layout), a 10x
multi-feature AnnData, .h5ad and 10x .h5 files (omnivae.data.inputs), on the real NeurIPS 2021
CITE-seq starter; models and tl functions on them write their outputs into the AnnData."""

from __future__ import annotations

import warnings

import anndata as ad
import h5py
import matplotlib
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import omnivae
from omnivae.cli import main
from omnivae.data.inputs import as_mudata, read_10x, read_input, split_feature_types
from tests.conftest import shared_file
from tests.readme_blocks import python_block_after

pytestmark = pytest.mark.realdata
PROTEIN_KEY = "protein_expression"


@pytest.fixture(scope="module")
def cite() -> md.MuData:
    """The real CITE-seq starter: 600 cells, RNA 1000 genes, ADT 134 proteins, 2 batches."""
    with warnings.catch_warnings():  # mudata's own, about the file's obs/var columns
        warnings.simplefilter("ignore")
        mdata = md.read_h5mu(shared_file("neurips2021_bmmc_cite_starter"))
    assert mdata["rna"].obs_names.equals(mdata.obs_names)
    assert mdata["adt"].obs_names.equals(mdata.obs_names)
    return mdata


def _totalvi(cite: md.MuData, n: int | None = None) -> ad.AnnData:
    """RNA counts in X, protein counts in obsm["protein_expression"] as a DataFrame."""
    cells = cite.obs_names if n is None else _subset(cite, n)
    rna, adt = cite["rna"][cells], cite["adt"][cells]
    adata = ad.AnnData(rna.X.copy(), obs=cite.obs.loc[cells, ["batch", "cell_type"]].copy(),
                       var=rna.var[["gene_ids"]].copy())
    adata.obsm[PROTEIN_KEY] = pd.DataFrame(adt.X.toarray().astype(np.int64), index=cells,
                                           columns=adt.var_names)
    return adata


def _subset(cite: md.MuData, n: int) -> pd.Index:
    """``n`` cells, half from each batch (both batches present)."""
    batch = cite.obs["batch"].astype(str)
    first = batch.unique()[:2]
    return cite.obs_names[batch == first[0]][: n // 2].append(
        cite.obs_names[batch == first[1]][: n - n // 2])


def _tenx(cite: md.MuData, n: int | None = None) -> ad.AnnData:
    """A 10x multi-feature AnnData: genes then antibodies in X, var["feature_types"]."""
    cells = cite.obs_names if n is None else _subset(cite, n)
    rna, adt = cite["rna"][cells], cite["adt"][cells]
    x = sp.hstack([rna.X, adt.X]).tocsr()
    var = pd.DataFrame({
        "gene_ids": list(rna.var["gene_ids"]) + list(adt.var_names),
        "feature_types": ["Gene Expression"] * rna.n_vars + ["Antibody Capture"] * adt.n_vars,
    }, index=list(rna.var_names) + [f"{p}_TotalSeqB" for p in adt.var_names])
    return ad.AnnData(x, obs=cite.obs.loc[cells, ["batch", "cell_type"]].copy(), var=var)


def _write_10x_h5(adata: ad.AnnData, path, names: list[str] | None = None) -> None:
    """Cell Ranger's feature-barcode matrix layout (v3): matrix/{data, indices, indptr, shape,
    barcodes, features/{id, name, feature_type, genome}}; the features x barcodes matrix in
    CSC, i.e. the cells x features CSR."""
    x = sp.csr_matrix(adata.X)
    with h5py.File(path, "w") as f:
        m = f.create_group("matrix")
        m.create_dataset("data", data=x.data.astype(np.int32))
        m.create_dataset("indices", data=x.indices.astype(np.int64))
        m.create_dataset("indptr", data=x.indptr.astype(np.int64))
        m.create_dataset("shape", data=np.array([adata.n_vars, adata.n_obs], dtype=np.int32))
        m.create_dataset("barcodes", data=np.array(adata.obs_names, dtype="S"))
        feats = m.create_group("features")
        feats.create_dataset("id", data=np.array(adata.var["gene_ids"], dtype="S"))
        feats.create_dataset("name", data=np.array(names or list(adata.var_names), dtype="S"))
        feats.create_dataset("feature_type", data=np.array(adata.var["feature_types"], dtype="S"))
        feats.create_dataset("genome", data=np.array(["GRCh38"] * adata.n_vars, dtype="S"))
        feats.create_dataset("_all_tag_keys", data=np.array([b"genome"]))


def _same_counts(a, b) -> bool:
    a = a.toarray() if sp.issparse(a) else np.asarray(a)
    b = b.toarray() if sp.issparse(b) else np.asarray(b)
    return a.shape == b.shape and bool(np.array_equal(a, b))


# conversion -------------------------------------------------------------------------------
def test_totalvi_anndata_gives_exactly_the_original_modalities(cite):
    adata = _totalvi(cite)
    mdata = as_mudata(adata, protein_key=PROTEIN_KEY)
    assert list(mdata.mod) == ["rna", "adt"]
    assert mdata.obs_names.equals(cite.obs_names)
    for name in ("rna", "adt"):  # every cell in every modality, counts and features unchanged
        assert mdata[name].obs_names.equals(cite.obs_names)
        assert list(mdata[name].var_names) == list(cite[name].var_names)
        assert _same_counts(mdata[name].X, cite[name].X)
    assert mdata.obs["cell_type"].equals(adata.obs["cell_type"])
    assert mdata.obs["batch"].astype(str).tolist() == cite.obs["batch"].astype(str).tolist()
    assert PROTEIN_KEY not in mdata.obsm  # it became modality adt
    assert PROTEIN_KEY in adata.obsm and "adt" not in getattr(adata, "mod", {})  # user's unchanged


def test_protein_names_from_array_argument_uns_or_numbered(cite):
    adata = _totalvi(cite, 40)
    names = list(adata.obsm[PROTEIN_KEY].columns)
    adata.obsm[PROTEIN_KEY] = adata.obsm[PROTEIN_KEY].to_numpy()  # an array: names lost
    assert as_mudata(adata, protein_key=PROTEIN_KEY)["adt"].var_names[:2].tolist() == [
        "protein_0", "protein_1"]
    adata.uns[f"{PROTEIN_KEY}_names"] = np.array(names)
    assert list(as_mudata(adata, protein_key=PROTEIN_KEY)["adt"].var_names) == names
    given = [f"p{i}" for i in range(len(names))]
    assert list(as_mudata(adata, protein_key=PROTEIN_KEY, protein_names=given)["adt"]
                .var_names) == given
    with pytest.raises(ValueError, match="has 2 names but"):
        as_mudata(adata, protein_key=PROTEIN_KEY, protein_names=["a", "b"])
    adata.obsm[PROTEIN_KEY] = sp.csr_matrix(adata.obsm[PROTEIN_KEY])  # sparse works too
    assert _same_counts(as_mudata(adata, protein_key=PROTEIN_KEY)["adt"].X,
                        cite["adt"][adata.obs_names].X)


def test_10x_multi_feature_anndata_splits_by_feature_types(cite):
    adata = _tenx(cite)
    parts = split_feature_types(adata)
    assert list(parts) == ["rna", "adt"]
    assert list(parts["rna"].var_names) == list(cite["rna"].var_names)
    assert _same_counts(parts["rna"].X, cite["rna"].X)
    assert _same_counts(parts["adt"].X, cite["adt"].X)
    assert set(parts["adt"].var["feature_types"]) == {"Antibody Capture"}
    mdata = as_mudata(adata)
    assert mdata["adt"].n_obs == mdata["rna"].n_obs == adata.n_obs
    # feature_types=False: X is one modality, as it is
    whole = as_mudata(adata, feature_types=False)
    assert list(whole.mod) == ["rna"] and whole["rna"].n_vars == adata.n_vars


def test_10x_multiome_anndata_splits_into_rna_and_atac():
    """Gene Expression + Peaks (10x Multiome) -> rna (NB) + atac (Bernoulli), exact counts."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        multiome = md.read_h5mu(shared_file("neurips2021_bmmc_multiome_starter"))
    rna, atac = multiome["rna"], multiome["atac"][multiome["rna"].obs_names]
    types = ["Gene Expression"] * rna.n_vars + ["Peaks"] * atac.n_vars
    var = pd.DataFrame({"feature_types": types},
                       index=list(rna.var_names) + list(atac.var_names))
    adata = ad.AnnData(sp.hstack([rna.X, atac.X]).tocsr(), obs=pd.DataFrame(index=rna.obs_names),
                       var=var)
    mdata = as_mudata(adata)
    assert list(mdata.mod) == ["rna", "atac"]
    assert _same_counts(mdata["atac"].X, atac.X) and _same_counts(mdata["rna"].X, rna.X)
    model = omnivae.Model(adata, n_latent=3)
    assert model.setup.likelihoods == {"rna": "nb", "atac": "bernoulli"}


def test_cells_without_any_protein_counts_are_warned_about(cite):
    """totalVI's layout stores a batch without protein as zeros; omnivae reads membership, so
    it says what it does with such cells and how to mark them as unmeasured."""
    adata = _totalvi(cite, 40)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # real counts: no warning
        as_mudata(adata, protein_key=PROTEIN_KEY)
    adata.obsm[PROTEIN_KEY].iloc[:10] = 0
    with pytest.warns(UserWarning, match=r"10 of 40 cells have no 'adt' counts at all"):
        mdata = as_mudata(adata, protein_key=PROTEIN_KEY)
    assert mdata["adt"].n_obs == 40  # still measured zeros: membership is explicit


def test_unknown_feature_types_are_an_error_unless_named(cite):
    adata = _tenx(cite, 30)
    types = adata.var["feature_types"].astype(str).to_numpy()
    types[-3:] = "CRISPR Guide Capture"
    adata.var["feature_types"] = types
    with pytest.raises(ValueError, match="Unknown feature types \\['CRISPR Guide Capture'\\]"):
        as_mudata(adata)
    mdata = as_mudata(adata, feature_types={"CRISPR Guide Capture": "crispr"})
    assert list(mdata.mod) == ["rna", "adt", "crispr"] and mdata["crispr"].n_vars == 3


def test_h5ad_file_round_trip(cite, tmp_path):
    path = tmp_path / "pbmc.h5ad"
    _totalvi(cite).write_h5ad(path)
    mdata = read_input(path, protein_key=PROTEIN_KEY)
    for name in ("rna", "adt"):
        assert list(mdata[name].var_names) == list(cite[name].var_names)
        assert _same_counts(mdata[name].X, cite[name].X)
    assert mdata.obs_names.equals(cite.obs_names)
    # a path to a Model: read into memory (backed training reads .h5mu files only)
    model = omnivae.Model(str(path), protein_key=PROTEIN_KEY, n_latent=3)
    assert model.backed is None and model.cells.n_cells == cite.n_obs
    with pytest.raises(ValueError, match=r"backed training reads \.h5mu files only"):
        omnivae.Model(path, protein_key=PROTEIN_KEY, backed=True)


def test_10x_h5_file_is_read_by_scanpy_and_split(cite, tmp_path):
    import scanpy as sc

    adata = _tenx(cite)
    names = list(adata.var_names)
    names[1] = names[0]  # duplicate gene symbols, as in real 10x files
    path = tmp_path / "filtered_feature_bc_matrix.h5"
    _write_10x_h5(adata, path, names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = sc.read_10x_h5(path, gex_only=False)
    assert raw.shape == adata.shape and _same_counts(raw.X, adata.X)
    assert list(raw.var["feature_types"]) == list(adata.var["feature_types"])
    read = read_10x(path)
    assert read.var_names[:2].tolist() == [names[0], f"{names[0]}-1"]
    mdata = read_input(path)
    assert list(mdata.mod) == ["rna", "adt"] and mdata.obs_names.equals(cite.obs_names)
    assert _same_counts(mdata["rna"].X, cite["rna"].X)
    assert _same_counts(mdata["adt"].X, cite["adt"].X)
    assert list(mdata["adt"].var_names) == list(adata.var_names[cite["rna"].n_vars:])


# models and tools on an AnnData --------------------------------------------------------------
def test_integrate_and_predict_write_into_the_anndata(cite, tmp_path):
    adata = _totalvi(cite, 200)
    model = omnivae.tl.integrate(adata, protein_key=PROTEIN_KEY, batch_key="batch",
                                 n_latent=6, max_epochs=2, progress_bar=False,
                                 return_model=True)
    assert isinstance(model, omnivae.Model) and model.adata is adata
    assert model.setup.modalities == ("rna", "adt")
    z = adata.obsm["X_omnivae"]
    assert z.shape == (200, 6) and np.isfinite(z).all()
    # rows are the AnnData's cells in order: the same cells given as a MuData embed alike
    again = model.get_latent_representation(as_mudata(adata.copy(), protein_key=PROTEIN_KEY))
    np.testing.assert_allclose(again, z, rtol=1e-5, atol=1e-5)
    assert adata.uns["X_omnivae"]["params"]["modalities"] == ["rna", "adt"]

    omnivae.tl.predict(adata, model, target="adt", n_samples=5, interval=0.9)
    imputed = adata.obsm["adt_imputed"]
    assert isinstance(imputed, pd.DataFrame)
    assert list(imputed.columns) == list(cite["adt"].var_names)
    assert imputed.index.equals(adata.obs_names)
    np.testing.assert_allclose(imputed.sum(1), 1.0, rtol=1e-4)
    assert (adata.obsm["adt_imputed_lower"] <= adata.obsm["adt_imputed_upper"]).all().all()
    assert (adata.obsm["adt_imputed_std"] >= 0).all().all()
    # the same as the model's own prediction of these cells (posterior mean, no draws)
    omnivae.tl.predict(adata, model, target="adt")
    np.testing.assert_allclose(adata.obsm["adt_imputed"].to_numpy(),
                               model.predict("adt").X, rtol=1e-5, atol=1e-7)
    assert "adt_imputed_std" not in adata.obsm  # stale entries of the earlier call removed
    path = tmp_path / "results.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    assert list(back.obsm["adt_imputed"].columns) == list(cite["adt"].var_names)

    # new cells as an AnnData without proteins: RNA-only cells, proteins predicted from RNA
    rna_only = adata.copy()
    del rna_only.obsm[PROTEIN_KEY]
    omnivae.tl.predict(rna_only, model, target="adt")
    assert rna_only.obsm["adt_imputed"].shape == (200, cite["adt"].n_vars)
    # save / load onto the AnnData
    model.save(tmp_path / "model")
    loaded = omnivae.Model.load(tmp_path / "model", adata, protein_key=PROTEIN_KEY)
    np.testing.assert_allclose(loaded.get_latent_representation(), z, rtol=1e-5, atol=1e-5)


def test_rna_only_anndata_is_a_one_modality_vae_with_the_defaults(cite):
    adata = _totalvi(cite, 200)
    del adata.obsm[PROTEIN_KEY]
    model = omnivae.Model(adata, batch_key="batch", n_latent=5)  # mopoe, MMD penalty: defaults
    assert model.setup.modalities == ("rna",)
    assert (model.config.fusion, model.config.batch_penalty) == ("mopoe", "mmd")
    model.train(max_epochs=2, progress_bar=False)
    assert np.isfinite(model.history["train_loss"]).all()
    assert (model.history["train_batch_penalty"] > 0).all()  # the penalty is computed
    z = model.get_latent_representation()
    assert z.shape == (200, 5) and np.isfinite(z).all() and z.std(0).max() > 0
    pred = model.predict("rna")
    np.testing.assert_allclose(pred.X.sum(1), 1.0, rtol=1e-4)


def test_map_query_of_an_anndata(cite):
    ref = _totalvi(cite, 160)
    model = omnivae.Model(ref, protein_key=PROTEIN_KEY, batch_key="batch", n_latent=4)
    model.train(max_epochs=1, progress_bar=False)
    rest = cite.obs_names.difference(ref.obs_names)[:40]
    query = ad.AnnData(cite["rna"][rest].X.copy(), var=cite["rna"].var[[]].copy(),
                       obs=pd.DataFrame({"batch": "new_lab"}, index=rest))
    q = omnivae.tl.map_query(query, model, max_epochs=1, progress_bar=False, return_model=True)
    assert query.obsm["X_omnivae"].shape == (40, 4)
    omnivae.tl.predict(query, q, target="adt")
    assert query.obsm["adt_imputed"].shape == (40, cite["adt"].n_vars)


# command line ---------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".h5ad", ".h5"])
def test_cli_fit_on_h5ad_and_10x_h5(cite, tmp_path, suffix):
    source, out = tmp_path / f"pbmc{suffix}", tmp_path / "out.h5mu"
    if suffix == ".h5ad":
        _totalvi(cite, 120).write_h5ad(source)
        extra = ["--protein-key", PROTEIN_KEY, "--batch-key", "batch"]
    else:
        _write_10x_h5(_tenx(cite, 120), source)
        extra = []
    assert main(["fit", str(source), "-o", str(out), *extra, "--max-epochs", "1",
                 "--no-progress", "--n-latent", "4", "--accelerator", "cpu"]) == 0
    with warnings.catch_warnings():  # mudata's, reading rna_imputed next to rna
        warnings.simplefilter("ignore")
        result = md.read_h5mu(out)
    assert result.obsm["X_omnivae"].shape == (120, 4)
    assert len(result.obs["omnivae_leiden"]) == 120
    assert {"rna", "adt", "rna_imputed", "adt_imputed"} <= set(result.mod)
    assert _same_counts(result["adt"].X, cite["adt"][result.obs_names].X)
    assert result.obs_names.equals(_subset(cite, 120))


def test_cli_clear_errors(cite, tmp_path, capsys):
    h5ad = tmp_path / "pbmc.h5ad"
    _totalvi(cite, 30).write_h5ad(h5ad)
    cases = [
        (["--backed"], "reads .h5mu files only"),
        (["--protein-key", "protein"], "protein_key='protein' is not in adata.obsm"),
    ]
    for extra, message in cases:
        assert main(["fit", str(h5ad), "-o", str(tmp_path / "o.h5mu"), *extra]) == 2
        assert message in capsys.readouterr().err
    other = tmp_path / "cells.loom"
    other.write_text("")
    assert main(["fit", str(other), "-o", str(tmp_path / "o.h5mu")]) == 2
    assert "unknown suffix '.loom'" in capsys.readouterr().err


# clear errors ----------------------------------------------------------------------------
def test_clear_errors(cite, tmp_path):
    adata = _totalvi(cite, 30)
    clr = adata.copy()
    counts = clr.obsm[PROTEIN_KEY]
    clr.obsm[PROTEIN_KEY] = np.log1p(counts) - np.log1p(counts).mean(1).to_numpy()[:, None]
    with pytest.raises(ValueError, match=r"obsm\['protein_expression'\] holds .* values .*raw"):
        omnivae.Model(clr, protein_key=PROTEIN_KEY)
    with pytest.raises(KeyError, match=r"protein_key='protein' is not in adata\.obsm"):
        omnivae.Model(adata, protein_key="protein")
    with pytest.raises(ValueError, match=r"unknown suffix '\.csv'"):
        read_input(tmp_path / "cells.csv")
    with pytest.raises(ValueError, match="no 'feature_types' column"):
        as_mudata(adata, feature_types=True)
    with pytest.raises(ValueError, match="a MuData already holds its modalities"):
        omnivae.tl.integrate(cite, protein_key=PROTEIN_KEY)
    with pytest.raises(ValueError, match="give protein counts"):  # feature types and obsm
        tenx = _tenx(cite, 30)
        tenx.obsm[PROTEIN_KEY] = adata.obsm[PROTEIN_KEY]
        as_mudata(tenx, protein_key=PROTEIN_KEY)
    dup = adata.copy()
    dup.var_names = ["G"] * dup.n_vars
    with pytest.raises(ValueError, match="var_names_make_unique"):
        as_mudata(dup)


# README ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_readme_anndata_five_lines_run_on_h5ad_and_10x_h5(cite, tmp_path, monkeypatch):
    """The README's five lines give an embedding, Leiden clusters, a UMAP and imputed
    proteins, from pbmc.h5ad (RNA + proteins in obsm) and from a 10x .h5."""
    import scanpy as sc

    matplotlib.use("Agg")
    code = python_block_after("From an AnnData")
    assert len(code.strip().splitlines()) == 5
    _totalvi(cite).write_h5ad(tmp_path / "pbmc.h5ad")
    _write_10x_h5(_tenx(cite), tmp_path / "pbmc.h5")
    fast = code.replace("return_model=True)", "return_model=True, max_epochs=2)")
    tenx = (fast.replace('sc.read_h5ad("pbmc.h5ad")', 'omnivae.data.read_10x("pbmc.h5")')
            .replace(f', protein_key="{PROTEIN_KEY}"', ""))
    assert tenx != fast
    monkeypatch.chdir(tmp_path)
    for variant in (fast, tenx):
        namespace: dict = {"sc": sc, "omnivae": omnivae}
        exec(compile(variant, "README.md AnnData quick start", "exec"), namespace)
        adata = namespace["adata"]
        assert adata.obsm["X_omnivae"].shape == (adata.n_obs, 20)
        assert adata.obs["leiden"].nunique() > 1 and "X_umap" in adata.obsm
        imputed = adata.obsm["adt_imputed"]
        assert imputed.shape == (adata.n_obs, cite["adt"].n_vars)
        np.testing.assert_allclose(imputed.sum(1), 1.0, rtol=1e-4)
