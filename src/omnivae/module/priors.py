"""Priors over the joint latent space (pure torch).

Every prior exposes the same three operations, so the module and every named model compute
their KL term through :meth:`Prior.kl` and never assume a standard normal:

* ``log_prob(z)``: ``log p(z)`` summed over the latent dimension, shape ``(...)``;
* ``kl(q, z)``: KL(q || p) per cell: closed form where one exists, otherwise the one-sample
  Monte Carlo estimate ``log q(z) - log p(z)`` at the reparameterised draw ``z ~ q``;
* ``sample(n)``: ``n`` draws from the prior, ``(n, d)``.

The product-of-experts fusion keeps N(0, I) as its prior *expert* (see :mod:`omnivae.module.fusion`)
whatever prior the ELBO uses; that is the usual choice for learned priors.

Three priors (:data:`PRIORS`):

* ``"normal"``: N(0, I), exact KL.
* ``"mog"``: a mixture of ``K`` diagonal Gaussians with learned means, variances and weights.
* ``"vamp"``: the VampPrior (Tomczak & Welling 2018), ``p(z) = 1/K Σ_k q(z | u_k)``: the
  posterior of ``K`` learned *pseudo-cells*. Each pseudo-cell has learned pseudo-counts in
  every modality (``softplus`` of a parameter, read at the modality's median depth); they pass
  through the model's own encoders and are fused by the product of experts, exactly like a
  cell that has every modality. The prior therefore lives where real posteriors live and
  moves with the encoders; its parameters are ``K × Σ_m n_features_m`` pseudo-counts.

The mixture priors have no closed-form KL to a Gaussian; they use the one-sample estimate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omnivae.module.fusion import product_of_experts
from omnivae.module.records import Gaussian, check_choice

PRIORS: tuple[str, ...] = ("normal", "vamp", "mog")
DEFAULT_COMPONENTS = 50


def check_prior_name(name: str) -> str:
    """Return ``name`` lower-cased, or raise a ValueError listing the valid priors.

    Examples
    --------
    >>> check_prior_name("Normal")
    'normal'
    """
    return check_choice(name.lower(), PRIORS, "prior")


def gaussian_log_prob(z: Tensor, loc: Tensor, logvar: Tensor) -> Tensor:
    """Diagonal Gaussian log-density summed over the last dimension.

    Examples
    --------
    >>> import torch
    >>> round(gaussian_log_prob(torch.zeros(1), torch.zeros(1), torch.zeros(1)).item(), 4)
    -0.9189
    """
    return -0.5 * torch.sum(
        math.log(2 * math.pi) + logvar + (z - loc) ** 2 * torch.exp(-logvar), dim=-1
    )


class Prior(nn.Module):
    """Interface of a prior p(z) over ``n_latent`` dimensions."""

    def __init__(self, n_latent: int) -> None:
        super().__init__()
        self.n_latent = n_latent

    def log_prob(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def kl(self, q: Gaussian, z: Tensor) -> Tensor:
        """KL(q || p) per cell; the default is the Monte Carlo estimate at ``z ~ q``."""
        return gaussian_log_prob(z, q.loc, q.logvar) - self.log_prob(z)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError


class StandardNormal(Prior):
    """p(z) = N(0, I); its KL to a diagonal Gaussian is exact (no sampling noise).

    Examples
    --------
    >>> import torch
    >>> from omnivae.module.records import Gaussian
    >>> q = Gaussian(torch.ones(2, 3), torch.zeros(2, 3))
    >>> StandardNormal(3).kl(q, q.loc).tolist()   # 0.5 * sum(mu^2) = 1.5
    [1.5, 1.5]
    """

    def log_prob(self, z: Tensor) -> Tensor:
        return gaussian_log_prob(z, torch.zeros_like(z), torch.zeros_like(z))

    def kl(self, q: Gaussian, z: Tensor) -> Tensor:
        return q.kl_to_standard_normal()

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        device = next(iter(self.buffers()), torch.empty(0)).device
        return torch.randn(n, self.n_latent, generator=generator, device=device)


def mixture_log_prob(z: Tensor, loc: Tensor, logvar: Tensor, log_weights: Tensor) -> Tensor:
    """``log Σ_k w_k N(z; loc_k, exp(logvar_k))`` for ``z`` ``(..., d)`` and ``K`` components.

    Examples
    --------
    >>> import torch
    >>> one = mixture_log_prob(torch.zeros(1, 1), torch.zeros(2, 1), torch.zeros(2, 1),
    ...                        torch.log(torch.full((2,), 0.5)))
    >>> round(one.item(), 4)      # two identical components = one N(0, 1)
    -0.9189
    """
    per_component = gaussian_log_prob(z.unsqueeze(-2), loc, logvar)  # (..., K)
    return torch.logsumexp(per_component + log_weights, dim=-1)


def _sample_mixture(n: int, loc: Tensor, logvar: Tensor, weights: Tensor,
                    generator: torch.Generator | None) -> Tensor:
    pick = torch.multinomial(weights, n, replacement=True, generator=generator)
    return Gaussian(loc[pick], logvar[pick]).rsample(generator)


class _MixturePrior(Prior):
    """A prior that is a Gaussian mixture given by :meth:`components` (shared by the
    mixture-of-Gaussians and the VampPrior): density and sampling written once."""

    def components(self) -> tuple[Tensor, Tensor, Tensor]:
        raise NotImplementedError

    def log_prob(self, z: Tensor) -> Tensor:
        return mixture_log_prob(z, *self.components())

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        with torch.no_grad():
            loc, logvar, log_w = self.components()
            return _sample_mixture(n, loc, logvar, log_w.exp(), generator)


class MixtureOfGaussians(_MixturePrior):
    """A mixture of ``n_components`` diagonal Gaussians; means, variances, weights learned.

    Examples
    --------
    >>> import torch
    >>> prior = MixtureOfGaussians(2, n_components=3)
    >>> prior.log_prob(torch.zeros(5, 2)).shape, prior.sample(4).shape
    (torch.Size([5]), torch.Size([4, 2]))
    """

    def __init__(self, n_latent: int, n_components: int = DEFAULT_COMPONENTS) -> None:
        super().__init__(n_latent)
        self.loc = nn.Parameter(torch.randn(n_components, n_latent))
        self.logvar = nn.Parameter(torch.zeros(n_components, n_latent))
        self.logits = nn.Parameter(torch.zeros(n_components))

    def components(self) -> tuple[Tensor, Tensor, Tensor]:
        """Means ``(K, d)``, log-variances ``(K, d)`` and log-weights ``(K,)``."""
        return self.loc, self.logvar.clamp(-8.0, 4.0), torch.log_softmax(self.logits, dim=0)



class VampPrior(_MixturePrior):
    """VampPrior over pseudo-cells passed through the model's encoders (see module docstring).

    Parameters
    ----------
    n_latent
        Latent size.
    encoders
        Per modality, the encoder ``(counts (K, g), library (K, 1)) -> (loc, logvar)``; the
        encoders are *not* registered as sub-modules here (they belong to the VAE), only used.
    n_components
        Number of pseudo-cells ``K``.

    Examples
    --------
    >>> import torch
    >>> from omnivae.module.nn import Encoder
    >>> enc = {"a": Encoder(6, 2, 8, 1, 0.0, 10.0), "b": Encoder(4, 2, 8, 1, 0.0, 5.0)}
    >>> prior = VampPrior(2, enc, n_components=3)
    >>> prior.log_prob(torch.zeros(5, 2)).shape, sorted(k for k, _ in prior.named_parameters())
    (torch.Size([5]), ['pseudo_inputs.a', 'pseudo_inputs.b'])
    """

    def __init__(self, n_latent: int, encoders: Mapping[str, nn.Module],
                 n_components: int = DEFAULT_COMPONENTS) -> None:
        super().__init__(n_latent)
        # used, not owned: registering them here would duplicate the VAE's weights
        self.__dict__["_encoders"] = dict(encoders)
        self.pseudo_inputs = nn.ParameterDict({
            name: nn.Parameter(torch.randn(n_components, _n_inputs(enc)) * 0.5 - 1.0)
            for name, enc in encoders.items()
        })

    def components(self) -> tuple[Tensor, Tensor, Tensor]:
        """The pseudo-cells' posteriors: means, log-variances ``(K, d)``, log-weights ``(K,)``."""
        locs, logvars = [], []
        encoders: dict[str, nn.Module] = self.__dict__["_encoders"]
        for name, encoder in encoders.items():
            pseudo = F.softplus(self.pseudo_inputs[name])  # (K, g) pseudo-counts
            scale = cast(Tensor, encoder.library_scale).expand(pseudo.shape[0], 1)
            loc, logvar = encoder(pseudo, scale)
            locs.append(loc)
            logvars.append(logvar)
        k = locs[0].shape[0]
        every = torch.ones(k, len(locs), dtype=torch.bool, device=locs[0].device)
        joint = product_of_experts(torch.stack(locs), torch.stack(logvars), every)
        return joint.loc, joint.logvar, torch.full((k,), -math.log(k), device=joint.loc.device)



