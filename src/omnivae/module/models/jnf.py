"""JNF: a joint VAE whose unimodal posteriors are normalizing flows fitted to the joint one.

Senellart, Chadebec & Allassonnière (2023), "Improving Multimodal Joint Variational
Autoencoders through Normalizing Flows and Correlation Analysis" (arXiv:2305.11832).

A joint encoder ``q(z | X)`` (:class:`~omnivae.module.models.concat_encoder.ConcatEncoder`) and the
count decoders form a VAE trained by its ELBO. Each modality's unimodal posterior is a
normalizing flow ``q_m(z | x_m)``: the shared encoder's Gaussian ``N(μ_m(x_m), σ_m²(x_m))``
pushed through ``n_flows`` affine coupling layers ``f_m`` (RealNVP); its density is
``log N(f_m^{-1}(z); μ_m, σ_m²) + log |det ∂f_m^{-1}/∂z|``. The unimodal posteriors are fitted
to the joint one by minimising ``KL(q(z|X) || q_m(z|x_m))``, i.e.::

    L(X) = -E_{q(z|X)}[ Σ_m log p(x_m | z) ] + β KL(q(z|X) || p(z))
           - Σ_m E_{z ~ q(z|X)}[ log q_m(sg(z) | x_m) ]

with ``sg`` a stop-gradient: the last term trains only the unimodal encoders and flows, so
the joint VAE sees exactly its ELBO (the paper trains the two parts in successive stages; the
gradients here are the same, in one stage).

Missing modalities: the joint encoder needs every modality, so training refuses cells lacking
one (clear error). Inference: complete cells use the joint encoder; a cell with a subset of
modalities uses its unimodal flow posteriors, each summarised by a Gaussian of matching moments
(``n_moment_samples`` fixed-seed draws), mixed uniformly when it has several.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from omnivae.module.fusion import Mixture
from omnivae.module.models.base import Objective, ObjectiveOutput, decode_nll, observed_rows, single
from omnivae.module.models.concat_encoder import concat_encoder
from omnivae.module.priors import gaussian_log_prob
from omnivae.module.records import BatchData, Gaussian

if TYPE_CHECKING:
    from omnivae.module.vae import ModuleConfig, MultimodalVAE


@dataclass(frozen=True)
class JNFOptions:
    """Options of JNF.

    Parameters
    ----------
    n_flows
        Affine coupling layers per modality.
    n_moment_samples
        Draws used to summarise a flow posterior by a Gaussian at inference.
    """

    n_flows: int = 2
    n_moment_samples: int = 64


class AffineCoupling(nn.Module):
    """``z = m ⊙ z0 + (1 - m) ⊙ (z0 ⊙ exp(s(m ⊙ z0)) + t(m ⊙ z0))``: invertible, cheap both ways.

    Starts as the identity (zero-initialised output layer).
    """

    mask: Tensor

    def __init__(self, n_latent: int, n_hidden: int, mask: Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)
        self.net = nn.Sequential(nn.Linear(n_latent, n_hidden), nn.ReLU(),
                                 nn.Linear(n_hidden, 2 * n_latent))
        last = self.net[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def _scale_shift(self, kept: Tensor) -> tuple[Tensor, Tensor]:
        log_scale, shift = self.net(kept).chunk(2, dim=-1)
        free = 1.0 - self.mask
        return torch.tanh(log_scale) * free, shift * free

    def forward(self, z0: Tensor) -> Tensor:
        log_scale, shift = self._scale_shift(z0 * self.mask)
        return z0 * torch.exp(log_scale) + shift

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``(z0, log |det ∂z0/∂z|)``."""
        log_scale, shift = self._scale_shift(z * self.mask)
        return (z - shift) * torch.exp(-log_scale), -log_scale.sum(dim=-1)


