"""Lightning callbacks of a training run: the per-epoch history, and the best weights after
the KL warm-up with early stopping."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch


class HistoryCallback(pl.Callback):
    """Collects every epoch's logged metrics into ``self.rows`` (one dict per epoch)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        row = {"epoch": float(trainer.current_epoch)}
        row.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        self.rows.append(row)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict["rows"])


class BestAfterWarmup(pl.Callback):
    """Early stopping and best-weights restore that ignore the KL warm-up.

    During warm-up the KL weight is below one, so the weights are not yet those of the model
    being fitted and a validation ELBO from that phase is not a fair candidate. From
    ``start_epoch`` on, the weights with the lowest ``monitor`` are kept in memory and
    restored when training ends, and also when it is interrupted (Ctrl-C, SIGTERM); with ``patience``
    set, training stops after that many epochs without improvement. The stop decision is
    reduced over all processes (DDP-safe). The state is saved in checkpoints, so a resumed run
    keeps the best weights and the patience count of the interrupted one.
    """

    def __init__(self, monitor: str, *, start_epoch: int = 0, patience: int | None = None) -> None:
        self.monitor, self.start_epoch, self.patience = monitor, start_epoch, patience
        self.best, self.best_epoch = float("inf"), -1
        self.state: dict[str, torch.Tensor] | None = None
        self.stopped = False

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        epoch = trainer.current_epoch
        if trainer.sanity_checking or value is None or epoch < self.start_epoch:
            return
        if float(value) < self.best:
            self.best, self.best_epoch = float(value), epoch
            self.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        stop = self.patience is not None and epoch - self.best_epoch >= self.patience
        if trainer.strategy.reduce_boolean_decision(stop, all=False):
            trainer.should_stop = self.stopped = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.stopped:  # resumed from a run that had already stopped early
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.state is not None:
            pl_module.load_state_dict(self.state)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        if isinstance(exception, (KeyboardInterrupt, SystemExit)) and self.state is not None:
            pl_module.load_state_dict(self.state)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "state": self.state,
                "stopped": self.stopped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best, self.best_epoch = state_dict["best"], state_dict["best_epoch"]
        self.state, self.stopped = state_dict["state"], state_dict["stopped"]
