"""CMVAE's clusters against the cell types: ``omnivae.tl.cluster`` (the paper's post-hoc
selection of the number of clusters, and all components unpruned) next to Leiden on the same
embedding and on the default model's, on labelled real datasets.

Per dataset and seed: CMVAE trained with ``n_clusters`` components (default 10 and 30; the
paper trains with more components than it expects clusters and prunes them), the default
model (MoPoE) trained alike; every training at ``--max-epochs`` (default 100, as the family
rows). Rows (ARI and NMI against the cell types, on the cells that have a label):

* ``CMVAE mixture, selected``: ``omnivae.tl.cluster`` (no labels used);
* ``CMVAE mixture, all components``: ``select_n_clusters=False``;
* ``Leiden, resolution 1``: scanpy's Leiden at its default resolution (no labels used), on
  the CMVAE embedding and on the default model's;
* ``Leiden, best resolution``: the resolution of 0.1-2 with the highest NMI against the
  labels (as scib scores an embedding), so an upper reference, not a fair competitor.

Rows are appended to ``<out>/raw/cmvae_clusters.jsonl``; ``<out>/cmvae_clusters.md`` is
rewritten from all of them (means over seeds), with the plot ``cmvae_clusters.png``
(``--report-only`` rewrites them without training).

Usage::

    python benchmarks/run.py --study cmvae_clusters --datasets neurips2021_bmmc_cite_starter \\
        --seeds 0
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
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: suite, studies

import omnivae
from omnivae.data.setup import obs_column
from studies.mixture_sampling import omnivae_commit
from suite.config import DATASETS
from suite.report import atomic_write, machine_note, save_figure

DEFAULT_DATASETS = ("neurips2021_bmmc_cite_starter", "neurips2021_bmmc_multiome_starter",
                    "quickstart_pbmc_mosaic")


def agreement(labels: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    """ARI, NMI and the number of clusters, on the cells with a label.

    Examples
    --------
    >>> labels = np.array(["a", "a", "b", "b", "nan"])
    >>> agreement(labels, np.array([1, 1, 2, 2, 3]))
    {'ari': 1.0, 'nmi': 1.0, 'clusters': 3}
    """
    known = labels != "nan"
    return {"ari": float(adjusted_rand_score(labels[known], clusters[known])),
            "nmi": float(normalized_mutual_info_score(labels[known], clusters[known])),
            "clusters": len(np.unique(clusters))}


def leiden_rows(embedding: np.ndarray, labels: np.ndarray, embedded_by: str) -> list[dict]:
    """Leiden at resolution 1 and at its best (label-chosen) resolution."""
    known = labels != "nan"
    rows = []
    for method, resolutions in (("Leiden, resolution 1", (1.0,)),
                                ("Leiden, best resolution", None)):
        kwargs = {} if resolutions is None else {"resolutions": resolutions}
        found = omnivae.metrics.leiden_agreement(embedding[known], labels[known], **kwargs)
        rows.append({"method": f"{method} ({embedded_by})", "ari": found["ari"],
                     "nmi": found["nmi"], "clusters": int(found["n_clusters"])})
    return rows


def dataset_rows(dataset: str, seed: int, n_components: list[int], max_epochs: int) -> list[dict]:
    spec = DATASETS[dataset]
    mdata = omnivae.datasets.load(dataset)
    assert spec.label_key is not None, f"{dataset} has no cell-type labels"
    labels = obs_column(mdata, spec.label_key).astype(str).to_numpy()
    base = {"dataset": dataset, "seed": seed, "cells": int(mdata.n_obs),
            "cell types": len(np.unique(labels[labels != "nan"])), "epochs": max_epochs}
    rows = []
    for k in n_components:
        start = time.perf_counter()
        model = omnivae.Model(mdata, model="cmvae", batch_key=spec.batch_key, seed=seed,
                              model_options={"n_clusters": k})
        model.train(max_epochs=max_epochs, progress_bar=False, accelerator="cpu")
        seconds = time.perf_counter() - start
        found = []
        for select in (True, False):
            omnivae.tl.cluster(mdata, model, select_n_clusters=select, key_added="_cmvae")
            clusters = mdata.obs["_cmvae"].astype(int).to_numpy()
            method = "CMVAE mixture, " + ("selected" if select else "all components")
            found.append({"method": method, **agreement(labels, clusters)})
        found += leiden_rows(model.get_latent_representation(), labels, "CMVAE embedding")
        rows += [{**base, "components": k, "fit seconds": seconds, **row} for row in found]
        print(f"{dataset} seed {seed} K={k}: {found[0]}", flush=True)
    start = time.perf_counter()
    default = omnivae.Model(mdata, batch_key=spec.batch_key, seed=seed)
    default.train(max_epochs=max_epochs, progress_bar=False, accelerator="cpu")
    seconds = time.perf_counter() - start
    rows += [{**base, "components": None, "fit seconds": seconds, **row}
             for row in leiden_rows(default.get_latent_representation(), labels,
                                    "default model's embedding")]
    return rows


def report(rows: list[dict], note: str) -> str:
    """Markdown: one table per dataset, means over seeds."""
    table = pd.DataFrame(rows)
    lines = ["# CMVAE's clusters against the cell types", "", note, ""]
    if "commit" in table:
        commits = ", ".join(dict.fromkeys(table["commit"].astype(str)))
        lines += [f"The note above is of the run that wrote this report; the rows were measured "
                  f"at omnivae commit(s) {commits}.", ""]
    for dataset, part in table.groupby("dataset", sort=False):
        first = part.iloc[0]
        lines += [f"## {dataset}", "",
                  f"{first['cells']} cells, {first['cell types']} cell types, "
                  f"{int(first['epochs'])} epochs, seeds {sorted(part['seed'].unique().tolist())}.",
                  "", "| method | components | clusters | ARI | NMI |", "|---|---|---|---|---|"]
        part = part.assign(components=part["components"].fillna(-1).astype(int))
        grouped = part.groupby(["method", "components"], sort=False)[["clusters", "ari", "nmi"]]
        for (method, k), values in grouped:
            mean, sd = values.mean(), values.std(ddof=1)  # sd: NaN with one seed
            cells = " | ".join(f"{mean[c]:.3f}" + ("" if np.isnan(sd[c]) else f" ± {sd[c]:.3f}")
                               for c in ("ari", "nmi"))
            lines.append(f"| {method} | {'-' if k < 0 else k} | {mean['clusters']:.1f} | "
                         f"{cells} |")
        lines.append("")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """Bar chart: ARI against the cell types per method (mean over seeds, sd as error bars),
    one panel per dataset."""
    import matplotlib.pyplot as plt

    table = pd.DataFrame(rows)
    table["label"] = [m if c is None or pd.isna(c) else f"{m}, K={int(c)}"
                      for m, c in zip(table["method"], table["components"], strict=True)]
    datasets = list(dict.fromkeys(table["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 5.5), sharey=True,
                             squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        part = table[table["dataset"] == dataset]
        stats = part.groupby("label", sort=False)["ari"].agg(["mean", "std"])
        colours = ["tab:orange" if "CMVAE mixture" in label else "tab:blue"
                   for label in stats.index]
        ax.barh(range(len(stats)), stats["mean"], xerr=stats["std"].fillna(0), color=colours)
        ax.set_yticks(range(len(stats)), stats.index, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("ARI against the cell types")
        ax.set_title(f"{dataset}\n({part['cell types'].iloc[0]} cell types, "
                     f"{part['seed'].nunique()} seed(s))", fontsize=9)
    fig.suptitle("CMVAE's mixture clusters (orange) and Leiden (blue)")
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS),
                        choices=[d for d, s in DATASETS.items() if s.label_key])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--components", nargs="+", type=int, default=[10, 30])
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: rewrite the report and plot from the raw rows")
    args = parser.parse_args(argv)
    raw = args.out / "raw" / "cmvae_clusters.jsonl"
    raw.parent.mkdir(parents=True, exist_ok=True)
    warnings.filterwarnings("ignore")
    for dataset in [] if args.report_only else args.datasets:
        for seed in args.seeds:
            new = dataset_rows(dataset, seed, args.components, args.max_epochs)
            with raw.open("a") as handle:
                for row in new:
                    handle.write(json.dumps({**row, "commit": omnivae_commit()}) + "\n")
    rows = [json.loads(line) for line in raw.read_text().splitlines() if line.strip()]
    plot(rows, args.out / "cmvae_clusters.png")
    atomic_write(args.out / "cmvae_clusters.md", report(rows, machine_note("cpu"))
                 + "\n![ARI per method](cmvae_clusters.png)\n")


if __name__ == "__main__":
    main()
