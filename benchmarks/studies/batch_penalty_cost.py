"""Cost of the batch mutual-information penalty: seconds per training epoch with and without it.

Usage::

    python benchmarks/run.py --study batch_penalty_cost [--dataset mop_snareseq_c1] \\
        [--epochs 3] [--repeats 2]

Trains omnivae at batch size 256 with no penalty and with each estimator, alternating the
configurations in one run, and writes ``benchmarks/results/batch_penalty_cost.md``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: suite, studies

import omnivae
from omnivae.module.penalties import PENALTIES
from suite.report import markdown_table

RESULTS = Path(__file__).resolve().parents[1] / "results"


def epoch_seconds(mdata, penalty: str | None, epochs: int, seed: int) -> float:
    model = omnivae.Model(mdata, batch_key="batch", batch_penalty=penalty, seed=seed)
    start = time.perf_counter()
    model.train(max_epochs=epochs, batch_size=256, accelerator="cpu", early_stopping=False,
                validation_fraction=0.0, progress_bar=False, batch_probe_every=0)
    return (time.perf_counter() - start) / epochs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mop_snareseq_c1")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    mdata = omnivae.datasets.load(args.dataset)
    configs: list[str | None] = [None, *PENALTIES]
    times: dict[str, list[float]] = {str(c): [] for c in configs}
    for repeat in range(args.repeats):
        for config in configs:  # alternate so drift in machine load hits every row alike
            times[str(config)].append(epoch_seconds(mdata, config, args.epochs, seed=repeat))
            print(config, times[str(config)][-1], flush=True)
    base = float(np.median(times["None"]))
    rows = [{"penalty": name if name != "None" else "none",
             "s / epoch (median)": float(np.median(t)),
             "ratio to none": float(np.median(t)) / base,
             "within 1.3x": "yes" if float(np.median(t)) / base <= 1.3 else "no"}
            for name, t in times.items()]
    text = "\n".join([
        f"# Batch penalty cost on `{args.dataset}`", "",
        f"{mdata.n_obs} cells, modalities {dict((m, a.n_vars) for m, a in mdata.mod.items())}, "
        f"batch size 256, {args.epochs} epochs x {args.repeats} alternating repeats, CPU "
        f"({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads).", "",
        markdown_table(rows), "",
    ])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "batch_penalty_cost.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
