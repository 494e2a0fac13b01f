"""Batch correction vs bio conservation over the weight of each batch mutual-information penalty.

For every estimator of :mod:`omnivae.module.penalties` (HSIC, MMD, adversarial, pairwise KL) and every
weight (a multiple of the estimator's grid base weight, :data:`BASE_WEIGHTS`),
omnivae is trained at its defaults plus that penalty and its embedding scored with scib-metrics
(unscaled bio conservation and batch correction, the suite's :func:`suite.tasks.scib_scores`),
next to no penalty and to the scvi-tools peer of the dataset (TOTALVI's and MULTIVI's own
adversarial mixing is part of their defaults). The default setting is then the one with the
largest mean gain in batch correction over no penalty among those whose bio conservation drops
by at most 0.01 on every dataset (means over seeds).

Usage::

    python benchmarks/run.py --study batch_penalty_curve \\
        --datasets neurips2021_bmmc_cite_starter neurips2021_bmmc_multiome_starter \\
        --seeds 0 1 --out benchmarks/results
    # the 12-library SNARE-seq data, subsampled to fit the 2-core machine (recorded in the rows)
    python benchmarks/run.py --study batch_penalty_curve --datasets mop_snareseq_c1 \\
        --max-cells 3000 --max-features 4000 --max-epochs 60

Rows are appended to ``<out>/raw/batch_penalty_curve.jsonl`` as each fit is scored (a stopped run
keeps them, and a rerun skips what is there); ``<out>/batch_penalty_curve.md`` and
``batch_penalty_curve.png`` are rewritten from all rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import mudata as md
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: suite, studies

import omnivae
from omnivae.model.choices import DEFAULT_BATCH_PENALTY, DEFAULT_PENALTY_WEIGHTS
from suite.config import DATASETS, DatasetSpec
from suite.peers import MultiVI, TotalVI
from suite.report import atomic_write, machine_note, save_figure
from suite.systems import Omnivae, PCAConcat, System
from suite.tasks import scib_scores

ESTIMATORS = ("hsic", "mmd", "adversarial", "pairwise_kl")
# The grid's x1 weights: the estimators' defaults before this curve chose them (the curve picked
# x0.1, now omnivae.model.choices.DEFAULT_PENALTY_WEIGHTS). Fixed, so the rows of every run line up.
BASE_WEIGHTS = {"hsic": 1000.0, "mmd": 1000.0, "adversarial": 100.0, "pairwise_kl": 5.0}
MULTIPLIERS = (0.1, 1.0, 10.0)
BIO_TOLERANCE = 0.01
NONE = "none"


def subsample(mdata: md.MuData, max_cells: int | None, max_features: int | None,
              seed: int) -> md.MuData:
    """A seeded random subset of cells, and per modality the ``max_features`` features detected
    in the most of those cells (every feature when the modality has fewer).

    Examples
    --------
    >>> sim = omnivae.datasets.simulate(n_cells=200, modalities=("rna", "adt"), seed=0)
    >>> small = subsample(sim, 50, 20, seed=0)
    >>> small.n_obs, small["rna"].n_vars, small["adt"].n_vars <= 20
    (50, 20, True)
    """
    if max_cells is not None and max_cells < mdata.n_obs:
        keep = np.sort(np.random.default_rng(seed).choice(mdata.n_obs, max_cells, replace=False))
        mdata = mdata[mdata.obs_names[keep]].copy()
    if max_features is None:
        return mdata
    mods = {}
    for name, adata in mdata.mod.items():
        if adata.n_vars > max_features:
            detected = np.asarray((adata.X > 0).sum(axis=0)).ravel()
            top = np.sort(np.argsort(-detected, kind="stable")[:max_features])
            adata = adata[:, top].copy()
        mods[name] = adata
    out = md.MuData(mods)
    out.obs = out.obs.join(mdata.obs.drop(columns=[c for c in mdata.obs if c in out.obs]))
    return out


def settings(estimators: list[str], multipliers: list[float]) -> list[tuple[str, float]]:
    """(estimator, weight) pairs of the curve, ``("none", 0.0)`` first.

    Examples
    --------
    >>> settings(["mmd"], [0.1, 1.0])
    [('none', 0.0), ('mmd', 100.0), ('mmd', 1000.0)]
    """
    return [(NONE, 0.0)] + [(e, BASE_WEIGHTS[e] * m)
                            for e in estimators for m in multipliers]


def system_for(estimator: str, weight: float) -> System:
    if estimator == NONE:
        return Omnivae("omnivae (no penalty)", batch_penalty=None)
    return Omnivae(f"omnivae ({estimator} {weight:g})", batch_penalty=estimator,
                   penalty_weight=weight)


def peer_for(modalities: set[str]) -> System | None:
    for peer in (TotalVI(), MultiVI()):
        if peer.supports(modalities):
            return peer
    return None


def score_one(system: System, mdata: md.MuData, spec: DatasetSpec, seed: int,
              max_epochs: int | None, reference: np.ndarray) -> dict:
    start = time.perf_counter()
    system.fit(mdata, spec, seed=seed, max_epochs=max_epochs if system.needs_epochs else None,
               accelerator="cpu")
    seconds = time.perf_counter() - start
    embedding = system.embed()
    keep = ~np.isnan(embedding).any(axis=1)
    scores = scib_scores({system.name: embedding[keep]}, mdata.obs[keep], spec.label_key,
                         spec.batch_key, reference[keep])[system.name]
    return {**scores, "fit seconds": seconds, "cells scored": int(keep.sum())}


def choose_default(table: pd.DataFrame) -> tuple[tuple[str, float] | None, pd.DataFrame]:
    """The setting with the largest mean batch-correction gain over no penalty among those
    whose bio conservation drops by at most :data:`BIO_TOLERANCE` on every dataset.

    ``table`` holds one row per (dataset, seed, estimator, weight) with ``bio conservation`` and
    ``batch correction``. Returns the chosen ``(estimator, weight)`` (None when no setting
    qualifies) and the per-setting gains.

    Examples
    --------
    >>> rows = pd.DataFrame({"dataset": ["a"] * 3, "seed": [0] * 3,
    ...     "estimator": ["none", "mmd", "hsic"], "weight": [0.0, 1.0, 1.0],
    ...     "bio conservation": [0.60, 0.595, 0.55], "batch correction": [0.70, 0.75, 0.80]})
    >>> choose_default(rows)[0]
    ('mmd', 1.0)
    """
    means = table.groupby(["dataset", "estimator", "weight"])[
        ["bio conservation", "batch correction"]].mean().reset_index()
    base = means[means["estimator"] == NONE].set_index("dataset")
    penalised = means[means["estimator"] != NONE].copy()
    penalised["bio change"] = penalised["bio conservation"] - penalised["dataset"].map(
        base["bio conservation"])
    penalised["batch change"] = penalised["batch correction"] - penalised["dataset"].map(
        base["batch correction"])
    gains = penalised.groupby(["estimator", "weight"]).agg(
        datasets=("dataset", "nunique"), worst_bio_change=("bio change", "min"),
        mean_batch_change=("batch change", "mean")).reset_index()
    n_datasets = means["dataset"].nunique()
    ok = gains[(gains["datasets"] == n_datasets)
               & (gains["worst_bio_change"] >= -BIO_TOLERANCE - 1e-12)
               & (gains["mean_batch_change"] > 0)]
    if ok.empty:
        return None, gains
    best = ok.sort_values("mean_batch_change", ascending=False).iloc[0]
    return (str(best["estimator"]), float(best["weight"])), gains


def plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib.pyplot as plt

    datasets = sorted(table["dataset"].unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 4.4), squeeze=False)
    means = table.groupby(["dataset", "estimator", "weight"])[
        ["bio conservation", "batch correction"]].mean().reset_index()
    for ax, dataset in zip(axes[0], datasets, strict=True):
        rows = means[means["dataset"] == dataset]
        none = rows[rows["estimator"] == NONE]
        for estimator in ESTIMATORS:
            line = rows[rows["estimator"] == estimator].sort_values("weight")
            if line.empty:
                continue
            x = np.r_[none["batch correction"], line["batch correction"]]
            y = np.r_[none["bio conservation"], line["bio conservation"]]
            ax.plot(x, y, marker="o", label=estimator)
            for _, r in line.iterrows():
                ax.annotate(f"{r['weight']:g}", (r["batch correction"], r["bio conservation"]),
                            fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.scatter(none["batch correction"], none["bio conservation"], color="black", zorder=3,
                   label="no penalty")
        peers = rows[~rows["estimator"].isin([NONE, *ESTIMATORS])]
        for _, r in peers.iterrows():
            ax.scatter(r["batch correction"], r["bio conservation"], marker="*", s=160,
                       color="crimson", zorder=3, label=r["estimator"])
        ax.set_title(dataset, fontsize=9)
        ax.set_xlabel("batch correction (scib, unscaled)")
        ax.set_ylabel("bio conservation (scib, unscaled)")
        ax.legend(fontsize=7)
    save_figure(fig, path)


def report(rows: list[dict], note: str) -> str:
    table = pd.DataFrame(rows)
    choice, gains = choose_default(table[table["estimator"].isin([NONE, *ESTIMATORS])])
    lines = ["# Batch penalty: batch correction vs bio conservation over penalty weights", "",
             note, "",
             "Weights are multiples (x0.1, x1, x10) of each estimator's grid base weight "
             f"({', '.join(f'{k} {v:g}' for k, v in BASE_WEIGHTS.items())}). "
             "omnivae's defaults since this curve: "
             f"{', '.join(f'{k} {v:g}' for k, v in DEFAULT_PENALTY_WEIGHTS.items())}, and "
             f"`batch_penalty=\"auto\"` = {DEFAULT_BATCH_PENALTY} when there are batches. "
             "scib-metrics unscaled scores, mean ± standard deviation over seeds; the "
             "peer row is the dataset's scvi-tools model at its defaults (its own adversarial "
             "mixing included).", ""]
    for dataset, part in table.groupby("dataset"):
        settings_note = part["data"].iloc[0]
        lines += [f"## {dataset}", "", settings_note, "",
                  "| estimator | weight | seeds | bio conservation | batch correction | total "
                  "| fit seconds |", "|---|---|---|---|---|---|---|"]
        for (estimator, weight), g in part.groupby(["estimator", "weight"], sort=False):
            def cell(col: str, g: pd.DataFrame = g) -> str:
                values = g[col].astype(float)
                spread = f" ± {values.std(ddof=1):.3f}" if len(values) > 1 else ""
                return f"{values.mean():.3f}{spread}"
            seeds = " ".join(str(s) for s in sorted(g["seed"]))
            lines.append(f"| {estimator} | {weight:g} | {seeds} | {cell('bio conservation')} | "
                         f"{cell('batch correction')} | {cell('total')} | "
                         f"{g['fit seconds'].mean():.0f} |")
        lines.append("")
    lines += ["## Choice of the default", "",
              "Per setting, over the datasets above: the worst change in bio conservation and the "
              "mean change in batch correction against no penalty (means over seeds).", "",
              "| estimator | weight | datasets | worst bio change | mean batch change |",
              "|---|---|---|---|---|"]
    for _, g in gains.sort_values("mean_batch_change", ascending=False).iterrows():
        lines.append(f"| {g['estimator']} | {g['weight']:g} | {g['datasets']} | "
                     f"{g['worst_bio_change']:+.3f} | {g['mean_batch_change']:+.3f} |")
    lines.append("")
    if choice is None:
        lines.append("No setting improves batch correction while keeping bio conservation "
                     f"within {BIO_TOLERANCE} of no penalty on every dataset: the default stays "
                     "no penalty.")
    else:
        lines.append(f"The rule picks **{choice[0]} at weight {choice[1]:g}** on these rows "
                     f"(largest mean gain in batch correction with bio conservation within "
                     f"{BIO_TOLERANCE} on every dataset). "
                     + ("It is `omnivae.Model`'s default (`batch_penalty=\"auto\"` when there "
                        "are batches)." if choice == (DEFAULT_BATCH_PENALTY, DEFAULT_PENALTY_WEIGHTS[
                            DEFAULT_BATCH_PENALTY]) else
                        f"`omnivae.Model`'s default is still {DEFAULT_BATCH_PENALTY} at "
                        f"{DEFAULT_PENALTY_WEIGHTS[DEFAULT_BATCH_PENALTY]:g}: rerun the "
                        "curve's seeds before changing it."))
    lines += ["", "![curve](batch_penalty_curve.png)", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS),
                        default=["neurips2021_bmmc_cite_starter",
                                 "neurips2021_bmmc_multiome_starter"])
    parser.add_argument("--estimators", nargs="+", choices=ESTIMATORS, default=list(ESTIMATORS))
    parser.add_argument("--multipliers", nargs="+", type=float, default=list(MULTIPLIERS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--max-epochs", type=int, default=None,
                        help="cap on training epochs (default: each system's own)")
    parser.add_argument("--max-cells", type=int, default=None)
    parser.add_argument("--max-features", type=int, default=None)
    parser.add_argument("--no-peer", action="store_true", help="skip the scvi-tools peer")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    raw = args.out / "raw" / "batch_penalty_curve.jsonl"
    raw.parent.mkdir(parents=True, exist_ok=True)
    done = ({(r["dataset"], r["seed"], r["estimator"], r["weight"], r["data"])
             for r in map(json.loads, raw.read_text().splitlines())} if raw.exists() else set())
    warnings.filterwarnings("ignore")
    for dataset in args.datasets:
        spec = DATASETS[dataset]
        for seed in args.seeds:
            mdata = subsample(omnivae.datasets.load(dataset), args.max_cells, args.max_features,
                              seed=0)
            data_note = (f"{mdata.n_obs} cells, features "
                         f"{ {m: a.n_vars for m, a in mdata.mod.items()} }, max epochs "
                         f"{args.max_epochs or 'default'}"
                         + (" (subsampled: seeded random cells, most-detected features)"
                            if args.max_cells or args.max_features else ""))
            reference = PCAConcat()
            reference.fit(mdata, spec, seed=seed)
            unintegrated = reference.embed()
            jobs: list[tuple[str, float, System]] = [
                (e, w, system_for(e, w)) for e, w in settings(args.estimators, args.multipliers)]
            peer = None if args.no_peer else peer_for(set(mdata.mod))
            if peer is not None:
                jobs.append((peer.name, 0.0, peer))
            for estimator, weight, system in jobs:
                if (dataset, seed, estimator, weight, data_note) in done:
                    continue
                scores = score_one(system, mdata, spec, seed, args.max_epochs, unintegrated)
                row = {"dataset": dataset, "seed": seed, "estimator": estimator,
                       "weight": weight, "data": data_note, **scores}
                with raw.open("a") as handle:
                    handle.write(json.dumps(row) + "\n")
                print(f"{dataset} seed {seed} {estimator} {weight:g}: bio "
                      f"{scores['bio conservation']:.3f} batch {scores['batch correction']:.3f} "
                      f"({scores['fit seconds']:.0f} s)", flush=True)
    rows = [json.loads(line) for line in raw.read_text().splitlines() if line.strip()]
    atomic_write(args.out / "batch_penalty_curve.md", report(rows, machine_note("cpu")))
    plot(pd.DataFrame(rows), args.out / "batch_penalty_curve.png")


if __name__ == "__main__":
    main()
