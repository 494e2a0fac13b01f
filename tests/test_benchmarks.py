"""The benchmark suite's quick mode, end to end on real data (so the suite never rots)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from tests.conftest import shared_file

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("scvi")
pytest.importorskip("scib_metrics")


def _run_module():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("benchmarks_run", ROOT / "benchmarks" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.realdata
def test_quick_benchmark_end_to_end(tmp_path):
    for name in ("neurips2021_bmmc_cite_starter", "neurips2021_bmmc_multiome_starter",
                 "pbmc10k_protein_v3_rna4000_adt14"):
        shared_file(name)
    run = _run_module()
    run.main(["--quick", "--out", str(tmp_path)])

    for task in ("embedding", "prediction", "speed", "scaling"):
        text = (tmp_path / f"{task}.md").read_text()
        assert "Measured" in text
        assert "| system |" in text or "| cells |" in text
    for png in ("embedding.png", "embedding_bio_batch.png", "prediction.png", "scaling.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"

    raw = {t: json.loads((tmp_path / "raw" / f"{t}.json").read_text())["rows"]
           for t in ("embedding", "prediction", "speed", "scaling")}
    emb = raw["embedding"]
    by = {(r["dataset"], r["system"]): r for r in emb}
    cite, multiome = "neurips2021_bmmc_cite_starter", "neurips2021_bmmc_multiome_starter"
    common = ["omnivae (poe)", "omnivae (moe)", "omnivae (mopoe, default)", "PCA (concatenated)",
              "PCA (RNA)", "random (control)"]
    assert {s for d, s in by if d == cite} == {*common, "TOTALVI (scvi-tools)"}
    assert {s for d, s in by if d == multiome} == {*common, "MULTIVI (scvi-tools)"}
    for row in emb:
        for key in ("bio conservation", "batch correction", "total"):
            assert 0.0 <= row[key] <= 1.0, row
        assert row["total"] == pytest.approx(0.6 * row["bio conservation"]
                                             + 0.4 * row["batch correction"])
    # the random control conserves less biology than every embedding trained on the data (the
    # peers get 5 epochs in quick mode, too few to be held to this)
    for dataset in (cite, multiome):
        floor = by[(dataset, "random (control)")]["bio conservation"]
        for system in common[:-1]:
            assert by[(dataset, system)]["bio conservation"] > floor + 0.05, (dataset, system)

    # every neural network's rows say how many epochs it trained (quick mode caps them at 5);
    # the baselines train none, and the tables show the column
    for row in emb + raw["prediction"]:
        neural = row["system"].startswith(("omnivae", "TOTALVI", "MULTIVI"))
        assert (1 <= row["epochs"] <= 5) if neural else "epochs" not in row, row
    assert "| fit seconds | epochs | seeds |" in (tmp_path / "embedding.md").read_text()
    assert "| omnivae (mopoe, default) | " in (tmp_path / "prediction.md").read_text()

    pred = {(r["dataset"], r["task"], r["system"]): r for r in raw["prediction"]}
    assert (cite, "rna->adt", "TOTALVI (scvi-tools)") in pred
    assert (multiome, "rna->atac", "MULTIVI (scvi-tools)") in pred
    assert (multiome, "atac->rna", "MULTIVI (scvi-tools)") in pred
    assert (multiome, "rna->atac", "per-feature mean") in pred
    assert (cite, "rna->adt", "per-feature mean") not in pred  # constant: no Pearson r
    for row in raw["prediction"]:
        low = 0.0 if row["metric"] == "auroc" else -1.0
        assert low <= row["score"] <= 1.0, row
        assert row["withheld cells"] == round(0.25 * (600 if row["dataset"] == cite else 500))
    # kNN on RNA-PCA predicts proteins well on this set; misaligned cells or features would not
    assert pred[(cite, "rna->adt", "kNN regression")]["score"] > 0.4
    assert pred[(multiome, "rna->atac", "kNN regression")]["score"] > 0.6

    for row in raw["speed"] + raw["scaling"]:
        assert "error" not in row, row
        assert row["cells x epochs / s"] > 0 and 0 < row["fraction of matmul"] < 1
        assert row["peak RSS MB"] >= row["RSS before training MB"] > 50
    assert {r["system"] for r in raw["speed"]} == {"omnivae", "multivi"}
    assert {r["system"] for r in raw["scaling"]} == {"omnivae", "totalvi"}
    assert "Ratios omnivae / multivi" in (tmp_path / "speed.md").read_text()


@pytest.mark.gpu
@pytest.mark.realdata
def test_quick_speed_and_scaling_run_on_the_gpu(tmp_path):
    """``--accelerator gpu``: every timed training runs on the CUDA device and reports its peak
    GPU memory (CI has no GPU: this runs where one is lent)."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    shared_file("neurips2021_bmmc_multiome_starter")  # quick speed: omnivae vs MULTIVI on it
    shared_file("pbmc10k_protein_v3_rna4000_adt14")  # quick scaling: synthetic cells like it
    run = _run_module()
    run.main(["--quick", "--tasks", "speed", "scaling", "--accelerator", "gpu",
              "--out", str(tmp_path)])
    for task in ("speed", "scaling"):
        assert "accelerator gpu" in (tmp_path / f"{task}.md").read_text()
        rows = json.loads((tmp_path / "raw" / f"{task}.json").read_text())["rows"]
        assert rows
        for row in rows:
            assert "error" not in row, row
            assert row["peak GPU MB"] > 0 and row["cells x epochs / s"] > 0, row


