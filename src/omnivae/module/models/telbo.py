"""TELBO: the triple ELBO of a joint encoder and unimodal encoders.

Vedantam, Fischer, Huang & Murphy (2018), "Generative Models of Visually Grounded
Imagination", ICLR.

A joint encoder ``q(z | X)`` (:class:`~omnivae.module.models.concat_encoder.ConcatEncoder`) and the
shared unimodal encoders ``q_m = p(z) q~_m`` (:mod:`omnivae.module.fusion`) share the count decoders.
The objective maximised is the sum of one joint and ``M`` unimodal ELBOs::

    L(X) = E_{q(z|X)}[ Σ_m log p(x_m | z) ] - β KL(q(z|X) || p(z))
           + Σ_m ( E_{q_m}[ log p(x_m | z) ]_{decoder fixed} - β KL(q_m || p(z)) )

where, as in the paper, the unimodal terms train only the unimodal encoders: the decoders
are evaluated with their parameters detached there, so the joint term alone shapes them
(MultiVae instead trains the two parts in successive stages). The likelihood weights
``λ`` of the paper are 1.

Missing modalities: the joint term needs every modality and is computed for complete cells
only; every unimodal term is computed for every cell that has the modality. Inference as in
JMVAE: the joint encoder for complete cells, the product of unimodal experts otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from omnivae.module.fusion import Mixture, product_of_experts
from omnivae.module.models.base import (
    Objective,
    ObjectiveOutput,
    decode_nll,
    modality_nll,
    observed_rows,
    single,
)
from omnivae.module.models.concat_encoder import concat_encoder
from omnivae.module.models.jmvae import joint_or_subset_posterior
from omnivae.module.records import BatchData, Gaussian

if TYPE_CHECKING:
    from omnivae.module.vae import ModuleConfig, MultimodalVAE


class TELBO(Objective):
    """Triple-ELBO objective (see module docstring)."""

    name = "telbo"
    fusions = ("poe",)

    def __init__(self, config: ModuleConfig) -> None:
        super().__init__(config)
        self.joint_encoder = concat_encoder(config)

    def loss(self, vae: MultimodalVAE, batch: BatchData, kl_weight: float) -> ObjectiveOutput:
        mask, n = batch.mask, batch.n_cells
        loc, logvar = vae.experts(batch)
        complete = mask.all(dim=1).nonzero(as_tuple=True)[0]
        subset = product_of_experts(loc, logvar, mask)
        embedding = single(subset)
        nll_total, kl_total = loc.new_zeros(()), loc.new_zeros(())
        reconstruction: dict[str, Tensor] = {}
        kl_joint = loc.new_zeros(())
        if complete.numel():
            full = self.joint_encoder(batch)
            is_complete = mask.all(dim=1, keepdim=True)
            embedding = single(Gaussian(torch.where(is_complete, full.loc, subset.loc),
                                        torch.where(is_complete, full.logvar, subset.logvar)))
            q = Gaussian(full.loc[complete], full.logvar[complete])
            z = self.rsample(q)
            nll, per_modality = decode_nll(vae, z, complete, batch, mask[complete])
            kl = vae.prior.kl(q, z)
            nll_total, kl_total = nll.sum(), kl.sum()
            kl_joint = kl.sum() / n
            reconstruction = {k: v.mean() for k, v in per_modality.items()}
        eye = torch.eye(mask.shape[1], dtype=torch.bool, device=mask.device)
        unimodal = product_of_experts(loc, logvar, eye.unsqueeze(1) & mask.unsqueeze(0))
        for m, name in enumerate(self.config.names):
            rows = observed_rows(mask, m)
            if rows.numel() == 0:
                reconstruction.setdefault(name, loc.new_zeros(()))
                continue
            q_m = Gaussian(unimodal.loc[m, rows], unimodal.logvar[m, rows])
            z_m = self.rsample(q_m)
            nll_m = modality_nll(vae, name, z_m, rows, batch, frozen=True)
            nll_total = nll_total + nll_m.sum()
            kl_total = kl_total + vae.prior.kl(q_m, z_m).sum()
            reconstruction.setdefault(name, nll_m.mean())
        return ObjectiveOutput(
            loss=(nll_total + kl_weight * kl_total) / n,
            reconstruction={k: reconstruction[k] for k in self.config.names}, kl=kl_joint,
            elbo=(nll_total + kl_total) / n, embedding=embedding, joint=subset,
        )

    def posterior(self, vae: MultimodalVAE, batch: BatchData) -> Mixture:
        return joint_or_subset_posterior(vae, self.joint_encoder, batch)
