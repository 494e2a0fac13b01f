"""The user-facing model: MuData (or AnnData) in, embedding and predictions out, save/load."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import mudata as md
import numpy as np
import torch

from omnivae.data.cells import CellData
from omnivae.data.files import check_state_matches
from omnivae.data.inputs import InputOptions, as_mudata
from omnivae.data.setup import SetupInfo
from omnivae.model.choices import DEFAULT_BATCH_PENALTY as DEFAULT_BATCH_PENALTY  # re-exported
from omnivae.model.choices import DEFAULT_PENALTY_WEIGHTS as DEFAULT_PENALTY_WEIGHTS  # re-exported
from omnivae.model.core import ModelCore
from omnivae.model.mapping.data import setup_query
from omnivae.model.mapping.fill import fill_unmeasured
from omnivae.model.mapping.query import (
    check_query_batches,
    is_query_config,
    query_config,
    reference_state,
)
from omnivae.model.mapping.surgery import count_trainable, load_reference_weights
from omnivae.model.persistence import read_model
from omnivae.module.vae import ModuleConfig, MultimodalVAE
from omnivae.train.interrupts import TrainingInterrupted, TrainingTerminated


class Model(ModelCore):
    """A multimodal VAE trained on a MuData: one joint latent space from all its modalities.

    Parameters
    ----------
    mdata
        Raw counts per modality (``X`` or ``layer``). Cells may lack any modality: a cell
        absent from ``mdata.mod[m]`` lacks ``m``. A path to an ``.h5mu`` file (or a MuData opened with
        ``backed=True``) keeps the counts on disk: see ``backed``. An AnnData (or an
        ``.h5ad`` or 10x ``.h5`` path, read into memory) is converted by
        :func:`omnivae.data.inputs.as_mudata`: ``X`` is RNA, or split into ``rna``/``adt``/
        ``atac`` by ``var["feature_types"]``, plus proteins from ``obsm[protein_key]``;
        every cell then has every modality. With RNA alone the model is a one-modality VAE
        with the same methods.
    protein_key, protein_names, feature_types
        How an AnnData is read (see :func:`omnivae.data.inputs.as_mudata`): the ``obsm`` key
        of protein counts (e.g. ``"protein_expression"``, totalVI's convention; modality
        ``"adt"``), their names for an array, and how ``X`` is split by feature type. Kept
        in ``inputs`` and applied to AnnData of new cells. Not for a MuData.
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
        :data:`~omnivae.module.models.elbo.DEFAULT_MIXTURE_SAMPLING` (``"stratified"``). An
        option of those objectives, kept in ``config.model_options``; other models refuse
        ``"one"``. Models saved before the option existed load with ``"stratified"``, what
        they were trained with.
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
    adata
        The AnnData the model was built from (``None`` for a MuData): :mod:`omnivae.tl`
        functions write their outputs into it (``obsm``).
    inputs
        The :class:`~omnivae.data.inputs.InputOptions` (``protein_key`` ...) it was read with.
    cells
        The training cells' arrays (:class:`~omnivae.data.cells.CellData`, or its backed
        counterpart): counts, masks of which cells have which modality, batch codes.
    backed
        The :class:`~omnivae.data.backed.BackedOptions` of counts kept on disk, else ``None``.
    num_threads
        CPU threads of training and inference (``None``: omnivae's default).

    Examples
    --------
    >>> import omnivae
    >>> sim = omnivae.datasets.simulate(200, modalities=("rna", "adt"), seed=0)
    >>> model = omnivae.Model(sim, batch_key="batch", n_latent=5)
    >>> model.train(max_epochs=2, progress_bar=False)
    >>> model.get_latent_representation().shape
    (200, 5)

    From an AnnData with RNA counts in ``X`` and protein counts in ``obsm``:

    >>> cite = omnivae.datasets.simulate(100, modalities=("rna", "adt"), missing_fraction=0)
    >>> adata = cite["rna"].copy()
    >>> adata.obsm["protein_expression"] = cite["adt"].to_df().loc[adata.obs_names]
    >>> omnivae.Model(adata, protein_key="protein_expression").setup.modalities
    ('rna', 'adt')
    """

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
        return map_query(self, query_mdata, max_epochs=max_epochs, **train_kwargs)

    @classmethod
    def load(cls, path: str | Path, mdata: md.MuData | ad.AnnData, *,
             protein_key: str | None = None, protein_names: Sequence[str] | None = None,
             feature_types: bool | Mapping[str, str] | None = None) -> Model:
        """Load a saved model and attach it to ``mdata`` (features and batches are checked).

        A saved query model (reference mapping) loads onto its query cells, which may measure
        fewer features than the reference (its unmeasured ones are filled again). An AnnData
        is read with ``protein_key``, ``protein_names`` and ``feature_types`` as in
        :class:`Model`.
        """
        source, inputs = mdata, InputOptions(protein_key, protein_names, feature_types)
        mdata = as_mudata(mdata, protein_key=protein_key, protein_names=protein_names,
                          feature_types=feature_types)
        saved = read_model(path)
        if is_query_config(saved.config):  # a reference-mapped query model
            model: Model = _restore_query_model(mdata, saved.setup, saved.config, saved.state,
                                                Path(path))
        else:
            model = cls(mdata, _setup=saved.setup, _config=saved.config)
            check_state_matches(model.module, saved.state, Path(path))
            model.module.load_state_dict(saved.state)
        model.module.eval()
        model.is_trained = saved.is_trained
        model.shrinkage = saved.shrinkage
        model.history = saved.history
        model.adata = source if isinstance(source, ad.AnnData) else None
        model.inputs = inputs
        return model


class QueryModel(Model):
    """A reference model extended to query cells; train it with :meth:`train`.

    Build it with :func:`load_query` (or :meth:`omnivae.Model.load_query`). It behaves like a
    :class:`omnivae.Model` on the query cells: ``get_latent_representation()``,
    ``predict(target)``, :mod:`omnivae.tl` functions. Its ``shrinkage`` is the reference's for
    every target (weight and training-cell profile; :meth:`train` does not re-fit it, see the
    module documentation), so ``predict(target)`` shrinks exactly as the reference's does; it is
    saved with the query model.

    Attributes
    ----------
    frozen
        Per parameter, a boolean mask of the reference entries (never trained).
    measured
        Per modality the query has, which reference features it measured.
    n_reference_batches
        Number of batches of the reference; batch codes from here on are the query's new ones.
    """

    frozen: dict[str, torch.Tensor]
    measured: dict[str, np.ndarray]
    n_reference_batches: int
    fill_steps: int
    fits_shrinkage = False  # the reference's shrinkage is kept (module documentation)

    @property
    def n_trainable(self) -> int:
        """How many parameter entries the query training fits."""
        return count_trainable(self.frozen)

    def train(self, max_epochs: int | None = None, **kwargs: Any) -> None:  # type: ignore[override]
        """Fit the new batches' parameters on the query cells (reference weights frozen).

        Parameters
        ----------
        max_epochs
            Default 100. With no new batch there is nothing to fit and nothing is trained.
        **kwargs
            As in :meth:`omnivae.Model.train`; ``weight_decay`` is forced to 0 (decay would
            move frozen entries) and ``kl_warmup_epochs`` defaults to 0 (the model is trained).
            The cross-modal ``shrinkage`` stays the reference's: a query model does not fit
            it on its own validation cells (``fits_shrinkage`` is False).
        """
        if kwargs.get("weight_decay"):
            raise ValueError("A query model trains with weight_decay=0 (decay would change the "
                             "frozen reference weights); leave weight_decay out.")
        kwargs["weight_decay"] = 0.0
        kwargs.setdefault("kl_warmup_epochs", 0.0)
        kwargs.setdefault("batch_probe_every", 0)
        interrupted = None
        if self.n_trainable > 0:
            self.module.train()
            try:
                super().train(100 if max_epochs is None else max_epochs, **kwargs)
            except TrainingInterrupted as err:  # Ctrl-C: finish a usable model, then say so
                interrupted = err
        self.module.eval()
        assert isinstance(self.cells, CellData)  # query models are built in memory
        self.cells = fill_unmeasured(self.module, self.cells, self.measured, self.fill_steps)
        self.is_trained = True
        if interrupted is not None:
            raise interrupted


def load_query(
    reference: Model | str | Path,
    query_mdata: md.MuData,
    *,
    fill_steps: int = 100,
) -> QueryModel:
    """Build a query model from a trained reference (nothing is trained yet).

    Parameters
    ----------
    reference
        A trained :class:`omnivae.Model`, or the folder it was saved to.
    query_mdata
        The query cells: raw counts of any subset of the reference's modalities and features;
        the reference's batch column (batches it never saw get new parameters).
    fill_steps
        Optimisation steps of the latent that fills the features the query did not measure
        (:mod:`omnivae.model.mapping.fill`); 0 zero-fills them.

    Returns
    -------
    The :class:`QueryModel`, with the reference's cross-modal ``shrinkage`` for every target
    (also when ``reference`` is a folder).

    Examples
    --------
    >>> import omnivae
    >>> ref = omnivae.datasets.simulate(200, modalities=("rna", "adt"), n_batches=2, seed=0)
    >>> model = omnivae.Model(ref, batch_key="batch", n_latent=4)
    >>> model.train(max_epochs=3, progress_bar=False)
    >>> query = omnivae.datasets.simulate(60, modalities=("rna",), n_batches=3, seed=1)
    >>> query = query[query.obs["batch"] == "batch-2"].copy()   # a batch the reference lacks
    >>> q = omnivae.Model.load_query(model, query)
    >>> q.train(max_epochs=2, progress_bar=False)
    >>> q.get_latent_representation().shape, q.predict("adt").n_obs == query.n_obs
    ((20, 4), True)
    """
    if not isinstance(reference, Model):
        reference = load_reference(reference)
    if not reference.is_trained:
        warnings.warn(
            "The reference model was never trained (is_trained is False): the query is mapped "
            "onto random weights, so its embedding and predictions mean nothing. Train the "
            "reference first (reference.train()), or load the trained one.", UserWarning,
            stacklevel=2)
    data, setup, measured = setup_query(query_mdata, reference.setup)
    config = query_config(reference.config, setup, fill_steps)
    model = _query_model(query_mdata, setup, config, data, measured,
                         reference.module.state_dict())
    model.shrinkage = dict(reference.shrinkage)  # the reference decoder predicts
    return model


def _query_model(
    mdata: md.MuData, setup: SetupInfo, config: ModuleConfig, data: CellData,
    measured: dict[str, np.ndarray], reference_state: dict[str, torch.Tensor],
    fill: bool = True,
) -> QueryModel:
    """The query model of ``mdata`` with the reference weights copied in and frozen."""
    model = QueryModel(mdata, _setup=setup, _config=config, _data=data)
    n_ref = int(config.n_reference_batches or 0)
    model.frozen = load_reference_weights(model.module, reference_state, n_ref)
    model.module.eval()
    model.measured = measured
    model.n_reference_batches = n_ref
    model.fill_steps = config.fill_steps
    if fill:
        model.cells = fill_unmeasured(model.module, data, measured, model.fill_steps)
    return model


def _restore_query_model(
    mdata: md.MuData, setup: SetupInfo, config: ModuleConfig, state: dict[str, torch.Tensor],
    path: Path,
) -> QueryModel:
    """A saved query model on its query cells (any subset of the reference's features); used
    by :meth:`Model.load`. The frozen entries are those of the reference's shapes."""
    data, query_setup, measured = setup_query(mdata, setup)
    check_query_batches(setup, query_setup, path)
    model = _query_model(mdata, setup, config, data, measured, reference_state(config, state),
                         fill=False)
    check_state_matches(model.module, state, path)
    model.module.load_state_dict(state)
    model.module.eval()
    model.cells = fill_unmeasured(model.module, data, measured, model.fill_steps)
    return model


def map_query(
    reference: Model | str | Path, query_mdata: md.MuData, *, max_epochs: int | None = None,
    **train_kwargs: Any,
) -> QueryModel:
    """:func:`load_query` then :meth:`QueryModel.train`: the mapped query model.

    Its cross-modal ``shrinkage`` is the reference's for every target, weight and profile, also
    where the query has the target (re-fitting on the query's few validation cells did worse on
    balance; see the module documentation).

    Examples
    --------
    >>> import omnivae
    >>> ref = omnivae.datasets.simulate(150, modalities=("rna",), n_batches=2, seed=0)
    >>> model = omnivae.Model(ref, batch_key="batch", n_latent=3)
    >>> model.train(max_epochs=2, progress_bar=False)
    >>> query = omnivae.datasets.simulate(40, modalities=("rna",), n_batches=1, seed=1)
    >>> query.obs["batch"] = "new_lab"
    >>> q = model.map_query(query, max_epochs=2, progress_bar=False)
    >>> q.setup.batch_categories, q.n_trainable > 0
    (('batch-0', 'batch-1', 'new_lab'), True)
    """
    model = load_query(reference, query_mdata)
    try:
        model.train(max_epochs, **train_kwargs)
    except (TrainingInterrupted, TrainingTerminated) as stopped:
        stopped.model = model  # what was mapped so far
        raise
    return model


def load_reference(path: str | Path) -> Model:
    """A saved reference model's setup, config, weights and shrinkage, without its training
    data: what :func:`load_query` and ``omnivae map`` need from a model directory. The model
    has no cells (``cells`` unset), so it can be mapped onto a query but not trained or
    embedded on its own.

    Examples
    --------
    >>> import tempfile, omnivae
    >>> model = omnivae.Model(omnivae.datasets.simulate(60, modalities=("rna",), seed=0),
    ...                       n_latent=3)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     model.save(f"{tmp}/ref")
    ...     reference = load_reference(f"{tmp}/ref")
    >>> reference.config.n_latent, reference.setup.modalities == model.setup.modalities
    (3, True)
    """
    saved = read_model(Path(path))
    model = Model.__new__(Model)
    model.setup, model.config = saved.setup, saved.config
    model.module = MultimodalVAE(saved.config)
    check_state_matches(model.module, saved.state, Path(path))  # the checks Model.load runs
    model.module.load_state_dict(saved.state)
    model.shrinkage = saved.shrinkage
    model.is_trained, model.history = saved.is_trained, saved.history
    return model
