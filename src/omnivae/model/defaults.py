"""Defaults of :class:`omnivae.Model` chosen by benchmarks: the batch penalty and its weights."""

from __future__ import annotations

from collections.abc import Sequence

import mudata as md

from omnivae.data.setup import obs_column
from omnivae.module.penalties import check_penalty_name

# Default weights of the batch penalties, relative to an ELBO summed over features: the largest
# weights whose scib bio conservation stayed within 0.01 of no penalty on the curve of
# benchmarks/results/batch_penalty_curve.md (ten times these cost 0.02-0.08 of it).
DEFAULT_PENALTY_WEIGHTS = {"hsic": 100.0, "mmd": 100.0, "adversarial": 10.0, "pairwise_kl": 0.5}
# The estimator ``batch_penalty="auto"`` (the default) uses when there are batches: the one with
# the largest batch-correction gain among those within the bio tolerance on that curve.
DEFAULT_BATCH_PENALTY = "mmd"


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
