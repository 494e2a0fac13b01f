"""The defaults-tuning script's candidate parsing and its summary table (no training here;
the tasks it calls are exercised end to end by the benchmark quick mode)."""

from __future__ import annotations

import pytest

from tests.conftest import benchmark_script


def _tune_module():
    return benchmark_script("tune_defaults")


def test_candidates_combine_and_unknown_names_are_refused():
    tune = _tune_module()
    model, train = tune.parse_candidate("hidden64+lr1e-3+dropout0.2")
    assert model == {"n_hidden": 64, "dropout": 0.2}
    assert train == {"lr": 1e-3}
    assert tune.parse_candidate("baseline") == ({}, {})
    with pytest.raises(SystemExit, match="Unknown candidate 'hidden65'"):
        tune.parse_candidate("hidden64+hidden65")


def test_summary_averages_seeds_per_dataset_and_task():
    tune = _tune_module()
    rows = [
        {"dataset": "neurips2021_bmmc_cite_starter", "seed": 0, "system": "baseline",
         "task": "embedding", "total": 0.60},
        {"dataset": "neurips2021_bmmc_cite_starter", "seed": 1, "system": "baseline",
         "task": "embedding", "total": 0.70},
        {"dataset": "neurips2021_bmmc_cite_starter", "seed": 0, "system": "baseline",
         "task": "rna->adt", "score": 0.5},
        {"dataset": "neurips2021_bmmc_cite_starter", "seed": 0, "system": "lr1e-3",
         "task": "rna->adt", "score": 0.25},
    ]
    text = tune.summarise(rows)
    header = next(line for line in text.splitlines() if line.startswith("| candidate"))
    assert header == "| candidate | seeds | CITE rna->adt | CITE scib total |"
    assert "| baseline | 0 1 | 0.500 | 0.650 |" in text
    assert "| lr1e-3 | 0 | 0.250 |  |" in text  # not run: an empty cell, not a number


def test_rows_against_earlier_defaults_get_their_own_table():
    tune = _tune_module()
    rows = [
        {"dataset": "neurips2021_bmmc_cite_starter", "seed": 0, "system": "baseline",
         "task": "rna->adt", "score": 0.669},  # no "defaults": measured before the label existed
        {"dataset": "neurips2021_bmmc_cite_starter", "seed": 0, "system": "baseline",
         "task": "rna->adt", "score": 0.650, "defaults": tune.PENALTY_DEFAULTS},
        {"dataset": "neurips2021_bmmc_cite_starter", "seed": 0, "system": "adt_nb",
         "task": "rna->adt", "score": 0.662, "defaults": tune.PENALTY_DEFAULTS},
        {"dataset": "neurips2021_bmmc_cite_starter", "seed": 0, "system": "baseline",
         "task": "rna->adt", "score": 0.662, "defaults": tune.DEFAULTS},
    ]
    text = tune.summarise(rows)
    current = text.index(f"## Against {tune.DEFAULTS}")
    penalty = text.index(f"## Against {tune.PENALTY_DEFAULTS}")
    earlier = text.index(f"## Against {tune.EARLIER_DEFAULTS}")
    assert text.index("Adopted:") < current < penalty < earlier  # newest first
    assert current < text.index("| baseline | 0 | 0.662 |") < penalty \
        < text.index("| baseline | 0 | 0.650 |") < text.index("| adt_nb | 0 | 0.662 |") \
        < earlier < text.index("| baseline | 0 | 0.669 |")
