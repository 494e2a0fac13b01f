"""CRMVAE: product of experts with coordinated unimodal reconstruction and KL terms.

Suzuki & Matsuo (2023), "Mitigating the Limitations of Multimodal VAEs with Coordination-Based
Approach" (weights as in MultiVae's implementation).

With the joint posterior ``q(z | X_O) = p(z) Π_{m ∈ O} q~_m`` and unimodal posteriors
``q_m = p(z) q~_m`` (:mod:`omnivae.module.fusion`), the objective minimised for a cell with observed
modalities ``O`` (``M`` modalities in the model) is::

    L(X_O) = 1/(2(M+1)) Σ_{m ∈ O} ( -E_{q(z|X_O)}[log p(x_m | z)] - E_{q_m}[log p(x_m | z)] )
             + β/(M+1) · ( KL(q(z|X_O) || p(z)) + Σ_{m ∈ O} KL(q(z|X_O) || q_m) )

Each unimodal posterior must reconstruct its own modality on its own, and the joint
posterior is pulled towards every unimodal one, which coordinates the unimodal encoders with
the product. Missing modalities drop out of ``O``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from omnivae.module.fusion import product_of_experts
from omnivae.module.models.base import (
    Objective,
    ObjectiveOutput,
    decode_nll,
    gaussian_kl,
    modality_nll,
    observed_rows,
    single,
)
from omnivae.module.records import BatchData, Gaussian

if TYPE_CHECKING:
    from omnivae.module.vae import MultimodalVAE


@dataclass(frozen=True)
class CRMVAEOptions:
    """Options of CRMVAE.

    Parameters
    ----------
    beta
        Weight of the KL terms.
    """

    beta: float = 1.0


class CRMVAE(Objective):
    """CRMVAE objective (see module docstring)."""

    name = "crmvae"
    fusions = ("poe",)
    options_class = CRMVAEOptions

    def loss(self, vae: MultimodalVAE, batch: BatchData, kl_weight: float) -> ObjectiveOutput:
        mask, n_mod = batch.mask, batch.mask.shape[1]
        loc, logvar = vae.experts(batch)
        joint = product_of_experts(loc, logvar, mask)
        z = self.rsample(joint)
        cells = torch.arange(batch.n_cells, device=z.device)
        nll_joint, per_modality = decode_nll(vae, z, cells, batch, mask)
        eye = torch.eye(n_mod, dtype=torch.bool, device=z.device)
        unimodal = product_of_experts(loc, logvar, eye.unsqueeze(1) & mask.unsqueeze(0))
        nll_own = torch.zeros_like(nll_joint)
        for m, name in enumerate(self.config.names):
            rows = observed_rows(mask, m)
            if rows.numel():
                q_m = Gaussian(unimodal.loc[m, rows], unimodal.logvar[m, rows])
                nll_m = modality_nll(vae, name, self.rsample(q_m), rows, batch)
                nll_own = nll_own.index_add(0, rows, nll_m)
        kl_align = torch.where(mask.T, gaussian_kl(joint, unimodal), 0.0).sum(dim=0)
        kl = vae.prior.kl(joint, z) + kl_align
        rec = (nll_joint + nll_own) / (2 * (n_mod + 1))
        kl = self.options.beta * kl / (n_mod + 1)
        reconstruction = {
            name: v.sum() / mask[:, m].sum().clamp(min=1)
            for m, (name, v) in enumerate(per_modality.items())
        }
        return ObjectiveOutput(
            loss=(rec + kl_weight * kl).mean(), reconstruction=reconstruction, kl=kl.mean(),
            elbo=(rec + kl).mean(), embedding=single(joint), joint=joint,
            extra={"nll_unimodal": nll_own.mean().detach()},
        )