def test_complete_cell_models_train_on_paired_cells_and_predict_the_withheld_ones():
    _run_module()  # puts benchmarks/ on the path
    import omnivae
    from suite.config import DatasetSpec, PredictionTask
    from suite.systems import FAMILY_ROWS, Omnivae, complete_cells
    from suite.tasks import prediction_rows, withhold_modality

    sim = omnivae.datasets.simulate(160, modalities=("rna", "adt"), n_batches=2,
                                    missing_fraction=0.0, seed=0)
    spec = DatasetSpec("sim", "cell_type", "batch", (PredictionTask("rna", "adt", "pearson"),))
    jmvae = Omnivae("omnivae (jmvae)", **FAMILY_ROWS["omnivae (jmvae)"])
    assert jmvae.trains_on_complete_cells and not Omnivae("x").trains_on_complete_cells
    masked, truth = withhold_modality(sim, "adt", fraction=0.25, seed=0, require=("rna",))
    assert complete_cells(masked).n_obs == sim.n_obs - truth.n_obs
    assert jmvae.accepts(masked, spec)
    rows = prediction_rows(sim, spec, [jmvae], seed=0, max_epochs=2, accelerator="cpu")
    assert [(r["system"], r["withheld cells"]) for r in rows] == [("omnivae (jmvae)", 40)]
    assert -1.0 <= rows[0]["score"] <= 1.0
    # a batch found only among incomplete cells is unknown to the joint encoder: skipped
    import mudata as md

    batch = sim.obs["batch"].astype(str)
    mosaic = md.MuData({"rna": sim["rna"].copy(),
                        "adt": sim["adt"][batch[batch == "batch-0"].index].copy()})
    mosaic.obs["batch"] = batch.reindex(mosaic.obs_names)
    assert not jmvae.accepts(mosaic, spec)


def test_speed_variants_join_the_rotation_and_get_their_own_ratio(tmp_path, monkeypatch):
    _run_module()  # puts benchmarks/ on sys.path
    from suite import outputs, speed

    jobs = []

    def fake_worker(job, timeout):
        jobs.append(job)
        name = job.get("label", job["system"])
        rate = {"omnivae": 300.0, "multivi": 100.0}.get(name, 150.0)
        return {"system": name, "cells x epochs / s": rate, "peak RSS MB": 10.0}

    monkeypatch.setattr(speed, "run_worker", fake_worker)
    variant = {"omnivae (mixture_sampling=stratified)": {"mixture_sampling": "stratified"}}
    rows = speed.speed_rows("mop_snareseq_c1", "multivi", epochs=1, repeats=3, accelerator="cpu",
                            timeout=1.0, batch_key="batch", variants=variant)
    order = [j.get("label", j["system"]) for j in jobs]
    assert order[:3] == ["omnivae", *variant, "multivi"]
    assert order[3:6] == [*variant, "multivi", "omnivae"]  # rotated every repeat
    assert jobs[1]["omnivae_kwargs"] == {"mixture_sampling": "stratified"}
    assert jobs[1]["system"] == "omnivae"
    outputs.write_speed(tmp_path, rows, {"mop_snareseq_c1": "multivi"}, "note", "settings")
    text = (tmp_path / "speed.md").read_text()
    assert "Ratios omnivae / multivi (medians over repeats): throughput 3.00" in text
    assert "Ratios omnivae (mixture_sampling=stratified) / multivi: throughput 1.50" in text


