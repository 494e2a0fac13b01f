"""The settings of one training run, in one typed place: :class:`TrainConfig`.

:meth:`omnivae.Model.train` builds it from its keyword options, :func:`omnivae.train.fitting.fit`
runs it and the Trainer factory reads it: every default is written here once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from lightning.pytorch.strategies import Strategy

from omnivae.module.arguments import check_int, check_number
from omnivae.train.loggers import Logger


@dataclass(frozen=True)
class TrainConfig:
    """How to train: epochs, optimiser, validation, hardware, checkpoints and logging.

    Parameters
    ----------
    max_epochs
        An integer >= 1, or ``None``: :func:`~omnivae.train.plan.default_max_epochs` of the
        number of cells. Every numeric field is checked when the config is made; a
        ValueError names the field, the value and the range it accepts.
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
    verbose
        Show Lightning's messages: its info lines (which devices it found and uses, why
        training stopped) and the model summary. Off by default: a normal run prints only the
        progress bar.
    batch_probe_every
        Every this many epochs, estimate the information z carries about each batch column
        (the penalised ones, else ``batch_key``) with a held-out linear probe on the
        validation cells; logged as ``history["validation_mi_<column>"]`` in nats
        (plot it with :func:`omnivae.pl.plot_history`). 0 disables it.
    gradient_clip_val
        Clip the gradient's total norm at this value (``None``: no clipping). The loss is
        summed over features, so norms are large; the default 1e4 is far above the norms of
        normal training (see ``docs/reliability.md``) and stops a single outlier minibatch
        from wrecking the optimiser.
    checkpoint_dir
        Write ``checkpoint_dir/last.ckpt`` (atomically) at the end of every epoch.
    resume
        Continue from ``checkpoint_dir/last.ckpt`` when it exists (start afresh when it
        does not). The resumed run equals an uninterrupted one with the same seed (the KL
        warm-up, optimiser, early-stopping state and random generators are restored); a
        checkpoint written with other data or settings is refused with the differences.
    num_threads
        CPU threads torch trains with, and later embeds with (default ``$OMP_NUM_THREADS``,
        else torch's count when omnivae was imported). Fixed so that other libraries
        changing the process-wide count cannot change the result: the same seed, data,
        settings and thread count give identical embeddings.
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
    trainer_kwargs
        Any other keyword of :class:`lightning.pytorch.Trainer` (e.g.
        ``enable_progress_bar=False``, ``num_sanity_val_steps=2``, ``enable_model_summary``,
        ``log_every_n_steps``, ``deterministic``, ``max_time``). They override omnivae's own
        Trainer defaults (see :func:`omnivae.train.fitting.trainer_options`), except
        ``callbacks``, which are added to omnivae's own, and ``use_distributed_sampler=True``,
        which is refused (omnivae's loaders shard the cells themselves). Trainer keywords that
        are fields here (``max_epochs``, ``accelerator``, ``devices``, ``num_nodes``,
        ``strategy``, ``gradient_clip_val``, ``logger``, ``precision``) set the field.

    Examples
    --------
    >>> config = TrainConfig.from_options(max_epochs=5, lr=1e-3, gradient_clip_algorithm="value")
    >>> config.max_epochs, config.lr, dict(config.trainer_kwargs)
    (5, 0.001, {'gradient_clip_algorithm': 'value'})
    >>> TrainConfig(batch_size=0)
    Traceback (most recent call last):
    ...
    ValueError: batch_size must be an integer >= 1, got 0.
    """

    max_epochs: int | None = None
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-6
    kl_warmup_epochs: float | None = None
    validation_fraction: float = 0.1
    early_stopping: bool = True
    patience: int = 30
    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    num_nodes: int = 1
    strategy: str | Strategy = "auto"
    progress_bar: bool = True
    verbose: bool = False
    batch_probe_every: int = 5
    gradient_clip_val: float | None = 1e4
    checkpoint_dir: str | Path | None = None
    resume: bool = False
    num_threads: int | None = None
    logger: str | Logger | bool | None = None
    log_dir: str | Path = "omnivae_logs"
    precision: str = "32"
    compile: bool = False
    trainer_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_int("max_epochs", self.max_epochs, 1, none="to choose from the number of cells")
        check_int("batch_size", self.batch_size, 1)
        check_number("lr", self.lr, low=0, low_open=True)
        check_number("weight_decay", self.weight_decay, low=0)
        check_number("kl_warmup_epochs", self.kl_warmup_epochs, low=0,
                     none="for a quarter of max_epochs")
        check_number("validation_fraction", self.validation_fraction, low=0, high=1,
                     high_open=True)
        check_int("patience", self.patience, 0)
        check_int("batch_probe_every", self.batch_probe_every, 0)
        check_number("gradient_clip_val", self.gradient_clip_val, low=0, low_open=True,
                     none="for no clipping")
        check_int("num_nodes", self.num_nodes, 1)
        if isinstance(self.devices, int) and self.devices < 1 and self.devices != -1:
            raise ValueError(f"devices must be a positive integer, -1 (all), a list of device "
                             f"indices or 'auto'; got {self.devices}.")
        if self.trainer_kwargs.get("use_distributed_sampler", False):
            raise ValueError("use_distributed_sampler=True is not supported: omnivae's loaders "
                             "shard the cells over the processes themselves.")
        check_int("num_threads", self.num_threads, 1, none="for $OMP_NUM_THREADS or torch's count")

    @classmethod
    def from_options(cls, config: TrainConfig | None = None, **options: Any) -> TrainConfig:
        """``config`` (default: the defaults) with ``options`` changed: a field's name sets
        that field, any other keyword joins ``trainer_kwargs`` (Lightning's Trainer)."""
        names = {f.name for f in fields(cls)} - {"trainer_kwargs"}
        base = config or cls()
        extra = {k: v for k, v in options.items() if k not in names}
        return replace(base, **{k: v for k, v in options.items() if k in names},
                       trainer_kwargs={**base.trainer_kwargs, **extra})

    @property
    def trainer_devices(self) -> int | str | list[int]:
        """The Trainer's ``devices``: ``"auto"`` with ``strategy="auto"`` means one device
        (one process), not Lightning's every GPU."""
        if self.strategy == "auto" and self.devices == "auto":
            return 1
        return self.devices

    def lightning_trainer_kwargs(self) -> dict[str, Any]:
        """``trainer_kwargs`` without the keys omnivae decides itself."""
        return {k: v for k, v in self.trainer_kwargs.items() if k != "use_distributed_sampler"}
