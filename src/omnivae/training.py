"""Lightning training of a :class:`~omnivae.module.MultimodalVAE`.

Data path: the dataset holds CSR matrices in memory; a minibatch is gathered with one sparse
row slice per modality (no per-cell Python), densified, and moved to the device by Lightning.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from omnivae._types import BatchData
from omnivae.cell_data import CellData
from omnivae.module import MultimodalVAE
from omnivae.probe import probe_mutual_information


class CellDataset(Dataset):
    """Map-style dataset over a subset of cells; ``__getitems__`` gathers a whole minibatch."""

    def __init__(self, data: CellData, indices: np.ndarray) -> None:
        self.data = data
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> BatchData:
        return self.data.batch(self.indices[[i]])

    def __getitems__(self, positions: Sequence[int]) -> BatchData:
        return self.data.batch(self.indices[np.asarray(positions, dtype=np.int64)])


def _keep(batch: Any) -> Any:
    return batch


def make_loader(data: CellData, indices: np.ndarray, batch_size: int, shuffle: bool,
                seed: int = 0) -> DataLoader:
    """A DataLoader yielding :class:`BatchData` minibatches (no worker processes)."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        CellDataset(data, indices), batch_size=batch_size, shuffle=shuffle,
        collate_fn=_keep, num_workers=0, generator=generator,
    )


def split_cells(n_cells: int, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random train/validation split of cell positions.

    Examples
    --------
    >>> train, val = split_cells(100, 0.1, seed=0)
    >>> len(train), len(val)
    (90, 10)
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}.")
    order = np.random.default_rng(seed).permutation(n_cells)
    n_val = round(n_cells * validation_fraction)
    if n_cells - n_val < 1:
        n_val = 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


