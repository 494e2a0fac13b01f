"""Simulator realism and mosaic layout; registry, checksummed loading, search order, download
of the public sources (served locally, never from the internet) and their conversion."""

from __future__ import annotations

import hashlib
import re
import shutil
import time
from pathlib import Path

import mudata as md
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from omnivae import datasets
from omnivae.data.files import mudata_defaults
from omnivae.datasets import (
    ChecksumError,
    ConversionError,
    UnknownDatasetError,
    available,
    load,
    locate,
    simulate,
    sources,
)
from omnivae.datasets.convert import CONVERTERS, content_sha256
from omnivae.datasets.download import converted_fingerprint, fetch_file, mark_converted
from tests.dataset_sources import REAL_SOURCES, differences, real_sources_present

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REGISTRY = datasets._registry()
SMALL = "neurips2021_bmmc_multiome_starter"
needs_shared = pytest.mark.skipif(not (SHARED / f"{SMALL}.h5mu").is_file(),
                                  reason=f"shared data folder {SHARED} not available")


@pytest.fixture(scope="module")
def sim():
    return simulate(1500, seed=0, return_truth=True)


def _log_pca(x: sp.spmatrix, n: int = 20) -> np.ndarray:
    dense = np.asarray(x.todense())
    dense = np.log1p(dense / np.maximum(dense.sum(1, keepdims=True), 1) * 1e4)
    pcs = PCA(n, random_state=0).fit_transform(dense)
    return pcs / pcs.std(axis=0)


def _cv_accuracy(features: np.ndarray, labels) -> float:
    model = LogisticRegression(max_iter=3000)
    return float(cross_val_score(model, features, np.asarray(labels), cv=3).mean())


# ----------------------------------------------------------------------------- simulator
def test_simulate_is_deterministic():
    a, b, c = simulate(200, seed=3), simulate(200, seed=3), simulate(200, seed=4)
    for mod in a.mod:
        assert a[mod].obs_names.equals(b[mod].obs_names)
        assert (a[mod].X != b[mod].X).nnz == 0
    assert a.obs.equals(b.obs)
    assert a.uns["simulation"]["missing"] == b.uns["simulation"]["missing"]
    assert (a.obs["cell_type"].to_numpy() != c.obs["cell_type"].to_numpy()).any()
    assert c["rna"].X.shape != a["rna"].X.shape or (a["rna"].X != c["rna"].X).nnz > 0


def test_shapes_names_and_feature_types(sim):
    mdata, truth = sim
    assert mdata.n_obs == 1500 and list(mdata.mod) == ["rna", "atac", "adt"]
    assert list(mdata.obs_names[:2]) == ["cell-00000", "cell-00001"]
    assert {m: a.n_vars for m, a in mdata.mod.items()} == {"rna": 1000, "atac": 2000, "adt": 30}
    assert mdata["rna"].var_names[0] == "gene-0001" and mdata["atac"].var_names[-1] == "peak-2000"
    assert mdata["adt"].var_names[0] == "protein-01"
    assert mdata.var_names.is_unique
    types = {m: set(a.var["feature_types"]) for m, a in mdata.mod.items()}
    assert types == {"rna": {"Gene Expression"}, "atac": {"Peaks"}, "adt": {"Antibody Capture"}}
    for frame in [mdata.obs, *(a.obs for a in mdata.mod.values())]:
        assert frame["batch"].dtype == "category" and frame["cell_type"].dtype == "category"
        assert not frame[["batch", "cell_type"]].isna().any().any()
    assert set(mdata.obs["batch"]) == {"batch-0", "batch-1", "batch-2"}
    assert set(mdata.obs["cell_type"]) == {f"type-{i}" for i in range(6)}
    counts = mdata.obs["batch"].value_counts()
    assert counts.max() - counts.min() <= 1  # balanced batches
    for mod, adata in mdata.mod.items():
        assert (adata.obs["batch"] == mdata.obs.loc[adata.obs_names, "batch"]).all()
        assert truth[mod].obs_names.equals(mdata.obs_names)


