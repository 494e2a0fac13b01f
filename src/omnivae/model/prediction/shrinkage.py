"""Cross-modal predictions shrunk toward the population profile, by a weight fitted on held-out cells.

On small data the map from one modality to another can memorise the training cells: the
cell-to-cell differences it predicts are then mostly noise, noise in each cell's
across-feature profile costs more than the real cell-specific signal gains, and on cells it
never saw the prediction can score below a constant profile (each feature's population
frequency); measured in ``docs/design_evidence.md#shrinkage``. A model should know this from
data it did not fit.

So after training, for each modality ``m`` the prediction of ``m`` from a cell's *other*
modalities is combined with the population profile ``p`` (the mean normalised profile of the
training cells that have ``m``; for a Bernoulli modality the mean of ``1{x > 0} / (number of
non-zeros)``, the frequencies of its binarized-Poisson decoder) as the mixture::

    w * f(cell) + (1 - w) * p

with the weight ``w`` in ``[0, 1]`` (grid of 0.05) that maximises the log-likelihood of the
observed ``m`` of the *validation* cells, the cells that training held out (never fitted; the
ones early stopping watches): for a Bernoulli modality the binarized Poisson
``P(x > 0) = 1 - exp(-l * q)`` at the cell's observed number of non-zeros ``l``, otherwise the
multinomial ``sum x log q``. This is stacking of two predictive distributions by held-out
likelihood (Breiman 1996; Yao et al. 2018). ``w = 1`` leaves the prediction unchanged; it is
used when fewer than :data:`MIN_CELLS` validation cells have ``m`` and another modality, and
for models trained without validation cells or saved before this existed.

:meth:`omnivae.Model.predict` applies it (``shrink=False`` returns the decoder's profile);
prediction intervals and :func:`omnivae.model.prediction.calibration` draws are not shrunk. A query model of
reference mapping (:mod:`omnivae.model.mapping.query`) keeps its reference's weights and profiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from omnivae.data.backed import BackedCellData
    from omnivae.data.cells import CellData
    from omnivae.module.vae import MultimodalVAE

MIN_CELLS = 5  # validation cells (with the target and another modality) needed to fit a weight
WEIGHTS = np.round(np.linspace(0.0, 1.0, 21), 2)
PROFILE_CELLS = 20_000  # training cells averaged for the population profile (a seeded sample)
DRAWS = 25  # posterior draws of each validation cell's prediction
# validation cells that fit a weight (a seeded sample above it): 21 weights on one scalar
# log-likelihood need no more, and it bounds the dense (cells x features) arrays on large data
MAX_VALIDATION_CELLS = 5_000


@dataclass(frozen=True)
class Shrinkage:
    """The fitted mixture of one target: ``weight * f(cell) + (1 - weight) * profile``.

    ``n_cells`` validation cells chose ``weight``; ``loglik`` is their held-out log-likelihood
    per cell at each weight of :data:`WEIGHTS`.
    """

    weight: float
    profile: np.ndarray
    n_cells: int
    loglik: tuple[float, ...] = ()

    def apply(self, predicted: np.ndarray) -> np.ndarray:
        """Shrink ``(n, g)`` predicted proportions (rows keep summing to one)."""
        if self.weight >= 1.0:
            return predicted
        return (self.weight * predicted + (1.0 - self.weight) * self.profile).astype(
            predicted.dtype, copy=False)

    def apply_cross_modal(self, predicted: np.ndarray, mask: np.ndarray, target: int,
                          std: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Shrink the rows of ``predicted`` (``(n, g)``, or ``(S, n, g)`` draws) that were
        predicted from other modalities (:func:`cross_modal_rows` of the cells' membership
        ``mask`` and the target's column ``target``); a cell's reconstruction of its own target
        is left as it is. ``std`` (``(n, g)``), the spread over draws, scales by the weight
        on the same rows (the spread of ``w f + c`` is ``w`` times that of ``f``).

        Examples
        --------
        >>> import numpy as np
        >>> s = Shrinkage(0.5, np.array([0.5, 0.5], dtype=np.float32), n_cells=10)
        >>> f = np.array([[1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
        >>> mask = np.array([[True, True], [False, True]])  # cell 1 has only the target
        >>> shrunk, _ = s.apply_cross_modal(f, mask, target=1)
        >>> shrunk.tolist()
        [[0.75, 0.25], [1.0, 0.0]]
        """
        if self.weight >= 1.0:
            return predicted, std
        cross = cross_modal_rows(mask, target)
        out = predicted.copy()
        out[..., cross, :] = self.apply(predicted[..., cross, :])
        if std is not None:
            std = std * np.where(cross, self.weight, 1.0).astype(std.dtype)[:, None]
        return out, std

    def to_dict(self) -> dict[str, Any]:
        return {"weight": self.weight, "profile": self.profile.tolist(), "n_cells": self.n_cells,
                "loglik": list(self.loglik)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Shrinkage:
        return cls(float(d["weight"]), np.asarray(d["profile"], dtype=np.float32),
                   int(d["n_cells"]), tuple(float(v) for v in d.get("loglik", ())))


def cross_modal_rows(mask: np.ndarray, target: int) -> np.ndarray:
    """Which cells have a modality other than column ``target`` of their membership ``mask``
    (``(n_cells, n_modalities)``): their prediction of the target comes from other modalities.

    Examples
    --------
    >>> import numpy as np
    >>> cross_modal_rows(np.array([[True, True], [False, True], [True, False]]), 1).tolist()
    [True, False, True]
    """
    return np.asarray(np.delete(np.asarray(mask), target, axis=1).any(axis=1), dtype=bool)


def _dense_counts(data: CellData | BackedCellData, rows: np.ndarray, target: str) -> np.ndarray:
    return data.batch(rows).counts[target].numpy().astype(np.float64)


def population_profile(data: CellData | BackedCellData, target: str, rows: np.ndarray,
                       bernoulli: bool, *, chunk: int = 2048, seed: int = 0) -> np.ndarray:
    """Mean normalised profile of ``target`` over the cells ``rows`` that have it (at most
    :data:`PROFILE_CELLS` of them, a seeded sample); binarized first for a Bernoulli target.

    Examples
    --------
    >>> import numpy as np, omnivae
    >>> model = omnivae.Model(omnivae.datasets.simulate(40, modalities=("rna", "atac"), seed=0))
    >>> p = population_profile(model.cells, "atac", np.arange(40), bernoulli=True)
    >>> bool(np.isclose(p.sum(), 1.0)), p.shape == (model.mdata["atac"].n_vars,)
    (True, True)
    """
    t = data.modalities.index(target)
    rows = rows[data.mask[rows, t]]
    if len(rows) > PROFILE_CELLS:
        rows = np.sort(np.random.default_rng(seed).choice(rows, PROFILE_CELLS, replace=False))
    total, n = None, 0
    for start in range(0, len(rows), chunk):
        x = _dense_counts(data, rows[start:start + chunk], target)
        if bernoulli:
            x = (x > 0).astype(np.float64)
        lib = x.sum(axis=1, keepdims=True)
        keep = lib[:, 0] > 0
        part = (x[keep] / lib[keep]).sum(axis=0)
        total = part if total is None else total + part
        n += int(keep.sum())
    if total is None or n == 0:
        raise ValueError(f"No training cell has non-zero {target!r} counts.")
    profile = total / n
    return (profile / profile.sum()).astype(np.float32)


def heldout_loglik(predicted: np.ndarray, profile: np.ndarray, counts: np.ndarray,
                   library: np.ndarray, bernoulli: bool) -> np.ndarray:
    """Per cell mean held-out log-likelihood of ``counts`` at each weight of :data:`WEIGHTS`.

    Examples
    --------
    >>> import numpy as np
    >>> f = np.array([[0.9, 0.1], [0.1, 0.9]]); p = np.array([0.5, 0.5])
    >>> x = np.array([[9.0, 1.0], [1.0, 9.0]])   # the prediction is right: weight 1 wins
    >>> int(np.argmax(heldout_loglik(f, p, x, x.sum(1), bernoulli=False)))
    20
    """
    out = np.empty(len(WEIGHTS))
    lib = np.asarray(library, dtype=np.float64).reshape(-1, 1)
    for i, w in enumerate(WEIGHTS):
        q = np.clip(w * predicted + (1.0 - w) * profile, 1e-12, None)
        if bernoulli:
            rate = np.clip(lib * q, 1e-8, None)
            y = counts > 0
            ll = np.where(y, np.log(-np.expm1(-rate)), -rate).sum()
        else:
            ll = (counts * np.log(q)).sum()
        out[i] = ll / len(counts)
    return out


@torch.no_grad()
def fit_shrinkage(module: MultimodalVAE, data: CellData | BackedCellData, target: str,
                  train_rows: np.ndarray, validation_rows: np.ndarray, *, seed: int = 0,
                  device: torch.device | None = None) -> Shrinkage:
    """Fit the mixture weight of ``target`` on ``validation_rows`` (see the module doc), the
    population profile on ``train_rows``; at most :data:`MAX_VALIDATION_CELLS` validation
    cells (a seeded sample), and weight 1 below :data:`MIN_CELLS` of them.

    Examples
    --------
    >>> import numpy as np, omnivae
    >>> sim = omnivae.datasets.simulate(80, modalities=("rna", "atac"), missing_fraction=0, seed=0)
    >>> model = omnivae.Model(sim, n_latent=3)
    >>> fitted = fit_shrinkage(model.module, model.cells, "atac", np.arange(60), np.arange(60, 80))
    >>> fitted.n_cells, float(fitted.weight) in set(WEIGHTS.tolist())
    (20, True)
    """
    t = data.modalities.index(target)
    bernoulli = module.decoder(target).likelihood == "bernoulli"
    profile = population_profile(data, target, np.asarray(train_rows), bernoulli, seed=seed)
    rows = np.asarray(validation_rows)
    rows = rows[data.mask[rows, t] & cross_modal_rows(data.mask, t)[rows]]
    if len(rows) > MAX_VALIDATION_CELLS:
        rows = np.sort(np.random.default_rng(seed).choice(rows, MAX_VALIDATION_CELLS,
                                                          replace=False))
    if len(rows) < MIN_CELLS:
        return Shrinkage(1.0, profile, len(rows))
    module.eval()
    generator = torch.Generator(device=device or "cpu").manual_seed(seed)
    predicted, counts, library = [], [], []
    for start in range(0, len(rows), 1024):
        batch = data.batch(rows[start:start + 1024])
        mean, _ = module.predict_normalized(batch.to(device) if device else batch, target,
                                            DRAWS, generator)
        predicted.append(mean.cpu().numpy().astype(np.float64))
        counts.append(batch.counts[target].numpy().astype(np.float64))
        library.append(batch.library[target][:, 0].numpy())
    loglik = heldout_loglik(np.concatenate(predicted), profile.astype(np.float64),
                            np.concatenate(counts), np.concatenate(library), bernoulli)
    weight = float(WEIGHTS[int(np.argmax(loglik))])
    return Shrinkage(weight, profile, len(rows), tuple(float(v) for v in loglik))


def fit_every_target(module: MultimodalVAE, data: CellData | BackedCellData,
                     train_rows: np.ndarray, validation_rows: np.ndarray, *, seed: int = 0,
                     device: torch.device | None = None) -> dict[str, Shrinkage]:
    """:func:`fit_shrinkage` for every modality of ``data`` (none without validation cells or
    with one modality; a target no training cell has counts of is skipped).

    Examples
    --------
    >>> import numpy as np, omnivae
    >>> sim = omnivae.datasets.simulate(80, modalities=("rna", "atac"), missing_fraction=0, seed=0)
    >>> model = omnivae.Model(sim, n_latent=3)
    >>> sorted(fit_every_target(model.module, model.cells, np.arange(60), np.arange(60, 80)))
    ['atac', 'rna']
    >>> fit_every_target(model.module, model.cells, np.arange(80), np.arange(0))
    {}
    """
    fitted: dict[str, Shrinkage] = {}
    if len(validation_rows) == 0 or len(data.modalities) < 2:
        return fitted
    for target in data.modalities:
        try:
            fitted[target] = fit_shrinkage(module, data, target, train_rows, validation_rows,
                                           seed=seed, device=device)
        except ValueError:  # no training cell with non-zero counts of the target
            continue
    return fitted


__all__ = ["DRAWS", "MAX_VALIDATION_CELLS", "MIN_CELLS", "WEIGHTS", "Shrinkage", "cross_modal_rows",
           "fit_every_target", "fit_shrinkage", "heldout_loglik",
           "population_profile"]
