"""Seconds per training step against the number of cells in the dataset (is an epoch linear?).

An epoch is (cells / batch size) steps plus a validation pass over a fixed fraction of the
cells, so epoch time grows linearly with the cells exactly when the time of one step does not
depend on how many cells the dataset holds. This times the same number of training steps
(no validation) on synthetic data shaped like pbmc10k_protein_v3_rna4000_adt14 at each size,
one process per size, one torch thread, sizes run in turn; it separates the cost of a step from
the machine's load, which the one-epoch scaling runs (scaling.md) cannot.

Usage: python benchmarks/run.py --study step_time [--sizes 10000 100000 1000000] [--steps 60]
Writes benchmarks/results/step_time.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]  # the benchmarks/ folder
sys.path.insert(0, str(HERE))  # benchmarks/: suite, studies

JOB = """
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import torch
torch.set_num_threads(1)
import omnivae
from suite.synthetic import shaped_like
n, steps = int(sys.argv[1]), int(sys.argv[2])
start = time.perf_counter()
mdata = shaped_like(omnivae.datasets.load("pbmc10k_protein_v3_rna4000_adt14"), n, seed=0)
model = omnivae.Model(mdata, n_hidden=128, n_latent=20, seed=0)
made = time.perf_counter() - start
start = time.perf_counter()
model.train(max_epochs=1, batch_size=256, validation_fraction=0.0, early_stopping=False,
            progress_bar=False, batch_probe_every=0, num_threads=1, limit_train_batches=steps)
seconds = time.perf_counter() - start
status = open("/proc/self/status").read().split("VmHWM:")[1].split()
print("RESULT " + json.dumps({"cells": n, "steps": steps, "seconds": seconds,
                              "setup seconds": made, "peak RSS MB": int(status[0]) / 1024}))
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "step_time.md")
    args = parser.parse_args(argv)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(HERE), str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")]))
    rows = []
    for n in args.sizes:
        load = os.getloadavg()[0]
        done = subprocess.run([sys.executable, "-c", JOB, str(n), str(args.steps)], env=env,
                              capture_output=True, text=True, check=False)
        lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
        if not lines:
            raise SystemExit(f"{n} cells failed: {done.stderr[-2000:]}")
        row = json.loads(lines[0][len("RESULT "):])
        row["load"] = load
        rows.append(row)
        print(row, flush=True)
    base = rows[0]["seconds"] / rows[0]["steps"]
    table = ["| cells | seconds per step | relative to the smallest | peak RSS MB | load at start |",
             "|---|---|---|---|---|"]
    for row in rows:
        per = row["seconds"] / row["steps"]
        table.append(f"| {row['cells']} | {per:.3f} | {per / base:.2f} | "
                     f"{row['peak RSS MB']:.0f} | {row['load']:.1f} |")
    text = (f"# Seconds per training step vs cells in the dataset\n\nMeasured "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on the shared 2-core VM "
            f"(one torch thread; {args.steps} training steps of 256 cells, no validation; the "
            "default model, 128 hidden units, 20 latent dimensions; synthetic data shaped like "
            "pbmc10k_protein_v3_rna4000_adt14 as in scaling.md). The time includes Lightning's "
            "start-up, the same at every size.\n\n" + "\n".join(table) + "\n\nA step costs "
            "the same at every size when the relative column stays near 1: epoch time is then "
            "steps x step time, linear in the cells.\n")
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(args.out)
    print(text)


if __name__ == "__main__":
    main()
