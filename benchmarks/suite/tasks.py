"""The joint-embedding (scib-metrics) and cross-modal prediction tasks for one dataset and seed."""

from __future__ import annotations

import time
import warnings

import anndata as ad
import mudata as md
import numpy as np

from omnivae.data.splits import withhold_modality
from omnivae.metrics import auroc, mean_feature_pearson

from .config import WITHHELD_FRACTION, DatasetSpec, PredictionTask
from .systems import PCAConcat, System


def _fit(system: System, mdata: md.MuData, spec: DatasetSpec, seed: int,
         max_epochs: int | None, accelerator: str) -> dict[str, float]:
    """Fit ``system``; its row's ``fit seconds`` and, for a neural network, ``epochs`` (those
    it trained: early stopping can end a default-budget run before its cap)."""
    start = time.perf_counter()
    system.fit(mdata, spec, seed=seed, max_epochs=max_epochs if system.needs_epochs else None,
               accelerator=accelerator)
    cost = {"fit seconds": time.perf_counter() - start}
    epochs = system.epochs_trained()
    return cost if epochs is None else {**cost, "epochs": float(epochs)}


def exact_neighbors(x: np.ndarray, n_neighbors: int):
    """Exact kNN (sklearn) for scib-metrics: exact at these sizes, and no numba compilation."""
    from scib_metrics.nearest_neighbors import NeighborsResults
    from sklearn.neighbors import NearestNeighbors

    distances, indices = NearestNeighbors(n_neighbors=n_neighbors).fit(x).kneighbors(x)
    return NeighborsResults(indices=indices, distances=distances)


def scib_scores(embeddings: dict[str, np.ndarray], obs, label_key: str, batch_key: str | None,
                unintegrated: np.ndarray) -> dict[str, dict[str, float]]:
    """Unscaled scib-metrics scores per embedding: bio conservation, batch correction (where
    there are at least two batches) and total = 0.6 bio + 0.4 batch."""
    from scib_metrics.benchmark import BatchCorrection, Benchmarker, BioConservation

    keys = {f"emb{i}": name for i, name in enumerate(embeddings)}
    has_batches = batch_key is not None and obs[batch_key].nunique() > 1
    adata = ad.AnnData(np.zeros((len(obs), 1), dtype=np.float32), obs=obs.copy())
    adata.obs["_label"] = obs[label_key].astype(str).astype("category").to_numpy()
    adata.obs["_batch"] = (obs[batch_key].astype(str).to_numpy() if has_batches else "one")
    adata.obsm["unintegrated"] = np.asarray(unintegrated, dtype=np.float32)
    for key, name in keys.items():
        adata.obsm[key] = np.asarray(embeddings[name], dtype=np.float32)
    bench = Benchmarker(adata, "_batch", "_label", list(keys), bio_conservation_metrics=BioConservation(),
                        batch_correction_metrics=BatchCorrection() if has_batches else None,
                        pre_integrated_embedding_obsm_key="unintegrated", progress_bar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bench.prepare(neighbor_computer=exact_neighbors)
        bench.benchmark()
    table = bench.get_results(min_max_scale=False)
    table = table.drop(index="Metric Type", errors="ignore")
    out = {}
    for key, name in keys.items():
        row = table.loc[key]
        scores = {"bio conservation": float(row["Bio conservation"])}
        if has_batches:
            scores["batch correction"] = float(row["Batch correction"])
            scores["total"] = float(row["Total"])
        out[name] = scores
    return out


def embedding_rows(mdata: md.MuData, spec: DatasetSpec, systems: list[System], *, seed: int,
                   max_epochs: int | None, accelerator: str) -> list[dict]:
    """Fit every embedding system on the full data and score the embeddings with scib-metrics,
    on the cells every system embeds."""
    if spec.label_key is None:
        return []
    modalities = set(mdata.mod)
    embeddings, costs = {}, {}
    for system in systems:
        if system.embeds and system.supports(modalities) and system.accepts(mdata, spec):
            costs[system.name] = _fit(system, mdata, spec, seed, max_epochs, accelerator)
            embeddings[system.name] = system.embed()
            print(f"  embedding {spec.name} seed {seed}: {system.name} "
                  f"{costs[system.name]['fit seconds']:.0f} s", flush=True)
    if not embeddings:
        return []
    keep = np.all([~np.isnan(e).any(axis=1) for e in embeddings.values()], axis=0)
    reference = PCAConcat()
    reference.fit(mdata, spec, seed=seed)
    scores = scib_scores({n: e[keep] for n, e in embeddings.items()}, mdata.obs[keep],
                         spec.label_key, spec.batch_key, reference.embed()[keep])
    return [{"dataset": spec.name, "seed": seed, "system": name, "cells scored": int(keep.sum()),
             **scores[name], **costs[name]} for name in embeddings]


def score_prediction(task: PredictionTask, predicted: np.ndarray, truth: ad.AnnData) -> float:
    """Pearson (mean over features, of log1p(1e4 * normalised)) or AUROC, as the issue defines."""
    predicted = np.clip(np.asarray(predicted, dtype=np.float64), 0, None)
    if task.metric == "auroc":
        return auroc(predicted, truth.X)
    total = predicted.sum(axis=1, keepdims=True)
    return mean_feature_pearson(predicted / np.where(total > 0, total, 1.0), truth.X)


def prediction_rows(mdata: md.MuData, spec: DatasetSpec, systems: list[System], *, seed: int,
                    max_epochs: int | None, accelerator: str) -> list[dict]:
    """For each task: withhold the target for a seeded 25 % of cells, fit, predict, score."""
    rows = []
    modalities = set(mdata.mod)
    for task in spec.tasks:
        masked, truth = withhold_modality(mdata, task.target, fraction=WITHHELD_FRACTION,
                                          seed=seed, require=(task.source,))
        for system in systems:
            if not (system.predicts and system.supports(modalities)
                    and system.accepts(masked, spec)):
                continue
            if task.metric not in system.metrics or (
                    system.name.startswith("TOTALVI") and task.target != "adt"):
                continue
            cost = _fit(system, masked, spec, seed, max_epochs, accelerator)
            score = score_prediction(task, system.predict(task, truth.obs_names), truth)
            print(f"  prediction {spec.name} {task.name} seed {seed}: {system.name} "
                  f"{task.metric}={score:.3f} ({cost['fit seconds']:.0f} s)", flush=True)
            rows.append({"dataset": spec.name, "seed": seed, "task": task.name,
                         "metric": task.metric, "system": system.name, "score": score,
                         "withheld cells": truth.n_obs, **cost})
    return rows
