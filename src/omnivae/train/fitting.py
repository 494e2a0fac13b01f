"""One training run of a :class:`~omnivae.module.MultimodalVAE` with Lightning (training layer).

:func:`fit` is what :meth:`omnivae.Model.train` runs: it checks the arguments, splits the cells
into training and validation, builds the loaders (cell by cell in memory, block by block from
disk), the Trainer with omnivae's callbacks (history, best weights after the KL warm-up with
early stopping, checkpoints), the :class:`~omnivae.train.plan.TrainingPlan`, and trains, resuming
from a checkpoint when asked and surviving Ctrl-C. No MuData here: the data come as a
:class:`~omnivae.data.cells.CellData` or any :class:`~omnivae.train.blocks.RowSource`.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import numpy as np
from torch.utils.data import DataLoader

from omnivae.data.cells import CellData
from omnivae.module.vae import MultimodalVAE
from omnivae.train import checkpoints
from omnivae.train.blocks import BlockShuffleDataset, RowSource, shard_blocks
from omnivae.train.callbacks import BestAfterWarmup, HistoryCallback
from omnivae.train.config import TrainConfig
from omnivae.train.distributed import (
    ShardSampler,
    check_launch,
    return_callback_states,
    steps_per_epoch,
)
from omnivae.train.loaders import make_loader, split_cells
from omnivae.train.loggers import make_logger
from omnivae.train.plan import TrainingPlan, default_max_epochs, training_precision
from omnivae.train.threads import pinned_threads


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` returns.

    Attributes
    ----------
    history
        One dict per epoch: ``epoch`` and every logged metric (``train_<term>``,
        ``validation_<term>``, ``kl_weight``, the batch probe).
    is_global_zero
        ``False`` only in processes 1..N-1 of a distributed run.
    interruption
        ``None``, or when Ctrl-C or SIGTERM stopped training, a message saying in which epoch
        and which weights the module kept.
    stopped_by
        ``None``, ``"SIGINT"`` (Ctrl-C) or ``"SIGTERM"``: :meth:`omnivae.Model.train` raises
        :class:`~omnivae.train.interrupts.TrainingInterrupted` or
        :class:`~omnivae.train.interrupts.TrainingTerminated` with the message.
    train_cells, validation_cells
        Row indices of the cells training fitted on and the ones it held out (early stopping
        watches them; :mod:`omnivae.model.prediction.shrinkage` fits its weights on them).
    """

    history: list[dict[str, float]]
    is_global_zero: bool
    interruption: str | None
    train_cells: np.ndarray
    validation_cells: np.ndarray
    stopped_by: str | None = None


def fit(
    module: MultimodalVAE,
    data: CellData | RowSource,
    config: TrainConfig | None = None,
    *,
    seed: int = 0,
    probe_columns: Mapping[str, int] | None = None,
    block_size: int | None = None,
    buffer_blocks: int | None = None,
) -> FitResult:
    """Train ``module`` on ``data`` with PyTorch Lightning; the module ends on the CPU in
    evaluation mode, with the best weights after the KL warm-up when there are validation cells.

    Parameters
    ----------
    module
        The multimodal VAE to train (its config is part of the checkpoint signature).
    data
        The cells: in memory (:class:`~omnivae.data.cells.CellData`, shuffled cell by cell) or
        read from disk (any :class:`~omnivae.train.blocks.RowSource`, by blocks).
    config
        The run's settings (default: :class:`~omnivae.train.config.TrainConfig`'s defaults).
    seed
        Seed of the validation split, the minibatch order and Lightning's generators.
    probe_columns
        Batch columns (name: number of categories) for the batch probe; none by default.
    block_size, buffer_blocks
        Block reads of data from disk (``None``: the defaults of
        :func:`~omnivae.train.loaders.make_loader`); ignored for data in memory.

    Returns
    -------
    The history, whether this is process 0, and whether Ctrl-C interrupted the run.

    Examples
    --------
    >>> import omnivae
    >>> from omnivae.data import setup_mudata
    >>> sim = omnivae.datasets.simulate(100, modalities=("rna",), seed=0)
    >>> model = omnivae.Model(sim, n_latent=3)
    >>> data, _ = setup_mudata(sim)
    >>> result = fit(model.module, data, TrainConfig(max_epochs=2, progress_bar=False))
    >>> len(result.history), result.interruption
    (2, None)
    """
    config = config or TrainConfig()
    n = data.n_cells
    max_epochs = default_max_epochs(n) if config.max_epochs is None else config.max_epochs
    warmup = max_epochs / 4 if config.kl_warmup_epochs is None else config.kl_warmup_epochs
    train_idx, val_idx = split_cells(n, config.validation_fraction, seed)
    batch_size = config.batch_size
    if len(train_idx) < batch_size and len(train_idx) > 1:
        batch_size = len(train_idx)
    blocks = {k: v for k, v in (("block_size", block_size), ("buffer_blocks", buffer_blocks))
              if v is not None}
    train_loader = make_loader(data, train_idx, batch_size, shuffle=True, seed=seed, **blocks)
    val_loader = (make_loader(data, val_idx, max(batch_size, 1024), shuffle=False, **blocks)
                  if len(val_idx) else None)
    with lightning_messages(config.verbose):
        trainer, history, best, plan = _make_trainer(
            module, config, max_epochs, train_loader, val_loader, n_cells=n,
            batch_size=batch_size, warmup=warmup, probe_columns=dict(probe_columns or {}))
        ckpt_path = checkpoints.resume_path(config.checkpoint_dir, config.resume)
        pl.seed_everything(seed, verbose=False)
        with pinned_threads(config.num_threads):
            stopped_by = checkpoints.fit(trainer, plan, train_loader, val_loader, ckpt_path)
    module.to("cpu").eval()
    interruption = None
    if stopped_by is not None:
        kept = (f"the best weights so far (epoch {best.best_epoch})"
                if best is not None and best.state is not None else "the current weights")
        how = "interrupted (Ctrl-C)" if stopped_by == "SIGINT" else "terminated (SIGTERM)"
        interruption = (f"Training {how} in epoch {trainer.current_epoch} of {max_epochs}; "
                        f"the model keeps {kept}.")
    return FitResult(history=history.rows, is_global_zero=trainer.is_global_zero,
                     interruption=interruption, stopped_by=stopped_by, train_cells=train_idx,
                     validation_cells=val_idx)


