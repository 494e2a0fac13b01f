"""What :meth:`omnivae.Model.train` does with a model: the Lightning run of
:func:`omnivae.train.fitting.fit` on its cells, then the history and the cross-modal shrinkage fitted
on the cells training held out (:func:`omnivae.model.prediction.shrinkage.fit_every_target`)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pandas as pd
from lightning.pytorch.strategies import Strategy

from omnivae.data.backed import BackedCellData, BackedOptions
from omnivae.data.cells import CellData
from omnivae.data.setup import SetupInfo
from omnivae.model.prediction.shrinkage import Shrinkage, fit_every_target
from omnivae.model.setup import probe_columns
from omnivae.module.vae import ModuleConfig, MultimodalVAE
from omnivae.train import fitting
from omnivae.train.loggers import Logger
from omnivae.train.plan import training_precision
from omnivae.train.threads import pinned_threads


class TrainingMixin:
    """:meth:`train` of :class:`omnivae.Model` (which sets these attributes)."""

    module: MultimodalVAE
    config: ModuleConfig
    setup: SetupInfo
    history: pd.DataFrame
    is_trained: bool
    is_global_zero: bool
    shrinkage: dict[str, Shrinkage]
    cells: CellData | BackedCellData
    backed: BackedOptions | None
    num_threads: int | None
    # whether train() fits the cross-modal shrinkage on its validation cells (a query model
    # keeps its reference's instead: omnivae.model.mapping.query)
    fits_shrinkage: bool = True

    def train(
        self,
        max_epochs: int | None = None,
        *,
        batch_size: int = 256,
        lr: float = 2e-3,
        weight_decay: float = 1e-6,
        kl_warmup_epochs: float | None = None,
        validation_fraction: float = 0.1,
        early_stopping: bool = True,
        patience: int = 30,
        accelerator: str = "auto",
        devices: int | str | list[int] = "auto",
        num_nodes: int = 1,
        strategy: str | Strategy = "auto",
        progress_bar: bool = True,
        batch_probe_every: int = 5,
        gradient_clip_val: float | None = 1e4,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
        num_threads: int | None = None,
        logger: str | Logger | bool | None = None,
        log_dir: str | Path = "omnivae_logs",
        precision: str = "32",
        compile: bool = False,
        **trainer_kwargs: Any,
    ) -> None:
        """Train with PyTorch Lightning.

        Parameters
        ----------
        max_epochs
            Default: :func:`~omnivae.train.plan.default_max_epochs` of the number of cells.
        batch_size, lr, weight_decay
            Minibatch size and AdamW settings.
        kl_warmup_epochs
            Linear KL warm-up length (default: a quarter of ``max_epochs``).
        validation_fraction
            Cells held out to monitor the ELBO; early stopping and the choice of the best
            weights use it.
        early_stopping, patience
            Stop when the validation ELBO has not improved for ``patience`` epochs.
        accelerator, devices
            Passed to :class:`lightning.pytorch.Trainer`: ``accelerator`` ``"cpu"``,
            ``"gpu"``, ``"auto"``; ``devices`` how many devices (or which) per machine, e.g.
            ``devices=4`` with ``strategy="ddp"`` trains in 4 processes. With both
            ``devices`` and ``strategy`` left at ``"auto"``, training uses one device (one
            process), also on a machine with several GPUs.
        num_nodes
            Machines of a multi-node run (Lightning's ``num_nodes``; on SLURM it must match
            ``--nodes``, and ``devices`` must match ``--ntasks-per-node``).
        strategy
            Lightning's strategy: ``"auto"`` (one process), ``"ddp"`` or a
            :class:`lightning.pytorch.strategies.Strategy` such as ``DDPStrategy(...)``. Under
            DDP each process trains on a disjoint shard of the training cells (reshuffled every
            epoch from the seed), ``batch_size`` is per process (the effective minibatch is
            ``batch_size`` x processes), logged epoch means and the validation ELBO are over
            all cells, early stopping stops every process at the same epoch, checkpoints are
            written by process 0 only, and every process ends with the same trained weights
            and history. ``"ddp"`` runs the calling script again in each process: guard
            writes with ``if model.is_global_zero:``. From a notebook use
            ``"ddp_notebook"`` (forked workers; the trained weights and history come back to
            the notebook); ``"ddp_spawn"`` is refused with a message. See the
            distributed-training page of the documentation.
        progress_bar
            Show Lightning's progress bar.
        batch_probe_every
            Every this many epochs, estimate the information z carries about each batch column
            (the penalised ones, else ``batch_key``) with a held-out linear probe on the
            validation cells; logged as ``history["validation_mi_<column>"]`` in nats
            (plot it with :func:`omnivae.pl.plot_history`). 0 disables it.
        gradient_clip_val
            Clip the gradient's total norm at this value (``None``: no clipping). The loss is
            summed over features, so norms are large: on the real CITE-seq and Multiome
            starters they stay below ~1,500; the default 1e4 never touches normal training and
            stops a single outlier minibatch from wrecking the optimiser.
        checkpoint_dir
            Write ``checkpoint_dir/last.ckpt`` (atomically) at the end of every epoch.
        resume
            Continue from ``checkpoint_dir/last.ckpt`` when it exists (start afresh when it
            does not). The resumed run equals an uninterrupted one with the same seed (the KL
            warm-up, optimiser, early-stopping state and random generators are restored); a
            checkpoint written with other data or settings is refused with the differences.
        num_threads
            CPU threads torch trains with, and later embeds with (default ``$OMP_NUM_THREADS``,
            else torch's count when omnivae was imported). Fixed so that other libraries changing the
            process-wide count cannot change the result: the same seed, data, settings and
            thread count give identical embeddings.
        logger, log_dir
            Lightning logging of every loss term per epoch (``history`` is kept either way):
            ``None``/``False`` none, ``True`` or ``"csv"`` a CSV file, ``"tensorboard"``
            TensorBoard, or any :class:`lightning.pytorch.loggers.Logger` (passed through).
            Files go under ``log_dir`` (see :func:`omnivae.train.loggers.make_logger`).
        precision
            ``"32"`` (float32) or ``"bf16"``: bfloat16 autocast of the networks on a CUDA GPU
            (Lightning's ``"bf16-mixed"``; weights and optimiser stay float32). On the CPU
            ``"bf16"`` is ignored with a warning and training runs in float32.
        compile
            Run the loss through :func:`torch.compile` (fuses the elementwise likelihood and
            network code; the first steps are slow while it compiles, so it pays off on long
            trainings). Same results within float rounding.
        **trainer_kwargs
            Anything else for the Trainer (``callbacks`` are added to omnivae's own).
        """
        devices = fitting.check_train_arguments(
            batch_size=batch_size, num_nodes=num_nodes, devices=devices, strategy=strategy,
            num_threads=num_threads, trainer_kwargs=trainer_kwargs)
        self.num_threads = num_threads
        # resolved here so that its warning (bf16 on a CPU) points at the caller of train()
        precision = training_precision(precision, accelerator)
        backed = self.backed
        result = fitting.fit(
            self.module, self.cells, seed=int(self.config.extra.get("seed", 0)),
            probe_columns=probe_columns(self.setup),
            block_size=None if backed is None else backed.block_size,
            buffer_blocks=None if backed is None else backed.buffer_blocks,
            max_epochs=max_epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
            kl_warmup_epochs=kl_warmup_epochs, validation_fraction=validation_fraction,
            early_stopping=early_stopping, patience=patience, accelerator=accelerator,
            devices=devices, num_nodes=num_nodes, strategy=strategy, progress_bar=progress_bar,
            batch_probe_every=batch_probe_every, gradient_clip_val=gradient_clip_val,
            checkpoint_dir=checkpoint_dir, resume=resume, num_threads=num_threads,
            logger=logger, log_dir=log_dir, precision=precision, compile=compile,
            trainer_kwargs=trainer_kwargs)
        self.is_global_zero = result.is_global_zero
        self.history = (pd.DataFrame(result.history).set_index("epoch") if result.history
                        else pd.DataFrame())
        self.is_trained = True
        if self.fits_shrinkage:
            with pinned_threads(self.num_threads):  # weights from the cells training held out
                self.shrinkage = fit_every_target(
                    self.module, self.cells, result.train_cells, result.validation_cells,
                    seed=int(self.config.extra.get("seed", 0)),
                    device=next(self.module.parameters()).device)
        if result.interruption is not None:
            warnings.warn(result.interruption, RuntimeWarning, stacklevel=2)
