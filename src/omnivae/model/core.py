"""What every :class:`omnivae.Model` does with its cells: set up the data and the network,
embed, predict, diagnose, sample and save. :mod:`omnivae.model.model` adds loading and
reference mapping on top."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import torch

from omnivae.data.backed import BackedCellData, BackedOptions, resolve_backed
from omnivae.data.cells import CellData
from omnivae.data.inputs import InputOptions
from omnivae.data.setup import SetupInfo
from omnivae.model.choices import module_config, resolve_choices
from omnivae.model.inference import latent_mean, predicted_modality
from omnivae.model.persistence import SavedModel, save_model
from omnivae.model.prediction.shrinkage import Shrinkage
from omnivae.model.setup import (
    model_input,
    setup_model_data,
    setup_new_cells,
)
from omnivae.model.training import train_module
from omnivae.module.arguments import check_int, check_number
from omnivae.module.vae import ModuleConfig, MultimodalVAE
from omnivae.train.config import TrainConfig
from omnivae.train.interrupts import TrainingInterrupted, TrainingTerminated
from omnivae.train.plan import training_precision


class ModelCore:
    """The parts of :class:`omnivae.Model` that need no reference mapping (see its parameters)."""

    def __init__(
        self,
        mdata: md.MuData | ad.AnnData | str | Path,
        *,
        protein_key: str | None = None,
        protein_names: Sequence[str] | None = None,
        feature_types: bool | Mapping[str, str] | None = None,
        modalities: Sequence[str] | None = None,
        likelihoods: Mapping[str, str] | None = None,
        layer: str | Mapping[str, str | None] | None = None,
        batch_key: str | None = None,
        model: str | None = None,
        fusion: str | None = None,
        model_options: Mapping[str, Any] | None = None,
        mixture_sampling: str | None = None,
        n_latent: int = 20,
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout: float = 0.1,
        batch_penalty: str | None = "auto",
        penalty_weight: float | None = None,
        penalty_keys: Sequence[str] | None = None,
        penalty_label_key: str | None = None,
        prior: str = "normal",
        prior_components: int = 0,
        confidence_penalty: float = 0.0,
        seed: int = 0,
        backed: bool | BackedOptions | None = None,
        _setup: SetupInfo | None = None,
        _config: ModuleConfig | None = None,
        _data: CellData | None = None,
    ) -> None:
        self.inputs = InputOptions(protein_key, protein_names, feature_types)
        self.adata = mdata if isinstance(mdata, ad.AnnData) else None  # outputs go back to it
        data, layer = model_input(mdata, self.inputs, layer=layer, backed=backed)
        mdata, self.backed = resolve_backed(data, backed)
        self.mdata = mdata
        self.cells: CellData | BackedCellData
        choices = resolve_choices(
            mdata, batch_key=batch_key, model=model, fusion=fusion, model_options=model_options,
            mixture_sampling=mixture_sampling, n_latent=n_latent, n_hidden=n_hidden,
            n_layers=n_layers, dropout=dropout, batch_penalty=batch_penalty,
            penalty_weight=penalty_weight, penalty_keys=penalty_keys,
            penalty_label_key=penalty_label_key, prior=prior, prior_components=prior_components,
            confidence_penalty=confidence_penalty, seed=seed)
        if _data is not None and _setup is not None:  # prepared elsewhere (reference mapping)
            self.cells, self.setup = _data, _setup
        else:
            self.cells, self.setup = setup_model_data(
                mdata, self.backed, modalities=modalities, likelihoods=likelihoods,
                layer=layer, batch_key=batch_key, penalty_keys=choices.penalty_keys,
                penalty_label_key=penalty_label_key, reference=_setup,
            )
        if _setup is not None:
            self.setup = _setup
        self.config = _config or module_config(self.setup, choices)
        torch.manual_seed(self.config.seed)
        background = {
            m: torch.tensor(v) for m, v in self.setup.background_init.items()
        }
        self.module = MultimodalVAE(self.config, background)
        if _config is None:  # e.g. JMVAE refuses cells lacking a modality, before training
            self.module.objective.check_training_mask(torch.from_numpy(self.cells.mask))
        self.history = pd.DataFrame()
        self.is_trained = False
        self.interruption: str | None = None  # what stopped the last train(), if anything
        self.is_global_zero = True  # False in the other processes of a distributed train()
        self.num_threads: int | None = None  # torch CPU threads of train() and embedding
        self.calibrations: dict[str, Any] = {}  # target -> prediction.calibration.Calibration
        # target -> prediction.shrinkage.Shrinkage, fitted on the validation cells by train()
        self.shrinkage: dict[str, Shrinkage] = {}
        # (label_key, n_components) -> synthetic.LatentDensity, fitted by the first sample()
        self.latent_densities: dict[tuple[Any, ...], Any] = {}

    def __repr__(self) -> str:
        mods = ", ".join(f"{m}: {self.setup.likelihoods[m]}" for m in self.setup.modalities)
        return (f"omnivae.Model({self.cells.n_cells} cells; {mods}; model={self.config.model}, "
                f"fusion={self.config.fusion}, "
                f"n_latent={self.config.n_latent}, batches={len(self.setup.batch_categories)}, "
                f"trained={self.is_trained})")

    @property
    def var_names(self) -> dict[str, list[str]]:
        """Feature names per modality, as seen in training."""
        return self.setup.var_names

    # the AnnData a model was built from and how it was read (class defaults: models made
    # without __init__, e.g. omnivae.model.model.load_reference)
    adata: ad.AnnData | None = None
    inputs: InputOptions = InputOptions()

    # whether train() fits the cross-modal shrinkage on its validation cells (a query model
    # keeps its reference's instead: omnivae.model.model.QueryModel)
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
            ``batch_size``, ``lr``, ``weight_decay``, ``kl_warmup_epochs``,
            ``validation_fraction``, ``early_stopping``, ``patience``, ``accelerator``,
            ``devices``, ``num_nodes``, ``strategy`` (``"ddp"`` for several processes),
            ``progress_bar``, ``verbose`` (Lightning's info lines and model summary; off by
            default), ``batch_probe_every``, ``gradient_clip_val``, ``checkpoint_dir``,
            ``resume``, ``num_threads``, ``logger``, ``log_dir``, ``precision`` (``"32"`` or
            ``"bf16"``), ``compile``; their defaults are there. Any other keyword goes to
            :class:`lightning.pytorch.Trainer` and overrides omnivae's own Trainer defaults
            (e.g. ``enable_progress_bar=False``, ``num_sanity_val_steps=2``,
            ``enable_model_summary=True``, ``log_every_n_steps=10``); ``callbacks`` are
            added to omnivae's own.

        Raises
        ------
        omnivae.train.interrupts.TrainingInterrupted
            Ctrl-C stopped training (a :class:`KeyboardInterrupt`: an uncaught one ends a
            script with status 130). The model stays usable: it keeps the best weights so
            far, its history and ``interruption`` (the message) are set.
        omnivae.train.interrupts.TrainingTerminated
            SIGTERM stopped training (a :class:`SystemExit` with status 143), the model as
            after Ctrl-C. Resume from a checkpoint with ``checkpoint_dir=..., resume=True``.
        ValueError
            An option out of range (the message names it and the range).

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
        outcome = train_module(self.module, self.cells, self.setup, config,
                               backed=self.backed, fit_shrinkage=self.fits_shrinkage)
        self.is_global_zero = outcome.is_global_zero
        self.history = outcome.history
        self.is_trained = True
        if outcome.shrinkage is not None:
            self.shrinkage = outcome.shrinkage
        self.interruption = outcome.interruption
        if outcome.stopped_by == "SIGTERM":
            raise TrainingTerminated(f"{outcome.interruption} Continue with train(..., "
                                     "checkpoint_dir=DIR, resume=True) when it was given.")
        if outcome.stopped_by is not None:
            raise TrainingInterrupted(outcome.interruption)

    # inference ---------------------------------------------------------------------------
    def cell_data(self, mdata: md.MuData | ad.AnnData | None = None,
                  ) -> CellData | BackedCellData:
        """The arrays the network reads for ``mdata`` (default: the training cells, ``cells``):
        new cells are checked and coded on the training setup (an AnnData is read as the
        training AnnData was: :func:`~omnivae.model.setup.setup_new_cells`)."""
        if mdata is None or mdata is self.mdata or mdata is self.adata:
            return self.cells
        return setup_new_cells(mdata, self.setup, self.backed, self.inputs)

    @property
    def device(self) -> torch.device:
        """Where the network's weights are (``cpu`` or a GPU after ``train(accelerator=...)``)."""
        return next(self.module.parameters()).device

    @torch.no_grad()
    def get_latent_representation(
        self, mdata: md.MuData | ad.AnnData | None = None, *, batch_size: int = 2048
    ) -> np.ndarray:
        """Posterior mean of the joint latent for every cell, ``(n_cells, n_latent)``.

        Parameters
        ----------
        mdata
            Cells to embed (default: the training data). New cells must have the training
            features of the modalities they have; like training cells they may lack any
            modality (absent from ``mdata.mod[m]``, or ``m`` missing altogether: RNA-only
            cells of a CITE-seq model are embedded from their RNA). Their batches are coded
            as in training: one batch for a model without ``batch_key``, else their labels,
            which must be known ones (cells of a new batch, or with a smaller panel of a
            modality, need reference mapping: :meth:`load_query`). Modalities the model was
            not trained on are ignored with a warning. An AnnData is read as the training
            AnnData was (``protein_key`` etc.; cells without ``obsm[protein_key]`` lack protein).
        batch_size
            Cells per forward pass.
        """
        check_int("batch_size", batch_size)
        return latent_mean(self.module, self.cell_data(mdata), batch_size=batch_size,
                           num_threads=self.num_threads)

    @torch.no_grad()
    def predict(
        self, target: str, *, mdata: md.MuData | ad.AnnData | None = None, n_samples: int = 0,
        batch_size: int = 1024, seed: int = 0, interval: float | None = None,
        calibrate_on: ad.AnnData | None = None, shrink: bool = True,
    ) -> ad.AnnData:
        """Predict modality ``target`` for every cell from its other modalities.

        Parameters
        ----------
        target
            A modality the model was trained on.
        mdata
            Cells to predict for (default: the training data); new cells as in
            :meth:`get_latent_representation`, e.g. RNA-only cells get ``target`` from their
            RNA.
        n_samples
            0 decodes the posterior mean; ``n > 0`` averages ``n`` posterior draws and adds
            their standard deviation as ``layers["std"]`` (the model's uncertainty).
        batch_size, seed
            Cells per forward pass; seed of the posterior draws.
        interval
            Nominal coverage (e.g. 0.9) of per-cell, per-feature count intervals, added as
            ``layers["lower"]`` and ``layers["upper"]``: posterior predictive quantiles, made
            conformal when the model is calibrated for ``target`` (see :meth:`calibrate` and
            :mod:`omnivae.model.prediction.calibration` for the exact procedure).
        calibrate_on
            True counts of ``target`` for held-out cells whose ``target`` was withheld from
            training: calls :meth:`calibrate` first.
        shrink
            Mix each cross-modal prediction with the training cells' mean profile by the
            weight that training fitted on its validation cells (``self.shrinkage[target]``,
            see :mod:`omnivae.model.prediction.shrinkage`; weight 1, no change, when the prediction beat the
            mean there; a query model keeps its reference's). ``False`` returns the decoder's
            profile alone.

        Returns
        -------
        AnnData over all cells and ``target``'s features: ``X`` holds normalised expression
        (each row sums to one), ``obs["observed"]`` says whether the cell had ``target``.
        Cells that have ``target`` are predicted from their other modalities when they have any.
        """
        if target not in self.setup.modalities:
            raise KeyError(
                f"Unknown target {target!r}; the model was trained on modalities "
                f"{list(self.setup.modalities)}."
            )
        check_int("n_samples", n_samples, 0)
        check_int("batch_size", batch_size)
        check_number("interval", interval, low=0, high=1, low_open=True, high_open=True,
                     none="for no intervals")
        source = mdata if mdata is not None else self.mdata
        result = predicted_modality(
            self.module, self.cell_data(mdata), self.setup, target, obs_names=source.obs_names,
            n_samples=n_samples, batch_size=batch_size, seed=seed,
            shrinkage=self.shrinkage.get(target) if shrink else None)
        if calibrate_on is not None:
            self.calibrate(target, calibrate_on, mdata=mdata, seed=seed)
        if interval is not None:
            from omnivae.model.prediction.intervals import prediction_intervals

            lower, upper, info = prediction_intervals(
                self.module, self.setup, self.cells, target, interval,
                data=self.cell_data(mdata), calibration=self.calibrations.get(target), seed=seed)
            result.layers["lower"], result.layers["upper"] = lower, upper
            result.uns["omnivae"]["interval"] = info
        return result

    def calibrate(self, target: str, truth: ad.AnnData, *,
                  mdata: md.MuData | ad.AnnData | None = None, n_samples: int = 200,
                  per_feature: bool = True, seed: int = 0) -> Any:
        """Calibrate ``target``'s prediction intervals conformally on held-out cells.

        ``truth`` holds the true ``target`` counts of cells whose ``target`` was withheld from
        training (e.g. part of what :func:`omnivae.data.splits.withhold_modality` returns). See
        :func:`omnivae.model.prediction.intervals.calibrate`; the result is kept in ``self.calibrations``
        (not saved with the model: calibrate again after loading).

        Examples
        --------
        >>> import omnivae
        >>> from omnivae.data.splits import withhold_modality
        >>> sim = omnivae.datasets.simulate(100, modalities=("rna", "adt"), missing_fraction=0)
        >>> masked, truth = withhold_modality(sim, "adt", fraction=0.5)
        >>> model = omnivae.Model(masked, n_latent=3)
        >>> pred = model.predict("adt", interval=0.9, calibrate_on=truth[:25])
        >>> sorted(k for k in pred.layers if k), pred.uns["omnivae"]["interval"]["calibrated"]
        (['lower', 'upper'], True)
        """
        from omnivae.model.prediction.intervals import calibrate

        check_int("n_samples", n_samples)
        source = mdata if mdata is not None else self.mdata
        result = calibrate(self.module, self.setup, self.cells, target, truth,
                           obs_names=source.obs_names,
                           data=None if mdata is None else self.cell_data(mdata),
                           n_samples=n_samples, per_feature=per_feature, seed=seed)
        self.calibrations[target] = result
        return result

    def diagnostics(self, mdata: md.MuData | ad.AnnData | None = None, *,
                    warn: bool = True) -> pd.DataFrame:
        """Posterior-collapse diagnostics per modality (KL, active units, precision share,
        decoder use of z), warning on collapse; see :func:`omnivae.model.diagnostics.diagnostics`.

        Examples
        --------
        >>> import omnivae
        >>> model = omnivae.Model(omnivae.datasets.simulate(80, modalities=("rna", "adt")))
        >>> model.diagnostics(warn=False).columns.tolist()[:3]
        ['kl', 'active_units', 'precision_share']
        """
        from omnivae.model.diagnostics import diagnostics

        return diagnostics(self.module, self.cell_data(mdata), warn=warn)

    def sample(self, n: int, *, cell_type: str | Sequence[str] | None = None,
               batch: str | None = None, label_key: str = "cell_type",
               seed: int = 0) -> md.MuData:
        """``n`` synthetic cells with counts in every modality, optionally of chosen cell
        types (``label_key`` column) and batch; see :func:`omnivae.model.synthetic.sample_cells`.

        Examples
        --------
        >>> import omnivae
        >>> model = omnivae.Model(omnivae.datasets.simulate(80, modalities=("rna", "adt")))
        >>> model.sample(10, cell_type="type-0").obs["cell_type"].unique().tolist()
        ['type-0']
        """
        from omnivae.model.synthetic import (
            DEFAULT_COMPONENTS,
            check_cell_count,
            fit_latent_density,
            group_labels,
            sample_cells,
        )

        check_cell_count(n)
        key = (label_key, DEFAULT_COMPONENTS)  # fitted once per label column, then cached
        if key not in self.latent_densities:
            labels = group_labels(self.mdata, label_key, self.cells.n_cells)
            self.latent_densities[key] = fit_latent_density(
                self.module, self.cells, labels, label_key=label_key, seed=seed)
        return sample_cells(self.module, self.cells, self.setup, n, self.latent_densities[key],
                            cell_type=cell_type, batch=batch, seed=seed)

    # persistence -------------------------------------------------------------------------
    def save(self, path: str | Path, *, overwrite: bool = False) -> None:
        """Save to a folder (atomically): ``omnivae.json`` (config, no code) + ``weights.pt``.

        Examples
        --------
        >>> import omnivae, tempfile, os
        >>> sim = omnivae.datasets.simulate(100, modalities=("rna",), seed=0)
        >>> model = omnivae.Model(sim, n_latent=3)
        >>> path = os.path.join(tempfile.mkdtemp(), "model")
        >>> model.save(path)
        >>> omnivae.Model.load(path, sim).config.n_latent
        3
        """
        save_model(SavedModel(self.setup, self.config, self.module.state_dict(),
                              self.is_trained, self.history, self.shrinkage),
                   path, overwrite=overwrite)
