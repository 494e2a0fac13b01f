"""The bundled demo and the tutorials run end to end (quick mode) and write what they promise;
the tutorials on a machine without ../shared/data (their dataset is downloaded from a local
server and converted)."""

from __future__ import annotations

import runpy
from pathlib import Path

import mudata as md
import pytest

from omnivae.cli import main
from tests.conftest import ROOT


def test_demo_quick_writes_h5mu_umap_and_report(tmp_path):
    assert main(["demo", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    result = md.read_h5mu(tmp_path / "demo.h5mu")
    assert result.obsm["X_omnivae"].shape[0] == result.n_obs
    assert {"adt_imputed", "atac_imputed", "rna_imputed"} <= set(result.mod)
    assert "std" in result["adt_imputed"].layers
    assert (tmp_path / "umap.png").stat().st_size > 10_000
    report = (tmp_path / "report.md").read_text()
    assert "ARI" in report and "Pearson" in report and "kNN" in report


@pytest.mark.realdata
def test_cite_tutorial_runs_in_quick_mode(tmp_path, monkeypatch, offline_data):
    offline_data("neurips2021_bmmc_cite_starter")
    monkeypatch.setenv("OMNIVAE_TUTORIAL_QUICK", "1")
    monkeypatch.setenv("OMNIVAE_TUTORIAL_FIGURES", str(tmp_path))
    runpy.run_path(str(ROOT / "tutorials" / "01_cite_seq_quickstart.py"), run_name="__main__")
    assert Path(tmp_path / "cite_umap.png").is_file()
    for name in ("cite_history.png", "cite_predicted_vs_observed.png"):
        assert (tmp_path / name).stat().st_size > 10_000


@pytest.mark.realdata
@pytest.mark.parametrize(("script", "dataset", "figures"), [
    ("02_rna_atac_integration.py", "neurips2021_bmmc_multiome_starter",
     ("multiome_umap.png", "multiome_history.png", "multiome_rna_from_atac.png")),
    ("03_mosaic_integration.py", "quickstart_pbmc_mosaic",
     ("mosaic_umap.png", "mosaic_reference_and_query_umap.png")),
])
def test_multiome_and_mosaic_tutorials_run_in_quick_mode(tmp_path, monkeypatch, script,
                                                         dataset, figures, offline_data):
    offline_data(dataset)
    monkeypatch.setenv("OMNIVAE_TUTORIAL_QUICK", "1")
    monkeypatch.setenv("OMNIVAE_TUTORIAL_FIGURES", str(tmp_path))
    runpy.run_path(str(ROOT / "tutorials" / script), run_name="__main__")
    for name in figures:
        assert (tmp_path / name).stat().st_size > 10_000, name
    assert (tmp_path / "user-data" / f"{dataset}.h5mu").is_file()  # downloaded, not found
