"""Nexus: hierarchical latents, modality latents below a shared "nexus" latent.

Vasco, Yin, Melo & Paiva (2022), "Leveraging Hierarchy in Multimodal Generative Models for
Effective Cross-Modality Inference", Neural Networks (objective as in MultiVae's
implementation).

Bottom level: each modality is a VAE of its own, ``q(z_m | x_m)`` (the shared encoders, used
as full posteriors) and ``p(x_m | z_m)`` (the count decoders read ``z_m``). Top level: each
observed ``z_m`` sends a message ``msg_m = e_m(sg(z_m))``; the mean message of the cell's
modalities gives the nexus posterior ``q(z_σ | msg)``, and top decoders ``g_m`` map ``z_σ`` back
to the modality latents with ``p(z_m | z_σ) = N(g_m(z_σ), I)``. The objective minimised for a
cell with observed modalities ``O`` is::

    L(X_O) = Σ_{m ∈ O} [ -E log p(x_m | z_m) + β β_m KL(q(z_m | x_m) || N(0, I)) ]
             + Σ_{m ∈ O} -γ log N(sg(z_m); g_m(z_σ), I) + β β_σ KL(q(z_σ | msg) || p(z_σ))

During training a cell with several modalities aggregates, with probability
``dropout_rate``, the messages of a random non-empty proper subset of them only ("forced
perceptual dropout"), so the nexus learns to work from any subset. Missing modalities drop out
of ``O``. The embedding is the nexus posterior's mean (messages of the bottom posteriors'
means); predicting ``x_t`` decodes ``g_t(z_σ)`` (plus N(0, I) noise when sampling).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from omnivae.module.fusion import Mixture
from omnivae.module.models.base import (
    Objective,
    ObjectiveOutput,
    modality_nll,
    observed_rows,
    random_proper_subsets,
    single,
)
from omnivae.module.nn import MLP
from omnivae.module.records import BatchData, Gaussian

if TYPE_CHECKING:
    from omnivae.module.vae import ModuleConfig, MultimodalVAE


@dataclass(frozen=True)
class NexusOptions:
    """Options of Nexus.

    Parameters
    ----------
    n_message
        Size of the messages sent by the modality latents to the nexus.
    dropout_rate
        Probability of the forced perceptual dropout of a cell's messages during training.
    bottom_beta, top_beta, gamma
        Weights of the bottom KLs, the nexus KL and the top-level reconstruction. ``gamma``
        is 10, not MultiVae's 1: with count data and a batch penalty on the embedding, the
        top-level term at weight 1 (a few nats per cell) loses to the penalty and the nexus
        latent collapses onto the prior; at 10 it stays active (measured in
        ``docs/design_evidence.md#nexus``).
    adapt_top_variance
        Give each top decoder ``p(z_m | z_σ)`` the scale ``s_m`` of its residuals in the
        mini-batch (the root mean square of ``sg(z_m) - g_m(z_σ)`` over cells and units)
        instead of 1, as MultiVae's ``adapt_top_decoder_variance`` does. Off by default: the
        residual scale stays near 1, and the option does not prevent the collapse that
        ``gamma=10`` prevents (measured in ``docs/design_evidence.md#nexus``).
    """

    n_message: int = 64
    dropout_rate: float = 0.2
    bottom_beta: float = 1.0
    top_beta: float = 1.0
    gamma: float = 10.0
    adapt_top_variance: bool = False


class GaussianHead(nn.Module):
    """MLP body with mean and log-variance heads."""

    def __init__(self, n_in: int, n_out: int, n_hidden: int) -> None:
        super().__init__()
        self.body = MLP(n_in, n_hidden, 1, dropout=0.0)
        self.loc = nn.Linear(n_hidden, n_out)
        self.logvar = nn.Linear(n_hidden, n_out)

    def forward(self, x: Tensor) -> Gaussian:
        hidden = self.body(x)
        return Gaussian(self.loc(hidden), self.logvar(hidden).clamp(-12.0, 8.0))


def _mlp(n_in: int, n_out: int, n_hidden: int) -> nn.Sequential:
    return nn.Sequential(MLP(n_in, n_hidden, 1, dropout=0.0), nn.Linear(n_hidden, n_out))


def _log_normal(target: Tensor, mean: Tensor, adapt_scale: bool) -> Tensor:
    """``log N(target; mean, s² I)`` per row, with ``s = 1`` or, if ``adapt_scale``, the root
    mean square of the residuals over all rows and units (gradients flow through ``s``).

    Examples
    --------
    >>> import torch
    >>> _log_normal(torch.zeros(1, 2), torch.zeros(1, 2), False)      # -log(2π)
    tensor([-1.8379])
    >>> r = torch.tensor([[1.0, -1.0], [2.0, -2.0]])                  # s² = 2.5
    >>> _log_normal(r, torch.zeros(2, 2), True).sum()   # -(4/2) log(2π·2.5) - (10/2.5)/2
    tensor(-7.5083)
    """
    residual = target - mean
    if not adapt_scale:
        return -0.5 * (residual ** 2 + math.log(2 * math.pi)).sum(dim=-1)
    variance = (residual ** 2).mean().clamp(min=1e-6)
    return -0.5 * (residual ** 2 / variance + torch.log(2 * math.pi * variance)).sum(dim=-1)


class Nexus(Objective):
    """Nexus objective (see module docstring)."""

    name = "nexus"
    fusions = ()
    options_class = NexusOptions

    def __init__(self, config: ModuleConfig) -> None:
        super().__init__(config)
        d, h, k = config.n_latent, config.n_hidden, self.options.n_message
        self.message_encoders = nn.ModuleDict({n: _mlp(d, k, h) for n in config.names})
        self.nexus_encoder = GaussianHead(k, d, h)
        self.top_decoders = nn.ModuleDict({n: _mlp(d, d, h) for n in config.names})

    def _kept(self, mask: Tensor) -> Tensor:
        """Forced perceptual dropout: the modalities whose messages each cell aggregates."""
        return random_proper_subsets(mask, self.options.dropout_rate if self.training else 0.0)

    def _nexus(self, bottom: Tensor, kept: Tensor) -> Gaussian:
        """``q(z_σ | mean message)`` from modality latents ``(M, n, d)`` of ``kept`` ``(n, M)``."""
        total = bottom.new_zeros((bottom.shape[1], self.options.n_message))
        for m, name in enumerate(self.config.names):
            rows = observed_rows(kept, m)
            if rows.numel():
                total = total.index_add(0, rows, self.message_encoders[name](bottom[m, rows]))
        return self.nexus_encoder(total / kept.sum(dim=1, keepdim=True).clamp(min=1))

    def loss(self, vae: MultimodalVAE, batch: BatchData, kl_weight: float) -> ObjectiveOutput:
        o, mask, n = self.options, batch.mask, batch.n_cells
        loc, logvar = vae.experts(batch)
        bottom = torch.zeros_like(loc)  # sampled z_m, zero where missing
        nll, kl_bottom = loc.new_zeros(n), loc.new_zeros(n)
        reconstruction = {}
        for m, name in enumerate(self.config.names):
            rows = observed_rows(mask, m)
            if rows.numel() == 0:
                reconstruction[name] = loc.new_zeros(())
                continue
            q_m = Gaussian(loc[m, rows], logvar[m, rows])
            z_m = self.rsample(q_m)
            bottom = bottom.index_put((torch.full_like(rows, m), rows), z_m)
            nll_m = modality_nll(vae, name, z_m, rows, batch)
            nll = nll.index_add(0, rows, nll_m)
            kl_bottom = kl_bottom.index_add(0, rows, q_m.kl_to_standard_normal())
            reconstruction[name] = nll_m.mean()
        q_top = self._nexus(bottom.detach(), self._kept(mask))
        z_top = self.rsample(q_top)
        top_nll = loc.new_zeros(n)
        for m, name in enumerate(self.config.names):
            rows = observed_rows(mask, m)
            if rows.numel():
                mean = self.top_decoders[name](z_top[rows])
                target = bottom[m, rows].detach()
                log_p = _log_normal(target, mean, o.adapt_top_variance)
                top_nll = top_nll.index_add(0, rows, -o.gamma * log_p)
        kl_top = vae.prior.kl(q_top, z_top)
        kl = o.bottom_beta * kl_bottom + o.top_beta * kl_top
        rec = nll + top_nll
        return ObjectiveOutput(
            loss=(rec + kl_weight * kl).mean(), reconstruction=reconstruction, kl=kl.mean(),
            elbo=(rec + kl).mean(), embedding=single(q_top), joint=q_top,
            extra={"top_nll": top_nll.mean().detach(), "kl_nexus": kl_top.mean().detach()},
        )

    def posterior(self, vae: MultimodalVAE, batch: BatchData) -> Mixture:
        loc, _ = vae.experts(batch)
        return single(self._nexus(loc, batch.mask))

    def decoder_input(self, vae: MultimodalVAE, batch: BatchData, z: Tensor, target: str,
                      sample: bool, generator: torch.Generator | None = None) -> Tensor:
        mean = self.top_decoders[target](z)
        if sample:
            mean = mean + torch.randn(mean.shape, generator=generator, device=z.device,
                                      dtype=z.dtype)
        return mean
