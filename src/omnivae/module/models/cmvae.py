"""CMVAE: clustering MMVAE+, a Gaussian-mixture prior over the shared latent.

Palumbo, Manduchi, Laguna, Chopard & Vogt (2024), "Deep Generative Clustering with Multimodal
Diffusion Variational Autoencoders", ICLR (objective as in MultiVae's implementation).

MMVAE+ (:mod:`omnivae.module.models.mmvae_plus`: shared ``z``, private ``w_m``, auxiliary priors,
stratified IWAE/DReG) with a cluster variable ``c``: ``p(c) = softmax(π)``,
``p(z | c) = N(μ_c, I)`` with learned ``π`` and ``μ_c``. The paper's log weight takes the
expectation over ``q(c | z) = p(c | z)`` explicitly::

    lw_m = log p(X_O | z, w) + β Σ_c q(c|z) [ log p(c) + log p(z|c) - log q(c|z) ]
           + β ( log p(w_m) - log q(z | X_O) - log q(w_m | x_m) )

and since ``q(c | z)`` is the exact cluster posterior the bracket equals
``log Σ_c p(c) p(z | c)``: MMVAE+'s bound under the mixture prior, which is what is computed.
Cells are clustered by ``q(c | z)`` (:meth:`CMVAE.cluster_probabilities`); the paper's
post-hoc selection of the number of clusters is :mod:`omnivae.module.models.cmvae_selection`, which
``omnivae.tl.cluster`` applies to a trained model. Its diffusion decoder is not implemented.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from omnivae.module.models.mmvae_plus import MMVAEPlus, MMVAEPlusOptions
from omnivae.module.priors import gaussian_log_prob

if TYPE_CHECKING:
    from omnivae.module.vae import ModuleConfig, MultimodalVAE


@dataclass(frozen=True)
class CMVAEOptions(MMVAEPlusOptions):
    """Options of CMVAE: those of MMVAE+ and ``n_clusters``, the mixture's components."""

    n_clusters: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_clusters < 1:
            raise ValueError(f"n_clusters must be at least 1, got {self.n_clusters}.")


class CMVAE(MMVAEPlus):
    """CMVAE objective (see module docstring)."""

    name = "cmvae"
    options_class = CMVAEOptions

    def __init__(self, config: ModuleConfig) -> None:
        super().__init__(config)
        k, d = self.options.n_clusters, config.n_latent
        self.cluster_means = nn.Parameter(2 * torch.rand(k, d) - 1)  # as the paper: U(-1, 1)
        self.cluster_logits = nn.Parameter(torch.zeros(k))

    def _log_joint(self, z: Tensor) -> Tensor:
        """``log p(c) + log p(z | c)`` for every cluster, ``(..., C)``."""
        means = self.cluster_means
        log_pz_c = gaussian_log_prob(z.unsqueeze(-2), means, torch.zeros_like(means))
        return torch.log_softmax(self.cluster_logits, dim=0) + log_pz_c

    def log_prior_shared(self, vae: MultimodalVAE, z: Tensor) -> Tensor:
        return torch.logsumexp(self._log_joint(z), dim=-1)

    def cluster_probabilities(self, z: Tensor) -> Tensor:
        """``q(c | z) = p(c | z)`` of shared latents ``z`` ``(n, d)``: ``(n, n_clusters)``.

        Examples
        --------
        >>> import torch
        >>> from omnivae.module import ModalitySpec, ModuleConfig, MultimodalVAE
        >>> cfg = ModuleConfig((ModalitySpec("a", 4, "nb"),), n_latent=2, fusion="moe",
        ...                    model="cmvae", model_options={"n_clusters": 3})
        >>> probabilities = MultimodalVAE(cfg).objective.cluster_probabilities(torch.zeros(5, 2))
        >>> [round(total, 5) for total in probabilities.sum(1).tolist()]
        [1.0, 1.0, 1.0, 1.0, 1.0]
        """
        return torch.softmax(self._log_joint(z), dim=-1)