def test_mosaic_membership(sim):
    mdata, _ = sim
    member = np.column_stack([mdata.obsm[m] for m in mdata.mod]).astype(bool)
    assert member.any(axis=1).all()  # every cell keeps at least one modality
    n_missing = int((~member).any(axis=1).sum())
    assert n_missing == round(0.2 * 1500)
    assert int((~member).sum()) == n_missing  # each such cell loses exactly one modality
    missing = mdata.uns["simulation"]["missing"]
    for i, mod in enumerate(mdata.mod):
        absent = set(mdata.obs_names[~member[:, i]])
        assert absent == set(missing[mod])
        assert absent.isdisjoint(mdata[mod].obs_names)
        assert mdata[mod].n_obs + len(absent) == mdata.n_obs
    assert all(len(v) > 0 for v in missing.values())


def test_counts_are_integer_float32_csr(sim):
    mdata, truth = sim
    for adata in [*mdata.mod.values(), *truth.values()]:
        assert sp.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32
        assert np.array_equal(adata.X.data, np.round(adata.X.data)) and adata.X.data.min() >= 0


def test_sparsity_and_library_sizes(sim):
    _, truth = sim
    zeros = {m: 1 - a.X.nnz / np.prod(a.shape) for m, a in truth.items()}
    assert 0.83 <= zeros["rna"] <= 0.92
    assert 0.92 <= zeros["atac"] <= 0.975
    assert zeros["adt"] < 0.1
    atac = truth["atac"].X.data
    assert (atac <= 2).mean() > 0.95  # accessibility counts are mostly 0/1/2
    rna_lib = np.asarray(truth["rna"].X.sum(1)).ravel()
    assert 1500 <= np.median(rna_lib) <= 5000
    assert np.median(np.asarray(truth["adt"].X.sum(1))) > 500
    assert (rna_lib > 0).all()


def test_cell_types_separable_but_not_trivial(sim):
    mdata, _ = sim
    rna = mdata["rna"]
    acc = _cv_accuracy(_log_pca(rna.X), rna.obs["cell_type"].cat.codes)
    assert acc > 0.8
    adt = mdata["adt"]
    assert 0.5 < _cv_accuracy(_log_pca(adt.X, 10), adt.obs["cell_type"].cat.codes) < 0.999


@pytest.mark.parametrize("modality", ["rna", "atac", "adt"])
def test_batch_effect_present_only_when_requested(modality):
    chance = 1 / 3
    scores = {}
    for effect in (0.0, 0.5):
        mdata = simulate(900, modalities=(modality,), batch_effect=effect, seed=5,
                         n_features={"atac": 1000} if modality == "atac" else None)
        a = mdata[modality]
        scores[effect] = _cv_accuracy(_log_pca(a.X, 10), a.obs["batch"].cat.codes)
    assert scores[0.5] > chance + 0.2
    assert scores[0.0] < chance + 0.1


def test_truth_matches_observed_counts(sim):
    mdata, truth = sim
    for mod, adata in mdata.mod.items():
        full = truth[mod]
        assert full.n_obs == mdata.n_obs and full.var_names.equals(adata.var_names)
        assert (full[adata.obs_names].X != adata.X).nnz == 0
        withheld = full[mdata.uns["simulation"]["missing"][mod]].X
        assert withheld.shape[0] > 0 and withheld.sum() > 0  # the truth keeps withheld counts


def test_other_modality_names_and_single_modality():
    mdata = simulate(120, modalities=("gex", "rna", "protein", "peaks", "methylation"),
                     n_features={"methylation": 7, "gex": 50, "rna": 40}, seed=2)
    assert mdata.var_names.is_unique
    assert mdata["methylation"].n_vars == 7
    assert set(mdata["methylation"].var["feature_types"]) == {"Custom"}
    assert set(mdata["gex"].var["feature_types"]) == {"Gene Expression"}
    assert set(mdata["protein"].var["feature_types"]) == {"Antibody Capture"}
    assert mdata["peaks"].n_vars == 2000
    single = simulate(100, modalities=("rna",), missing_fraction=0.5)
    assert single["rna"].n_obs == 100 and single.uns["simulation"]["missing"]["rna"] == []


