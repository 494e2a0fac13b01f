"""What :meth:`omnivae.Model.train` does with a model: the Lightning run of
:func:`omnivae.train.fitting.fit` on its cells, then the history and the cross-modal shrinkage fitted
on the cells training held out (:func:`omnivae.model.prediction.shrinkage.fit_every_target`)."""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

import pandas as pd

from omnivae.data.backed import BackedCellData, BackedOptions
from omnivae.data.cells import CellData
from omnivae.data.setup import SetupInfo
from omnivae.model.prediction.shrinkage import Shrinkage, fit_every_target
from omnivae.model.setup import probe_columns
from omnivae.module.vae import ModuleConfig, MultimodalVAE
from omnivae.train import fitting
from omnivae.train.config import TrainConfig
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

    def train(self, max_epochs: int | None = None, *, config: TrainConfig | None = None,
              **options: Any) -> None:
        """Train with PyTorch Lightning.

        Parameters
        ----------
        max_epochs
            Default: :func:`~omnivae.train.plan.default_max_epochs` of the number of cells.
        config
            Settings of the run as one :class:`~omnivae.train.config.TrainConfig` (default:
            its defaults); ``options`` change single fields of it.
        **options
            Any field of :class:`~omnivae.train.config.TrainConfig`, which documents each:
            ``batch_size`` (256), ``lr`` (2e-3), ``weight_decay`` (1e-6),
            ``kl_warmup_epochs`` (a quarter of ``max_epochs``), ``validation_fraction`` (0.1),
            ``early_stopping`` (True), ``patience`` (30), ``accelerator`` ("auto"),
            ``devices`` ("auto": one), ``num_nodes`` (1), ``strategy`` ("auto"; "ddp" for
            several processes), ``progress_bar`` (True), ``batch_probe_every`` (5),
            ``gradient_clip_val`` (1e4), ``checkpoint_dir`` and ``resume``, ``num_threads``,
            ``logger`` and ``log_dir``, ``precision`` ("32" or "bf16"), ``compile`` (False).
            Any other keyword goes to :class:`lightning.pytorch.Trainer` (``callbacks`` are
            added to omnivae's own).

        Examples
        --------
        >>> import omnivae
        >>> model = omnivae.Model(omnivae.datasets.simulate(100, modalities=("rna",)), n_latent=3)
        >>> model.train(max_epochs=2, batch_size=64, progress_bar=False)
        >>> len(model.history)
        2
        """
        config = TrainConfig.from_options(config, **options)
        if max_epochs is not None:
            config = replace(config, max_epochs=max_epochs)
        self.num_threads = config.num_threads
        # resolved here so that its warning (bf16 on a CPU) points at the caller of train()
        config = replace(config, precision=training_precision(config.precision,
                                                              config.accelerator))
        backed = self.backed
        result = fitting.fit(
            self.module, self.cells, config, seed=self.config.seed,
            probe_columns=probe_columns(self.setup),
            block_size=None if backed is None else backed.block_size,
            buffer_blocks=None if backed is None else backed.buffer_blocks)
        self.is_global_zero = result.is_global_zero
        self.history = (pd.DataFrame(result.history).set_index("epoch") if result.history
                        else pd.DataFrame())
        self.is_trained = True
        if self.fits_shrinkage:
            with pinned_threads(self.num_threads):  # weights from the cells training held out
                self.shrinkage = fit_every_target(
                    self.module, self.cells, result.train_cells, result.validation_cells,
                    seed=self.config.seed,
                    device=next(self.module.parameters()).device)
        if result.interruption is not None:
            warnings.warn(result.interruption, RuntimeWarning, stacklevel=2)
