"""Priors over the joint latent space (pure torch).

Every prior exposes the same three operations, so the module and every named model compute
their KL term through :meth:`Prior.kl` and never assume a standard normal:

* ``log_prob(z)``: ``log p(z)`` summed over the latent dimension, shape ``(...)``;
* ``kl(q, z)``: KL(q || p) per cell: closed form where one exists, otherwise the one-sample
  Monte Carlo estimate ``log q(z) - log p(z)`` at the reparameterised draw ``z ~ q``;
* ``sample(n)``: ``n`` draws from the prior, ``(n, d)``.

The product-of-experts fusion keeps N(0, I) as its prior *expert* (see :mod:`omnivae.fusion`)
whatever prior the ELBO uses; that is the usual choice for learned priors.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from omnivae._types import Gaussian, check_choice

PRIORS: tuple[str, ...] = ("normal",)


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
    >>> from omnivae._types import Gaussian
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


def make_prior(name: str, n_latent: int) -> Prior:
    """Build the prior called ``name`` (see :data:`PRIORS`).

    Examples
    --------
    >>> make_prior("normal", 4).sample(2).shape
    torch.Size([2, 4])
    """
    name = check_prior_name(name)
    return StandardNormal(n_latent)
