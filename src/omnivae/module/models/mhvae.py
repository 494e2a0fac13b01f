"""MHVAE: hierarchical latents with a product of experts at every level.

Dorent, Haouchine, Kogl, Joutard, Juvekar, Torio, Golby, Ourselin, Frisken, Vercauteren,
Kapur & Wells (2023), "Unified Brain MR-Ultrasound Synthesis Using Multi-Modal Hierarchical
Representations", MICCAI (two latent levels here).

Generative model: ``p(z) p(u | z) Π_m p(x_m | z, u)`` with a top latent ``z`` (the module's
prior; the embedding), a bottom latent ``u`` with a learned conditional prior
``p(u | z) = N(μ(z), σ²(z))``, and count decoders reading ``[z, u]``. Inference is a product
of experts at each level, the prior counted once::

    q(z | X_S)    ∝ p(z)     Π_{m ∈ S} q~_m(z | x_m)          (the shared encoders, fusion PoE)
    q(u | z, X_S) ∝ p(u | z) Π_{m ∈ S} q~_m(u | x_m, z)      (bottom experts of this file)

and the objective minimised for a cell with observed modalities ``O`` is::

    L(X_O) = -E_q[ Σ_{m ∈ O} log p(x_m | z, u) ]
             + β ( KL(q(z | X_S) || p(z)) + E_{q(z)} KL(q(u | z, X_S) || p(u | z)) )

where ``S = O`` except that, with probability ``dropout_rate``, a cell with several
modalities is encoded from a random non-empty proper subset of them (the paper's modality
dropout, which teaches synthesis of the rest). Cross-modal prediction encodes both levels
from the other modalities and decodes ``[z, u]``.
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
    decode_nll,
    gaussian_kl,
    make_options,
    observed_rows,
    random_proper_subsets,
    single,
)
from omnivae.module.models.nexus import GaussianHead
from omnivae.module.records import BatchData, Gaussian

if TYPE_CHECKING:
    from omnivae.module.vae import ModuleConfig, MultimodalVAE


@dataclass(frozen=True)
class MHVAEOptions:
    """Options of MHVAE.

    Parameters
    ----------
    n_bottom
        Size of the bottom latent ``u``.
    dropout_rate
        Probability of encoding a cell from a random proper subset of its modalities.
    """

    n_bottom: int = 8
    dropout_rate: float = 0.2


class BottomExpert(nn.Module):
    """``q~_m(u | x_m, z)``: a Gaussian expert from normalised counts and the top latent."""

    library_scale: Tensor

    def __init__(self, n_features: int, n_latent: int, n_bottom: int, n_hidden: int,
                 library_scale: float) -> None:
        super().__init__()
        self.head = GaussianHead(n_features + n_latent, n_bottom, n_hidden)
        self.register_buffer("library_scale", torch.tensor(float(library_scale)))

    def forward(self, counts: Tensor, library: Tensor, z: Tensor) -> Gaussian:
        x = torch.log1p(counts * (self.library_scale / library.clamp(min=1.0)))
        return self.head(torch.cat([x, z], dim=-1))


def product_with_prior(prior: Gaussian, loc: Tensor, logvar: Tensor, experts: Tensor) -> Gaussian:
    """Gaussian product of ``prior`` ``(n, d)`` and the selected experts ``(M, n, d)``
    (``experts`` ``(n, M)``; unselected ones contribute exactly nothing)."""
    chosen = experts.T.unsqueeze(-1)
    precision = torch.where(chosen, torch.exp(-logvar), torch.zeros_like(logvar))
    prior_precision = torch.exp(-prior.logvar)
    total = prior_precision + precision.sum(dim=0)
    mean = (prior_precision * prior.loc + (precision * loc).sum(dim=0)) / total
    return Gaussian(mean, -torch.log(total))


class MHVAE(Objective):
    """MHVAE objective (see module docstring)."""

    name = "mhvae"
    fusions = ("poe",)
    options_class = MHVAEOptions

    def __init__(self, config: ModuleConfig) -> None:
        super().__init__(config)
        c, b = config, self.options.n_bottom
        self.bottom_experts = nn.ModuleDict({
            s.name: BottomExpert(s.n_features, c.n_latent, b, c.n_hidden, s.library_scale)
            for s in c.modalities
        })
        self.bottom_prior = GaussianHead(c.n_latent, b, c.n_hidden)

    @classmethod
    def decoder_latent_dim(cls, config: ModuleConfig) -> int:
        options = make_options(cls.options_class, dict(config.model_options), cls.name)
        return config.n_latent + options.n_bottom

    def _bottom(self, batch: BatchData, z: Tensor, experts: Tensor) -> tuple[Gaussian, Gaussian]:
        """``(q(u | z, X_S), p(u | z))`` for top latents ``z`` ``(n, d)``."""
        prior = self.bottom_prior(z)
        loc = z.new_zeros((len(self.config.names), z.shape[0], self.options.n_bottom))
        logvar = torch.zeros_like(loc)
        for m, name in enumerate(self.config.names):
            rows = observed_rows(experts, m)
            if rows.numel():
                q = self.bottom_experts[name](batch.counts[name][rows], batch.library[name][rows],
                                              z[rows])
                loc = loc.index_put((torch.full_like(rows, m), rows), q.loc)
                logvar = logvar.index_put((torch.full_like(rows, m), rows), q.logvar)
        return product_with_prior(prior, loc, logvar, experts), prior

    def loss(self, vae: MultimodalVAE, batch: BatchData, kl_weight: float) -> ObjectiveOutput:
        mask = batch.mask
        inputs = random_proper_subsets(mask, self.options.dropout_rate if self.training else 0.0)
        loc, logvar = vae.experts(batch)
        q_top = product_of_experts(loc, logvar, inputs)
        z = self.rsample(q_top)
        q_bottom, p_bottom = self._bottom(batch, z, inputs)
        u = self.rsample(q_bottom)
        cells = torch.arange(batch.n_cells, device=z.device)
        nll, per_modality = decode_nll(vae, torch.cat([z, u], dim=-1), cells, batch, mask)
        kl_top = vae.prior.kl(q_top, z)
        kl_bottom = gaussian_kl(q_bottom, p_bottom)
        kl = kl_top + kl_bottom
        reconstruction = {
            name: v.sum() / mask[:, m].sum().clamp(min=1)
            for m, (name, v) in enumerate(per_modality.items())
        }
        return ObjectiveOutput(
            loss=(nll + kl_weight * kl).mean(), reconstruction=reconstruction, kl=kl.mean(),
            elbo=(nll + kl).mean(), embedding=single(q_top), joint=q_top,
            extra={"kl_bottom": kl_bottom.mean().detach()},
        )

    def decoder_input(self, vae: MultimodalVAE, batch: BatchData, z: Tensor, target: str,
                      sample: bool, generator: torch.Generator | None = None) -> Tensor:
        q_bottom, _ = self._bottom(batch, z, batch.mask)
        u = q_bottom.loc
        if sample:
            u = u + q_bottom.scale * torch.randn(u.shape, generator=generator, device=u.device,
                                                 dtype=u.dtype)
        return torch.cat([z, u], dim=-1)