@contextlib.contextmanager
def lightning_messages(verbose: bool) -> Iterator[None]:
    """What Lightning says during one training run of omnivae.

    Quiet (``verbose=False``): Lightning's info lines (GPU/TPU/HPU available, ``LOCAL_RANK``,
    "``Trainer.fit`` stopped") are hidden by raising the ``lightning.pytorch`` and
    ``lightning.fabric`` loggers to WARNING; ``verbose=True`` sets them to INFO. Both are
    restored afterwards. Either way, the warnings that omnivae's own use of Lightning makes
    irrelevant are ignored, here only (never process-wide): single-process loaders (omnivae
    builds its minibatches itself), epoch-level metrics that omnivae reduces itself,
    checkpoint folders that ``resume=True`` expects to exist, the exact ``__len__`` of the
    block loader, no validation loader with ``validation_fraction=0``, and deprecation
    notices raised inside Lightning about its own use of torch (``all_gather``,
    ``LeafSpec``), which no omnivae code can change.

    Examples
    --------
    >>> import logging, warnings
    >>> with lightning_messages(verbose=False):
    ...     logging.getLogger("lightning.pytorch").getEffectiveLevel() == logging.WARNING
    True
    """
    loggers = [logging.getLogger(f"lightning.{name}") for name in ("pytorch", "fabric")]
    levels = [log.level for log in loggers]
    try:
        for log in loggers:
            log.setLevel(logging.INFO if verbose else logging.WARNING)
        with warnings.catch_warnings():
            for message in _IRRELEVANT_WARNINGS:
                warnings.filterwarnings("ignore", message)
            yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)


# Lightning warnings that omnivae's own use of it makes irrelevant (see lightning_messages)
_IRRELEVANT_WARNINGS = (
    ".*does not have many workers.*",
    ".*Trying to infer the `batch_size`.*",
    ".*Checkpoint directory .* exists and is not empty.*",
    ".*when logging on epoch level in distributed.*",
    ".*all_gather is deprecated.*",
    ".*Your `IterableDataset` has `__len__` defined.*",
    ".*You defined a `validation_step` but have no `val_dataloader`.*",  # validation_fraction=0
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
)


def trainer_options(config: TrainConfig, max_epochs: int,
                    callbacks: list[pl.Callback]) -> dict[str, Any]:
    """The keywords of :class:`lightning.pytorch.Trainer` for a run of ``config``: omnivae's
    defaults, overridden by any Trainer keyword in ``config.trainer_kwargs``; ``callbacks``
    (omnivae's own) come first, then the ones given in ``trainer_kwargs``.

    Examples
    --------
    >>> config = TrainConfig.from_options(progress_bar=False, num_sanity_val_steps=2)
    >>> options = trainer_options(config, 5, [])
    >>> options["num_sanity_val_steps"], options["enable_progress_bar"], options["max_epochs"]
    (2, False, 5)
    """
    given = config.lightning_trainer_kwargs()
    options: dict[str, Any] = {
        "max_epochs": max_epochs, "accelerator": config.accelerator,
        "devices": config.trainer_devices, "num_nodes": config.num_nodes,
        "strategy": config.strategy,
        "precision": training_precision(config.precision, config.accelerator),
        "logger": make_logger(config.logger, config.log_dir),
        "enable_progress_bar": config.progress_bar,
        "enable_model_summary": config.verbose,
        "enable_checkpointing": config.checkpoint_dir is not None,
        "gradient_clip_val": config.gradient_clip_val,
        "num_sanity_val_steps": 0,  # the first validation is after the first epoch
        "log_every_n_steps": 1,  # metrics are per epoch anyway
        "use_distributed_sampler": False,  # omnivae's loaders shard the cells themselves
    }
    if config.checkpoint_dir is not None:
        options["plugins"] = [checkpoints.AtomicCheckpointIO()]
    options.update(given)
    options["callbacks"] = [*callbacks, *_as_list(given.get("callbacks"))]
    return options


