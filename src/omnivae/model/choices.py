"""The user's choices of a new :class:`omnivae.Model`, resolved and validated in one place.

:func:`resolve_choices` turns the Model's keyword arguments into a typed :class:`ModelChoices`
(defaults filled in: the batch penalty of ``"auto"``, its weight, the penalised columns, the
model and fusion pair, the objective's options; what they became is in the model's
``config``); :func:`module_config` turns those choices and
the data setup into the network's :class:`~omnivae.module.ModuleConfig`. The defaults were
chosen by benchmarks: ``benchmarks/results/batch_penalty_curve.md`` for the penalty and its
weights, ``benchmarks/results/mixture_sampling.md`` for the mixture estimator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import mudata as md

from omnivae.data.setup import SetupInfo, obs_column
from omnivae.module.arguments import check_int, check_number
from omnivae.module.models import OBJECTIVES, resolve_model
from omnivae.module.penalties import check_penalty_name
from omnivae.module.priors import check_prior_name
from omnivae.module.vae import ModalitySpec, ModuleConfig

# Default weights of the batch penalties, relative to an ELBO summed over features: the largest
# weights whose scib bio conservation stayed within 0.01 of no penalty on the curve of
# benchmarks/results/batch_penalty_curve.md.
DEFAULT_PENALTY_WEIGHTS = {"hsic": 100.0, "mmd": 100.0, "adversarial": 10.0, "pairwise_kl": 0.5}
# The estimator ``batch_penalty="auto"`` (the default) uses when there are batches: the one with
# the largest batch-correction gain among those within the bio tolerance on that curve.
DEFAULT_BATCH_PENALTY = "mmd"


@dataclass(frozen=True)
class ModelChoices:
    """What a new model is, once every default is filled in and every value checked."""

    model: str
    fusion: str
    model_options: dict[str, Any]
    n_latent: int
    n_hidden: int
    n_layers: int
    dropout: float
    batch_penalty: str | None
    penalty_weight: float
    penalty_keys: tuple[str, ...] | None
    penalty_label_key: str | None
    prior: str
    prior_components: int
    confidence_penalty: float
    seed: int


def resolve_choices(
    mdata: md.MuData, *, batch_key: str | None, model: str | None, fusion: str | None,
    model_options: Mapping[str, Any] | None, mixture_sampling: str | None, n_latent: int,
    n_hidden: int, n_layers: int, dropout: float, batch_penalty: str | None,
    penalty_weight: float | None, penalty_keys: Sequence[str] | None,
    penalty_label_key: str | None, prior: str, prior_components: int,
    confidence_penalty: float, seed: int,
) -> ModelChoices:
    """The :class:`ModelChoices` of :class:`omnivae.Model`'s arguments (documented there);
    a ValueError names the argument, the value and what is allowed.

    Examples
    --------
    >>> import omnivae
    >>> sim = omnivae.datasets.simulate(50, modalities=("rna",), n_batches=2, seed=0)
    >>> options = dict(batch_key="batch", model=None, fusion=None, model_options=None,
    ...                mixture_sampling=None, n_latent=5, n_hidden=32, n_layers=1, dropout=0.1,
    ...                batch_penalty="auto", penalty_weight=None, penalty_keys=None,
    ...                penalty_label_key=None, prior="normal", prior_components=0,
    ...                confidence_penalty=0.0, seed=0)
    >>> choices = resolve_choices(sim, **options)
    >>> choices.model, choices.batch_penalty, choices.penalty_weight, choices.penalty_keys
    ('mopoe', 'mmd', 100.0, ('batch',))
    >>> resolve_choices(sim, **{**options, "n_latent": 0})
    Traceback (most recent call last):
    ...
    ValueError: n_latent must be an integer >= 1, got 0.
    """
    for name, value in (("n_latent", n_latent), ("n_hidden", n_hidden),
                        ("n_layers", n_layers)):
        check_int(name, value, 1)
    check_int("prior_components", prior_components, 0)
    check_int("seed", seed, 0)
    check_number("dropout", dropout, low=0, high=1, high_open=True)
    check_number("confidence_penalty", confidence_penalty, low=0)
    check_number("penalty_weight", penalty_weight, low=0, none="for the estimator's default")
    batch_penalty = resolve_batch_penalty(batch_penalty, mdata, batch_key, penalty_keys)
    keys = check_penalty_keys(batch_penalty, penalty_keys, penalty_label_key, batch_key)
    if penalty_weight is None:
        penalty_weight = DEFAULT_PENALTY_WEIGHTS.get(batch_penalty or "", 0.0)
    model_name, fusion = resolve_model(model, fusion)
    return ModelChoices(
        model=model_name, fusion=fusion,
        model_options=objective_options(model_name, model_options, mixture_sampling),
        n_latent=n_latent, n_hidden=n_hidden, n_layers=n_layers, dropout=dropout,
        batch_penalty=batch_penalty, penalty_weight=float(penalty_weight),
        penalty_keys=None if keys is None else tuple(keys), penalty_label_key=penalty_label_key,
        prior=check_prior_name(prior), prior_components=prior_components,
        confidence_penalty=float(confidence_penalty), seed=seed,
    )


def objective_options(model: str, options: Mapping[str, Any] | None,
                      mixture_sampling: str | None) -> dict[str, Any]:
    """The objective's options: ``options`` plus ``mixture_sampling``, an option of the
    objectives that can sample one mixture component (``"mopoe"``, ``"elbo"``; see
    :mod:`omnivae.module.models.elbo`), where the other models refuse ``"one"``.

    Examples
    --------
    >>> objective_options("mopoe", None, "One"), objective_options("mmvae", None, None)
    ({'mixture_sampling': 'one'}, {})
    """
    options = dict(options or {})
    able = OBJECTIVES[model].samples_one_component
    if mixture_sampling is not None and (able or mixture_sampling.lower() != "stratified"):
        if not able:
            models = [name for name, cls in OBJECTIVES.items() if cls.samples_one_component]
            raise ValueError(
                f"mixture_sampling={mixture_sampling!r} applies to the models {models}; "
                f"model={model!r} evaluates every mixture component by construction. Leave "
                "mixture_sampling out (or 'stratified').")
        options["mixture_sampling"] = mixture_sampling.lower()
    return options


def resolve_batch_penalty(batch_penalty: str | None, mdata: md.MuData, batch_key: str | None,
                          penalty_keys: Sequence[str] | None) -> str | None:
    """The estimator a :class:`~omnivae.Model` uses: ``"auto"`` is :data:`DEFAULT_BATCH_PENALTY`
    when there are batches to penalise (``penalty_keys``, or a ``batch_key`` with two or more
    values), else ``None``; ``None``/``"none"`` is ``None``; a name is checked and lower-cased.

    Examples
    --------
    >>> import omnivae
    >>> sim = omnivae.datasets.simulate(50, modalities=("rna",), n_batches=2, seed=0)
    >>> [resolve_batch_penalty(p, sim, key, None)
    ...  for p, key in [("auto", "batch"), ("auto", None), (None, "batch"), ("HSIC", "batch")]]
    ['mmd', None, None, 'hsic']
    """
    if batch_penalty is None or batch_penalty.lower() == "none":
        return None
    if batch_penalty.lower() != "auto":
        return check_penalty_name(batch_penalty)  # "HSIC" -> "hsic" everywhere
    if penalty_keys:
        return DEFAULT_BATCH_PENALTY
    if batch_key is None:
        return None
    try:
        n_batches = obs_column(mdata, batch_key).nunique()
    except KeyError:  # setup_mudata says what is missing and how to fix it
        return DEFAULT_BATCH_PENALTY
    return DEFAULT_BATCH_PENALTY if n_batches >= 2 else None


def check_penalty_keys(batch_penalty: str | None, penalty_keys: Sequence[str] | None,
                       penalty_label_key: str | None, batch_key: str | None,
                       ) -> Sequence[str] | None:
    """The batch columns a resolved ``batch_penalty`` penalises: ``penalty_keys``, else
    ``[batch_key]``; errors when a penalty has no column or columns have no penalty.

    Examples
    --------
    >>> check_penalty_keys("mmd", None, None, "batch"), check_penalty_keys(None, None, None, None)
    (['batch'], None)
    """
    if batch_penalty is not None and penalty_keys is None:
        if batch_key is None:
            raise ValueError("batch_penalty needs penalty_keys=[...] or a batch_key.")
        penalty_keys = [batch_key]
    if batch_penalty is None and (penalty_keys or penalty_label_key):
        raise ValueError("penalty_keys/penalty_label_key need batch_penalty='hsic', 'mmd', ...")
    return penalty_keys


def module_config(setup: SetupInfo, choices: ModelChoices) -> ModuleConfig:
    """The network configuration of a new model on ``setup``'s data (one
    :class:`~omnivae.module.ModalitySpec` per modality).

    Examples
    --------
    >>> import omnivae
    >>> sim = omnivae.datasets.simulate(50, modalities=("rna",), n_batches=2, seed=0)
    >>> model = omnivae.Model(sim, batch_key="batch", n_latent=5)
    >>> choices = resolve_choices(
    ...     sim, batch_key="batch", model=None, fusion=None, model_options=None,
    ...     mixture_sampling=None, n_latent=5, n_hidden=128, n_layers=1, dropout=0.1,
    ...     batch_penalty="auto", penalty_weight=None, penalty_keys=None,
    ...     penalty_label_key=None, prior="normal", prior_components=0,
    ...     confidence_penalty=0.0, seed=0)
    >>> config = module_config(model.setup, choices)
    >>> config == model.config, config.n_latent, config.penalty_weight
    (True, 5, 100.0)
    """
    return ModuleConfig(
        modalities=tuple(
            ModalitySpec(m, len(setup.var_names[m]), setup.likelihoods[m],
                         setup.library_scale[m])
            for m in setup.modalities
        ),
        n_batches=max(1, len(setup.batch_categories)),
        n_latent=choices.n_latent, n_hidden=choices.n_hidden, n_layers=choices.n_layers,
        dropout=choices.dropout, fusion=choices.fusion, model=choices.model,
        model_options=dict(choices.model_options), seed=choices.seed,
        batch_penalty=choices.batch_penalty, penalty_weight=choices.penalty_weight,
        penalty_n_batches=tuple(len(setup.penalty_categories[k])
                                for k in setup.penalty_keys),
        penalty_n_labels=len(setup.label_categories),
        prior=choices.prior, prior_components=choices.prior_components,
        confidence_penalty=choices.confidence_penalty,
    )