@pytest.mark.parametrize("kwargs", [
    {"n_cells": 0}, {"modalities": ()}, {"modalities": ("rna", "rna")}, {"modalities": "rna"},
    {"missing_fraction": 1.0}, {"missing_fraction": -0.1}, {"n_batches": 0},
    {"n_cell_types": 0}, {"batch_effect": -1.0}, {"n_features": {"adt": 0}},
    {"n_features": {"protein": 5}},
])
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        simulate(**{"n_cells": 10, **kwargs})


def test_h5mu_round_trip(tmp_path):
    mdata = simulate(150, seed=9)
    mdata.write(tmp_path / "sim.h5mu")
    with mudata_defaults():
        back = md.read_h5mu(tmp_path / "sim.h5mu")
    assert back.obs_names.equals(mdata.obs_names)
    assert list(back.uns["simulation"]["missing"]["rna"]) == mdata.uns["simulation"]["missing"]["rna"]
    assert (back["atac"].X != mdata["atac"].X).nnz == 0


def test_simulate_is_fast():
    start = time.perf_counter()
    simulate(2000)
    assert time.perf_counter() - start < 4.0  # typically ~0.5 s


@pytest.mark.slow
def test_simulate_100k_rna_only():
    start = time.perf_counter()
    mdata = simulate(100_000, modalities=("rna",))
    assert mdata["rna"].shape == (100_000, 1000)
    assert time.perf_counter() - start < 60.0  # typically ~10 s


# ----------------------------------------------------------------------------- registry
ROLES = {"openproblems_h5ad": None, "scmomat_npz": {"rna", "atac", "meta", "genes", "regions"},
         "totalvi_csv": {"rna", "adt"}, "prepared_h5mu": {"mudata"}}
RAW_URL = re.compile(r"https://raw\.githubusercontent\.com/[\w.-]+/[\w.-]+/[0-9a-f]{40}/\S+")


def test_registry_entries_are_complete():
    fields = {"name", "filename", "description", "n_cells", "modalities", "modality_cells",
              "batch_key", "label_key", "licence", "source", "url", "format", "sources",
              "prepared_url", "sha256", "content_sha256"}
    assert len(REGISTRY) == 6
    for name, entry in REGISTRY.items():
        assert fields <= set(entry) and entry["name"] == name
        assert entry["filename"] == f"{name}.h5mu"
        for digest in (entry["sha256"], entry["content_sha256"]):
            assert re.fullmatch(r"[0-9a-f]{64}", digest)
        assert entry["format"] in CONVERTERS
        roles = {s["role"] for s in entry["sources"]}
        assert roles == (ROLES[entry["format"]] or set(entry["modalities"]))
        for src in entry["sources"]:
            assert RAW_URL.fullmatch(src["url"]), src["url"]  # full 40-hex commits
            assert re.fullmatch(r"[0-9a-f]{64}", src["sha256"]) and src["size_bytes"] > 0
            commit = src["url"].split("/")[5]
            assert commit[:8] in entry["source"] and commit in entry["url"]
        assert sum(s["size_bytes"] for s in entry["sources"]) < 8_000_000  # small downloads
        assert entry["prepared_url"] is None
    table = available()
    assert list(table.index) == sorted(REGISTRY)
    assert {"n_cells", "batch_key", "label_key", "licence", "source", "path",
            "download_bytes"} <= set(table.columns)
    assert (table["download_bytes"] > 0).all()


def test_sources_lists_url_and_sha256(monkeypatch):
    monkeypatch.delenv("OMNIVAE_DATA_MIRROR", raising=False)
    for name, entry in REGISTRY.items():
        pairs = sources(name)
        assert pairs == [(s["url"], s["sha256"]) for s in entry["sources"]]
        assert all(isinstance(u, str) and len(d) == 64 for u, d in pairs)
    url = sources("quickstart_pbmc_mosaic")[0][0]
    tail = url.removeprefix("https://raw.githubusercontent.com/")
    assert tail == ("labomics/midas/5f0f57973bd6bea6f9ed034fffb4d9b3aa703777/"
                    "src/scmidas/data/quickstart_pbmc_mosaic.h5mu")
    assert sources("quickstart_pbmc_mosaic", mirror="http://h:1/m")[0][0] == f"http://h:1/m/{tail}"
    monkeypatch.setenv("OMNIVAE_DATA_MIRROR", "/srv/mirror/")
    assert sources("quickstart_pbmc_mosaic.h5mu")[0][0] == f"file:///srv/mirror/{tail}"
    with pytest.raises(UnknownDatasetError):
        sources("no_such_dataset")


