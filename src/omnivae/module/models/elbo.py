"""The generic multimodal ELBO over any fusion's mixture (the pre-family default objective).

For the mixture ``q(z | X_O) = Σ_k w_k q_k`` of the chosen fusion (``poe``: one product of
all observed experts; ``moe``: the unimodal posteriors; ``mopoe``: the products over every
non-empty subset) the objective is::

    L(x) = Σ_k w_k ℓ_k,   ℓ_k = Σ_{m ∈ O} -log p(x_m | z_k, s)  +  β · KL(q_k || p),   z_k ~ q_k

For one component (``poe``) this is the usual joint ELBO; for mixtures the mixture's KL is
replaced by the mean of its components' KLs (Jensen), still a lower bound of log p(x_O).
``model="elbo"`` takes any ``fusion``; it is what ``omnivae.Model(fusion=...)`` trains when no
``model`` is named and what models saved before the family existed load as.

Two Monte Carlo estimators of the sum over components (``mixture_sampling``):

* ``"stratified"``: every component a cell has is sampled once and the terms are weighted,
  ``L̂ = Σ_k w_k ℓ_k(z_k)``. Each cell is decoded once per component (``2^M - 1`` times for
  MoPoE with ``M`` modalities: three times with two), so the decoders and likelihoods cost
  that many times a single-posterior VAE's.
* ``"one"``: each cell draws one component ``k ~ Categorical(w)`` (over the components it
  has: missing modalities already have weight 0) and ``L̂ = ℓ_k(z_k)``. Since
  ``E_k[ℓ_k] = Σ_k w_k ℓ_k`` this is an unbiased estimate of the same objective (and of its
  gradient) at the cost of one decoding per cell, as in the MoPoE paper's implementation.
  The price is variance: the spread of ``ℓ_k`` across components is added to the sampling
  noise of ``z``; averaged over a minibatch of hundreds of cells it is small beside the
  minibatch noise SGD already has.

``"one"`` is used only while the module is training (``vae.train()``); in evaluation mode
(validation losses, early stopping, ``history``'s validation columns) the stratified
estimator is used whatever the option, so losses stay comparable and low-variance. With a
single component (``poe``) both estimators are the same computation and draw the same noise.
Objectives that evaluate every component by construction (``mmvae``'s stratified IWAE/DReG
bound, ``mmvae+``, ``cmvae``) do not take ``"one"`` (see
:attr:`~omnivae.module.models.base.Objective.samples_one_component`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from omnivae.module.fusion import Mixture, fuse, product_of_experts
from omnivae.module.models.base import Objective, ObjectiveOutput, decode_nll
from omnivae.module.records import BatchData, Gaussian, check_choice

if TYPE_CHECKING:
    from omnivae.module.vae import MultimodalVAE


MIXTURE_SAMPLINGS: tuple[str, ...] = ("stratified", "one")
# What new models train with: "one" is faster per epoch but scored lower in every seed pair
# measured (benchmarks/results/mixture_sampling.md), so it is the opt-in fast path.
DEFAULT_MIXTURE_SAMPLING = "stratified"


@dataclass(frozen=True)
class MixtureOptions:
    """Options of the mixture ELBOs (``model="elbo"`` and ``"mopoe"``).

    Parameters
    ----------
    mixture_sampling
        ``"stratified"`` (every component of every cell) or ``"one"`` (one component per
        cell drawn from the mixture weights); see the module documentation.

    Examples
    --------
    >>> MixtureOptions("one")
    MixtureOptions(mixture_sampling='one')
    """

    mixture_sampling: str = DEFAULT_MIXTURE_SAMPLING

    def __post_init__(self) -> None:
        check_choice(self.mixture_sampling, MIXTURE_SAMPLINGS, "mixture_sampling")


def sample_components(weights: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One component per cell drawn from the mixture weights ``(K, n)``; shape ``(n,)``.

    Components of weight 0 (those needing a modality the cell lacks) are never drawn. Every
    cell must have a component of positive weight.

    Examples
    --------
    >>> import torch
    >>> w = torch.tensor([[0.5, 0.0], [0.0, 0.0], [0.5, 1.0]])  # cell 1 has component 2 only
    >>> k = sample_components(w, torch.Generator().manual_seed(0))
    >>> k.shape, int(k[1])
    (torch.Size([2]), 2)
    """
    return torch.multinomial(weights.T, 1, generator=generator).squeeze(1)


class MixtureELBO(Objective):
    """ELBO over the components of the configured fusion (see module docstring)."""

    name = "elbo"
    samples_one_component = True
    options_class: ClassVar[type] = MixtureOptions

    def draw_components(self, weights: Tensor) -> Tensor:
        """The component each cell uses under ``mixture_sampling="one"`` (tests may fix it)."""
        return sample_components(weights)

    def terms(self, mixture: Mixture) -> tuple[Tensor, Tensor, Tensor]:
        """The ``(component, cell, weight)`` rows ``(P,)`` the estimator decodes."""
        weights = mixture.weights  # (K, n)
        if (self.training and self.options.mixture_sampling == "one"
                and weights.shape[0] > 1):
            comp = self.draw_components(weights)  # (n,); every cell has a component
            cell = torch.arange(weights.shape[1], device=weights.device)
            return comp, cell, weights.new_ones(cell.shape)
        comp, cell = (weights > 0).nonzero(as_tuple=True)  # every component of every cell
        return comp, cell, weights[comp, cell]

    def loss(self, vae: MultimodalVAE, batch: BatchData, kl_weight: float) -> ObjectiveOutput:
        loc, logvar = vae.experts(batch)  # (M, n, d)
        mixture = fuse(loc, logvar, batch.mask, self.fusion)
        comp, cell, weight = self.terms(mixture)  # (P,) each
        q = Gaussian(mixture.components.loc[comp, cell], mixture.components.logvar[comp, cell])
        z = self.rsample(q)  # (P, d)
        kl = vae.prior.kl(q, z)  # (P,)
        nll, per_modality = decode_nll(vae, z, cell, batch, batch.mask[cell])
        n = batch.n_cells
        reconstruction = {
            name: (weight * v).sum() / batch.mask[:, m].sum().clamp(min=1)
            for m, (name, v) in enumerate(per_modality.items())
        }
        kl_mean = (weight * kl).sum() / n
        nll_mean = (weight * nll).sum() / n
        return ObjectiveOutput(
            loss=nll_mean + kl_weight * kl_mean, reconstruction=reconstruction, kl=kl_mean,
            elbo=nll_mean + kl_mean, embedding=mixture,
            joint=product_of_experts(loc, logvar, batch.mask),
        )
