"""Build synthetic cells shaped like pbmc10k at any size, set omnivae up on them and train a few
hundred steps: peak memory and seconds per step, for sizes whose full epoch is too long to time
on a small machine. The epoch time it prints is an extrapolation (steps per epoch x seconds per
step), not a measurement.

Usage: ``python benchmarks/run.py --study partial_epoch 1000000 150`` (cells, training steps).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: suite, studies

from suite.synthetic import shaped_like
from suite.worker import peak_rss_mb


class StepTimes(pl.Callback):
    """Wall-clock time at the end of every training step."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_end(self, *args: object) -> None:
        self.times.append(time.perf_counter())


def measure(n_cells: int, steps: int) -> dict:
    import omnivae

    start = time.perf_counter()
    mdata = shaped_like(omnivae.datasets.load("pbmc10k_protein_v3_rna4000_adt14"), n_cells, seed=0)
    built = time.perf_counter()
    model = omnivae.Model(mdata, n_hidden=128, n_latent=20, seed=0)
    ready = time.perf_counter()
    rss_ready = peak_rss_mb()
    timer = StepTimes()
    model.train(max_epochs=1, batch_size=256, validation_fraction=0.1, early_stopping=False,
                accelerator="cpu", progress_bar=False, batch_probe_every=0, callbacks=[timer],
                limit_train_batches=steps, limit_val_batches=10)
    done = time.perf_counter()
    skip = len(timer.times) // 5  # the first steps warm up
    per_step = (timer.times[-1] - timer.times[skip]) / (len(timer.times) - 1 - skip)
    n_train = n_cells - round(n_cells * 0.1)
    return {"cells": n_cells, "build s": built - start, "setup s": ready - built,
            "train s (incl. 10 validation steps)": done - ready, "steps": len(timer.times),
            "s per step": per_step, "extrapolated s per epoch": per_step * -(-n_train // 256),
            "peak RSS MB after setup": rss_ready, "peak RSS MB": peak_rss_mb()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cells", type=int, help="synthetic cells, e.g. 1000000")
    parser.add_argument("steps", type=int, help="training steps to time, e.g. 150")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    print(json.dumps(measure(args.cells, args.steps)))


if __name__ == "__main__":
    main()