def test_unknown_name_lists_names_and_suggests():
    with pytest.raises(KeyError) as err:
        load("neurips2021_bmmc_cite")
    text = str(err.value)
    assert isinstance(err.value, ValueError) and isinstance(err.value, UnknownDatasetError)
    assert "Did you mean 'neurips2021_bmmc_cite_starter'" in text
    assert all(name in text for name in REGISTRY)


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """A fake dataset 'toy' (a small simulated h5mu, never in the shared folder), empty cache."""
    toy = tmp_path / "src" / "toy.h5mu"
    toy.parent.mkdir()
    simulate(60, modalities=("rna", "adt"), n_features={"rna": 20}, seed=1).write(toy)
    entry = {"name": "toy", "filename": "toy.h5mu", "description": "toy", "n_cells": 60,
             "modalities": {"rna": 20, "adt": 30}, "batch_key": "batch", "label_key": "cell_type",
             "licence": "MIT", "source": "example/repo @ abc1234 : toy", "url": None,
             "sources": [{"role": "mudata", "sha256": "0" * 64, "size_bytes": 1,
                          "url": "https://raw.githubusercontent.com/example/repo/abc1234/toy.csv"}],
             "format": "prepared_h5mu", "prepared_url": None,
             "sha256": hashlib.sha256(toy.read_bytes()).hexdigest(),
             "content_sha256": content_sha256(md.read_h5mu(toy), ["batch", "cell_type"])}
    monkeypatch.setattr(datasets, "_registry", lambda: {**REGISTRY, "toy": entry})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("OMNIVAE_DATA", raising=False)
    monkeypatch.delenv("OMNIVAE_DATA_MIRROR", raising=False)
    monkeypatch.chdir(tmp_path)
    return toy, entry


