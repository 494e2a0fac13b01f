"""Stratified vs one-component training of the MoPoE objective (``mixture_sampling``): speed and
quality, each pair of runs alternated so drift in the shared machine's load hits both alike.

Two parts (``--parts``), each appending rows to ``<out>/raw/mixture_sampling.jsonl`` as it goes:

* ``epoch``: one training epoch in this process on a seeded subset of cells (pbmc10k: 2,560
  cells, mop_snareseq_c1: 1,500, as in ``profile.md``), the two estimators alternated and the
  order flipped every repeat; batch 256, 128 hidden units, 20 latent dimensions.
* ``quality``: the suite's scib-metrics scores (:func:`suite.tasks.embedding_rows`) and
  prediction scores (:func:`suite.tasks.prediction_rows`) of both estimators at the default
  epochs on the NeurIPS CITE and Multiome starters, per seed.

``<out>/mixture_sampling.md`` is rewritten from all rows (medians over repeats, values per seed).
The full-data comparison with the scvi-tools peers is the speed suite's, with the other
estimator as a further system: ``python benchmarks/run.py --tasks speed --speed-variants
mixture_sampling=stratified``.

Usage::

    python benchmarks/run.py --study mixture_sampling --parts epoch --repeats 3
    python benchmarks/run.py --study mixture_sampling --parts quality --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: suite, studies

import omnivae
from studies.batch_penalty_curve import subsample
from suite.config import DATASETS
from suite.report import atomic_write, machine_note
from suite.speed import TIMED
from suite.systems import Omnivae
from suite.tasks import embedding_rows, prediction_rows

ESTIMATORS = ("stratified", "one")
EPOCH_CELLS = {"pbmc10k_protein_v3_rna4000_adt14": 2560, "mop_snareseq_c1": 1500}
QUALITY_DATASETS = ("neurips2021_bmmc_cite_starter", "neurips2021_bmmc_multiome_starter")


def label(estimator: str) -> str:
    return f"omnivae ({estimator})"


def epoch_rows(dataset: str, n_cells: int, repeats: int) -> list[dict]:
    """Seconds of one training epoch (incl. one validation pass) per estimator, alternated."""
    mdata = subsample(omnivae.datasets.load(dataset), n_cells, None, seed=0)
    rows = []
    for repeat in range(repeats):
        order = ESTIMATORS if repeat % 2 == 0 else ESTIMATORS[::-1]
        for estimator in order:
            model = omnivae.Model(mdata, n_hidden=TIMED["n_hidden"], n_latent=TIMED["n_latent"],
                                  seed=0, mixture_sampling=estimator)
            start = time.perf_counter()
            model.train(max_epochs=1, batch_size=TIMED["batch_size"], validation_fraction=0.1,
                        early_stopping=False, accelerator="cpu", progress_bar=False,
                        batch_probe_every=0)
            seconds = time.perf_counter() - start
            rows.append({"part": "epoch", "dataset": dataset, "cells": mdata.n_obs,
                         "repeat": repeat, "system": label(estimator), "epoch seconds": seconds})
            print(f"epoch {dataset} {estimator} repeat {repeat}: {seconds:.2f} s", flush=True)
    return rows


def quality_rows(dataset: str, seed: int, predict: bool) -> list[dict]:
    """scib-metrics (and, with ``predict``, prediction) scores of both estimators at the
    default epochs."""
    spec = DATASETS[dataset]
    mdata = omnivae.datasets.load(dataset)
    systems = [Omnivae(label(e), mixture_sampling=e) for e in ESTIMATORS]
    rows = embedding_rows(mdata, spec, systems, seed=seed, max_epochs=None, accelerator="cpu")
    if predict:
        rows += prediction_rows(mdata, spec, systems, seed=seed, max_epochs=None,
                                accelerator="cpu")
    return [{"part": "quality", **row} for row in rows]


def report(rows: list[dict], note: str) -> str:
    """Markdown: epoch medians and quality per seed."""
    table = pd.DataFrame(rows)
    lines = ["# Stratified vs one-component mixture sampling (MoPoE)", "", note, ""]
    epoch = table[table["part"] == "epoch"] if "part" in table else table.iloc[:0]
    if len(epoch):
        lines += ["## One epoch on a subset (in one process, alternated)", "",
                  "| dataset | cells | stratified s (median) | one s (median) | speed-up | runs |",
                  "|---|---|---|---|---|---|"]
        for dataset, part in epoch.groupby("dataset"):
            med = part.groupby("system")["epoch seconds"].median()
            s, o = med.get(label("stratified"), np.nan), med.get(label("one"), np.nan)
            lines.append(f"| {dataset} | {int(part['cells'].iloc[0])} | {s:.2f} | {o:.2f} | "
                         f"{s / o:.2f}x | {len(part) // 2} |")
        lines.append("")
    quality = table[table["part"] == "quality"] if "part" in table else table.iloc[:0]
    if len(quality):
        lines += ["## Quality at the default epochs (per seed)", "",
                  "| dataset | seed | system | bio conservation | batch correction | total | "
                  "prediction | fit seconds |", "|---|---|---|---|---|---|---|---|"]
        has_task = "task" in quality.columns
        emb = quality[quality["task"].isna()] if has_task else quality
        pred = quality[quality["task"].notna()] if has_task else quality.iloc[:0]
        for (dataset, seed, system), row in emb.groupby(["dataset", "seed", "system"]):
            r = row.iloc[0]
            scores = ""
            if has_task:
                p = pred[(pred["dataset"] == dataset) & (pred["seed"] == seed)
                         & (pred["system"] == system)]
                scores = ", ".join(f"{t} {m} {v:.3f}" for t, m, v in
                                   zip(p["task"], p["metric"], p["score"], strict=True))
            lines.append(f"| {dataset} | {int(seed)} | {system} | {r['bio conservation']:.3f} | "
                         f"{r['batch correction']:.3f} | {r['total']:.3f} | {scores} | "
                         f"{r['fit seconds']:.0f} |")
        lines += ["", "Mean over seeds (one minus stratified in brackets):", "",
                  "| dataset | seeds | bio conservation | batch correction | total |",
                  "|---|---|---|---|---|"]
        for dataset, part in emb.groupby("dataset"):
            mean = part.groupby("system")[["bio conservation", "batch correction", "total"]].mean()
            if {label("one"), label("stratified")} <= set(mean.index):
                one, strat = mean.loc[label("one")], mean.loc[label("stratified")]
                cells = " | ".join(f"{strat[k]:.3f} -> {one[k]:.3f} ({one[k] - strat[k]:+.3f})"
                                   for k in ("bio conservation", "batch correction", "total"))
                lines.append(f"| {dataset} | {part['seed'].nunique()} | {cells} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=("epoch", "quality"),
                        default=["epoch", "quality"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epoch-datasets", nargs="+", choices=sorted(EPOCH_CELLS),
                        default=list(EPOCH_CELLS))
    parser.add_argument("--quality-datasets", nargs="+", choices=sorted(DATASETS),
                        default=list(QUALITY_DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--no-prediction", action="store_true",
                        help="quality: scib-metrics only (each prediction task is another fit)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    raw = args.out / "raw" / "mixture_sampling.jsonl"
    raw.parent.mkdir(parents=True, exist_ok=True)
    warnings.filterwarnings("ignore")

    def keep(new: list[dict]) -> None:
        with raw.open("a") as handle:
            for row in new:
                handle.write(json.dumps({**row, "commit": omnivae_commit()}) + "\n")

    if "epoch" in args.parts:
        for dataset in args.epoch_datasets:
            keep(epoch_rows(dataset, EPOCH_CELLS[dataset], args.repeats))
    if "quality" in args.parts:
        for dataset in args.quality_datasets:
            for seed in args.seeds:
                keep(quality_rows(dataset, seed, not args.no_prediction))
    rows = [json.loads(line) for line in raw.read_text().splitlines() if line.strip()]
    atomic_write(args.out / "mixture_sampling.md", report(rows, machine_note("cpu")))


def omnivae_commit() -> str:
    import subprocess

    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=False, cwd=Path(__file__).resolve().parent)
    return done.stdout.strip()


if __name__ == "__main__":
    main()
