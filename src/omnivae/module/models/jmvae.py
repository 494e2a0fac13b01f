"""JMVAE: a joint encoder plus unimodal encoders aligned to it by KL (JMVAE-kl).

Suzuki, Nakayama & Matsuo (2017), "Joint Multimodal Learning with Deep Generative Models",
ICLR workshop (arXiv:1611.01891), Eq. 5, generalised to M modalities as in MultiVae.

A joint encoder ``q(z | X)`` (:class:`~omnivae.module.models.concat_encoder.ConcatEncoder`) reads all
modalities; the shared per-modality encoders give ``q_m = p(z) q~_m`` (:mod:`omnivae.module.fusion`).
The objective minimised is::

    L(X) = -E_{q(z|X)}[ Σ_m log p(x_m | z) ] + β · [ KL(q(z|X) || p(z)) + α Σ_m KL(q(z|X) || q_m) ]

Missing modalities: the joint encoder needs every modality, so training refuses cells that
lack one (a clear error, see :meth:`Objective.check_training_mask`). Inference handles any
subset: complete cells are embedded by the joint encoder, others by the product of their
unimodal experts ``p(z) Π_{m ∈ O} q~_m`` (for one modality: ``q_m``, the paper's cross-modal
inference), which is also what cross-modal prediction decodes from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from omnivae.module.fusion import Mixture, product_of_experts
from omnivae.module.models.base import Objective, ObjectiveOutput, decode_nll, gaussian_kl, single
from omnivae.module.models.concat_encoder import concat_encoder
from omnivae.module.records import BatchData, Gaussian

if TYPE_CHECKING:
    from omnivae.module.vae import ModuleConfig, MultimodalVAE


@dataclass(frozen=True)
class JMVAEOptions:
    """Options of JMVAE.

    Parameters
    ----------
    alpha
        Weight of the KL terms aligning the unimodal posteriors with the joint one.
    """

    alpha: float = 0.1


class JMVAE(Objective):
    """JMVAE-kl objective (see module docstring)."""

    name = "jmvae"
    fusions = ("poe",)
    options_class = JMVAEOptions
    needs_complete_cells = True

    def __init__(self, config: ModuleConfig) -> None:
        super().__init__(config)
        self.joint_encoder = concat_encoder(config)

    def loss(self, vae: MultimodalVAE, batch: BatchData, kl_weight: float) -> ObjectiveOutput:
        self.check_training_mask(batch.mask)
        loc, logvar = vae.experts(batch)
        joint = self.joint_encoder(batch)
        z = self.rsample(joint)
        cells = torch.arange(batch.n_cells, device=z.device)
        nll, per_modality = decode_nll(vae, z, cells, batch, batch.mask)
        kl_prior = vae.prior.kl(joint, z)
        eye = torch.eye(batch.mask.shape[1], dtype=torch.bool, device=z.device)
        unimodal = product_of_experts(loc, logvar, eye.unsqueeze(1) & batch.mask.unsqueeze(0))
        kl_align = gaussian_kl(joint, unimodal).sum(dim=0)  # Σ_m KL(q(z|X) || q_m)
        kl = kl_prior + self.options.alpha * kl_align
        return ObjectiveOutput(
            loss=(nll + kl_weight * kl).mean(),
            reconstruction={name: v.mean() for name, v in per_modality.items()},
            kl=kl.mean(), elbo=(nll + kl).mean(), embedding=single(joint), joint=joint,
            extra={"kl_prior": kl_prior.mean().detach(), "kl_align": kl_align.mean().detach()},
        )

    def posterior(self, vae: MultimodalVAE, batch: BatchData) -> Mixture:
        return joint_or_subset_posterior(vae, self.joint_encoder, batch)


def joint_or_subset_posterior(vae: MultimodalVAE, joint_encoder: nn.Module,
                              batch: BatchData) -> Mixture:
    """The joint encoder's posterior for cells that have every modality, the product of the
    unimodal experts ``p(z) Π_{m ∈ O} q~_m`` for the others."""
    loc, logvar = vae.experts(batch)
    subset = product_of_experts(loc, logvar, batch.mask)
    complete = batch.mask.all(dim=1, keepdim=True)
    if not bool(complete.any()):
        return single(subset)
    joint = joint_encoder(batch)  # rows of incomplete cells are discarded below
    return single(Gaussian(torch.where(complete, joint.loc, subset.loc),
                           torch.where(complete, joint.logvar, subset.logvar)))
