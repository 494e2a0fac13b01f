"""MMVAE+: mixture of experts with shared and modality-specific latents and auxiliary priors.

Palumbo, Daunhawer & Vogt (2023), "MMVAE+: Enhancing the Generative Quality of Multimodal VAEs
without Compromises", ICLR (Eq. 5, with the IWAE/DReG estimator of MMVAE).

Each modality has a shared-latent expert ``q_m(z | x_m) = p(z) q~_m`` (the shared encoders and
:mod:`omnivae.module.fusion`) and a private latent ``w_m`` with its own encoder ``q(w_m | x_m)``;
decoders read ``[z, w_m]``. An auxiliary prior ``r_n(w_n) = N(0, diag σ_n²)`` (σ learned)
stands in for the private latent of every modality ``n`` that is *not* the one encoded, so
the shared ``z`` alone must carry what other modalities need. With ``K`` stratified draws
from every observed modality ``m ∈ O``::

    L(X_O) = (1/|O|) Σ_{m ∈ O} E [ log (1/K) Σ_k exp lw_m^k ],
    lw_m   = log p(x_m | z, w_m) + Σ_{n ∈ O, n ≠ m} log p(x_n | z, w~_n)
             + β ( log p(z) + log p(w_m) - log q(z | X_O) - log q(w_m | x_m) ),
    z ~ q_m(z | x_m),  w_m ~ q(w_m | x_m),  w~_n ~ r_n(w_n),
    q(z | X_O) = (1/|O|) Σ_{m' ∈ O} q_{m'}(z | x_{m'}),  p(w_m) = N(0, I).

Gaussian posteriors and priors are used where the paper uses Laplace ones. Cross-modal
prediction decodes ``[z, w]`` with ``z`` from the other modalities and ``w`` the auxiliary
prior's mean (or draws from it when sampling); the embedding is the shared ``z``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from omnivae.module.fusion import fuse, product_of_experts
from omnivae.module.models.base import Objective, ObjectiveOutput, make_options, modality_nll
from omnivae.module.models.dmvae import prior_padding, private_encoders
from omnivae.module.models.mmvae import (
    ESTIMATORS,
    bound_value,
    importance_weighted,
    log_mixture_density,
)
from omnivae.module.priors import gaussian_log_prob
from omnivae.module.records import BatchData, Gaussian, check_choice

if TYPE_CHECKING:
    from omnivae.module.vae import ModuleConfig, MultimodalVAE


@dataclass(frozen=True)
class MMVAEPlusOptions:
    """Options of MMVAE+.

    Parameters
    ----------
    n_private
        Size of each modality-specific latent ``w_m``.
    n_samples, estimator
        As in :class:`~omnivae.module.models.mmvae.MMVAEOptions`.
    """

    n_private: int = 4
    n_samples: int = 8
    estimator: str = "dreg"

    def __post_init__(self) -> None:
        check_choice(self.estimator, ESTIMATORS, "estimator")
        if self.n_private < 1 or self.n_samples < 1:
            raise ValueError("MMVAE+ needs n_private >= 1 and n_samples >= 1.")


class MMVAEPlus(Objective):
    """MMVAE+ objective (see module docstring)."""

    name = "mmvae+"
    fusions = ("moe",)
    options_class = MMVAEPlusOptions

    def __init__(self, config: ModuleConfig) -> None:
        super().__init__(config)
        c, d_w = config, self.options.n_private
        self.private_encoders = private_encoders(c, d_w)
        self.auxiliary_log_scale = nn.Parameter(torch.zeros(len(c.modalities), d_w))

    @classmethod
    def decoder_latent_dim(cls, config: ModuleConfig) -> int:
        options = make_options(cls.options_class, dict(config.model_options), cls.name)
        return config.n_latent + options.n_private

    def _private_posterior(self, batch: BatchData, comp: Tensor, cell: Tensor) -> Gaussian:
        """``q(w_m | x_m)`` of every stratum ``(m, cell)`` ``(P, d_w)``."""
        loc = batch.mask.new_zeros((cell.shape[0], self.options.n_private), dtype=torch.float32)
        logvar = torch.zeros_like(loc)
        for m, name in enumerate(self.config.names):
            rows = (comp == m).nonzero(as_tuple=True)[0]
            if rows.numel():
                cells = cell[rows]
                sub_loc, sub_logvar = self.private_encoders[name](
                    batch.counts[name][cells], batch.library[name][cells])
                loc = loc.to(sub_loc.dtype).index_put((rows,), sub_loc)
                logvar = logvar.to(sub_loc.dtype).index_put((rows,), sub_logvar)
        return Gaussian(loc, logvar)

    def loss(self, vae: MultimodalVAE, batch: BatchData, kl_weight: float) -> ObjectiveOutput:
        loc, logvar = vae.experts(batch)
        mixture = fuse(loc, logvar, batch.mask, "moe")
        comp, cell = (mixture.weights > 0).nonzero(as_tuple=True)  # (P,) strata
        weight = mixture.weights[comp, cell]
        k, p_count, names = self.options.n_samples, cell.shape[0], self.config.names
        q_z = Gaussian(mixture.components.loc[comp, cell], mixture.components.logvar[comp, cell])
        q_w = self._private_posterior(batch, comp, cell)
        z, w = self.rsample(q_z, k), self.rsample(q_w, k)  # (K, P, d), (K, P, d_w)
        log_px = z.new_zeros((k, p_count))
        reconstruction: dict[str, Tensor] = {}
        for n_idx, name in enumerate(names):
            rows = batch.mask[cell, n_idx].nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                reconstruction[name] = z.new_zeros(())
                continue
            scale = torch.exp(self.auxiliary_log_scale[n_idx])
            auxiliary = scale * self.noise((k, rows.numel(), self.options.n_private), z)
            own = (comp[rows] == n_idx).view(1, -1, 1)
            w_n = torch.where(own, w[:, rows], auxiliary)
            inputs = torch.cat([z[:, rows], w_n], dim=-1).reshape(k * rows.numel(), -1)
            nll = modality_nll(vae, name, inputs, cell[rows].repeat(k), batch).view(k, -1)
            log_px = log_px.index_add(1, rows, -nll)
            reconstruction[name] = ((weight[rows] * nll.mean(dim=0)).sum()
                                    / batch.mask[:, n_idx].sum().clamp(min=1))
        detach = self.options.estimator == "dreg"
        w_loc, w_logvar = (q_w.loc.detach(), q_w.logvar.detach()) if detach else (q_w.loc,
                                                                                  q_w.logvar)
        log_ratio = (self.log_prior_shared(vae, z)
                     + gaussian_log_prob(w, torch.zeros_like(w), torch.zeros_like(w))
                     - log_mixture_density(z, mixture, cell, detach)
                     - gaussian_log_prob(w, w_loc, w_logvar))
        bound, surrogate = importance_weighted(log_px + kl_weight * log_ratio, (z, w),
                                               self.options.estimator)
        with torch.no_grad():
            at_one = log_px + log_ratio
            bound_at_one = bound_value(at_one, self.options.estimator)
        n = batch.n_cells
        return ObjectiveOutput(
            loss=-(weight * surrogate).sum() / n, reconstruction=reconstruction,
            kl=-(weight * log_ratio.mean(dim=0)).sum().detach() / n,
            elbo=-(weight * bound_at_one).sum() / n, embedding=mixture,
            joint=product_of_experts(loc, logvar, batch.mask),
            extra={"bound": -(weight * bound).sum().detach() / n},
        )

    def log_prior_shared(self, vae: MultimodalVAE, z: Tensor) -> Tensor:
        """``log p(z)`` of the shared latent (the module's prior)."""
        return vae.prior.log_prob(z)

    def decoder_input(self, vae: MultimodalVAE, batch: BatchData, z: Tensor, target: str,
                      sample: bool, generator: torch.Generator | None = None) -> Tensor:
        scale = torch.exp(self.auxiliary_log_scale[self.config.names.index(target)])
        return prior_padding(z, self.options.n_private, scale, sample, generator)