class Flow(nn.Module):
    """A stack of :class:`AffineCoupling` layers with alternating masks."""

    def __init__(self, n_latent: int, n_hidden: int, n_flows: int) -> None:
        super().__init__()
        even = (torch.arange(n_latent) % 2 == 0).float()
        self.layers = nn.ModuleList(
            AffineCoupling(n_latent, n_hidden, even if i % 2 == 0 else 1.0 - even)
            for i in range(n_flows)
        )

    def forward(self, z0: Tensor) -> Tensor:
        for layer in self.layers:
            z0 = layer(z0)
        return z0

    def log_prob(self, z: Tensor, base: Gaussian) -> Tensor:
        """``log q(z)`` of the flow pushed from ``base``."""
        log_det = torch.zeros_like(z[..., 0])
        for layer in reversed(self.layers):
            assert isinstance(layer, AffineCoupling)
            z, step = layer.inverse(z)
            log_det = log_det + step
        return gaussian_log_prob(z, base.loc, base.logvar) + log_det


class JNF(Objective):
    """JNF objective (see module docstring)."""

    name = "jnf"
    fusions = ("moe",)
    options_class = JNFOptions
    needs_complete_cells = True

    def __init__(self, config: ModuleConfig) -> None:
        super().__init__(config)
        self.joint_encoder = concat_encoder(config)
        self.flows = nn.ModuleDict({
            s.name: Flow(config.n_latent, config.n_hidden, self.options.n_flows)
            for s in config.modalities
        })

    def loss(self, vae: MultimodalVAE, batch: BatchData, kl_weight: float) -> ObjectiveOutput:
        self.check_training_mask(batch.mask)
        joint = self.joint_encoder(batch)
        z = self.rsample(joint)
        cells = torch.arange(batch.n_cells, device=z.device)
        nll, per_modality = decode_nll(vae, z, cells, batch, batch.mask)
        kl = vae.prior.kl(joint, z)
        loc, logvar = vae.experts(batch)
        fit = torch.zeros_like(kl)  # -Σ_m log q_m(sg(z) | x_m)
        for m, name in enumerate(self.config.names):
            flow: Flow = self.flows[name]  # type: ignore[assignment]
            fit = fit - flow.log_prob(z.detach(), Gaussian(loc[m], logvar[m]))
        return ObjectiveOutput(
            loss=(nll + kl_weight * kl + fit).mean(),
            reconstruction={k: v.mean() for k, v in per_modality.items()},
            kl=kl.mean(), elbo=(nll + kl + fit).mean(), embedding=single(joint), joint=joint,
            extra={"unimodal_fit": fit.mean().detach()},
        )

    def _moments(self, name: str, base: Gaussian) -> Gaussian:
        """Gaussian with the mean and variance of the flow posterior (fixed-seed draws)."""
        k = self.options.n_moment_samples
        generator = torch.Generator(device=base.loc.device).manual_seed(0)
        eps = torch.randn((k, *base.loc.shape), generator=generator, device=base.loc.device,
                          dtype=base.loc.dtype)
        draws = self.flows[name](base.loc + base.scale * eps)  # (k, n, d)
        return Gaussian(draws.mean(dim=0), torch.log(draws.var(dim=0) + 1e-8))

    def posterior(self, vae: MultimodalVAE, batch: BatchData) -> Mixture:
        mask, n_mod = batch.mask, batch.mask.shape[1]
        loc, logvar = vae.experts(batch)
        comp_loc = loc.new_zeros((n_mod + 1, *loc.shape[1:]))
        comp_logvar = torch.zeros_like(comp_loc)
        complete = mask.all(dim=1)
        weights = torch.where(complete, 0.0, mask.T.to(loc.dtype)
                              / mask.sum(dim=1).clamp(min=1).to(loc.dtype))
        for m, name in enumerate(self.config.names):
            rows = observed_rows(mask & ~complete.unsqueeze(1), m)
            if rows.numel():
                g = self._moments(name, Gaussian(loc[m, rows], logvar[m, rows]))
                comp_loc[m, rows], comp_logvar[m, rows] = g.loc, g.logvar
        if bool(complete.any()):
            joint = self.joint_encoder(batch)
            comp_loc[n_mod] = torch.where(complete.unsqueeze(1), joint.loc, 0.0)
            comp_logvar[n_mod] = torch.where(complete.unsqueeze(1), joint.logvar, 0.0)
        weights = torch.cat([weights, complete.to(loc.dtype).unsqueeze(0)])
        return Mixture(Gaussian(comp_loc, comp_logvar), weights)
