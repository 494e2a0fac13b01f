"""Same seed, same CPU: identical embeddings, in one process and across fresh processes.

The cause of earlier run-to-run differences inside the full test run: numba (used by
``sc.pp.neighbors``) sets the process-wide OpenMP thread count to the number of CPUs, which
changes torch's count too (1 -> 2 under ``OMP_NUM_THREADS=1`` on a 2-core machine), and float
sums taken over another number of threads differ in the last bits, which training amplifies.
Training and embedding now run at a pinned thread count (:func:`omnivae.training.pinned_threads`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

import omnivae
from omnivae.training import DEFAULT_NUM_THREADS

ROOT = Path(__file__).resolve().parents[1]
RUN = """
import omnivae
sim = omnivae.datasets.simulate(150, modalities=("rna", "atac", "adt"), n_batches=2,
                                missing_fraction=0.2, seed=5)
model = omnivae.Model(sim, batch_key="batch", n_latent=4, n_hidden=16, seed=11)
model.train(max_epochs=3, batch_size=32, progress_bar=False, callbacks=CALLBACKS)
z = model.get_latent_representation()
"""


class ThreadSpy(pl.Callback):
    def __init__(self) -> None:
        self.seen: set[int] = set()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.add(torch.get_num_threads())


def _embed(callbacks=()):
    scope = {"CALLBACKS": list(callbacks)}
    exec(RUN, scope)
    return scope["z"]


def test_same_seed_identical_embedding_whatever_the_process_thread_count():
    before = torch.get_num_threads()
    try:
        spies = []
        results = []
        for outside in (DEFAULT_NUM_THREADS, DEFAULT_NUM_THREADS + 1):  # as numba would set it
            torch.set_num_threads(outside)
            spies.append(ThreadSpy())
            results.append(_embed([spies[-1]]))
            assert torch.get_num_threads() == outside  # the caller's setting is given back
    finally:
        torch.set_num_threads(before)
    assert all(spy.seen == {DEFAULT_NUM_THREADS} for spy in spies)
    np.testing.assert_array_equal(results[0], results[1])


def test_fresh_processes_give_the_embedding_of_this_process(tmp_path):
    out = tmp_path / "z.npy"
    script = RUN.replace("CALLBACKS", "[]") + f"\nimport numpy; numpy.save({str(out)!r}, z)\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    subprocess.run([sys.executable, "-c", textwrap.dedent(script)], check=True, env=env,
                   cwd=tmp_path, capture_output=True, timeout=300)
    np.testing.assert_array_equal(np.load(out), _embed())


def test_a_different_seed_gives_a_different_embedding():
    sim = omnivae.datasets.simulate(60, modalities=("rna",), seed=0)
    runs = []
    for seed in (0, 1):
        model = omnivae.Model(sim, n_latent=2, n_hidden=8, seed=seed)
        model.train(max_epochs=1, progress_bar=False)
        runs.append(model.get_latent_representation())
    assert not np.allclose(runs[0], runs[1])