def _n_inputs(encoder: nn.Module) -> int:
    first = encoder.body.layers[0]  # type: ignore[union-attr,index]
    return int(first.in_features)  # type: ignore[union-attr]


def make_prior(name: str, n_latent: int, *, n_components: int = 0,
               encoders: Mapping[str, nn.Module] | None = None) -> Prior:
    """Build the prior called ``name`` (see :data:`PRIORS`).

    Parameters
    ----------
    name
        ``"normal"``, ``"vamp"`` or ``"mog"``.
    n_latent
        Latent size.
    n_components
        Mixture components (pseudo-cells for ``vamp``); 0 means :data:`DEFAULT_COMPONENTS`.
    encoders
        The VAE's encoders per modality (needed by ``vamp``).

    Examples
    --------
    >>> make_prior("normal", 4).sample(2).shape
    torch.Size([2, 4])
    >>> make_prior("mog", 4, n_components=3).sample(2).shape
    torch.Size([2, 4])
    """
    name = check_prior_name(name)
    k = n_components or DEFAULT_COMPONENTS
    if name == "mog":
        return MixtureOfGaussians(n_latent, k)
    if name == "vamp":
        if not encoders:
            raise ValueError("prior='vamp' needs the model's encoders (pass encoders=...).")
        return VampPrior(n_latent, encoders, k)
    return StandardNormal(n_latent)