class TrainingPlan(pl.LightningModule):
    """Optimises the negative ELBO with KL warm-up and logs every loss term.

    Parameters
    ----------
    module
        The multimodal VAE.
    lr, weight_decay
        AdamW settings.
    kl_warmup_epochs
        The KL weight grows linearly from 0 to 1 over this many epochs (0: no warm-up).
        Validation reports the ELBO at weight 1, so early stopping compares like with like.
    n_steps_per_epoch
        Used to make the warm-up smooth within an epoch.
    probe_columns
        ``{name: n_categories}`` of batch columns whose information in z is estimated on the
        validation cells every ``probe_every`` epochs by a held-out linear probe
        (:func:`omnivae.probe.probe_mutual_information`) and logged as
        ``validation_mi_<name>`` (NaN on epochs without a probe). Columns are the penalty's
        batch columns when a penalty is configured, else the decoder's batch.
    probe_every
        0 disables the probe.
    """

    def __init__(self, module: MultimodalVAE, *, lr: float = 1e-3, weight_decay: float = 1e-6,
                 kl_warmup_epochs: float = 0.0, n_steps_per_epoch: int = 1,
                 probe_columns: dict[str, int] | None = None, probe_every: int = 0) -> None:
        super().__init__()
        self.module = module
        self.lr, self.weight_decay = lr, weight_decay
        self.kl_warmup_epochs = kl_warmup_epochs
        self.n_steps_per_epoch = max(1, n_steps_per_epoch)
        self.probe_columns = probe_columns or {}
        self.probe_every = probe_every
        self._probe_z: list[torch.Tensor] = []
        self._probe_codes: list[torch.Tensor] = []

    @property
    def kl_weight(self) -> float:
        if self.kl_warmup_epochs <= 0:
            return 1.0
        progress = self.global_step / self.n_steps_per_epoch
        return float(min(1.0, progress / self.kl_warmup_epochs))

    @property
    def penalty_weight(self) -> float:
        """The batch penalty's weight, warmed up on the same schedule as the KL weight."""
        return self.module.config.penalty_weight * self.kl_weight

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        return batch.to(device)

    def _log_record(self, prefix: str, record_scalars: dict[str, torch.Tensor], n: int) -> None:
        for key, value in record_scalars.items():
            self.log(f"{prefix}_{key}", value, on_step=False, on_epoch=True, batch_size=n,
                     prog_bar=key == "elbo", sync_dist=True)

    def training_step(self, batch: BatchData, batch_idx: int) -> torch.Tensor:
        record = self.module.loss(batch, kl_weight=self.kl_weight,
                                  penalty_weight=self.penalty_weight)
        if not torch.isfinite(record.loss):
            bad = [k for k, v in record.reconstruction.items() if not torch.isfinite(v)]
            raise FloatingPointError(
                f"Non-finite loss at epoch {self.current_epoch}, step {self.global_step} "
                f"(modalities with non-finite reconstruction: {bad or 'none'}; "
                f"KL finite: {bool(torch.isfinite(record.kl))}). Try a lower lr, check the "
                "counts for extreme values, or pick another likelihood for that modality."
            )
        self._log_record("train", record.terms(), batch.n_cells)
        self.log("kl_weight", self.kl_weight, on_step=False, on_epoch=True, batch_size=1)
        return record.loss

    def validation_step(self, batch: BatchData, batch_idx: int) -> None:
        record = self.module.loss(batch, kl_weight=1.0, penalty_weight=0.0)
        self._log_record("validation", record.terms(), batch.n_cells)
        if self._probing:
            codes = (batch.penalty_codes if batch.penalty_codes is not None
                     else batch.batch_index.unsqueeze(1))
            self._probe_z.append(self.module.posterior(batch).mean.detach().cpu())
            self._probe_codes.append(codes.detach().cpu())

    @property
    def _probing(self) -> bool:
        return bool(self.probe_columns) and self.probe_every > 0 and (
            self.current_epoch % self.probe_every == 0
            or self.current_epoch == (self.trainer.max_epochs or 0) - 1)

    def on_validation_epoch_end(self) -> None:
        if not self.probe_columns or self.probe_every <= 0:
            return
        values = dict.fromkeys(self.probe_columns, float("nan"))
        if self._probe_z:
            z, codes = torch.cat(self._probe_z), torch.cat(self._probe_codes)
            for k, (name, n_classes) in enumerate(self.probe_columns.items()):
                values[name] = probe_mutual_information(z, codes[:, k], n_classes)
        self._probe_z, self._probe_codes = [], []
        for name, value in values.items():
            self.log(f"validation_mi_{name}", value, on_epoch=True, batch_size=1)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.module.parameters(), lr=self.lr,
                                 weight_decay=self.weight_decay)


class HistoryCallback(pl.Callback):
    """Collects every epoch's logged metrics into ``self.rows`` (one dict per epoch)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        row = {"epoch": float(trainer.current_epoch)}
        row.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        self.rows.append(row)


class BestAfterWarmup(pl.Callback):
    """Early stopping and best-weights restore that ignore the KL warm-up.

    During warm-up the KL weight is below one, so the weights are not yet those of the model
    being fitted and a validation ELBO from that phase is not a fair candidate. From
    ``start_epoch`` on, the weights with the lowest ``monitor`` are kept in memory and
    restored when training ends; with ``patience`` set, training stops after that many epochs
    without improvement. The stop decision is reduced over all processes (DDP-safe).
    """

    def __init__(self, monitor: str, *, start_epoch: int = 0, patience: int | None = None) -> None:
        self.monitor, self.start_epoch, self.patience = monitor, start_epoch, patience
        self.best, self.best_epoch = float("inf"), -1
        self.state: dict[str, torch.Tensor] | None = None

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
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.state is not None:
            pl_module.load_state_dict(self.state)


def default_max_epochs(n_cells: int) -> int:
    """Epochs for a dataset of ``n_cells``: 400 for small data, fewer as it grows
    (about 8M cell-visits), at least 20.

    Examples
    --------
    >>> default_max_epochs(600), default_max_epochs(100_000)
    (400, 80)
    """
    return int(np.clip(round(8_000_000 / max(n_cells, 1)), 20, 400))
