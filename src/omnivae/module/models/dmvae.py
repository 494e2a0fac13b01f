"""DMVAE: shared and private latents, the shared one a product of experts.

Lee & Pavlovic (2021), "Private-Shared Disentangled Multimodal VAE for Learning of Latent
Representations", CVPR workshops.

Every modality has an expert ``q~_m`` for the shared latent ``z`` (the shared encoders) and a
private latent ``w_m`` with its own encoder ``q(w_m | x_m)``; decoders read ``[z, w_m]``. For
a shared posterior ``q_S = p(z) Π_{m ∈ S} q~_m`` (:mod:`omnivae.module.fusion`) let::

    ELBO_S(X_O) = Σ_{k ∈ O} E_{q_S(z) q(w_k|x_k)}[ log p(x_k | z, w_k) ]
                  - β KL(q_S || p(z)) - Σ_{k ∈ O} KL(q(w_k | x_k) || N(0, I))

The objective maximised is the joint term plus one cross-modal term per observed modality,
each reconstructing *every* observed modality from the shared latent of one::

    L(X_O) = ELBO_O(X_O) + Σ_{m ∈ O} ELBO_{m}(X_O)

(a cell with a single modality has only its joint term, which the unimodal one would repeat).
Prediction of a modality a cell lacks decodes ``[z, w]`` with ``w`` the prior's mean (or
draws from N(0, I) when sampling).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from omnivae.module.fusion import product_of_experts
from omnivae.module.models.base import (
    Objective,
    ObjectiveOutput,
    make_options,
    modality_nll,
    observed_rows,
    single,
)
from omnivae.module.nn import Encoder
from omnivae.module.records import BatchData, Gaussian

if TYPE_CHECKING:
    from omnivae.module.vae import ModuleConfig, MultimodalVAE


@dataclass(frozen=True)
class DMVAEOptions:
    """Options of DMVAE.

    Parameters
    ----------
    n_private
        Size of each modality's private latent.
    beta
        Weight of the shared latent's KL term (the private KLs have weight 1).
    """

    n_private: int = 4
    beta: float = 1.0


def private_encoders(config: ModuleConfig, n_private: int) -> nn.ModuleDict:
    """One :class:`~omnivae.module.nn.Encoder` of size ``n_private`` per modality."""
    c = config
    return nn.ModuleDict({
        s.name: Encoder(s.n_features, n_private, c.n_hidden, c.n_layers, c.dropout,
                        s.library_scale)
        for s in c.modalities
    })


def prior_padding(z: Tensor, n_private: int, scale: Tensor | float, sample: bool,
                  generator: torch.Generator | None) -> Tensor:
    """``[z, w]`` with ``w`` zero (a centred prior's mean) or ``scale * N(0, I)`` draws."""
    w = z.new_zeros((z.shape[0], n_private))
    if sample:
        w = scale * torch.randn(w.shape, generator=generator, device=z.device, dtype=z.dtype)
    return torch.cat([z, w], dim=-1)


class DMVAE(Objective):
    """DMVAE objective (see module docstring)."""

    name = "dmvae"
    fusions = ("poe",)
    options_class = DMVAEOptions

    def __init__(self, config: ModuleConfig) -> None:
        super().__init__(config)
        self.private_encoders = private_encoders(config, self.options.n_private)

    @classmethod
    def decoder_latent_dim(cls, config: ModuleConfig) -> int:
        options = make_options(cls.options_class, dict(config.model_options), cls.name)
        return config.n_latent + options.n_private

    def loss(self, vae: MultimodalVAE, batch: BatchData, kl_weight: float) -> ObjectiveOutput:
        mask, names, n = batch.mask, self.config.names, batch.n_cells
        loc, logvar = vae.experts(batch)
        private: dict[str, tuple[Tensor, Gaussian]] = {}
        kl_private = loc.new_zeros(n)
        for m, name in enumerate(names):
            rows = observed_rows(mask, m)
            if rows.numel():
                q_w = Gaussian(*self.private_encoders[name](batch.counts[name][rows],
                                                            batch.library[name][rows]))
                private[name] = (rows, q_w)
                kl_private = kl_private.index_add(0, rows, q_w.kl_to_standard_normal())
        several = mask.sum(dim=1, keepdim=True) > 1
        eye = torch.eye(mask.shape[1], dtype=torch.bool, device=mask.device)
        terms = [mask] + [mask & eye[m] & several for m in range(mask.shape[1])]
        total = loc.new_zeros(())
        total_at_one = loc.new_zeros(())
        reconstruction: dict[str, Tensor] = {}
        kl_joint = loc.new_zeros(())
        for t, experts in enumerate(terms):
            cells = experts.any(dim=1).nonzero(as_tuple=True)[0]
            if cells.numel() == 0:
                continue
            q = product_of_experts(loc[:, cells], logvar[:, cells], experts[cells])
            z = self.rsample(q)
            kl = self.options.beta * vae.prior.kl(q, z) + kl_private[cells]
            nll = torch.zeros_like(kl)
            for name, (rows, q_w) in private.items():
                pick = torch.isin(rows, cells)  # the term's cells that have this modality
                where = torch.searchsorted(cells, rows[pick])
                if where.numel() == 0:
                    continue
                w = self.rsample(Gaussian(q_w.loc[pick], q_w.logvar[pick]))
                nll_k = modality_nll(vae, name, torch.cat([z[where], w], -1), rows[pick], batch)
                nll = nll.index_add(0, where, nll_k)
                if t == 0:
                    reconstruction[name] = nll_k.sum() / rows.numel()
            total = total + (nll + kl_weight * kl).sum()
            total_at_one = total_at_one + (nll + kl).sum()
            if t == 0:
                kl_joint = kl.sum() / n
        joint = product_of_experts(loc, logvar, mask)
        for name in names:
            reconstruction.setdefault(name, loc.new_zeros(()))
        return ObjectiveOutput(
            loss=total / n, reconstruction={k: reconstruction[k] for k in names}, kl=kl_joint,
            elbo=total_at_one / n, embedding=single(joint), joint=joint,
            extra={"kl_private": kl_private.mean().detach()},
        )

    def decoder_input(self, vae: MultimodalVAE, batch: BatchData, z: Tensor, target: str,
                      sample: bool, generator: torch.Generator | None = None) -> Tensor:
        return prior_padding(z, self.options.n_private, 1.0, sample, generator)
