"""Training from a backed store vs in memory: seconds per epoch and peak memory as cells grow.

Synthetic stores shaped like pbmc10k (RNA 4000 + ADT 14; cells drawn from the real file's
cells and thinned, see ``suite/synthetic.py``) are written chunk by chunk, so building one
never holds it in memory. For each size, one process trains one epoch in memory
(``md.read_h5mu`` then ``omnivae.Model``) and one trains it backed (``omnivae.Model(path)``).
Writes ``results/backed_scaling.md`` and ``results/backed_scaling.png``.

Usage: ``python benchmarks/run.py --study backed_scaling [cells ...]`` (default 20000 100000).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parents[1]  # the benchmarks/ folder
sys.path.insert(0, str(HERE))  # benchmarks/: suite, studies

from suite.synthetic import shaped_like  # noqa: E402

REAL = "pbmc10k_protein_v3_rna4000_adt14"
CHUNK = 5000

_WORKER = """
import json, sys, time
import mudata as md
import omnivae
import omnivae.model  # imports Lightning: not part of the setup time
path, mode = sys.argv[1], sys.argv[2]

def peak_mb():
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024

start = time.perf_counter()
data = path if mode == "backed" else md.read_h5mu(path)
model = omnivae.Model(data, n_hidden=128, n_latent=20, seed=0, batch_penalty=None)
ready = time.perf_counter()
model.train(max_epochs=1, batch_size=256, validation_fraction=0.1, early_stopping=False,
            accelerator="cpu", progress_bar=False, batch_probe_every=0)
trained = time.perf_counter()
print(json.dumps({"setup_s": ready - start, "epoch_s": trained - ready, "peak_mb": peak_mb()}))
"""


def build_store(path: Path, n_cells: int) -> None:
    """Write ``n_cells`` synthetic cells to ``path``, ``CHUNK`` cells at a time."""
    import omnivae
    from omnivae.model.streaming import write_counts_store

    real = omnivae.datasets.load(REAL)

    def chunks() -> Iterator[dict]:
        for i, start in enumerate(range(0, n_cells, CHUNK)):
            part = shaped_like(real, min(CHUNK, n_cells - start), seed=i)
            yield {m: part[m].X for m in real.mod}

    obs = pd.DataFrame(index=[f"cell_{i}" for i in range(n_cells)])
    var = {m: pd.DataFrame(index=real[m].var_names.copy()) for m in real.mod}
    write_counts_store(path, obs, var, chunks())


def run(path: Path, mode: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", _WORKER, str(path), mode], capture_output=True,
                          text=True, env=env, check=False)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def plot(table: pd.DataFrame, out: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for mode, rows in table.groupby("mode"):
        axes[0].plot(rows["cells"], rows["peak_mb"], "o-", label=mode)
        axes[1].plot(rows["cells"], rows["epoch_s"], "o-", label=mode)
    for ax, label in zip(axes, ("peak RSS (MB)", "seconds per epoch"), strict=True):
        ax.set_xlabel("cells")
        ax.set_ylabel(label)
        ax.set_xscale("log")
        ax.legend()
    fig.suptitle("One epoch, backed store vs in memory (pbmc10k-shaped)")
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def measure(sizes: list[int]) -> pd.DataFrame:
    rows = []
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(dir=HERE) as tmp:
        for n_cells in sizes:
            path = Path(tmp) / f"store_{n_cells}.h5mu"
            start = time.perf_counter()
            build_store(path, n_cells)
            built = time.perf_counter() - start
            size_mb = path.stat().st_size / 2**20
            for mode in ("memory", "backed"):
                result = run(path, mode)
                rows.append({"cells": n_cells, "mode": mode, "store_mb": round(size_mb, 1),
                             "build_s": round(built, 1), **result})
                print(rows[-1], flush=True)
            path.unlink()
    table = pd.DataFrame(rows)
    results = HERE / "results"
    plot(table, results / "backed_scaling.png")
    write_report(table, results / "backed_scaling.md", load)
    return table


def write_report(table: pd.DataFrame, out: Path, load: tuple[float, float, float]) -> None:
    import torch

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=HERE, check=False).stdout.strip()
    lines = [
        "# Backed training: memory and time vs cells",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.node()} "
        f"({platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, 1 thread); "
        f"omnivae commit {commit}. The machine is shared with other jobs (load average at "
        f"start: {', '.join(f'{v:.1f}' for v in load)}), so seconds are noisy.",
        "",
        f"Stores shaped like {REAL} (RNA 4000 + ADT 14 features, no batches), written "
        f"{CHUNK} cells at a time with `omnivae.model.streaming.write_counts_store`. One process "
        "per row: `memory` reads the file with `mudata.read_h5mu` and trains; `backed` trains "
        "with `omnivae.Model(path)` (default `BackedOptions`: 128-cell blocks, 32 per buffer). "
        "One epoch, batch size 256, 10 % validation, n_hidden 128, n_latent 20. Peak RSS is "
        "the process's VmHWM (torch and Lightning alone take ~500 MB).",
        "",
        "| cells | mode | store MB | setup s | epoch s | peak RSS MB |",
        "|---|---|---|---|---|---|",
    ]
    for row in table.itertuples():
        if isinstance(getattr(row, "error", None), str):
            lines.append(f"| {row.cells} | {row.mode} | {row.store_mb} | error: {row.error} |||")
            continue
        lines.append(f"| {row.cells} | {row.mode} | {row.store_mb} | {row.setup_s:.1f} | "
                     f"{row.epoch_s:.1f} | {row.peak_mb:.0f} |")
    lines += ["", "![backed scaling](backed_scaling.png)", ""]
    growth = _growth(table)
    if growth:
        lines += [growth, ""]
    out.write_text("\n".join(lines))


def _growth(table: pd.DataFrame) -> str:
    if "peak_mb" not in table or table["cells"].nunique() < 2:
        return ""
    parts = []
    for mode, rows in table.dropna(subset=["peak_mb"]).groupby("mode"):
        rows = rows.sort_values("cells")
        first, last = rows.iloc[0], rows.iloc[-1]
        per_cell = (last.peak_mb - first.peak_mb) * 2**20 / max(last.cells - first.cells, 1)
        parts.append(f"{mode}: {last.peak_mb - first.peak_mb:+.0f} MB "
                     f"({per_cell:.0f} bytes per extra cell)")
    return ("Peak RSS growth from the smallest to the largest store: " + "; ".join(parts) + ".")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cells", nargs="*", type=int, default=[20000, 100000],
                        help="store sizes in cells (default 20000 100000)")
    measure(parser.parse_args(argv).cells)


if __name__ == "__main__":
    main()

