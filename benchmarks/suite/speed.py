"""Speed, memory and scaling: each training in its own subprocess, systems alternated."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

WORKER = Path(__file__).with_name("worker.py")
# Shared architecture for the timed comparisons (the issue: same batch size, latent, hidden, epochs).
TIMED = {"batch_size": 256, "n_hidden": 128, "n_latent": 20}


def run_worker(job: dict, timeout: float) -> dict:
    """Run one job in a fresh Python process; on failure the row says why."""
    try:
        done = subprocess.run([sys.executable, str(WORKER), json.dumps(job)], capture_output=True,
                              text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"system": job["system"], "error": f"did not finish within {timeout:.0f} s"}
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    killed = done.returncode in (-9, 137)
    return {"system": job["system"],
            "error": "killed (out of memory?)" if killed else f"exit {done.returncode}: {' / '.join(tail)}"}


def speed_rows(dataset: str, peer: str, *, epochs: int, repeats: int, accelerator: str,
               timeout: float, batch_key: str | None,
               variants: dict[str, dict] | None = None) -> list[dict]:
    """omnivae and ``peer`` trained ``repeats`` times each on ``dataset``, alternated (the order
    rotated every repeat) so drift in the shared machine's load hits both alike. ``variants``
    adds omnivae runs with other ``omnivae.Model`` arguments (label -> arguments) to the
    rotation, e.g. ``{"omnivae (mixture_sampling=stratified)": {"mixture_sampling":
    "stratified"}}``."""
    variants = variants or {}
    systems = ["omnivae", *variants, peer]
    rows = []
    for repeat in range(repeats):
        shift = repeat % len(systems)
        for system in systems[shift:] + systems[:shift]:
            job = {"system": "omnivae" if system in variants else system, "data": dataset,
                   "epochs": epochs, "seed": repeat, "accelerator": accelerator,
                   "batch_key": batch_key, **TIMED}
            if system in variants:
                job.update(label=system, omnivae_kwargs=variants[system])
            row = run_worker(job, timeout)
            row.update({"dataset": dataset, "repeat": repeat})
            print(f"  speed {dataset} {system} repeat {repeat}: "
                  f"{row.get('cells x epochs / s', row.get('error'))}", flush=True)
            rows.append(row)
    return rows


def scaling_rows(like: str, sizes: list[int], systems: list[str], *, epochs: int,
                 accelerator: str, timeout: float) -> list[dict]:
    """Seconds per epoch and peak memory on synthetic data shaped like ``like``, per size."""
    rows = []
    for n_cells in sizes:
        for system in systems:
            job = {"system": system, "data": "synthetic", "like": like, "n_cells": n_cells,
                   "epochs": epochs, "seed": 0, "accelerator": accelerator, "batch_key": None,
                   **TIMED}
            row = run_worker(job, timeout)
            row.update({"like": like, "n_cells": n_cells})
            print(f"  scaling {n_cells} {system}: "
                  f"{row.get('seconds per epoch', row.get('error'))}", flush=True)
            rows.append(row)
    return rows
