"""The README's Python quick start runs as written (fewer epochs and draws), in a fresh folder,
on a machine without ../shared/data (the dataset is downloaded from a local server and converted),
and produces what it promises: clusters, a UMAP, imputed proteins, a mapped query."""

from __future__ import annotations

import matplotlib
import pytest

from tests.conftest import ROOT
from tests.readme_blocks import python_block_after

FAST = {  # the only edits: shorter training, fewer posterior draws
    "return_model=True)": "return_model=True, max_epochs=3)",
    "max_epochs=None": "max_epochs=3",
    "max_epochs=100": "max_epochs=2",
    "n_samples=100": "n_samples=5",
    "n_samples=20": "n_samples=5",
}


@pytest.mark.realdata
def test_readme_quick_start_runs_in_a_fresh_folder(tmp_path, monkeypatch, offline_data):
    offline_data("neurips2021_bmmc_cite_starter")  # OMNIVAE_DATA empty: load() downloads
    matplotlib.use("Agg")
    code = python_block_after("## Quick start (Python)")
    for old, new in FAST.items():
        assert old in code, f"README quick start changed: {old!r} not found; update FAST"
        code = code.replace(old, new)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md quick start", "exec"), namespace)
    mdata = namespace["mdata"]
    assert mdata.obs["leiden"].nunique() > 1
    assert {"X_omnivae", "X_umap"} <= set(mdata.obsm)
    assert mdata["adt_imputed"].n_obs == mdata.n_obs
    assert {"std", "lower", "upper"} <= set(mdata["adt_imputed"].layers)
    assert (tmp_path / "umap.png").stat().st_size > 0
    assert (tmp_path / "results.h5mu").is_file() and (tmp_path / "my_model").is_dir()
    assert (tmp_path / "user-data" / "neurips2021_bmmc_cite_starter.h5mu").is_file()  # downloaded
    query = namespace["query_mdata"]
    assert namespace["z_query"].shape == (query.n_obs, 20)
    assert query["adt_imputed"].n_obs == query.n_obs


def test_readme_is_at_most_16_kb():
    """The README stays a front page (what it is, install, quick start, headline, where things
    live); details belong in docs/ (guide, models, benchmarks_overview) and benchmarks/results/."""
    size = len((ROOT / "README.md").read_bytes())
    assert size <= 16 * 1024, f"README.md is {size} bytes; move details into docs/"