def _machine_note(when: str, commit: str, load: str) -> str:
    """A note in the form suite.report.machine_note writes."""
    return (f"Measured {when} UTC on vm (x86_64, 2 cores); omnivae commit {commit}, "
            f"scvi-tools 1.4.2. The machine is shared with other jobs (load average at "
            f"start: {load}), so absolute seconds are noisy; ratios come from alternated "
            "runs.")


def test_merged_runs_get_one_summarised_machine_note():
    _run_module()  # puts benchmarks/ on the path
    from suite.report import combine_notes

    first = _machine_note("2026-11-29 12:21", "b53bea7", "3.0, 3.6, 4.1")
    second = _machine_note("2026-11-29 13:19", "8405874", "1.4, 2.2, 9.5")
    merged = combine_notes([second, first + " " + second, first])  # older merges ran notes together
    assert merged.startswith("Measured in 2 runs between 2026-11-29 12:21 and 13:19 UTC on vm")
    assert "commits 8405874, b53bea7, scvi-tools 1.4.2." in merged
    assert "load averages at the starts: 1.4 to 9.5" in merged
    assert combine_notes([first]) == first
    assert combine_notes(["hand-written note", first]) == "hand-written note " + first


def test_a_merged_report_merges_again_with_new_runs():
    """Raw parts of old runs are not kept: new runs are merged into benchmarks/results itself,
    so merging a merged note or settings line with new ones must equal merging all at once."""
    _run_module()
    from suite.report import combine_notes, combine_settings

    a = _machine_note("2026-11-29 12:21", "b53bea7", "3.0, 3.6, 4.1")
    b = _machine_note("2026-11-29 13:19", "8405874", "1.4, 2.2, 2.9")
    c = _machine_note("2026-11-30 06:05", "e31bab9", "0.7, 0.3, 0.1")
    assert combine_notes([combine_notes([a, b]), c]) == combine_notes([a, b, c])
    assert combine_notes([combine_notes([a, b, c])]) == combine_notes([a, b, c])
    assert combine_notes([a, b, c]).startswith("Measured in 3 runs between 2026-11-29 12:21 and "
                                                "2026-11-30 06:05 UTC")

    capped = "Mode: full; seeds [{}]; at most 20 epochs per neural network."
    default = "Mode: full; seeds [{}]; each system's default epochs and early stopping."
    runs = [default.format("0, 1, 2"), capped.format(0), capped.format("1, 2"), default.format("1, 2")]
    datasets = [["cite", "mosaic"], ["mop"], ["mop"], ["mosaic"]]
    old = combine_settings(runs[:2], datasets[:2])
    again = combine_settings([old, *runs[2:]], [["cite", "mosaic", "mop"], *datasets[2:]])
    assert again == combine_settings(runs, datasets) == (
        "Mode: full; seeds [0, 1, 2]; each system's default epochs and early stopping (cite, "
        "mosaic). Mode: full; seeds [0, 1, 2]; at most 20 epochs per neural network (mop).")


def test_merged_runs_join_the_seeds_of_equal_settings():
    _run_module()
    from suite.report import combine_settings

    epochs = "each system's default epochs and early stopping."
    merged = combine_settings([f"Mode: full; seeds [2]; {epochs}",
                               f"Mode: full; seeds [0, 1]; {epochs}",
                               "Mode: full; seeds [0]; at most 100 epochs per neural network."])
    assert merged == (f"Mode: full; seeds [0, 1, 2]; {epochs} "
                      "Mode: full; seeds [0]; at most 100 epochs per neural network.")


