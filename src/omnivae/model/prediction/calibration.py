"""Calibrated prediction intervals for cross-modal predictions (posterior predictive + conformal).

The procedure, for a target modality ``t`` and a cell predicted from its other modalities:

1. **Posterior predictive.** Draw ``S`` samples: ``z ~ q(z | x_sources)`` (the product of
   experts of the cell's *other* modalities: the posterior given all of that evidence, whatever
   fusion the model was trained with; with one source modality it is the same for every
   fusion), a depth ``ℓ`` from the observed depths of ``t`` among
   the training cells of the cell's batch (the target's depth is unknown for a cell that lacks
   it, so its spread is part of the uncertainty), then counts ``y* ~ p(y_t | z, batch, ℓ)``
   from the decoder's likelihood. Every cell-feature gets ``S`` predictive count draws.
2. **Score.** For a held-out cell whose true counts ``y`` are known, the randomised PIT
   (Czado, Gneiting & Held 2009) ``u = F(y - 1) + V · P(y)``, ``V ~ U(0, 1)``, with ``F`` and
   ``P`` the predictive CDF and mass (averaged over the ``S`` draws of z and depth, exact
   for counts up to 20, see :func:`pit_scores`), is uniform when the predictive is calibrated;
   the non-conformity score is ``s = |2u - 1|`` (0 at the predictive median, 1 in the tails).
   The randomisation breaks the ties of discrete counts (essential for binary modalities).
3. **Conformal quantile** (split conformal, Vovk et al.; per feature by default). With ``n``
   calibration cells, the calibrated level for nominal coverage ``α`` is
   ``q̂(α) = s_(⌈(n + 1) α⌉)``, the ``⌈(n+1)α⌉``-th smallest score (1 when that exceeds ``n``).
4. **Interval.** ``[lower, upper]`` are the predictive quantiles at ``(1 ∓ q̂)/2``. A new
   cell's count is inside in the randomised sense (``|2u - 1| <= q̂``) with probability at least
   ``α`` when calibration and new cells are exchangeable, e.g. both drawn from the cells
   whose target was withheld from training; counting ``lower <= y <= upper`` inclusive covers
   at least as often (more so for binary or low counts, where endpoints carry mass).

For a ``bernoulli`` modality (e.g. ATAC) the outcome is ``x > 0``, as in training: intervals
are subsets of {0, 1}.

The calibration cells must not have their target in the training data (otherwise the decoder
has seen them and their scores are optimistic): withhold the target from them, e.g. with
:func:`omnivae.data.splits.withhold_modality`, and pass their true counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from omnivae.data.cells import CellData
from omnivae.module.fusion import Mixture, product_of_experts
from omnivae.module.records import BatchData, Gaussian
from omnivae.module.vae import MultimodalVAE

if TYPE_CHECKING:
    from omnivae.data.backed import BackedCellData

_MAX_DRAW_ENTRIES = 20_000_000  # S * cells * features per chunk
EXACT_CDF_UP_TO = 20


def source_mask(mask: Tensor, t: int, sources: tuple[int, ...] | None = None) -> Tensor:
    """Modalities to condition on: the cell's other modalities, or those of ``sources`` it has
    (``sources`` may include the target itself, e.g. to compare with more evidence).

    Cells left with no modality fall back to all they have, as in ``Model.predict``.

    Examples
    --------
    >>> import torch
    >>> mask = torch.tensor([[True, True], [True, False]])
    >>> source_mask(mask, 0).tolist(), source_mask(mask, 0, (0, 1)).tolist()
    ([[False, True], [True, False]], [[True, True], [True, False]])
    """
    use = mask.clone()
    if sources is None:
        use[:, t] = False
    else:
        keep = torch.zeros(mask.shape[1], dtype=torch.bool, device=mask.device)
        keep[list(sources)] = True
        use &= keep
    return torch.where(use.any(dim=1, keepdim=True), use, mask)


def source_posterior(module: MultimodalVAE, batch: BatchData, mask: Tensor) -> Mixture:
    """Posterior given the modalities in ``mask``: the product of their experts when the model
    has one encoder per modality, else the model's own posterior (e.g. a joint encoder)."""
    sub = BatchData(batch.counts, mask, batch.batch_index, batch.library)
    if len(module.encoders) != len(module.config.names):
        return module.posterior(sub)
    loc, logvar = module.experts(sub)
    q = product_of_experts(loc, logvar, mask)
    weights = torch.ones(1, mask.shape[0], dtype=q.loc.dtype, device=q.loc.device)
    return Mixture(Gaussian(q.loc.unsqueeze(0), q.logvar.unsqueeze(0)), weights)


