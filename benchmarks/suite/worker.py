"""One timed training in its own process, so its peak memory is its own.

Run by :mod:`suite.speed` as ``python benchmarks/suite/worker.py '<json job>'``; prints one JSON
line with the training seconds, throughput, peak memory, model FLOPs and the machine's measured
matmul FLOP/s. A job names the system (``omnivae``, ``totalvi``, ``multivi``), the data (a
dataset name, or ``synthetic`` with ``like`` and ``n_cells``), epochs, batch size, hidden and
latent sizes, accelerator and seed; for omnivae, ``omnivae_kwargs`` adds ``omnivae.Model``
arguments (for example ``{"mixture_sampling": "stratified"}``) and ``label`` names the row.
"""

from __future__ import annotations

import json
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks/ folder

from suite.synthetic import shaped_like


def linear_flops_per_cell(module: torch.nn.Module) -> float:
    """Training FLOPs per cell from the layer sizes: every Linear layer counted once,
    2 * in * out for the forward pass and twice that for the backward pass (a lower bound where
    a layer is applied more than once per cell)."""
    forward = sum(2.0 * m.in_features * m.out_features for m in module.modules()
                  if isinstance(m, torch.nn.Linear))
    return 3.0 * forward


def matmul_flops_per_second(device: str, size: int = 2048, repeats: int = 5) -> float:
    """Best-of-``repeats`` float32 dense matmul throughput of this process (same threads)."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    best = float("inf")
    for _ in range(repeats + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def peak_rss_mb() -> float:
    """Peak resident memory of this process's own address space (``VmHWM``; ``ru_maxrss``
    would report the parent's peak, which Linux carries across fork and exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kilobytes on Linux


def train(job: dict) -> dict:
    import omnivae

    if job["data"] == "synthetic":
        mdata = shaped_like(omnivae.datasets.load(job["like"]), job["n_cells"], seed=job["seed"])
    else:
        mdata = omnivae.datasets.load(job["data"])
    accelerator = job["accelerator"]
    epochs, batch_size = job["epochs"], job["batch_size"]
    rss_before = peak_rss_mb()
    if accelerator == "gpu":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    if job["system"] == "omnivae":
        model = omnivae.Model(mdata, batch_key=job.get("batch_key"), n_hidden=job["n_hidden"],
                              n_latent=job["n_latent"], seed=job["seed"],
                              **job.get("omnivae_kwargs", {}))
        # the training epochs only, as for the peers: not the one-off cross-modal shrinkage
        # fit that train() runs after them (a few seconds of predictions on the validation
        # cells; the embedding and prediction tables' fit seconds include it)
        model.fits_shrinkage = False
        start = time.perf_counter()
        model.train(max_epochs=epochs, batch_size=batch_size, validation_fraction=0.1,
                    early_stopping=False, accelerator=accelerator, progress_bar=False,
                    batch_probe_every=0)
        module = model.module
    else:
        from suite.config import DATASETS
        from suite.peers import MultiVI, TotalVI
        from suite.systems import System

        peer: System = TotalVI() if job["system"] == "totalvi" else MultiVI()
        spec = DATASETS.get(job.get("like") or job["data"])
        assert spec is not None
        peer.prepare(mdata, spec, seed=job["seed"], n_hidden=job["n_hidden"],  # type: ignore[attr-defined]
                     n_latent=job["n_latent"])
        start = time.perf_counter()
        peer.model.train(max_epochs=epochs, batch_size=batch_size, train_size=0.9,  # type: ignore[attr-defined]
                         early_stopping=False, accelerator=accelerator, enable_progress_bar=False)
        module = peer.model.module  # type: ignore[attr-defined]
    seconds = time.perf_counter() - start
    flops = linear_flops_per_cell(module)
    device = "cuda" if accelerator == "gpu" else "cpu"
    achieved = flops * mdata.n_obs * epochs / seconds
    matmul = matmul_flops_per_second(device)
    return {"system": job.get("label", job["system"]), "cells": mdata.n_obs, "epochs": epochs,
            "train seconds": seconds, "seconds per epoch": seconds / epochs,
            "cells x epochs / s": mdata.n_obs * epochs / seconds,
            "peak RSS MB": peak_rss_mb(), "RSS before training MB": rss_before,
            "peak GPU MB": (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
                            else float("nan")),
            "model GFLOP per cell": flops / 1e9, "model GFLOP/s": achieved / 1e9,
            "matmul GFLOP/s": matmul / 1e9, "fraction of matmul": achieved / matmul,
            "parameters": int(sum(p.numel() for p in module.parameters()))}


if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    np.seterr(all="ignore")
    print("RESULT " + json.dumps(train(json.loads(sys.argv[1]))), flush=True)
