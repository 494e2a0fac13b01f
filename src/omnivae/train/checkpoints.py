"""Fault tolerance of training (Lightning layer): checkpoints, resume, Ctrl-C, RNG state.

A run with ``checkpoint_dir`` writes ``last.ckpt`` there at the end of every epoch, atomically
(a temporary file and one rename, so a crash while writing leaves the previous checkpoint
intact). It holds everything an uninterrupted run would carry into the next epoch: weights,
optimizer moments, the epoch and step counters (hence the KL warm-up), the early-stopping and
best-weights state, the training history, the random number generators (torch, numpy, Python
and the minibatch shuffler) and a *signature* of the data and settings. Resuming checks the
signature, so a checkpoint is never silently continued on other data or other settings.
Checkpoints are read with ``weights_only=True``: tensors and plain containers, no pickled code.
"""

from __future__ import annotations

import os
import random
import signal
import tempfile
import threading
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from omnivae.train.interrupts import TrainingTerminated

LAST_CHECKPOINT = "last.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that writes to a temporary sibling file and renames it."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any,
                        storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        try:
            torch.save(checkpoint, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)


def checkpoint_callback(checkpoint_dir: str | Path) -> ModelCheckpoint:
    """A callback that keeps one checkpoint, ``checkpoint_dir/last.ckpt``, updated every epoch."""
    return ModelCheckpoint(dirpath=str(checkpoint_dir), filename=Path(LAST_CHECKPOINT).stem,
                           monitor=None, save_top_k=1, every_n_epochs=1,
                           enable_version_counter=False)


def resume_path(checkpoint_dir: str | Path | None, resume: bool) -> Path | None:
    """The checkpoint to continue from: ``checkpoint_dir/last.ckpt`` when ``resume`` and it
    exists, else ``None`` (a fresh run).

    Examples
    --------
    >>> import tempfile
    >>> resume_path(tempfile.mkdtemp(), True) is None  # nothing to resume yet: start fresh
    True
    """
    if not resume:
        return None
    if checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir=..., the folder the checkpoints go to.")
    path = Path(checkpoint_dir) / LAST_CHECKPOINT
    if not path.is_file():
        return None
    check_readable(path)
    return path


def check_readable(path: Path) -> None:
    """Raise a ValueError naming ``path`` unless it is a complete checkpoint archive (every
    member present, every checksum right), before Lightning reads it.

    Examples
    --------
    >>> import tempfile, torch, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "last.ckpt"
    >>> torch.save({"epoch": 3}, path)
    >>> check_readable(path)
    >>> _ = path.write_bytes(path.read_bytes()[:40])
    >>> check_readable(path)
    Traceback (most recent call last):
    ...
    ValueError: Checkpoint ... is damaged (truncated or partly written: ...); ...
    """
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        problem = None if bad is None else f"member {bad} fails its checksum"
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        problem = f"{type(err).__name__}: {err}"
    if problem is not None:
        raise ValueError(
            f"Checkpoint {path} is damaged (truncated or partly written: {problem}); resume "
            "from a backup copy of it, or delete it (or pass resume=False) to start afresh.")


def rng_state(shuffle_generator: torch.Generator | None) -> dict[str, Any]:
    """Every random number generator training draws from, in ``weights_only``-safe types."""
    # the legacy global numpy generator is the one lightning's seed_everything seeds
    np_state = cast(tuple[Any, ...], np.random.get_state(legacy=True))  # noqa: NPY002
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [str(np_state[0]), torch.from_numpy(np.asarray(np_state[1]).astype(np.int64)),
                  int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": _to_lists(random.getstate()),
        "shuffle": None if shuffle_generator is None else shuffle_generator.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_shuffle_state(state: Mapping[str, Any], shuffle_generator: torch.Generator | None) -> None:
    """Restore the minibatch shuffler (before Lightning draws the next epoch's order)."""
    if shuffle_generator is not None and state.get("shuffle") is not None:
        shuffle_generator.set_state(state["shuffle"])


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the global generators :func:`rng_state` captured (at the start of training)."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))  # noqa: NPY002
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(value: Any) -> Any:
    return [_to_lists(v) for v in value] if isinstance(value, tuple) else value


def _to_tuples(value: Any) -> Any:
    return tuple(_to_tuples(v) for v in value) if isinstance(value, list) else value


def check_signature(saved: Mapping[str, Any], current: Mapping[str, Any], path: Any) -> None:
    """Raise a ValueError naming every setting in which a checkpoint differs from this run."""
    saved, current = _flatten(saved), _flatten(current)
    keys = sorted(set(saved) | set(current))
    differ = [k for k in keys if saved.get(k) != current.get(k)]
    if differ:
        details = "; ".join(f"{k}: checkpoint {_short(saved.get(k))} vs now {_short(current.get(k))}"
                            for k in differ)
        raise ValueError(
            f"Checkpoint {path} was written by a different training run ({details}). Resume "
            "with the same data and settings, or pass resume=False (or another checkpoint_dir) "
            "to start afresh."
        )


def _flatten(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted names (``module.n_latent``), so a difference is named by the
    setting itself, not by the whole section it sits in."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def fit(trainer: pl.Trainer, plan: pl.LightningModule, train_loader: Any, val_loader: Any,
        ckpt_path: Path | None) -> str | None:
    """``trainer.fit`` that survives Ctrl-C and SIGTERM; returns what stopped training:
    ``None`` (it ended), ``"SIGINT"`` (Ctrl-C) or ``"SIGTERM"``.

    Lightning answers a KeyboardInterrupt by calling the callbacks' ``on_exception`` (where
    :class:`~omnivae.train.callbacks.BestAfterWarmup` restores the best weights), ignoring SIGINT and
    exiting the process; a SIGTERM by raising its ``SIGTERMException`` (a ``SystemExit`` with
    status 0) at the next step. Both become a return here, the SIGINT handler is restored,
    and the caller raises :class:`~omnivae.train.interrupts.TrainingInterrupted` or
    :class:`~omnivae.train.interrupts.TrainingTerminated`, which tell the truth.
    """
    in_main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGINT) if in_main else None
    try:
        trainer.fit(plan, train_loader, val_loader,
                    ckpt_path=None if ckpt_path is None else str(ckpt_path), weights_only=True)
    except (SIGTERMException, TrainingTerminated):
        return "SIGTERM"
    except SystemExit as exit_:
        if not isinstance(exit_.__context__, KeyboardInterrupt):
            raise
        return "SIGINT"
    finally:
        if in_main and handler is not None:
            signal.signal(signal.SIGINT, handler)
    return None
