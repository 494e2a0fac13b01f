"""MVTCAE: product of experts trained with the total-correlation objective.

Hwang, Kim, Park & Kim (2021), "Multi-View Representation Learning via Total Correlation
Objective", NeurIPS (weights as in the authors' implementation).

With the joint posterior ``q(z | X_O) = p(z) Π_{m ∈ O} q~_m`` and the unimodal posteriors
``q_m = p(z) q~_m`` (:mod:`omnivae.module.fusion`), the objective minimised for a cell with
``M_O = |O|`` observed modalities is::

    L(X_O) = (M_O - α)/M_O · Σ_{m ∈ O} -E_{q(z|X_O)}[ log p(x_m | z) ]
             + β · [ (1 - α) · KL(q(z|X_O) || p(z)) + (α / M_O) · Σ_{m ∈ O} KL(q(z|X_O) || q_m) ]

The conditional-VIB terms ``KL(q(z|X) || q_m)`` bound the total correlation the paper
maximises; the first KL is the joint VIB term. ``β`` is multiplied by the KL warm-up weight.
Missing modalities drop out of ``O`` (the paper's ``M`` becomes the cell's ``M_O``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from omnivae.module.fusion import product_of_experts
from omnivae.module.models.base import Objective, ObjectiveOutput, decode_nll, gaussian_kl, single
from omnivae.module.records import BatchData

if TYPE_CHECKING:
    from omnivae.module.vae import MultimodalVAE


@dataclass(frozen=True)
class MVTCAEOptions:
    """Options of MVTCAE.

    Parameters
    ----------
    alpha
        Weight in [0, 1] of the conditional-VIB (total-correlation) terms against the joint VIB.
    beta
        Weight of all KL terms.
    """

    alpha: float = 0.9
    beta: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"MVTCAE alpha must be in [0, 1], got {self.alpha}.")


class MVTCAE(Objective):
    """MVTCAE objective (see module docstring)."""

    name = "mvtcae"
    fusions = ("poe",)
    options_class = MVTCAEOptions

    def loss(self, vae: MultimodalVAE, batch: BatchData, kl_weight: float) -> ObjectiveOutput:
        alpha, beta = self.options.alpha, self.options.beta
        loc, logvar = vae.experts(batch)  # (M, n, d)
        mask = batch.mask
        joint = product_of_experts(loc, logvar, mask)  # (n, d)
        z = self.rsample(joint)
        cells = torch.arange(batch.n_cells, device=z.device)
        nll, per_modality = decode_nll(vae, z, cells, batch, mask)
        kl_prior = vae.prior.kl(joint, z)  # (n,)
        eye = torch.eye(mask.shape[1], dtype=torch.bool, device=mask.device)
        unimodal = product_of_experts(loc, logvar, eye.unsqueeze(1) & mask.unsqueeze(0))
        kl_unimodal = gaussian_kl(joint, unimodal)  # (M, n) vs each q_m
        kl_unimodal = torch.where(mask.T, kl_unimodal, torch.zeros_like(kl_unimodal)).sum(0)
        n_obs = mask.sum(dim=1).to(z.dtype)
        kl = (1.0 - alpha) * kl_prior + alpha / n_obs * kl_unimodal
        rec = (n_obs - alpha) / n_obs * nll
        n = batch.n_cells
        reconstruction = {
            name: v.sum() / mask[:, m].sum().clamp(min=1)
            for m, (name, v) in enumerate(per_modality.items())
        }
        return ObjectiveOutput(
            loss=(rec + kl_weight * beta * kl).sum() / n, reconstruction=reconstruction,
            kl=kl.sum() / n, elbo=(rec + beta * kl).sum() / n, embedding=single(joint),
            joint=joint, extra={"kl_prior": kl_prior.mean().detach(),
                                "kl_unimodal": kl_unimodal.mean().detach()},
        )
