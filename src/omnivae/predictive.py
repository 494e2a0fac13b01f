"""Calibrated prediction intervals on MuData: ``calibrate`` then ``prediction_intervals``.

The exact procedure (posterior predictive draws, randomised PIT scores, split-conformal level)
is documented in :mod:`omnivae.calibration`. ``Model.calibrate`` and
``Model.predict(target, interval=0.9, calibrate_on=...)`` call these functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anndata as ad
import mudata as md
import numpy as np
import scipy.sparse as sp
import torch

from omnivae.calibration import (
    Calibration,
    chunk_size,
    depth_sampler,
    interval_from_draws,
    predictive_draws,
    randomized_pit,
)

if TYPE_CHECKING:
    from omnivae.model import Model

DEFAULT_DRAWS = 200


def _truth_matrix(model: Model, target: str, truth: ad.AnnData) -> np.ndarray:
    names = model.var_names[target]
    missing = [f for f in names if f not in truth.var_names]
    if missing:
        raise ValueError(f"calibrate_on lacks {len(missing)} of {target!r}'s features "
                         f"(first: {missing[:3]}); pass the withheld true counts of {target!r}.")
    x = truth[:, names].X
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float32)


def calibrate(
    model: Model, target: str, truth: ad.AnnData, *, mdata: md.MuData | None = None,
    n_samples: int = DEFAULT_DRAWS, per_feature: bool = True, seed: int = 0,
) -> Calibration:
    """Conformal scores of ``target``'s posterior predictive on held-out cells.

    Parameters
    ----------
    model
        A trained :class:`omnivae.Model`.
    target
        Modality to predict.
    truth
        True counts of ``target`` for the calibration cells (``obs_names`` in ``mdata``).
        In the training data these cells must *not* have ``target`` (withhold it, e.g. with
        :func:`omnivae.splits.withhold_modality`, and pass the returned truth, or part of it).
    mdata
        Data holding the calibration cells' other modalities (default: the training data).
    n_samples
        Posterior predictive draws per cell.
    per_feature
        One conformal level per feature (default) or one for all features.
    seed
        Seed of the draws and of the PIT randomisation.

    Returns
    -------
    :class:`omnivae.calibration.Calibration`, also stored in ``model.calibrations[target]``.

    Examples
    --------
    >>> import omnivae
    >>> from omnivae.splits import withhold_modality
    >>> sim = omnivae.datasets.simulate(150, modalities=("rna", "adt"), missing_fraction=0, seed=0)
    >>> masked, truth = withhold_modality(sim, "adt", fraction=0.4, seed=0)
    >>> model = omnivae.Model(masked, n_latent=4)
    >>> model.train(max_epochs=3, progress_bar=False)
    >>> calibrate(model, "adt", truth, n_samples=20).scores.shape
    (60, 20)
    """
    data = model._cell_data(mdata)
    source = mdata if mdata is not None else model.mdata
    t = model.setup.modalities.index(_check_target(model, target))
    rows = source.obs_names.get_indexer(truth.obs_names)
    if (rows < 0).any():
        raise KeyError(f"{int((rows < 0).sum())} calibration cells are not in the data "
                       f"(first: {list(truth.obs_names[rows < 0][:3])}).")
    if mdata is None and data.mask[rows, t].any():
        raise ValueError(
            f"{int(data.mask[rows, t].sum())} calibration cells have {target!r} in the training "
            f"data, so the model has seen their counts and their scores would be optimistic. "
            f"Withhold {target!r} from them before training (omnivae.splits.withhold_modality)."
        )
    y_all = _truth_matrix(model, target, truth)
    scores = []
    generator = torch.Generator().manual_seed(seed)
    depths = depth_sampler(model._data, target, model.config.n_batches)
    step = chunk_size(n_samples, y_all.shape[1])
    model.module.eval()
    for start in range(0, len(rows), step):
        batch = data.batch(rows[start:start + step])
        draws = predictive_draws(model.module, batch, target, n_samples, depths, generator)
        u = randomized_pit(draws.cpu(), torch.from_numpy(y_all[start:start + step]), generator)
        scores.append((2 * u - 1).abs().numpy())
    result = Calibration(target, np.concatenate(scores), per_feature, n_samples)
    model.calibrations[target] = result
    return result


def _check_target(model: Model, target: str) -> str:
    if target not in model.setup.modalities:
        raise KeyError(f"Unknown target {target!r}; the model was trained on modalities "
                       f"{list(model.setup.modalities)}.")
    return target


def prediction_intervals(
    model: Model, target: str, coverage: float, *, mdata: md.MuData | None = None,
    sources: Sequence[str] | None = None, n_samples: int | None = None, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Per-cell, per-feature count intervals of ``target`` predicted from other modalities.

    Parameters
    ----------
    model
        A trained model; calibrated for ``target`` (:func:`calibrate`) for conformal
        intervals, otherwise the raw posterior predictive quantiles are used.
    target
        Modality to predict.
    coverage
        Nominal coverage, e.g. 0.9.
    mdata
        Cells to predict for (default: the training data).
    sources
        Condition only on these modalities (default: all the cell's other modalities).
    n_samples
        Predictive draws per cell (default: the calibration's, else 200).
    seed
        Seed of the draws.

    Returns
    -------
    ``lower`` and ``upper`` ``(n_cells, n_features)`` counts, and a dict describing them.

    Examples
    --------
    >>> import omnivae
    >>> sim = omnivae.datasets.simulate(100, modalities=("rna", "adt"), seed=0)
    >>> model = omnivae.Model(sim, n_latent=4)
    >>> lo, hi, info = prediction_intervals(model, "adt", 0.9, n_samples=30)
    >>> bool((lo <= hi).all()), info["calibrated"]
    (True, False)
    """
    _check_target(model, target)
    data = model._cell_data(mdata)
    calibration = model.calibrations.get(target)
    n_samples = n_samples or (calibration.n_samples if calibration else DEFAULT_DRAWS)
    n_features = len(model.var_names[target])
    if calibration is not None:
        level = torch.as_tensor(calibration.level(coverage), dtype=torch.float32)
    else:
        level = torch.full((n_features,), float(coverage))
    source_idx = None
    if sources is not None:
        unknown = [s for s in sources if s not in model.setup.modalities]
        if unknown:
            raise KeyError(f"Unknown source modalities {unknown}; use {list(model.setup.modalities)}.")
        source_idx = tuple(model.setup.modalities.index(s) for s in sources)
    generator = torch.Generator().manual_seed(seed)
    depths = depth_sampler(model._data, target, model.config.n_batches)
    lows, highs = [], []
    model.module.eval()
    step = chunk_size(n_samples, n_features)
    for start in range(0, data.n_cells, step):
        batch = data.batch(np.arange(start, min(start + step, data.n_cells)))
        draws = predictive_draws(model.module, batch, target, n_samples, depths, generator,
                                 source_idx)
        low, high = interval_from_draws(draws.cpu(), level)
        lows.append(low.numpy())
        highs.append(high.numpy())
    info = {"coverage": coverage, "calibrated": calibration is not None,
            "n_samples": n_samples, "scale": "counts at a depth drawn from the batch",
            "sources": list(sources) if sources is not None else "other modalities"}
    return np.concatenate(lows), np.concatenate(highs), info