def _as_list(callbacks: Any) -> list[pl.Callback]:
    if callbacks is None:
        return []
    return [callbacks] if isinstance(callbacks, pl.Callback) else list(callbacks)


def _make_trainer(
    module: MultimodalVAE, config: TrainConfig, max_epochs: int, train_loader: DataLoader,
    val_loader: DataLoader | None, *, n_cells: int, batch_size: int, warmup: float,
    probe_columns: dict[str, int],
) -> tuple[pl.Trainer, HistoryCallback, BestAfterWarmup | None, TrainingPlan]:
    """The Lightning Trainer, callbacks and training plan of :func:`fit`."""
    n_train = len(train_loader.dataset.indices)  # type: ignore[attr-defined]
    history = HistoryCallback()
    callbacks: list[pl.Callback] = [history]
    best = None
    if val_loader is not None:
        best = BestAfterWarmup("validation_elbo", start_epoch=int(warmup),
                               patience=config.patience if config.early_stopping else None)
        callbacks.append(best)
    if config.checkpoint_dir is not None:
        callbacks.append(checkpoints.checkpoint_callback(config.checkpoint_dir))
    trainer = pl.Trainer(**trainer_options(config, max_epochs, callbacks))
    processes = trainer.world_size
    check_launch(trainer.strategy, processes)
    return_callback_states(trainer.strategy, [c for c in (history, best) if c is not None])
    for loader in (train_loader, val_loader):  # shard only if this Trainer is distributed
        if loader is not None and isinstance(loader.sampler, ShardSampler):
            loader.sampler.distributed = processes > 1
        if loader is not None and isinstance(loader.dataset, BlockShuffleDataset):
            loader.dataset.distributed = processes > 1
    n_val = 0 if val_loader is None else len(val_loader.dataset.indices)  # type: ignore[attr-defined]
    if 0 < n_val < processes:
        raise ValueError(
            f"validation_fraction={config.validation_fraction} leaves {n_val} validation cells for "
            f"{processes} processes; every process needs one. Raise validation_fraction or "
            "set it to 0.")
    signature = {"module": module.config.to_dict(), "cells": n_cells,
                 "train_cells": n_train, "batch_size": batch_size, "lr": config.lr,
                 "weight_decay": config.weight_decay, "kl_warmup_epochs": warmup,
                 "validation_fraction": config.validation_fraction}
    if processes > 1:
        signature["processes"] = processes
    plan = TrainingPlan(module, lr=config.lr, weight_decay=config.weight_decay,
                        kl_warmup_epochs=warmup,
                        n_steps_per_epoch=loader_steps_per_epoch(train_loader, processes),
                        probe_columns=probe_columns, probe_every=config.batch_probe_every,
                        shuffle_generator=train_loader.generator, signature=signature,
                        compile=config.compile)
    return trainer, history, best, plan


def loader_steps_per_epoch(loader: DataLoader, processes: int) -> int:
    """Optimiser steps per epoch of a training loader from
    :func:`~omnivae.train.loaders.make_loader` when ``processes`` processes share it (the KL
    warm-up counts epochs in steps).

    Data from disk are dealt out in whole blocks (each process's shard padded to equal
    length), data in memory cell by cell.

    Examples
    --------
    >>> import numpy as np, omnivae
    >>> from omnivae.data import setup_mudata
    >>> from omnivae.train.loaders import make_loader
    >>> data, _ = setup_mudata(omnivae.datasets.simulate(100, modalities=("rna",), seed=0))
    >>> loader = make_loader(data, np.arange(100), 32, shuffle=True)
    >>> loader_steps_per_epoch(loader, 1), loader_steps_per_epoch(loader, 2)
    (4, 2)
    """
    dataset = loader.dataset
    if isinstance(dataset, BlockShuffleDataset):  # shards of whole blocks, padded
        shard = shard_blocks(dataset.indices, dataset.block_size, 0, processes,
                             order_seed=None, pad=True)
        return max(1, -(-len(shard) // dataset.batch_size))
    return steps_per_epoch(len(dataset.indices), loader.batch_size or 1,  # type: ignore[attr-defined]
                           processes)
