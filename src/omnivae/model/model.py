"""The user-facing model: MuData in, embedding and predictions out, save/load."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import torch

from omnivae.data.backed import BackedCellData, BackedOptions, resolve_backed
from omnivae.data.cells import CellData
from omnivae.data.setup import SetupInfo
from omnivae.model.defaults import DEFAULT_BATCH_PENALTY as DEFAULT_BATCH_PENALTY  # re-exported
from omnivae.model.defaults import DEFAULT_PENALTY_WEIGHTS as DEFAULT_PENALTY_WEIGHTS  # re-exported
from omnivae.model.defaults import resolve_batch_penalty
from omnivae.model.inference import latent_mean, predicted_modality
from omnivae.model.persistence import load_model, save_model
from omnivae.model.prediction.shrinkage import Shrinkage
from omnivae.model.setup import (
    build_module_config,
    check_penalty_keys,
    setup_model_data,
    setup_new_cells,
)
from omnivae.model.training import TrainingMixin
from omnivae.module.models import resolve_model
from omnivae.module.vae import ModuleConfig, MultimodalVAE

if TYPE_CHECKING:
    from omnivae.model.mapping.query import QueryModel


class Model(TrainingMixin):
    """A multimodal VAE trained on a MuData: one joint latent space from all its modalities.

    Parameters
    ----------
    mdata
        Raw counts per modality (``X`` or ``layer``). Cells may lack any modality: a cell
        absent from ``mdata.mod[m]`` lacks ``m``. A path to an ``.h5mu`` file (or a MuData opened with
        ``backed=True``) keeps the counts on disk: see ``backed``.
    modalities
        Modalities to use (default: all).
    likelihoods
        Per-modality likelihood, e.g. ``{"adt": "nb_mixture"}``. Defaults by kind: ``bernoulli``
        for ATAC, ``nb`` for RNA, protein and any other counts.
    layer
        Layer holding the counts (one name, or a mapping per modality); ``None`` reads ``X``.
    batch_key
        Batch column in ``mdata.obs`` or a modality's ``obs``; decoders are conditioned on it.
    model
        Which multimodal VAE to train (see :mod:`omnivae.module.models` and ``docs/models.md``):
        ``"mvae"``, ``"mmvae"``, ``"mopoe"`` (default), ``"mvtcae"``, ``"mmvae+"``, ``"jmvae"``,
        ``"early"`` (one VAE on the concatenated modalities) or ``"elbo"`` (the generic ELBO of
        any ``fusion``).
    fusion
        ``"poe"`` (product of experts), ``"moe"`` (mixture) or ``"mopoe"`` (mixture of
        products). Alone it selects the generic ELBO of that fusion (``"mopoe"``: MoPoE); with
        ``model`` it must agree with the model's own aggregation (a ValueError otherwise).
    model_options
        Options of the chosen model, e.g. ``{"n_samples": 16}`` for MMVAE or
        ``{"n_private": 8}`` for MMVAE+ (each model's options dataclass lists them).
    mixture_sampling
        How training estimates a mixture objective's sum over components (``mopoe`` and
        ``elbo``; see :mod:`omnivae.module.models.elbo`): ``"stratified"`` decodes every component of
        every cell (``2^M - 1`` decodings per cell for MoPoE with ``M`` modalities),
        ``"one"`` draws one component per cell from its mixture weights (an unbiased
        estimate of the same objective at one decoding per cell, with more variance).
        Validation losses always use the stratified estimator. ``None`` (default):
        :data:`omnivae.module.DEFAULT_MIXTURE_SAMPLING` (``"stratified"``) where the model
        allows a choice, else ``"stratified"``; models saved before the option existed load
        with ``"stratified"``, what they were trained with.
    n_latent, n_hidden, n_layers, dropout
        Architecture of every encoder and decoder.
    batch_penalty
        Penalise the mutual information between the latent and the batch: ``"hsic"``,
        ``"mmd"``, ``"adversarial"`` or ``"pairwise_kl"`` (see :mod:`omnivae.module.penalties`).
        ``"auto"`` (default): :data:`DEFAULT_BATCH_PENALTY` (MMD) when ``batch_key`` has two
        or more batches (or ``penalty_keys`` are given), none otherwise; ``None`` or ``"none"``
        relies on the batch-conditioned decoders alone.
    penalty_weight
        Weight of the penalty (warmed up with the KL weight); default per estimator
        (:data:`DEFAULT_PENALTY_WEIGHTS`), chosen from the batch-correction / bio-conservation
        curve in ``benchmarks/results/batch_penalty_curve.md``. Very strong batch effects may
        need ten times more (at some cost in bio conservation).
    penalty_keys
        Batch columns to make the latent independent of (default ``[batch_key]``); several
        columns (e.g. donor and site) are penalised together.
    penalty_label_key
        A label column (e.g. cell type): the penalty is computed within each label group, so
        biology that differs between batches is not removed.
    prior, prior_components
        Prior over the latent: ``"normal"`` (default), ``"mog"`` (learned mixture of
        Gaussians) or ``"vamp"`` (VampPrior over learned pseudo-cells); number of mixture
        components (0: 50). See :mod:`omnivae.module.priors`.
    confidence_penalty
        Weight of the evidence-aware over-confidence penalty (:mod:`omnivae.module.confidence`):
        posteriors from fewer modalities are pushed to be at least as wide as their distance
        to the posterior from all the cell's modalities. 0 (default) disables it.
    seed
        Seed for weights, the validation split and training.
    backed
        Keep the counts on disk (see ``docs/large_data.md``): ``mdata`` is a path to an
        ``.h5mu`` file or a MuData opened with ``backed=True``. ``None`` (default): backed when
        ``mdata`` is a path or a backed MuData; ``True`` with the default
        :class:`~omnivae.data.backed.BackedOptions` (chunk, block and buffer sizes), or pass
        options; ``False`` reads a path into memory. Validation and summaries stream over
        chunks; training reads shuffled blocks of consecutive cells.

    Attributes
    ----------
    history
        One row per training epoch: every logged loss term (``train_<term>``,
        ``validation_<term>``), ``kl_weight`` and the batch probe.
    is_trained
        Whether :meth:`train` has run (or a trained model was loaded).
    is_global_zero
        ``False`` only in processes 1..N-1 of a distributed :meth:`train` (``strategy="ddp"``):
        write files and reports ``if model.is_global_zero:``.

    Examples
    --------
    >>> import omnivae
    >>> sim = omnivae.datasets.simulate(200, modalities=("rna", "adt"), seed=0)
    >>> model = omnivae.Model(sim, batch_key="batch", n_latent=5)
    >>> model.train(max_epochs=2, progress_bar=False)
    >>> model.get_latent_representation().shape
    (200, 5)
    """

    def __init__(
        self,
        mdata: md.MuData | str | Path,
        *,
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
        mdata, self._backed = resolve_backed(mdata, backed)
        self.mdata = mdata
        self._data: CellData | BackedCellData
        batch_penalty = resolve_batch_penalty(batch_penalty, mdata, batch_key, penalty_keys)
        penalty_keys = check_penalty_keys(batch_penalty, penalty_keys, penalty_label_key,
                                          batch_key)
        if _data is not None and _setup is not None:  # prepared elsewhere (reference mapping)
            self._data, self.setup = _data, _setup
        else:
            self._data, self.setup = setup_model_data(
                mdata, self._backed, modalities=modalities, likelihoods=likelihoods,
                layer=layer, batch_key=batch_key, penalty_keys=penalty_keys,
                penalty_label_key=penalty_label_key, reference=_setup,
            )
        if _setup is not None:
            self.setup = _setup
        model_name, fusion = resolve_model(model, fusion)
        self.config = _config or build_module_config(
            self.setup, model_name=model_name, fusion=fusion, model_options=model_options,
            mixture_sampling=mixture_sampling, n_latent=n_latent, n_hidden=n_hidden,
            n_layers=n_layers, dropout=dropout, batch_penalty=batch_penalty,
            penalty_weight=penalty_weight, prior=prior, prior_components=prior_components,
            confidence_penalty=confidence_penalty, seed=seed,
        )
        torch.manual_seed(self.config.extra.get("seed", seed))
        background = {
            m: torch.tensor(v) for m, v in self.setup.extra.get("background_init", {}).items()
        }
        self.module = MultimodalVAE(self.config, background)
        if _config is None:  # e.g. JMVAE refuses cells lacking a modality, before training
            self.module.objective.check_training_mask(torch.from_numpy(self._data.mask))
        self.history = pd.DataFrame()
        self.is_trained = False
        self.is_global_zero = True  # False in the other processes of a distributed train()
        self._num_threads: int | None = None  # torch CPU threads of train() and embedding
        self.calibrations: dict[str, Any] = {}  # target -> omnivae.model.prediction.calibration.Calibration
        # target -> omnivae.model.prediction.shrinkage.Shrinkage, fitted on the validation cells by train()
        self.shrinkage: dict[str, Shrinkage] = {}

    def __repr__(self) -> str:
        mods = ", ".join(f"{m}: {self.setup.likelihoods[m]}" for m in self.setup.modalities)
        return (f"omnivae.Model({self._data.n_cells} cells; {mods}; model={self.config.model}, "
                f"fusion={self.config.fusion}, "
                f"n_latent={self.config.n_latent}, batches={len(self.setup.batch_categories)}, "
                f"trained={self.is_trained})")

    @property
    def var_names(self) -> dict[str, list[str]]:
        """Feature names per modality, as seen in training."""
        return self.setup.var_names

    # inference ---------------------------------------------------------------------------
    def _cell_data(self, mdata: md.MuData | None) -> Any:
        if mdata is None or mdata is self.mdata:
            return self._data
        return setup_new_cells(mdata, self.setup, self._backed)

    def _device(self) -> torch.device:
        return next(self.module.parameters()).device

    @torch.no_grad()
    def get_latent_representation(
        self, mdata: md.MuData | None = None, *, batch_size: int = 2048
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
            not trained on are ignored with a warning.
        batch_size
            Cells per forward pass.
        """
        return latent_mean(self.module, self._cell_data(mdata), batch_size=batch_size,
                           num_threads=self._num_threads)

    @torch.no_grad()
    def predict(
        self, target: str, *, mdata: md.MuData | None = None, n_samples: int = 0,
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
        source = mdata if mdata is not None else self.mdata
        result = predicted_modality(
            self.module, self._cell_data(mdata), self.setup, target, obs_names=source.obs_names,
            n_samples=n_samples, batch_size=batch_size, seed=seed,
            shrinkage=self.shrinkage.get(target) if shrink else None)
        if calibrate_on is not None:
            self.calibrate(target, calibrate_on, mdata=mdata, seed=seed)
        if interval is not None:
            from omnivae.model.prediction.intervals import prediction_intervals

            lower, upper, info = prediction_intervals(self, target, interval, mdata=mdata,
                                                      seed=seed)
            result.layers["lower"], result.layers["upper"] = lower, upper
            result.uns["omnivae"]["interval"] = info
        return result

    def calibrate(self, target: str, truth: ad.AnnData, *, mdata: md.MuData | None = None,
                  n_samples: int = 200, per_feature: bool = True, seed: int = 0) -> Any:
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
        >>> sorted(pred.layers), pred.uns["omnivae"]["interval"]["calibrated"]
        (['lower', 'upper'], True)
        """
        from omnivae.model.prediction.intervals import calibrate

        return calibrate(self, target, truth, mdata=mdata, n_samples=n_samples,
                         per_feature=per_feature, seed=seed)

    def diagnostics(self, mdata: md.MuData | None = None, *, warn: bool = True) -> pd.DataFrame:
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

        return diagnostics(self, mdata, warn=warn)

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
        from omnivae.model.synthetic import sample_cells

        return sample_cells(self, n, cell_type=cell_type, batch=batch, label_key=label_key,
                            seed=seed)

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
        save_model(self, path, overwrite=overwrite)

    @classmethod
    def load_query(cls, reference: Model | str | Path, query_mdata: md.MuData,
                   **kwargs: Any) -> QueryModel:
        """Reference mapping: a query model for new cells (see :func:`omnivae.model.mapping.query.load_query`).

        Examples
        --------
        >>> import omnivae
        >>> sim = omnivae.datasets.simulate(120, modalities=("rna",), n_batches=3, seed=0)
        >>> ref = sim[sim.obs["batch"] != "batch-2"].copy()
        >>> model = omnivae.Model(ref, batch_key="batch", n_latent=3)
        >>> q = omnivae.Model.load_query(model, sim[sim.obs["batch"] == "batch-2"].copy())
        >>> q.setup.batch_categories
        ('batch-0', 'batch-1', 'batch-2')
        """
        from omnivae.model.mapping.query import load_query

        return load_query(reference, query_mdata, **kwargs)

    def map_query(self, query_mdata: md.MuData, *, max_epochs: int | None = None,
                  **train_kwargs: Any) -> QueryModel:
        """Map query cells onto this trained model (see :func:`omnivae.model.mapping.query.map_query`).

        Examples
        --------
        >>> import omnivae
        >>> sim = omnivae.datasets.simulate(120, modalities=("rna",), n_batches=3, seed=0)
        >>> model = omnivae.Model(sim[sim.obs["batch"] != "batch-2"].copy(), batch_key="batch")
        >>> q = model.map_query(sim[sim.obs["batch"] == "batch-2"].copy(), max_epochs=1,
        ...                     progress_bar=False)
        >>> q.get_latent_representation().shape[1] == model.config.n_latent
        True
        """
        from omnivae.model.mapping.query import map_query

        return map_query(self, query_mdata, max_epochs=max_epochs, **train_kwargs)

    @classmethod
    def load(cls, path: str | Path, mdata: md.MuData) -> Model:
        """Load a saved model and attach it to ``mdata`` (features and batches are checked).

        A saved query model (reference mapping) loads onto its query cells, which may measure
        fewer features than the reference (its unmeasured ones are filled again).
        """
        return load_model(cls, path, mdata)