def test_merged_settings_say_which_datasets_ran_which_seeds():
    """The family report: seed 0 everywhere, seeds 1-2 on the mosaic set only. One line
    claiming seeds [0, 1, 2] for every dataset would overstate the others."""
    _run_module()
    from suite.report import combine_settings

    capped = "Mode: full; seeds [{}]; at most 100 epochs per neural network."
    merged = combine_settings([capped.format(0), capped.format(0), capped.format("1, 2")],
                              [["cite", "mosaic"], ["sln"], ["mosaic"]])
    assert merged == ("Mode: full; seeds [0]; at most 100 epochs per neural network (cite, sln). "
                      "Mode: full; seeds [0, 1, 2]; at most 100 epochs per neural network "
                      "(mosaic).")
    assert combine_settings([merged], [[]]) == merged  # combining again changes nothing


def test_merging_family_rows_writes_named_reports_with_their_own_titles(tmp_path):
    run = _run_module()
    from suite.outputs import _raw

    def rows(system: str, total: float) -> list[dict]:
        return [{"dataset": "neurips2021_bmmc_cite_starter", "seed": 0, "system": system,
                 "cells scored": 600, "bio conservation": total - 0.05,
                 "batch correction": total + 0.05, "total": total, "fit seconds": 1.0}]

    def predictions(system: str, score: float, **epochs: float) -> list[dict]:
        return [{"dataset": "neurips2021_bmmc_cite_starter", "seed": 0, "task": "rna->adt",
                 "metric": "pearson", "system": system, "score": score, "withheld cells": 150,
                 "fit seconds": 1.0, **epochs}]

    for i, (system, total) in enumerate([("omnivae (mvae)", 0.664), ("random (control)", 0.526)]):
        _raw(tmp_path / f"part{i}", "embedding", rows(system, total), "a note", "Mode: full.")
    _raw(tmp_path / "part0", "prediction", predictions("omnivae (mvae)", 0.61, epochs=143.0),
         "a note",
         "Mode: full.")
    _raw(tmp_path / "part2", "prediction", predictions("kNN regression", 0.64), "a note",
         "Mode: full.")
    (tmp_path / "family_embedding.md").write_text("# The model family\n\nWhy these rows.\n")
    (tmp_path / "family_prediction.md").write_text("Predicted by every model.\n")
    run.main(["--from-raw", *(str(tmp_path / f"part{i}") for i in range(3)), "--systems",
              "omnivae (mvae)", "random (control)", "kNN regression", "--report-name", "family",
              "--preamble", str(tmp_path / "family_embedding.md"),
              str(tmp_path / "family_prediction.md"), "--out", str(tmp_path / "out")])
    report = (tmp_path / "out" / "family_embedding.md").read_text()
    assert report.startswith("# The model family\n\nWhy these rows.")
    assert "| omnivae (mvae) | 0.614 | 0.714 | 0.664 |" in report
    assert report.index("| omnivae (mvae) |") < report.index("| random (control) |")
    assert "(family_embedding.png)" in report
    assert json.loads((tmp_path / "out" / "raw" / "family_embedding.json").read_text())["rows"]
    prediction = (tmp_path / "out" / "family_prediction.md").read_text()
    assert prediction.startswith("# Cross-modal prediction\n\nPredicted by every model.")
    assert prediction.index("| omnivae (mvae) | 0.610 |") < prediction.index("| kNN regression | 0.640 |")
    # the epochs a network trained, as a whole number; a baseline trains none; the embedding
    # rows (from a run before the suite recorded epochs) get no such column
    assert "| omnivae (mvae) | 0.610 | 1.000 | 143 | 1 |" in prediction
    assert "| kNN regression | 0.640 | 1.000 | n/a | 1 |" in prediction
    assert "| total | fit seconds | seeds |" in report
    assert "(family_prediction.png)" in prediction and (tmp_path / "out" / "family_prediction.png").is_file()
    assert not (tmp_path / "out" / "embedding.md").exists()
    assert not (tmp_path / "out" / "prediction.md").exists()


