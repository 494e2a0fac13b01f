"""The generic multimodal ELBO over any fusion's mixture (the pre-family default objective).

For the mixture ``q(z | X_O) = Σ_k w_k q_k`` of the chosen fusion (``poe``: one product of
all observed experts; ``moe``: the unimodal posteriors; ``mopoe``: the products over every
non-empty subset), every component a cell has is sampled once (stratified) and::

    L(x) = Σ_k w_k [ Σ_{m ∈ O} -log p(x_m | z_k, s)  +  β · KL(q_k || p) ],   z_k ~ q_k

For one component (``poe``) this is the usual joint ELBO; for mixtures the mixture's KL is
replaced by the mean of its components' KLs (Jensen), still a lower bound of log p(x_O).
``model="elbo"`` takes any ``fusion``; it is what ``omnivae.Model(fusion=...)`` trains when no
``model`` is named and what models saved before the family existed load as.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omnivae._types import BatchData, Gaussian
from omnivae.fusion import fuse, product_of_experts
from omnivae.models.base import Objective, ObjectiveOutput, decode_nll

if TYPE_CHECKING:
    from omnivae.module import MultimodalVAE


class MixtureELBO(Objective):
    """Stratified ELBO over the components of the configured fusion (see module docstring)."""

    name = "elbo"

    def loss(self, vae: MultimodalVAE, batch: BatchData, kl_weight: float) -> ObjectiveOutput:
        loc, logvar = vae.experts(batch)  # (M, n, d)
        mixture = fuse(loc, logvar, batch.mask, self.fusion)
        comp, cell = (mixture.weights > 0).nonzero(as_tuple=True)  # (P,) component/cell pairs
        weight = mixture.weights[comp, cell]
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
