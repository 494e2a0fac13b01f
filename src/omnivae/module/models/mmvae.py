"""MMVAE: mixture of experts, stratified importance-weighted bound, IWAE or DReG gradients.

Shi, Siddharth, Paige & Torr (2019), "Variational Mixture-of-Experts Autoencoders for
Multi-Modal Deep Generative Models", NeurIPS (Eq. 4; DReG: Tucker et al. 2019).

The joint posterior is the uniform mixture of the unimodal posteriors of the observed
modalities ``O``, ``q(z | X_O) = (1/|O|) Σ_{m ∈ O} q_m(z | x_m)`` with
``q_m = p(z) q~_m`` (:mod:`omnivae.module.fusion`). Sampling is stratified: ``K`` draws from every
``q_m``, and the objective maximised is::

    L(X_O) = (1/|O|) Σ_{m ∈ O} E_{z^{1..K} ~ q_m} [ log (1/K) Σ_k exp lw(z^k) ],
    lw(z)  = Σ_{n ∈ O} log p(x_n | z) + β ( log p(z) - log q(z | X_O) )

(β = 1 is the paper's bound; β < 1 only during KL warm-up). ``estimator="dreg"`` (the paper's
choice) computes the same value but differentiates the doubly-reparameterised surrogate:
``q``'s parameters are detached inside ``lw`` and the path gradient through ``z`` is weighted
by the squared normalised weights ``w~_k²``; ``"iwae"`` differentiates the bound directly;
``"elbo"`` is ``K``-sample stratified ELBO (no importance weighting).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from omnivae.module.fusion import Mixture, fuse, product_of_experts
from omnivae.module.models.base import Objective, ObjectiveOutput, decode_nll
from omnivae.module.nn import take
from omnivae.module.priors import gaussian_log_prob
from omnivae.module.records import BatchData, Gaussian, check_choice

if TYPE_CHECKING:
    from omnivae.module.vae import MultimodalVAE

ESTIMATORS = ("dreg", "iwae", "elbo")


@dataclass(frozen=True)
class MMVAEOptions:
    """Options of MMVAE.

    Parameters
    ----------
    n_samples
        ``K``: importance samples per modality and cell.
    estimator
        ``"dreg"`` (default, as the paper), ``"iwae"`` or ``"elbo"``.
    """

    n_samples: int = 8
    estimator: str = "dreg"

    def __post_init__(self) -> None:
        check_choice(self.estimator, ESTIMATORS, "estimator")
        if self.n_samples < 1:
            raise ValueError(f"n_samples must be at least 1, got {self.n_samples}.")


def log_mixture_density(z: Tensor, mixture: Mixture, cell: Tensor, detach: bool) -> Tensor:
    """``log q(z | X_O)`` of draws ``z`` ``(K, P, d)`` under the mixtures of cells ``cell``
    ``(P,)`` (uniform over each cell's components); ``detach`` stops gradients to ``q``."""
    loc = take(mixture.components.loc, cell, dim=1)  # (M, P, d); repeated cells
    logvar = take(mixture.components.logvar, cell, dim=1)
    if detach:
        loc, logvar = loc.detach(), logvar.detach()
    log_w = torch.log(mixture.weights[:, cell])  # (M, P); -inf where a cell lacks m
    log_q = gaussian_log_prob(z.unsqueeze(1), loc, logvar)  # (K, M, P)
    return torch.logsumexp(log_q + log_w, dim=1)  # (K, P)


def importance_weighted(lw: Tensor, draws: tuple[Tensor, ...],
                        estimator: str) -> tuple[Tensor, Tensor]:
    """``(bound, surrogate)`` per stratum ``(P,)`` from log weights ``lw`` ``(K, P)`` of the
    reparameterised ``draws`` (each ``(K, P, ...)``): the value ``log mean_k exp lw`` and the
    quantity to differentiate (for DReG, ``Σ_k w~_k lw_k`` whose path gradient through the
    draws gets a second factor ``w~_k``)."""
    n_samples = lw.shape[0]
    bound = torch.logsumexp(lw, dim=0) - math.log(n_samples)
    if estimator == "elbo":
        return lw.mean(dim=0), lw.mean(dim=0)
    if estimator == "iwae":
        return bound, bound
    with torch.no_grad():
        normalised = torch.softmax(lw, dim=0)  # (K, P)
    for draw in draws:
        if draw.requires_grad:
            draw.register_hook(lambda grad: normalised.unsqueeze(-1) * grad)
    return bound, (normalised * lw).sum(dim=0)


def bound_value(lw: Tensor, estimator: str) -> Tensor:
    """The bound's value per stratum ``(P,)`` from log weights ``(K, P)`` without gradient
    tricks: the mean for ``elbo``, ``log mean_k exp lw`` for ``iwae`` and ``dreg``."""
    return importance_weighted(lw, (), "elbo" if estimator == "elbo" else "iwae")[0]


class MMVAE(Objective):
    """MMVAE objective (see module docstring)."""

    name = "mmvae"
    fusions = ("moe",)
    options_class = MMVAEOptions

    def loss(self, vae: MultimodalVAE, batch: BatchData, kl_weight: float) -> ObjectiveOutput:
        loc, logvar = vae.experts(batch)
        mixture = fuse(loc, logvar, batch.mask, "moe")
        comp, cell = (mixture.weights > 0).nonzero(as_tuple=True)  # (P,) strata
        weight = mixture.weights[comp, cell]  # 1/|O|
        q = Gaussian(mixture.components.loc[comp, cell], mixture.components.logvar[comp, cell])
        k = self.options.n_samples
        z = self.rsample(q, k)  # (K, P, d)
        p_count = cell.shape[0]
        flat_cells = cell.repeat(k)
        nll, per_modality = decode_nll(vae, z.reshape(k * p_count, -1), flat_cells, batch,
                                       batch.mask[flat_cells])
        log_px = -nll.reshape(k, p_count)
        detach = self.options.estimator == "dreg"
        log_ratio = vae.prior.log_prob(z) - log_mixture_density(z, mixture, cell, detach)
        bound, surrogate = importance_weighted(log_px + kl_weight * log_ratio, (z,),
                                               self.options.estimator)
        with torch.no_grad():
            at_one = log_px + log_ratio
            bound_at_one = bound_value(at_one, self.options.estimator)
        n = batch.n_cells
        reconstruction = {
            name: (weight.repeat(k) * v).sum() / (k * batch.mask[:, m].sum().clamp(min=1))
            for m, (name, v) in enumerate(per_modality.items())
        }
        return ObjectiveOutput(
            loss=-(weight * surrogate).sum() / n, reconstruction=reconstruction,
            kl=-(weight * log_ratio.mean(dim=0)).sum().detach() / n,
            elbo=-(weight * bound_at_one).sum() / n,
            embedding=mixture, joint=product_of_experts(loc, logvar, batch.mask),
            extra={"bound": -(weight * bound).sum().detach() / n},
        )
