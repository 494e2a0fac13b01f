"""Lightning training of a :class:`~omnivae.module.MultimodalVAE`: the
:class:`TrainingPlan` (loss, KL warm-up, logging, checks for non-finite values, checkpoint
state) and the training settings it needs.

The minibatch loaders are in :mod:`omnivae.train.loaders`, the callbacks in
:mod:`omnivae.train.callbacks`, the pinned thread count in :mod:`omnivae.train.threads`.
"""

from __future__ import annotations

import warnings
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from omnivae.module.records import BatchData, LossRecord
from omnivae.module.vae import MultimodalVAE
from omnivae.train import checkpoints
from omnivae.train.distributed import gather_objects, gather_rows
from omnivae.train.epoch_sums import EpochSums
from omnivae.train.probe import probe_mutual_information

PRECISIONS = {"32": "32-true", "32-true": "32-true", "bf16": "bf16-mixed",
              "bf16-mixed": "bf16-mixed"}


def training_precision(precision: str, accelerator: str) -> str:
    """Lightning's precision setting for ``precision`` (``"32"`` or ``"bf16"``).

    bfloat16 autocast is used on CUDA only: on the CPU it is slower than float32 on most
    machines and changes the sums, so ``"bf16"`` falls back to float32 with a warning.

    Examples
    --------
    >>> training_precision("32", "cpu")
    '32-true'
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}.")
    chosen = PRECISIONS[precision]
    on_cuda = torch.cuda.is_available() and accelerator in ("gpu", "cuda", "auto")
    if chosen == "bf16-mixed" and not on_cuda:
        warnings.warn("precision='bf16' needs a CUDA GPU; training in float32 on the CPU.",
                      UserWarning, stacklevel=3)
        return "32-true"
    return chosen


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
        (:func:`omnivae.train.probe.probe_mutual_information`) and logged as
        ``validation_mi_<name>`` (NaN on epochs without a probe). Columns are the penalty's
        batch columns when a penalty is configured, else the decoder's batch.
    probe_every
        0 disables the probe.
    shuffle_generator
        The generator of the training loader's shuffling; saved in checkpoints with the global
        random number generators so that a resumed run draws what an uninterrupted one would.
    signature
        Settings and data summary stored in checkpoints and compared on resume
        (:func:`omnivae.train.checkpoints.check_signature`).
    compile
        Evaluate the loss through :func:`torch.compile` (the module's weights are shared, so
        checkpoints and the trained model are unchanged).
    """

    def __init__(self, module: MultimodalVAE, *, lr: float = 1e-3, weight_decay: float = 1e-6,
                 kl_warmup_epochs: float = 0.0, n_steps_per_epoch: int = 1,
                 probe_columns: dict[str, int] | None = None, probe_every: int = 0,
                 shuffle_generator: torch.Generator | None = None,
                 signature: dict[str, Any] | None = None, compile: bool = False) -> None:
        super().__init__()
        self._loss = module.loss
        if compile:  # dynamic: the last minibatch and the non-zero counts vary in size
            self._loss = torch.compile(module.loss, dynamic=True)
        self.shuffle_generator = shuffle_generator
        self.signature = signature or {}
        self._resumed_rng: dict[str, Any] | None = None
        self.module = module
        self.lr, self.weight_decay = lr, weight_decay
        self.kl_warmup_epochs = kl_warmup_epochs
        self.n_steps_per_epoch = max(1, n_steps_per_epoch)
        self.probe_columns = probe_columns or {}
        self.probe_every = probe_every
        self._probe_z: list[torch.Tensor] = []
        self._probe_codes: list[torch.Tensor] = []
        self._train_sums, self._val_sums = EpochSums(), EpochSums()  # the logged terms

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

    def training_step(self, batch: BatchData, batch_idx: int) -> torch.Tensor:
        record = self._loss(batch, kl_weight=self.kl_weight, penalty_weight=self.penalty_weight)
        if not torch.isfinite(record.loss):
            raise FloatingPointError(
                f"Non-finite loss at epoch {self.current_epoch}, step {self.global_step} "
                f"(batch {batch_idx}): {describe_non_finite(self.module, batch, record)}"
            )
        self._accumulate(record.terms(), batch.n_cells)
        if batch_idx + 1 >= self.trainer.num_training_batches:  # last step: log the epoch
            self._log_epoch_means()
        return record.loss

    def on_train_epoch_start(self) -> None:
        self._train_sums.reset()

    def on_validation_epoch_start(self) -> None:
        self._val_sums.reset()

    def _accumulate(self, terms: dict[str, torch.Tensor], n: int) -> None:
        """Add a training step's terms (means over its ``n`` cells) and the KL weight to the
        epoch's sums (:class:`~omnivae.train.epoch_sums.EpochSums`)."""
        kl_weight = next(iter(terms.values())).new_tensor(self.kl_weight)
        self._train_sums.add({**terms, "kl_weight": kl_weight}, n, per_step=("kl_weight",))

    def _log_epoch_means(self) -> None:
        """Log the epoch's means as ``train_<term>`` (over all cells of all processes) and
        ``kl_weight`` (mean over steps)."""
        self._log_sums(self._train_sums, "train")

    def _log_sums(self, sums: EpochSums, prefix: str) -> None:
        """Sum over the processes (one collective, every process calls it once per epoch at
        its last step), log ``<prefix>_<term>`` means and reset."""
        if self._trainer is not None:  # (tests call it without a Trainer)
            sums.reduce(self.trainer.strategy, self.device)
        for key, value in sums.means().items():
            name = key if key == "kl_weight" else f"{prefix}_{key}"
            self.log(name, value, on_step=False, on_epoch=True, batch_size=1,
                     prog_bar=key == "elbo")  # already over every process's cells
        sums.reset()

    def validation_step(self, batch: BatchData, batch_idx: int) -> None:
        record = self._loss(batch, kl_weight=1.0, penalty_weight=0.0)
        self._val_sums.add(record.terms(), batch.n_cells)
        if batch_idx + 1 >= self.trainer.num_val_batches[0]:  # last step: log the epoch, so
            self._log_sums(self._val_sums, "validation")  # callbacks see it at its end
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
        if self._probe_z:  # every process probes all validation cells: the same value
            z = gather_rows(torch.cat(self._probe_z), self.trainer.strategy)
            codes = gather_rows(torch.cat(self._probe_codes), self.trainer.strategy)
            for k, (name, n_classes) in enumerate(self.probe_columns.items()):
                values[name] = probe_mutual_information(z, codes[:, k], n_classes)
        self._probe_z, self._probe_codes = [], []
        for name, value in values.items():
            self.log(f"validation_mi_{name}", value, on_epoch=True, batch_size=1)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Stop before a non-finite gradient reaches the weights (one check per step)."""
        grads = [(n, p.grad) for n, p in self.module.named_parameters() if p.grad is not None]
        # one fused pass: a non-finite entry makes its tensor's norm non-finite (a finite
        # gradient whose norm overflows float32 is caught by the exact check below)
        if not grads or bool(torch.stack(torch._foreach_norm([g for _, g in grads])).isfinite().all()):
            return
        if all(bool(g.isfinite().all()) for _, g in grads):
            return
        bad = sorted({n.split(".")[1] if n.startswith(("encoders.", "decoders.")) else n
                      for n, g in grads if not bool(g.isfinite().all())})
        raise FloatingPointError(
            f"Non-finite gradient at epoch {self.current_epoch}, step {self.global_step} in the "
            f"networks of {bad} (the loss was finite; the weights are left unchanged). Hint: "
            "lower lr, check the counts of that modality for extreme values, or give it "
            "another likelihood."
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # every process draws its own random numbers: under DDP all their states are kept
        # (each process calls this hook; process 0 writes the file)
        rng = checkpoints.rng_state(self.shuffle_generator)
        checkpoint["omnivae"] = {"signature": self.signature, "rng": rng}
        if self.trainer.world_size > 1:
            checkpoint["omnivae"]["rng_per_process"] = gather_objects(
                rng, self.trainer.world_size)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("omnivae")
        if saved is None:
            raise ValueError("This checkpoint was not written by omnivae; pass resume=False.")
        checkpoints.check_signature(saved["signature"], self.signature, "in checkpoint_dir")
        per_process = saved.get("rng_per_process")
        self._resumed_rng = (per_process[self.global_rank]
                             if per_process and len(per_process) == self.trainer.world_size
                             else saved["rng"])
        checkpoints.set_shuffle_state(saved["rng"], self.shuffle_generator)

    def on_train_start(self) -> None:
        if self._resumed_rng is not None:  # after Lightning's restore, before the first draw
            checkpoints.set_rng_state(self._resumed_rng)
            self._resumed_rng = None

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # the fused kernel updates every parameter in one pass (faster than the per-tensor
        # loop on CPU; the same update up to float rounding): docs/design_evidence.md#fused-adamw
        params = list(self.module.parameters())
        fused = all(p.dtype in (torch.float32, torch.float64) for p in params)
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay,
                                 fused=fused or None)


def default_max_epochs(n_cells: int) -> int:
    """Epochs for a dataset of ``n_cells``: 400 for small data, fewer as it grows
    (about 8M cell-visits), at least 20.

    Examples
    --------
    >>> default_max_epochs(600), default_max_epochs(100_000)
    (400, 80)
    """
    return int(np.clip(round(8_000_000 / max(n_cells, 1)), 20, 400))


def describe_non_finite(module: MultimodalVAE, batch: BatchData, record: LossRecord) -> str:
    """Which modality made a loss non-finite, and what to do: non-finite input counts, an
    encoder whose output (or weights) went non-finite, or a likelihood that did.

    An encoder that outputs NaN makes every likelihood NaN through the fused latent, so the
    encoders are checked first and named as the cause.
    """
    names = module.config.names
    inputs = [m for m in names if not bool(torch.isfinite(batch.counts[m]).all())]
    weights = sorted({n.split(".")[1] for n, p in module.named_parameters()
                      if n.split(".")[0] in ("encoders", "decoders")
                      and not bool(torch.isfinite(p).all())})
    encoders: list[str] = []
    if len(module.encoders):  # models such as "early" have no per-modality encoders
        with torch.no_grad():
            loc, logvar = module.experts(batch)
        encoders = [m for i, m in enumerate(names)
                    if not bool(torch.isfinite(loc[i]).all() and torch.isfinite(logvar[i]).all())]
    likelihoods = [m for m, v in record.reconstruction.items() if not bool(torch.isfinite(v))]
    causes = []
    if inputs:
        causes.append(f"input counts of modality {inputs} are non-finite")
    if encoders:
        causes.append(f"the encoder of modality {encoders} produced a non-finite latent "
                      f"(mean or variance); everything decoded from it is then non-finite")
    elif likelihoods:
        causes.append(f"the likelihood of modality {likelihoods} is non-finite")
    if weights:
        causes.append(f"weights of the networks of {weights} are non-finite (a previous "
                      "step's gradient exploded)")
    if not causes:
        causes.append(f"the KL term ({float(record.kl)}) or the batch penalty is non-finite")
    culprit = (inputs or encoders or likelihoods or weights or ["<modality>"])[0]
    return (
        "; ".join(causes) + ". Hint: lower lr, keep gradient clipping on "
        "(gradient_clip_val), check the counts of that modality for extreme values, or give it "
        f"another likelihood (likelihoods={{{culprit!r}: 'poisson'}})."
    )
