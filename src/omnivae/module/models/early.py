"""Early integration: one VAE on the concatenated modalities (the baseline to beat).

One encoder reads all modalities at once (:class:`~omnivae.module.models.concat_encoder.ConcatEncoder`),
one latent ``z`` feeds the shared per-modality count decoders, and the objective is the plain
ELBO::

    L(X_O) = E_{q(z | X_O)}[ Σ_{m ∈ O} log p(x_m | z, s) ] - β KL(q(z | X_O) || p(z))

Cells lacking a modality: its block of the concatenated input is zero, a per-modality "missing"
indicator enters the first layer instead, and its likelihood term is left out (so the same
network embeds any subset, and predicting a modality means encoding with it marked missing).
There is no fusion: ``fusion=`` must not be given with ``model="early"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from omnivae.module.fusion import Mixture
from omnivae.module.models.base import Objective, ObjectiveOutput, decode_nll, single
from omnivae.module.models.concat_encoder import concat_encoder
from omnivae.module.records import BatchData

if TYPE_CHECKING:
    from omnivae.module.vae import ModuleConfig, MultimodalVAE


class EarlyIntegration(Objective):
    """Early-integration VAE objective (see module docstring)."""

    name = "early"
    fusions = ()
    unimodal_encoders = False

    def __init__(self, config: ModuleConfig) -> None:
        super().__init__(config)
        self.encoder = concat_encoder(config)

    def loss(self, vae: MultimodalVAE, batch: BatchData, kl_weight: float) -> ObjectiveOutput:
        q = self.encoder(batch)
        z = self.rsample(q)
        kl = vae.prior.kl(q, z)
        cells = torch.arange(batch.n_cells, device=z.device)
        nll, per_modality = decode_nll(vae, z, cells, batch, batch.mask)
        reconstruction = {
            name: v.sum() / batch.mask[:, m].sum().clamp(min=1)
            for m, (name, v) in enumerate(per_modality.items())
        }
        return ObjectiveOutput(
            loss=(nll + kl_weight * kl).mean(), reconstruction=reconstruction, kl=kl.mean(),
            elbo=(nll + kl).mean(), embedding=single(q), joint=q,
        )

    def posterior(self, vae: MultimodalVAE, batch: BatchData) -> Mixture:
        return single(self.encoder(batch))
