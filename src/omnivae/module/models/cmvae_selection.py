"""CMVAE's post-hoc selection of the number of clusters (pure torch).

Palumbo et al. (2024) train CMVAE with more mixture components than they expect clusters and
then prune them, keeping the set of components that minimises a *penalised normalised entropy*
over held-out cells. With the prior restricted to the active components ``A`` (weights
renormalised over ``A``) and ``z_m`` a cell's shared latent under modality ``m``'s encoder::

    q_A(c | z_m)  = p_A(c) N(z_m; μ_c, I) / Σ_{c' in A} p_A(c') N(z_m; μ_c', I)
    H_m           = -Σ_c q_A(c | z_m) log q_A(c | z_m) / log K       (normalised entropy)
    ℓ_m           = log Σ_{c in A} p_A(c) N(z_m; μ_c, I) / d         (per latent dimension)
    criterion(A)  = β mean(H) - mean(ℓ)

(``ℓ_m`` is the paper's ``Σ_c q(c|z)[log p(c) + log p(z|c) - log q(c|z)]``, which equals
this log-density because ``q(c | z)`` is the exact cluster posterior.) Means are over the
cells and, within a cell, over the modalities it has. Starting from all ``K`` components, the
component holding the least probability mass is pruned, one at a time, until one is left; the
mass of a component is the summed assignment confidence (largest ``q(c | z)``) of the cells
assigned to it. The active set with the lowest criterion is kept (never the single-component
one, whose entropy is trivially zero).

As in the authors' code, ``H`` is normalised by ``log K`` of all components and ``z_m`` is
each modality's posterior; here it is the posterior mean rather than one draw (the result
is deterministic), and a cell is assigned by the mean of its modalities' ``q(c | z_m)``
rather than the mode of their argmaxes (with two modalities a mode breaks ties arbitrarily).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from omnivae.module.priors import gaussian_log_prob

__all__ = ["ClusterSelection", "select_clusters"]


@dataclass(frozen=True)
class ClusterSelection:
    """The outcome of :func:`select_clusters`.

    Attributes
    ----------
    kept
        Indices of the prior components kept, ascending.
    pruned
        The component pruned at each step, in pruning order (``K - 1`` of them).
    criterion
        The penalised normalised entropy with ``0, 1, ..., K - 1`` components pruned.
    probabilities
        ``(n, len(kept))``: each cell's ``q(c | z)`` over the kept components (mean over the
        modalities it has).
    labels
        ``(n,)``: each cell's component (an entry of ``kept``).
    """

    kept: tuple[int, ...]
    pruned: tuple[int, ...]
    criterion: tuple[float, ...]
    probabilities: Tensor
    labels: Tensor


@dataclass(frozen=True)
class _Step:
    criterion: float
    probabilities: Tensor  # (n, K), zero on inactive components
    mass: Tensor  # (K,)


def _evaluate(log_weights: Tensor, log_likelihood: Tensor, observed: Tensor, active: Tensor,
              n_latent: int, beta: float) -> _Step:
    """The criterion, cell probabilities and component masses with only ``active`` kept;
    ``log_likelihood`` ``(M, n, K)`` is ``log N(z_m; μ_c, I)``, which pruning leaves as is."""
    n_components = log_likelihood.shape[-1]
    log_prior = torch.log_softmax(log_weights.masked_fill(~active, -math.inf), dim=0)  # (K,)
    log_joint = log_prior + log_likelihood
    log_density = torch.logsumexp(log_joint, dim=-1)  # (M, n)
    posterior = torch.exp(log_joint - log_density.unsqueeze(-1))  # (M, n, K)
    plogp = torch.where(posterior > 0, posterior * torch.log(posterior), posterior.new_zeros(()))
    entropy = -plogp.sum(-1) / math.log(max(n_components, 2))  # (M, n)
    weight = observed.to(log_joint.dtype) / observed.sum(0).clamp(min=1)  # (M, n): mean over modalities
    cell_entropy = (weight * entropy).sum(0)
    cell_log_density = (weight * log_density / n_latent).sum(0)
    probabilities = (weight.unsqueeze(-1) * posterior).sum(0)  # (n, K)
    confidence, label = probabilities.max(dim=-1)
    mass = torch.zeros(n_components, dtype=log_joint.dtype).index_add(0, label, confidence)
    criterion = beta * cell_entropy.mean() - cell_log_density.mean()
    return _Step(float(criterion), probabilities, mass)


@torch.no_grad()
def select_clusters(log_weights: Tensor, means: Tensor, z: Tensor, observed: Tensor, *,
                    beta: float = 1.0, prune: bool = True) -> ClusterSelection:
    """Prune a Gaussian-mixture prior's components to the number of clusters in the data.

    Parameters
    ----------
    log_weights
        ``(K,)`` unnormalised log mixture weights (CMVAE's ``cluster_logits``).
    means
        ``(K, d)`` component means; every component has unit variance.
    z
        ``(M, n, d)``: each cell's shared latent under each modality's encoder.
    observed
        ``(M, n)`` boolean: which modalities each cell has (the rest of ``z`` is ignored).
    beta
        Weight of the entropy against the log-density (the objective's ``β``, 1 in omnivae).
    prune
        ``False`` keeps every component: the cells' ``q(c | z)`` and labels under the full
        prior (``criterion`` then holds its one value and ``pruned`` is empty).

    Returns
    -------
    ClusterSelection

    Examples
    --------
    Two components hold the cells; a third, far away, holds none and is pruned:

    >>> import torch
    >>> means = torch.tensor([[-4.0], [4.0], [40.0]])
    >>> z = torch.tensor([[[-4.1], [-3.9], [3.8], [4.2]]])   # one modality, four cells
    >>> result = select_clusters(torch.zeros(3), means, z, torch.ones(1, 4, dtype=torch.bool))
    >>> result.kept, result.labels.tolist()
    ((0, 1), [0, 0, 1, 1])
    """
    n_components = means.shape[0]
    if z.dim() != 3 or z.shape[-1] != means.shape[1] or observed.shape != z.shape[:2]:
        raise ValueError(
            f"select_clusters needs z of shape (M, n, {means.shape[1]}) and observed of shape "
            f"(M, n); got z {tuple(z.shape)} and observed {tuple(observed.shape)}.")
    if not bool(observed.any(0).all()):
        raise ValueError("Every cell needs at least one observed modality to be clustered.")
    log_likelihood = gaussian_log_prob(z.unsqueeze(-2), means, torch.zeros_like(means))
    active = torch.ones(n_components, dtype=torch.bool)
    step = _evaluate(log_weights, log_likelihood, observed, active, means.shape[1], beta)
    criteria, pruned = [step.criterion], []
    best_active, best = active.clone(), step
    for _ in range(n_components - 1 if prune else 0):
        mass = step.mass.masked_fill(~active, math.inf)
        drop = int(torch.argmin(mass))
        active[drop] = False
        pruned.append(drop)
        step = _evaluate(log_weights, log_likelihood, observed, active, means.shape[1], beta)
        criteria.append(step.criterion)
        if int(active.sum()) > 1 and step.criterion < best.criterion:
            best_active, best = active.clone(), step
    kept = torch.nonzero(best_active).flatten()
    probabilities = best.probabilities[:, kept]
    labels = kept[probabilities.argmax(dim=-1)]
    return ClusterSelection(tuple(kept.tolist()), tuple(pruned), tuple(criteria),
                            probabilities, labels)
