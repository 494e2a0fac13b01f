"""What :meth:`omnivae.Model.train` runs: the Lightning run of :func:`omnivae.train.fitting.fit`
on the model's cells, then the history and the cross-modal shrinkage fitted on the cells
training held out (:func:`omnivae.model.prediction.shrinkage.fit_every_target`)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from omnivae.data.backed import BackedCellData, BackedOptions
from omnivae.data.cells import CellData
from omnivae.data.setup import SetupInfo
from omnivae.model.prediction.shrinkage import Shrinkage, fit_every_target
from omnivae.model.setup import probe_columns
from omnivae.module.vae import MultimodalVAE
from omnivae.train import fitting
from omnivae.train.config import TrainConfig
from omnivae.train.threads import pinned_threads


@dataclass(frozen=True)
class TrainingOutcome:
    """What :func:`train_module` returns.

    Attributes
    ----------
    history
        One row per epoch (index ``epoch``): every logged loss term.
    is_global_zero
        ``False`` only in processes 1..N-1 of a distributed run.
    shrinkage
        Per target, the cross-modal shrinkage fitted on the validation cells (``None`` when
        not asked for).
    interruption
        ``None``, or what Ctrl-C or SIGTERM interrupted and which weights the module kept.
    stopped_by
        ``None``, ``"SIGINT"`` or ``"SIGTERM"``.
    """

    history: pd.DataFrame
    is_global_zero: bool
    shrinkage: dict[str, Shrinkage] | None
    interruption: str | None
    stopped_by: str | None = None


def train_module(module: MultimodalVAE, cells: CellData | BackedCellData, setup: SetupInfo,
                 config: TrainConfig, *, backed: BackedOptions | None = None,
                 fit_shrinkage: bool = True) -> TrainingOutcome:
    """Train ``module`` on ``cells`` (set up as ``setup``) as ``config`` says; then, when
    ``fit_shrinkage``, fit each target's cross-modal shrinkage on the validation cells.

    Examples
    --------
    >>> import omnivae
    >>> from omnivae.train.config import TrainConfig
    >>> model = omnivae.Model(omnivae.datasets.simulate(100, modalities=("rna",)), n_latent=3)
    >>> outcome = train_module(model.module, model.cells, model.setup,
    ...                        TrainConfig(max_epochs=2, progress_bar=False))
    >>> len(outcome.history), outcome.interruption
    (2, None)
    """
    seed = module.config.seed
    result = fitting.fit(
        module, cells, config, seed=seed, probe_columns=probe_columns(setup),
        block_size=None if backed is None else backed.block_size,
        buffer_blocks=None if backed is None else backed.buffer_blocks)
    history = (pd.DataFrame(result.history).set_index("epoch") if result.history
               else pd.DataFrame())
    shrinkage = None
    if fit_shrinkage and result.stopped_by != "SIGTERM":  # a scheduler waits seconds, not more
        with pinned_threads(config.num_threads):  # weights from the cells training held out
            shrinkage = fit_every_target(
                module, cells, result.train_cells, result.validation_cells, seed=seed,
                device=next(module.parameters()).device)
    return TrainingOutcome(history, result.is_global_zero, shrinkage, result.interruption,
                           result.stopped_by)
