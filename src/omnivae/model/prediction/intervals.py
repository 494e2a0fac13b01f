"""Calibrated prediction intervals on MuData: ``calibrate`` then ``prediction_intervals``.

The exact procedure (posterior predictive draws, randomised PIT scores, split-conformal level)
is documented in :mod:`omnivae.model.prediction.calibration`. ``Model.calibrate`` and
``Model.predict(target, interval=0.9, calibrate_on=...)`` call these functions with the model's
parts: its network (``module``), its ``setup``, its training cells (whose depths the
predictive draws use) and, for conformal intervals, the target's :class:`Calibration`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from omnivae.data.backed import BackedCellData
from omnivae.data.cells import CellData
from omnivae.data.setup import SetupInfo
from omnivae.model.prediction.calibration import (
    Calibration,
    chunk_size,
    depth_sampler,
    interval_from_draws,
    pit_scores,
    predictive_draws,
)
from omnivae.module.fusion import product_of_experts
from omnivae.module.vae import MultimodalVAE

DEFAULT_DRAWS = 200

Cells = CellData | BackedCellData


def _truth_matrix(setup: SetupInfo, target: str, truth: ad.AnnData) -> np.ndarray:
    names = setup.var_names[target]
    missing = [f for f in names if f not in truth.var_names]
    if missing:
        raise ValueError(f"calibrate_on lacks {len(missing)} of {target!r}'s features "
                         f"(first: {missing[:3]}); pass the withheld true counts of {target!r}.")
    x = truth[:, names].X
    y = np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float32)
    if setup.likelihoods[target] == "bernoulli":  # modelled (and predicted) as x > 0
        y = (y > 0).astype(np.float32)
    return y


def _rows_of(obs_names: Sequence[str], truth: ad.AnnData) -> np.ndarray:
    rows = pd.Index(obs_names).get_indexer(truth.obs_names)
    if (rows < 0).any():
        raise KeyError(f"{int((rows < 0).sum())} cells of the truth are not in the data "
                       f"(first: {list(truth.obs_names[rows < 0][:3])}).")
    return rows


def _device(module: MultimodalVAE) -> torch.device:
    return next(module.parameters()).device


def _scores(module: MultimodalVAE, training_cells: Cells, data: Cells, rows: np.ndarray,
            y_all: np.ndarray, target: str, n_samples: int, seed: int) -> np.ndarray:
    """``(len(rows), g)`` conformal scores ``|2u - 1|`` of the true counts ``y_all``."""
    generator = torch.Generator().manual_seed(seed)
    depths = depth_sampler(training_cells, target, module.config.n_batches)
    step = chunk_size(n_samples, y_all.shape[1])
    module.eval()
    scores = []
    for start in range(0, len(rows), step):
        batch = data.batch(rows[start:start + step]).to(_device(module))
        u = pit_scores(module, batch, target, torch.from_numpy(y_all[start:start + step]),
                       n_samples, depths, generator)
        scores.append((2 * u - 1).abs().numpy())
    return np.concatenate(scores)


def _intervals(module: MultimodalVAE, training_cells: Cells, data: Cells, rows: np.ndarray,
               target: str, level: torch.Tensor, n_samples: int, seed: int,
               sources: tuple[int, ...] | None = None,
               normalized: bool = False) -> tuple[np.ndarray, np.ndarray]:
    generator = torch.Generator().manual_seed(seed)
    depths = depth_sampler(training_cells, target, module.config.n_batches)
    step = chunk_size(n_samples, int(level.shape[0]))
    module.eval()
    lows, highs = [], []
    for start in range(0, len(rows), step):
        batch = data.batch(rows[start:start + step])
        draws = predictive_draws(module, batch, target, n_samples, depths, generator,
                                 sources, normalized)
        low, high = interval_from_draws(draws.cpu(), level)
        lows.append(low.numpy())
        highs.append(high.numpy())
    return np.concatenate(lows), np.concatenate(highs)


def calibrate(
    module: MultimodalVAE, setup: SetupInfo, training_cells: Cells, target: str,
    truth: ad.AnnData, *, obs_names: Sequence[str], data: Cells | None = None,
    n_samples: int = DEFAULT_DRAWS, per_feature: bool = True, seed: int = 0,
) -> Calibration:
    """Conformal scores of ``target``'s posterior predictive on held-out cells.

    Parameters
    ----------
    module, setup, training_cells
        A trained network, its setup and its training cells (``model.module``,
        ``model.setup``, ``model.cells``).
    target
        Modality to predict.
    truth
        True counts of ``target`` for the calibration cells (their names among
        ``obs_names``). In the training data these cells must *not* have ``target``
        (withhold it, e.g. with :func:`omnivae.data.splits.withhold_modality`, and pass the
        returned truth, or part of it).
    obs_names
        Names of the cells of ``data``.
    data
        The cells holding the calibration cells' other modalities (default: the training
        cells, which must lack ``target`` in the calibration cells).
    n_samples
        Posterior predictive draws per cell.
    per_feature
        One conformal level per feature (default) or one for all features.
    seed
        Seed of the draws and of the PIT randomisation.

    Returns
    -------
    :class:`omnivae.model.prediction.calibration.Calibration` (:meth:`omnivae.Model.calibrate`
    keeps it in ``model.calibrations[target]``).

    Examples
    --------
    >>> import omnivae
    >>> from omnivae.data.splits import withhold_modality
    >>> sim = omnivae.datasets.simulate(150, modalities=("rna", "adt"), missing_fraction=0, seed=0)
    >>> masked, truth = withhold_modality(sim, "adt", fraction=0.4, seed=0)
    >>> model = omnivae.Model(masked, n_latent=4)
    >>> model.train(max_epochs=3, progress_bar=False)
    >>> result = calibrate(model.module, model.setup, model.cells, "adt", truth,
    ...                    obs_names=masked.obs_names, n_samples=20)
    >>> result.scores.shape   # cells x proteins
    (60, 30)
    """
    cells = training_cells if data is None else data
    t = setup.modalities.index(check_target(setup, target))
    rows = _rows_of(obs_names, truth)
    if data is None and cells.mask[rows, t].any():
        raise ValueError(
            f"{int(cells.mask[rows, t].sum())} calibration cells have {target!r} in the training "
            f"data, so the model has seen their counts and their scores would be optimistic. "
            f"Withhold {target!r} from them before training (omnivae.data.splits.withhold_modality)."
        )
    y_all = _truth_matrix(setup, target, truth)
    scores = _scores(module, training_cells, cells, rows, y_all, target, n_samples, seed)
    return Calibration(target, scores, per_feature, n_samples)


def check_target(setup: SetupInfo, target: str) -> str:
    """``target``, or a KeyError naming the model's modalities."""
    if target not in setup.modalities:
        raise KeyError(f"Unknown target {target!r}; the model was trained on modalities "
                       f"{list(setup.modalities)}.")
    return target


