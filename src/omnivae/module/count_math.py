"""Numerics shared by the count likelihoods of :mod:`omnivae.module.likelihoods` (pure torch).

``lgamma`` differences that stay exact for huge dispersions, the NB ``mu`` terms, Gamma-Poisson
draws, and the base class that gives every count distribution its ``batch_shape`` and
``sample``. Kept apart so ``likelihoods`` holds only the distributions users choose by name.

Examples
--------
>>> import torch
>>> x, theta = torch.tensor([3.0]), torch.tensor([1e6])
>>> exact = float(torch.lgamma(torch.tensor([3.0 + 1e6], dtype=torch.float64))
...               - torch.lgamma(torch.tensor([1e6], dtype=torch.float64)))
>>> abs(float(log_gamma_ratio(x, theta)) - exact) < 1e-3
True
"""

from __future__ import annotations

import torch
from torch import Tensor

STIRLING_MIN_THETA = 100.0  # above this, lgamma(x + theta) - lgamma(theta) via Stirling


def log_gamma_ratio(x: Tensor, theta: Tensor, lgamma_theta: Tensor | None = None) -> Tensor:
    """``lgamma(x + theta) - lgamma(theta)`` without the cancellation of two huge lgammas.

    For ``theta > 100`` Stirling's series ``lgamma(z) ~ (z - 1/2) log z - z + log(2 pi)/2 +
    1/(12 z)`` (error < 3e-9) is differenced analytically:
    ``(theta - 1/2) log1p(x/theta) + x (log(theta + x) - 1) - x / (12 theta (theta + x))``.
    In float32 the plain difference loses ~``6e-8 theta log(theta)``: 1 nat at ``theta = 1e6``.
    ``lgamma_theta``, when given, is ``lgamma(theta)`` (computed per feature by the caller).
    """
    plain = torch.lgamma(x + theta) - (torch.lgamma(theta) if lgamma_theta is None
                                        else lgamma_theta)
    if not bool((theta > STIRLING_MIN_THETA).any()):  # theta is per feature: a cheap check
        return plain
    th = theta.clamp_min(STIRLING_MIN_THETA)  # finite, and zero gradient off-branch
    z = th + x
    stirling = (th - 0.5) * torch.log1p(x / th) + x * (torch.log(z) - 1.0 - 1.0 / (12.0 * th * z))
    return torch.where(theta > STIRLING_MIN_THETA, stirling, plain)


def nb_mu_terms(x: Tensor, mu: Tensor, theta: Tensor, eps: float) -> Tensor:
    """``theta log(theta/(theta+mu)) + x log(mu/(theta+mu))``, the first term as
    ``-theta log1p(mu/theta)``, which stays exact when ``mu << theta``."""
    log_theta_mu = torch.log(theta + mu + eps)
    return -theta * torch.log1p(mu / (theta + eps)) + x * (torch.log(mu + eps) - log_theta_mu)


def as_float(x: Tensor, like: Tensor) -> Tensor:
    """``x`` itself if floating point, else cast to ``like``'s dtype (integer counts)."""
    return x if x.is_floating_point() else x.to(like.dtype)


def gamma_poisson(
    mu: Tensor, theta: Tensor, shape: torch.Size, generator: torch.Generator | None
) -> Tensor:
    """NB draws: ``w ~ Gamma(theta, rate=theta/mu)``, ``x ~ Poisson(w)``."""
    gamma = torch._standard_gamma(theta.expand(shape), generator=generator)
    return torch.poisson(gamma * (mu / theta), generator=generator)


class CountDistributionBase:
    """Shared sampling plumbing; subclasses list their parameter attributes in ``_params``."""

    _params: tuple[str, ...] = ()

    @property
    def batch_shape(self) -> torch.Size:
        """Broadcast shape of the parameters."""
        return torch.broadcast_shapes(*(getattr(self, name).shape for name in self._params))

    def sample(
        self, generator: torch.Generator | None = None, sample_shape: tuple[int, ...] = ()
    ) -> Tensor:
        """Float counts of shape ``sample_shape + batch_shape`` (no gradient)."""
        with torch.no_grad():
            return self._draw(torch.Size(sample_shape) + self.batch_shape, generator)

    def _draw(self, shape: torch.Size, generator: torch.Generator | None) -> Tensor:
        raise NotImplementedError


__all__ = [
    "STIRLING_MIN_THETA", "CountDistributionBase", "as_float", "gamma_poisson", "log_gamma_ratio",
    "nb_mu_terms",
]