def test_a_preamble_must_say_which_report_it_heads(tmp_path):
    run = _run_module()
    (tmp_path / "notes.md").write_text("Why.\n")
    with pytest.raises(SystemExit, match=r"must end in _embedding\.md or _prediction\.md"):
        run.main(["--from-raw", str(tmp_path), "--report-name", "family",
                  "--preamble", str(tmp_path / "notes.md"), "--out", str(tmp_path / "out")])


def test_a_merge_stops_on_a_folder_with_no_raw_rows_and_writes_nothing(tmp_path):
    """A mistyped (or wrongly relative) --from-raw folder once merged as an empty run."""
    run = _run_module()
    from suite.outputs import _raw

    _raw(tmp_path / "a", "embedding", [{"dataset": "d", "seed": 0, "system": "PCA (RNA)",
                                        "total": 0.5}], "a note", "Mode: full; seeds [0].")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match=r"no raw/<task>\.json in .*typo \(does not exist\), "
                                         r".*empty \(no raw/\*\.json\)"):
        run.main(["--from-raw", str(tmp_path / "a"), str(tmp_path / "typo"),
                  str(tmp_path / "empty"), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_a_merge_names_each_budget_s_datasets_and_counts_a_repeated_baseline_once(tmp_path):
    run = _run_module()
    from suite.outputs import _raw

    def row(dataset: str, system: str, total: float) -> dict:
        return {"dataset": dataset, "seed": 0, "system": system, "cells scored": 100,
                "bio conservation": total, "batch correction": total, "total": total,
                "fit seconds": 1.0}

    small, large = "neurips2021_bmmc_cite_starter", "mop_snareseq_c1"
    default = "Mode: full; seeds [0]; each system's default epochs and early stopping."
    # a baseline scored again in a second run of the same dataset and seed
    _raw(tmp_path / "a", "embedding", [row(small, "omnivae (mopoe, default)", 0.7),
                                       row(small, "PCA (RNA)", 0.6)], "a note", default)
    _raw(tmp_path / "b", "embedding", [row(small, "omnivae (poe)", 0.65),
                                       row(small, "PCA (RNA)", 0.6)], "a note", default)
    # a run whose own merge already named its dataset (as every run's final merge does)
    _raw(tmp_path / "c", "embedding", [row(large, "omnivae (mopoe, default)", 0.61)], "a note",
         f"Mode: full; seeds [0]; at most 20 epochs per neural network ({large}).")
    run.main(["--from-raw", *(str(tmp_path / p) for p in "abc"), "--out", str(tmp_path / "out")])
    report = (tmp_path / "out" / "embedding.md").read_text()
    assert (f"Mode: full; seeds [0]; each system's default epochs and early stopping ({small}). "
            f"Mode: full; seeds [0]; at most 20 epochs per neural network ({large}).") in report
    assert "| PCA (RNA) | 0.600 | 0.600 | 0.600 | 1.000 | 1 |" in report  # once, not "± 0.000"
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "Training budgets: Mode: full; seeds [0]; each system's default" in summary
    assert f"at most 20 epochs per neural network ({large})." in summary


def test_a_table_says_over_how_many_seeds_a_partly_recorded_column_is_averaged():
    """Rows from runs before the suite recorded epochs have none: the mean of the others must
    not read as the mean over every seed."""
    import pandas as pd

    _run_module()  # puts benchmarks/ on the path
    from suite.report import table

    rows = pd.DataFrame({"system": ["a", "a", "a", "b", "b"], "seed": [0, 1, 2, 0, 1],
                         "score": [0.5, 0.6, 0.7, 0.1, 0.2],
                         "epochs": [None, 120.0, 180.0, 400.0, 400.0]})
    text = table(rows, ["system"], ["score", "epochs"])
    assert "| a | 0.600 ± 0.100 | 150 ± 42 (2 of 3 seeds) | 3 |" in text
    assert "| b | 0.150 ± 0.071 | 400 ± 0 | 2 |" in text