def _levels(setup: SetupInfo, target: str, coverage: float,
            calibration: Calibration | None) -> torch.Tensor:
    if calibration is not None:
        return torch.as_tensor(calibration.level(coverage), dtype=torch.float32)
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"interval coverage must be in (0, 1), got {coverage}.")
    return torch.full((len(setup.var_names[target]),), float(coverage))


def prediction_intervals(
    module: MultimodalVAE, setup: SetupInfo, training_cells: Cells, target: str,
    coverage: float, *, data: Cells | None = None, calibration: Calibration | None = None,
    sources: Sequence[str] | None = None, n_samples: int | None = None, seed: int = 0,
    scale: str = "counts",
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Per-cell, per-feature count intervals of ``target`` predicted from other modalities.

    Parameters
    ----------
    module, setup, training_cells, target
        As in :func:`calibrate`.
    coverage
        Nominal coverage, e.g. 0.9.
    data
        Cells to predict for (default: the training cells).
    calibration
        ``target``'s :class:`Calibration` (:func:`calibrate`) for conformal intervals; without
        one the raw posterior predictive quantiles are used.
    sources
        Condition only on these modalities (default: all the cell's other modalities).
    n_samples
        Predictive draws per cell (default: the calibration's, else 200).
    seed
        Seed of the draws.
    scale
        ``"counts"`` (default): posterior predictive intervals of the counts (conformal when
        calibrated). ``"normalized"``: credible intervals of the expected expression
        (proportions per cell, as ``Model.predict``'s ``X``) over posterior draws of z alone,
        i.e. the model's uncertainty about the cell without count noise (never calibrated:
        there is no observable truth on that scale).

    Returns
    -------
    ``lower`` and ``upper`` ``(n_cells, n_features)``, and a dict describing them.

    Examples
    --------
    >>> import omnivae
    >>> sim = omnivae.datasets.simulate(100, modalities=("rna", "adt"), seed=0)
    >>> model = omnivae.Model(sim, n_latent=4)
    >>> lo, hi, info = prediction_intervals(model.module, model.setup, model.cells, "adt", 0.9,
    ...                                     n_samples=30)
    >>> bool((lo <= hi).all()), info["calibrated"]
    (True, False)
    """
    check_target(setup, target)
    cells = training_cells if data is None else data
    n_samples = n_samples or (calibration.n_samples if calibration else DEFAULT_DRAWS)
    source_idx = None
    if sources is not None:
        unknown = [s for s in sources if s not in setup.modalities]
        if unknown:
            raise KeyError(f"Unknown source modalities {unknown}; use {list(setup.modalities)}.")
        source_idx = tuple(setup.modalities.index(s) for s in sources)
    if scale not in ("counts", "normalized"):
        raise ValueError(f"scale must be 'counts' or 'normalized', got {scale!r}.")
    normalized = scale == "normalized"
    levels = (torch.full((len(setup.var_names[target]),), float(coverage)) if normalized
              else _levels(setup, target, coverage, calibration))
    low, high = _intervals(module, training_cells, cells, np.arange(cells.n_cells), target,
                           levels, n_samples, seed, source_idx, normalized)
    info = {"coverage": coverage, "calibrated": calibration is not None and not normalized,
            "n_samples": n_samples,
            "scale": "proportions (expected expression)" if normalized
            else "counts at a depth drawn from the batch",
            "sources": list(sources) if sources is not None else "other modalities"}
    return low, high, info


def coverage_table(
    module: MultimodalVAE, setup: SetupInfo, training_cells: Cells, target: str,
    truth: ad.AnnData, *, obs_names: Sequence[str], data: Cells | None = None,
    calibration: Calibration | None = None, levels: Sequence[float] = (0.8, 0.9, 0.95),
    n_samples: int | None = None, seed: int = 1,
) -> pd.DataFrame:
    """Empirical coverage of ``target``'s intervals on test cells with known ``truth``.

    The model is given as in :func:`prediction_intervals`; ``obs_names`` names the cells of
    ``data`` (default: the training cells), among which are the cells of ``truth``.

    Columns per nominal level: ``raw`` (posterior predictive quantiles, randomised PIT),
    ``calibrated`` (conformal level, randomised: the quantity split conformal guarantees),
    ``calibrated_inclusive`` (the fraction with ``lower <= y <= upper``), the 5th percentile
    and median of per-feature calibrated coverage, and the median interval width in counts.
    ``calibrated*`` columns are NaN without a ``calibration``.

    Examples
    --------
    >>> import omnivae
    >>> from omnivae.data.splits import withhold_modality
    >>> sim = omnivae.datasets.simulate(150, modalities=("rna", "adt"), missing_fraction=0, seed=0)
    >>> masked, truth = withhold_modality(sim, "adt", fraction=0.4, seed=0)
    >>> model = omnivae.Model(masked, n_latent=4)
    >>> fitted = model.calibrate("adt", truth[:30], n_samples=20)
    >>> coverage_table(model.module, model.setup, model.cells, "adt", truth[30:],
    ...                obs_names=masked.obs_names, calibration=fitted, levels=(0.9,),
    ...                n_samples=20).shape[0]
    1
    """
    cells = training_cells if data is None else data
    rows = _rows_of(obs_names, truth)
    y = _truth_matrix(setup, target, truth)
    n_samples = n_samples or (calibration.n_samples if calibration else DEFAULT_DRAWS)
    scores = _scores(module, training_cells, cells, rows, y, target, n_samples, seed)
    out = []
    for level in levels:
        row: dict[str, float] = {"nominal": level, "raw": float((scores <= level).mean())}
        q = _levels(setup, target, level, calibration)
        low, high = _intervals(module, training_cells, cells, rows, target, q, n_samples,
                               seed + 1)
        inside = (low <= y) & (y <= high)
        if calibration is not None:
            per_feature = (scores <= q.numpy()).mean(axis=0)
            row.update(calibrated=float(per_feature.mean()),
                       calibrated_inclusive=float(inside.mean()),
                       feature_p5=float(np.percentile(per_feature, 5)),
                       feature_median=float(np.median(per_feature)))
        else:
            row.update(calibrated=np.nan, calibrated_inclusive=np.nan, feature_p5=np.nan,
                       feature_median=np.nan)
        row["median_width"] = float(np.median(high - low))
        out.append(row)
    return pd.DataFrame(out)


@torch.no_grad()
def latent_posterior(module: MultimodalVAE, data: Cells, sources: Sequence[str], *,
                     batch_size: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance ``(n_cells, n_latent)`` of the product-of-experts posterior of the
    cells ``data`` given only the modalities ``sources`` (rows of cells that lack all of
    them are NaN).

    With less evidence the posterior is wider; compare e.g. ``["rna"]`` with ``["rna", "adt"]``.

    Examples
    --------
    >>> import omnivae
    >>> sim = omnivae.datasets.simulate(60, modalities=("rna", "adt"), missing_fraction=0, seed=0)
    >>> model = omnivae.Model(sim, n_latent=3)
    >>> _, one = latent_posterior(model.module, model.cells, ["rna"])
    >>> _, two = latent_posterior(model.module, model.cells, ["rna", "adt"])
    >>> bool((two < one).all())
    True
    """
    names = module.config.names
    unknown = [s for s in sources if s not in names]
    if unknown or not sources:
        raise KeyError(f"sources must be modalities of the model {list(names)}; "
                       f"got {list(sources)}.")
    keep = torch.tensor([m in sources for m in names])
    module.eval()
    means, variances = [], []
    for start in range(0, data.n_cells, batch_size):
        batch = data.batch(np.arange(start, min(start + batch_size, data.n_cells)))
        loc, logvar = module.experts(batch.to(_device(module)))
        mask = batch.mask & keep
        q = product_of_experts(loc, logvar, mask.to(loc.device))
        none = ~mask.any(dim=1, keepdim=True).to(loc.device)
        means.append(torch.where(none, torch.nan, q.loc).cpu())
        variances.append(torch.where(none, torch.nan, q.logvar.exp()).cpu())
    return torch.cat(means).numpy(), torch.cat(variances).numpy()