def test_not_found_message_names_every_place(isolated, tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load("toy", data_dir=tmp_path / "nowhere", download=False)
    text = str(err.value)
    assert "'toy'" in text and "OMNIVAE_DATA" in text
    assert str(tmp_path / "nowhere" / "toy.h5mu") in text
    assert str(tmp_path / "cache" / "omnivae" / "toy.h5mu") in text
    assert "https://raw.githubusercontent.com/example/repo/abc1234/toy.csv" in text
    assert "download=True" in text


def test_search_order_data_dir_then_env(isolated, tmp_path, monkeypatch):
    toy, _ = isolated
    env_dir, arg_dir = tmp_path / "env", tmp_path / "arg"
    for d in (env_dir, arg_dir):
        d.mkdir()
        (d / "toy.h5mu").symlink_to(toy)
    monkeypatch.setenv("OMNIVAE_DATA", str(env_dir))
    assert locate("toy") == env_dir / "toy.h5mu"
    assert locate("toy", data_dir=arg_dir) == arg_dir / "toy.h5mu"
    mdata = load("toy.h5mu")
    assert mdata.n_obs == 60 and mdata.uns["dataset"]["name"] == "toy"


def test_checksum_mismatch_is_reported(isolated, tmp_path):
    toy, entry = isolated
    bad = tmp_path / "bad"
    bad.mkdir()
    data = bytearray(toy.read_bytes())
    data[-10] ^= 0xFF
    (bad / "toy.h5mu").write_bytes(bytes(data))
    with pytest.raises(ChecksumError) as err:
        load("toy", data_dir=bad)
    text = str(err.value)
    assert str(bad / "toy.h5mu") in text and entry["sha256"] in text
    assert hashlib.sha256(bytes(data)).hexdigest() in text


def test_converted_file_is_accepted_by_content_not_bytes(isolated, tmp_path):
    """A converted file (marked so) written differently (here compressed, as by other library
    versions) with the registered content is accepted; unmarked, or with one count or one obs
    value changed, it is refused, naming both the sha256 and the content fingerprint."""
    toy, entry = isolated
    mdata = md.read_h5mu(toy)

    def write(folder: str, mark: bool = True) -> Path:
        path = tmp_path / folder / "toy.h5mu"
        path.parent.mkdir()
        mdata.write_h5mu(path, compression="gzip")
        if mark:
            mark_converted(path, entry["content_sha256"])
        return path

    same = write("same")
    assert hashlib.sha256(same.read_bytes()).hexdigest() != entry["sha256"]
    assert locate("toy", data_dir=same.parent) == same
    with pytest.raises(ChecksumError) as err:
        locate("toy", data_dir=write("unmarked", mark=False).parent)
    assert entry["content_sha256"] not in str(err.value)
    mdata["rna"].obs.iloc[0, 0] = mdata["rna"].obs.iloc[1, 0]
    with pytest.raises(ChecksumError, match=entry["content_sha256"]):
        locate("toy", data_dir=write("obs").parent)
    mdata["rna"].X.data[0] += 1
    with pytest.raises(ChecksumError, match=entry["content_sha256"]):
        locate("toy", data_dir=write("changed").parent)


def test_download_file_url_is_atomic(tmp_path):
    src = tmp_path / "payload.bin"
    src.write_bytes(b"omnivae" * 1000)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    dest = tmp_path / "dl" / "payload.bin"
    assert fetch_file(src.as_uri(), dest, digest) == dest
    assert dest.read_bytes() == src.read_bytes()
    dest.write_bytes(b"previous")
    with pytest.raises(ChecksumError, match="expected sha256"):
        fetch_file(src.as_uri(), dest, "0" * 64)
    assert dest.read_bytes() == b"previous"  # untouched on failure
    assert sorted(p.name for p in dest.parent.iterdir()) == ["payload.bin"]  # no partial file
    with pytest.raises(OSError):
        fetch_file((tmp_path / "missing").as_uri(), tmp_path / "dl" / "x.bin")
    assert sorted(p.name for p in dest.parent.iterdir()) == ["payload.bin"]


def test_load_downloads_prepared_url_into_cache(isolated, tmp_path, monkeypatch):
    toy, entry = isolated
    entry["prepared_url"] = toy.as_uri()
    entry["sources"] = []
    with pytest.raises(FileNotFoundError, match="download=True"):
        load("toy", download=False)
    mdata = load("toy")
    cached = tmp_path / "cache" / "omnivae" / "toy.h5mu"
    assert cached.is_file() and mdata.n_obs == 60
    toy.unlink()  # the cached copy is used from now on
    assert locate("toy") == cached


def test_obs_columns_pulled_from_modalities():
    mdata = simulate(80, modalities=("rna", "adt"), missing_fraction=0.5, seed=4)
    expected = mdata.obs["cell_type"].astype(str).copy()
    del mdata.obs["cell_type"]
    mdata.obs["rna:batch"] = mdata.obs["batch"].where(mdata.obsm["rna"].ravel().astype(bool))
    del mdata.obs["batch"]
    del mdata["adt"].obs["batch"]
    datasets._normalise_obs(mdata, ["batch", "cell_type"])
    assert (mdata.obs["cell_type"].astype(str) == expected).all()
    only_adt = ~mdata.obsm["rna"].ravel().astype(bool)
    assert only_adt.any() and mdata.obs.loc[only_adt, "batch"].isna().all()
    assert mdata.obs.loc[~only_adt, "batch"].notna().all()
    assert "batch" in mdata["adt"].obs  # pushed back to the modality


# ----------------------------------------------------------------------------- real data
@pytest.mark.realdata
@needs_shared
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_load_registered_dataset(name):
    entry = REGISTRY[name]
    mdata = load(name)
    assert mdata.n_obs == entry["n_cells"]
    assert {m: a.n_vars for m, a in mdata.mod.items()} == entry["modalities"]
    assert {m: a.n_obs for m, a in mdata.mod.items()} == entry["modality_cells"]
    for key, count in ((entry["batch_key"], entry["n_batches"]), (entry["label_key"], entry["n_labels"])):
        if key is None:
            continue
        assert mdata.obs[key].notna().all() and mdata.obs[key].nunique() == count
        assert all(key in a.obs for a in mdata.mod.values())
    for adata in mdata.mod.values():
        x = adata.X[:200]
        assert sp.issparse(x) and np.array_equal(x.data, np.round(x.data))


@pytest.mark.realdata
@needs_shared
def test_real_file_via_env_and_corrupted_copy(tmp_path, monkeypatch):
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir()
    bad.mkdir()
    (good / f"{SMALL}.h5mu").symlink_to(SHARED / f"{SMALL}.h5mu")
    monkeypatch.setenv("OMNIVAE_DATA", str(good))
    assert locate(SMALL) == good / f"{SMALL}.h5mu"
    assert load(SMALL).n_obs == REGISTRY[SMALL]["n_cells"]
    corrupted = bad / f"{SMALL}.h5mu"
    shutil.copyfile(SHARED / f"{SMALL}.h5mu", corrupted)
    data = bytearray(corrupted.read_bytes())
    data[1000] ^= 0xFF
    corrupted.write_bytes(bytes(data))
    monkeypatch.setenv("OMNIVAE_DATA", str(bad))
    with pytest.raises(ChecksumError, match=REGISTRY[SMALL]["sha256"]):
        load(SMALL)


# ----------------------------------------------------------------------------- download
# CI runs these against source files rebuilt from ../shared/data in each source format (tree
# "rebuilt"; their sha256 replace the registered ones, the content fingerprint stays): that
# proves download, checks, conversion, cache and progress. The conversion of the real public
# files is checked by test_real_sources_convert_exactly, which needs a snapshot of them.
SLOW_CSV = {"pbmc10k_protein_v3_rna4000_adt14"}  # 4000 x 6855 dense CSV: ~10-30 s to convert


def _names(slow: set[str]) -> list:
    return [pytest.param(n, marks=pytest.mark.slow) if n in slow else n for n in sorted(REGISTRY)]


def _served_paths(server, entry) -> set[str]:
    return {"/rebuilt/" + s["url"].removeprefix("https://raw.githubusercontent.com/")
            for s in entry["sources"]}


def _read(path: Path) -> md.MuData:
    with mudata_defaults():
        return md.read_h5mu(path)


@pytest.mark.realdata
@pytest.mark.parametrize("name", _names(SLOW_CSV))
def test_download_converts_served_sources(name, source_server, tmp_path, monkeypatch, capfd):
    """OMNIVAE_DATA empty, no shared data: load() downloads every source file over HTTP, checks
    it, converts it to exactly the prepared file, caches it, and shows a progress bar."""
    source_server.offline(monkeypatch, tmp_path / "user", [name], tree="rebuilt")
    entry = source_server.entry(name, "rebuilt")
    before = len(source_server.requests)
    mdata = load(name)
    assert set(source_server.requests[before:]) == _served_paths(source_server, entry)
    cached = tmp_path / "user" / entry["filename"]
    assert sorted(p.name for p in cached.parent.iterdir()) == [entry["filename"]]  # no leftovers
    assert differences(_read(cached), _read(source_server.shared / entry["filename"])) == []
    assert mdata.n_obs == entry["n_cells"] and mdata.uns["dataset"]["name"] == name
    assert f"omnivae: downloading {name}" in capfd.readouterr().err


@pytest.mark.realdata
def test_second_call_uses_the_cache_offline(source_server, tmp_path, monkeypatch, capfd):
    source_server.offline(monkeypatch, tmp_path / "user", [SMALL], tree="rebuilt")
    path = locate(SMALL, progress=False)
    assert "omnivae: downloading" not in capfd.readouterr().err  # quiet
    before = len(source_server.requests)
    monkeypatch.setenv("OMNIVAE_DATA_MIRROR", "http://127.0.0.1:9/unreachable")
    assert locate(SMALL) == path and load(SMALL).n_obs == REGISTRY[SMALL]["n_cells"]
    assert len(source_server.requests) == before  # nothing downloaded again
    monkeypatch.setenv("OMNIVAE_DATA", str(tmp_path / "empty"))
    with pytest.raises(OSError, match=re.escape("Could not download http://127.0.0.1:9/unreachable/")):
        locate(SMALL, progress=False)  # the mirror really is unreachable
    assert list((tmp_path / "empty").iterdir()) == []


@pytest.mark.realdata
def test_source_checksum_mismatch_is_clear_and_leaves_nothing(source_server, tmp_path, monkeypatch):
    source_server.offline(monkeypatch, tmp_path / "user", [SMALL], tree="rebuilt")
    entry = source_server.entry(SMALL, "rebuilt")
    bad = {**entry, "sources": [dict(s) for s in entry["sources"]]}
    bad["sources"][1]["sha256"] = "0" * 64
    monkeypatch.setattr(datasets, "_registry", lambda: {**REGISTRY, SMALL: bad})
    with pytest.raises(ChecksumError) as err:
        load(SMALL, progress=False)
    text = str(err.value)
    url = source_server.mirror("rebuilt") + bad["sources"][1]["url"].removeprefix(
        "https://raw.githubusercontent.com/")
    assert url in text and "expected sha256 " + "0" * 64 in text
    assert f"got {entry['sources'][1]['sha256']}" in text
    assert list((tmp_path / "user").iterdir()) == []  # no partial file, no source folder


@pytest.mark.realdata
def test_wrong_conversion_is_refused_and_leaves_nothing(source_server, tmp_path, monkeypatch):
    source_server.offline(monkeypatch, tmp_path / "user", [SMALL], tree="rebuilt")
    entry = {**source_server.entry(SMALL, "rebuilt"), "content_sha256": "f" * 64}
    monkeypatch.setattr(datasets, "_registry", lambda: {**REGISTRY, SMALL: entry})
    with pytest.raises(ConversionError, match=r"content fingerprint expected f{64}, got [0-9a-f]{64}"):
        load(SMALL, progress=False)
    assert list((tmp_path / "user").iterdir()) == []


@pytest.mark.realdata
def test_download_false_never_downloads(source_server, tmp_path, monkeypatch):
    source_server.offline(monkeypatch, tmp_path / "user", [SMALL], tree="rebuilt")
    before = len(source_server.requests)
    with pytest.raises(FileNotFoundError) as err:
        load(SMALL, download=False)
    assert source_server.mirror("rebuilt") in str(err.value)  # names where the sources are
    assert len(source_server.requests) == before and list((tmp_path / "user").iterdir()) == []


@pytest.mark.realdata
@pytest.mark.parametrize("name", _names(SLOW_CSV))
def test_real_sources_convert_exactly(name, tmp_path, monkeypatch):
    """The real public source files (from a snapshot of the repositories at the registered
    commits, served as file://) download, match the registered sha256, and convert into the
    prepared file of ../shared/data: same cells, order, features, labels, counts, columns."""
    entry = REGISTRY[name]
    if not real_sources_present(entry):
        pytest.skip(f"no snapshot of the public source files of {name!r} under {REAL_SOURCES} "
                    "(set OMNIVAE_SOURCES_DIR)")
    prepared = Path(__file__).resolve().parents[1].parent / "shared" / "data" / entry["filename"]
    if not prepared.is_file():
        pytest.skip(f"prepared file {prepared} not available")
    monkeypatch.setenv("OMNIVAE_DATA", str(tmp_path / "user"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = locate(name, mirror=REAL_SOURCES, progress=False)
    assert path == tmp_path / "user" / entry["filename"]
    assert differences(_read(path), _read(prepared)) == []
    # byte for byte the prepared file (same library versions), or marked as converted
    same_bytes = hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
    assert same_bytes or converted_fingerprint(path) == entry["content_sha256"]


def test_docs_page_lists_every_source_and_checksum():
    page = (Path(__file__).resolve().parents[1] / "docs" / "datasets.md").read_text()
    for name, entry in REGISTRY.items():
        assert f"`{name}`" in page and entry["sha256"] in page
        for src in entry["sources"]:
            assert src["url"] in page and src["sha256"] in page