class DepthSampler:
    """Draws a target modality's depth from the observed depths of the same batch.

    Examples
    --------
    >>> import numpy as np
    >>> s = DepthSampler(np.array([10.0, 20.0, 30.0]), np.array([0, 0, 1]), n_batches=2)
    >>> s(torch.tensor([1, 1]), torch.Generator().manual_seed(0)).tolist()
    [30.0, 30.0]
    """

    def __init__(self, depths: np.ndarray, batches: np.ndarray, n_batches: int) -> None:
        self.pools = [torch.as_tensor(depths[batches == b], dtype=torch.float32)
                      for b in range(n_batches)]
        everything = torch.as_tensor(depths, dtype=torch.float32)
        self.pools = [p if p.numel() else everything for p in self.pools]

    def __call__(self, batch_index: Tensor, generator: torch.Generator | None) -> Tensor:
        out = torch.empty(batch_index.shape[0])
        for b, pool in enumerate(self.pools):
            rows = (batch_index.cpu() == b).nonzero(as_tuple=True)[0]
            if rows.numel():
                pick = torch.randint(len(pool), (rows.numel(),), generator=generator)
                out[rows] = pool[pick]
        return out


def depth_sampler(data: CellData | BackedCellData, target: str, n_batches: int) -> DepthSampler:
    """A :class:`DepthSampler` from the cells of ``data`` that have ``target``."""
    t = data.modalities.index(target)
    has = data.mask[:, t]
    if not has.any():
        raise ValueError(f"No cell has {target!r}; its depth cannot be sampled.")
    return DepthSampler(data.library[target][has], data.batch_index[has], n_batches)


@torch.no_grad()
def predictive_draws(
    module: MultimodalVAE, batch: BatchData, target: str, n_samples: int,
    depths: DepthSampler, generator: torch.Generator, sources: tuple[int, ...] | None = None,
    normalized: bool = False,
) -> Tensor:
    """``(S, n, g)`` posterior predictive count draws of ``target`` (step 1 of the module doc);
    with ``normalized`` the decoder's expected expression (proportions) at each z draw instead:
    the posterior's own (epistemic) uncertainty, without count noise or depth."""
    t = module.config.names.index(target)
    mask = source_mask(batch.mask, t, sources)
    fused = source_posterior(module, batch, mask)
    decoder = module.decoder(target)
    draws = []
    for _ in range(n_samples):
        z = fused.sample(generator)
        if normalized:
            draws.append(decoder.normalized(z, batch.batch_index))
            continue
        library = depths(batch.batch_index, generator).to(z.device).unsqueeze(-1)
        draws.append(decoder(z, batch.batch_index, library).sample(generator))
    return torch.stack(draws)


def randomized_pit(draws: Tensor, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Randomised PIT ``F(y - 1) + V · P(y)`` of counts ``y`` ``(n, g)`` under ``(S, n, g)`` draws.

    Examples
    --------
    >>> import torch
    >>> draws = torch.arange(100.0).reshape(100, 1, 1)
    >>> u = randomized_pit(draws, torch.tensor([[49.0]]), torch.Generator().manual_seed(0))
    >>> 0.49 <= u.item() <= 0.50     # 49 draws below, one equal
    True
    """
    below = (draws < y).float().mean(dim=0)
    mass = (draws == y).float().mean(dim=0)
    noise = torch.rand(y.shape, generator=generator)
    return below + noise * mass


@torch.no_grad()
def pit_scores(
    module: MultimodalVAE, batch: BatchData, target: str, y: Tensor, n_samples: int,
    depths: DepthSampler, generator: torch.Generator, exact_up_to: int = EXACT_CDF_UP_TO,
) -> Tensor:
    """Randomised PIT ``u`` ``(n, g)`` of true counts ``y`` under the posterior predictive.

    Rao-Blackwellised where it matters: the mass ``P(y)`` is the mean over the ``S``
    draws of (z, depth) of the decoder's exact probability of ``y``, and for
    ``y <= exact_up_to`` the CDF ``F(y - 1)`` is the exact sum of those probabilities. Only
    larger counts use the fraction of predictive count draws below ``y``. (With Monte Carlo
    masses alone, a count that no draw reached gets ``u = 1`` exactly; such ties pile up for
    binary or sparse modalities and make the conformal level jump to 1.)
    """
    t = module.config.names.index(target)
    mask = source_mask(batch.mask, t)
    fused = source_posterior(module, batch, mask)
    decoder = module.decoder(target)
    y = y.to(batch.mask.device)
    small = y <= exact_up_to
    k_max = int(min(exact_up_to, float(y.max()))) if y.numel() else 0
    below_draws = torch.zeros_like(y)
    below_exact = torch.zeros_like(y)
    mass = torch.zeros_like(y)
    for _ in range(n_samples):
        z = fused.sample(generator)
        library = depths(batch.batch_index, generator).to(z.device).unsqueeze(-1)
        dist = decoder(z, batch.batch_index, library)
        below_draws += (dist.sample(generator) < y).float()
        mass += torch.exp(dist.log_prob(y))
        for k in range(k_max):
            below_exact += torch.where(y > k, torch.exp(dist.log_prob(torch.full_like(y, k))), 0.0)
    below = torch.where(small, below_exact, below_draws) / n_samples
    noise = torch.rand(y.shape, generator=generator).to(y.device)
    return (below + noise * mass / n_samples).clamp(0.0, 1.0).cpu()


def conformal_level(scores: np.ndarray, coverage: float) -> np.ndarray:
    """The ``⌈(n+1)α⌉``-th smallest score along axis 0 (1 where that exceeds ``n``).

    Examples
    --------
    >>> import numpy as np
    >>> conformal_level(np.linspace(0, 1, 99)[:, None], 0.9).round(3).tolist()  # rank 90 of 99
    [0.908]
    """
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"interval coverage must be in (0, 1), got {coverage}.")
    n = scores.shape[0]
    rank = math.ceil((n + 1) * coverage)
    if rank > n:
        return np.ones(scores.shape[1:])
    return np.sort(scores, axis=0)[rank - 1]


@dataclass(frozen=True)
class Calibration:
    """Conformal scores of a target modality on held-out cells (see the module docstring).

    Parameters
    ----------
    target
        The predicted modality.
    scores
        ``(n_calibration_cells, n_features)`` scores ``|2u - 1|``.
    per_feature
        Calibrate each feature separately (default) or pool all features.
    n_samples
        Posterior predictive draws per cell used for the scores (reuse it for intervals).
    """

    target: str
    scores: np.ndarray
    per_feature: bool = True
    n_samples: int = 200

    def level(self, coverage: float) -> np.ndarray:
        """Calibrated central level ``q̂`` per feature ``(g,)`` for nominal ``coverage``."""
        if self.per_feature:
            return conformal_level(self.scores, coverage)
        pooled = conformal_level(self.scores.reshape(-1, 1), coverage)
        return np.broadcast_to(pooled, self.scores.shape[1:]).copy()


def interval_from_draws(draws: Tensor, level: Tensor) -> tuple[Tensor, Tensor]:
    """Central predictive interval at per-feature ``level`` ``(g,)`` from ``(S, n, g)`` draws.

    Examples
    --------
    >>> import torch
    >>> draws = torch.arange(101.0).reshape(101, 1, 1)
    >>> lo, hi = interval_from_draws(draws, torch.tensor([0.8]))
    >>> lo.item(), hi.item()
    (10.0, 90.0)
    """
    ordered = draws.sort(dim=0).values
    s = draws.shape[0]
    # the 1e-6 keeps float round-off (0.1 * 100 = 9.99...) from moving an index
    low_idx = torch.floor((1 - level) / 2 * (s - 1) + 1e-6).long().clamp(0, s - 1)
    high_idx = torch.ceil((1 + level) / 2 * (s - 1) - 1e-6).long().clamp(0, s - 1)
    n = draws.shape[1]
    low = ordered.gather(0, low_idx.expand(1, n, -1)).squeeze(0)
    high = ordered.gather(0, high_idx.expand(1, n, -1)).squeeze(0)
    return low, high


def chunk_size(n_samples: int, n_features: int) -> int:
    """Cells per chunk so that ``S · cells · g`` stays below a fixed budget.

    Examples
    --------
    >>> chunk_size(200, 1000)
    100
    """
    return max(1, _MAX_DRAW_ENTRIES // max(1, n_samples * n_features))
