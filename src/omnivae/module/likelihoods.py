"""Count likelihoods (pure torch): NB, ZINB, Poisson, Bernoulli and a totalVI-style NB mixture.

Light containers of parameter tensors that broadcast like ``torch.distributions``; nothing is
validated or broadcast at construction (a decoder builds one every step) and ``log_prob`` is
elementwise. Logs of parameters are guarded by ``+ eps`` (default ``1e-8``, as scvi-tools);
``eps=0.0`` gives the exact density for strictly positive parameters. Sampling is Gamma-Poisson
for the NBs; every draw takes ``generator`` (on the parameters' device, CPU or CUDA), else the
device's global RNG is used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from omnivae.module.count_math import (
    CountDistributionBase,
    as_float,
    gamma_poisson,
    log_gamma_ratio,
    nb_mu_terms,
)
from omnivae.module.records import check_choice

LIKELIHOOD_NAMES: tuple[str, ...] = ("nb", "zinb", "poisson", "bernoulli", "nb_mixture")
# bernoulli binarizes any non-negative values; the others model integer counts
REQUIRES_INTEGER_COUNTS: dict[str, bool] = {n: n != "bernoulli" for n in LIKELIHOOD_NAMES}


def check_likelihood_name(name: str) -> str:
    """Return ``name`` if it is one of :data:`LIKELIHOOD_NAMES`, else raise ``ValueError``.

    Examples
    --------
    >>> check_likelihood_name("zinb")
    'zinb'
    """
    return check_choice(name, LIKELIHOOD_NAMES, "likelihood")


class NegativeBinomial(CountDistributionBase):
    """Negative binomial with mean ``mu`` and inverse dispersion ``theta``.

    ``Var = mu + mu^2 / theta``. Equals ``scipy.stats.nbinom(n=theta, p=theta/(theta+mu))``.

    Parameters
    ----------
    mu, theta
        Means and inverse dispersions (> 0), broadcastable.
    eps
        Guard added inside logarithms of parameters.

    Examples
    --------
    >>> import torch
    >>> d = NegativeBinomial(torch.tensor([2.0]), torch.tensor([1.0]))
    >>> round(d.log_prob(torch.tensor([0.0])).item(), 4)  # log(1/3)
    -1.0986
    >>> d.variance
    tensor([6.])
    """

    _params = ("mu", "theta")

    def __init__(self, mu: Tensor, theta: Tensor, *, eps: float = 1e-8) -> None:
        self.mu, self.theta, self.eps = mu, theta, eps

    def log_prob(self, x: Tensor) -> Tensor:
        """Elementwise log-pmf of counts ``x``."""
        x = as_float(x, self.mu)
        log_comb = log_gamma_ratio(x, self.theta) - torch.lgamma(x + 1.0)
        return log_comb + nb_mu_terms(x, self.mu, self.theta, self.eps)

    @property
    def mean(self) -> Tensor:
        return self.mu.expand(self.batch_shape)

    @property
    def variance(self) -> Tensor:
        return self.mu + self.mu**2 / self.theta

    def _draw(self, shape: torch.Size, generator: torch.Generator | None) -> Tensor:
        return gamma_poisson(self.mu, self.theta, shape, generator)


class ZeroInflatedNegativeBinomial(CountDistributionBase):
    """NB mixed with a point mass at zero of probability ``pi = sigmoid(zi_logits)``.

    ``p(0) = pi + (1 - pi) NB(0)`` and ``p(x) = (1 - pi) NB(x)`` for ``x > 0``. Logs of ``pi``
    and ``1 - pi`` are ``logsigmoid(+-zi_logits)`` and the zero case is a ``logaddexp``.

    Parameters
    ----------
    mu, theta
        Mean and inverse dispersion of the NB component (> 0).
    zi_logits
        Logits of the zero-inflation (dropout) probability.
    eps
        Guard added inside logarithms of parameters.

    Examples
    --------
    >>> import torch
    >>> d = ZeroInflatedNegativeBinomial(torch.tensor([2.0]), torch.tensor([1.0]),
    ...                                  torch.tensor([0.0]))
    >>> d.mean
    tensor([1.])
    >>> round(d.log_prob(torch.tensor([0.0])).exp().item(), 4)  # 0.5 + 0.5 / 3
    0.6667
    """

    _params = ("mu", "theta", "zi_logits")

    def __init__(self, mu: Tensor, theta: Tensor, zi_logits: Tensor, *, eps: float = 1e-8) -> None:
        self.mu, self.theta, self.zi_logits, self.eps = mu, theta, zi_logits, eps

    @property
    def zi_probs(self) -> Tensor:
        """Zero-inflation probabilities ``pi``."""
        return torch.sigmoid(self.zi_logits)

    def log_prob(self, x: Tensor) -> Tensor:
        """Elementwise log-pmf of counts ``x``."""
        x = as_float(x, self.mu)
        log_pi, log_not_pi = F.logsigmoid(self.zi_logits), F.logsigmoid(-self.zi_logits)
        mu_terms = nb_mu_terms(x, self.mu, self.theta, self.eps)
        log_comb = log_gamma_ratio(x, self.theta) - torch.lgamma(x + 1.0)
        nonzero = log_not_pi + log_comb + mu_terms
        # at x = 0, log_comb = 0 and mu_terms = log NB(0) = -theta log1p(mu / theta)
        zero = torch.logaddexp(log_pi, log_not_pi + mu_terms)
        return torch.where(x > 0, nonzero, zero)

    @property
    def mean(self) -> Tensor:
        return torch.sigmoid(-self.zi_logits) * self.mu

    @property
    def variance(self) -> Tensor:
        pi = self.zi_probs
        return (1.0 - pi) * self.mu * (1.0 + self.mu / self.theta + pi * self.mu)

    def _draw(self, shape: torch.Size, generator: torch.Generator | None) -> Tensor:
        counts = gamma_poisson(self.mu, self.theta, shape, generator)
        u = torch.rand(shape, generator=generator, dtype=counts.dtype, device=counts.device)
        return torch.where(u < self.zi_probs, torch.zeros_like(counts), counts)


class Poisson(CountDistributionBase):
    """Poisson with mean ``rate``.

    Parameters
    ----------
    rate
        Means (> 0).
    eps
        Guard added inside ``log(rate)``.

    Examples
    --------
    >>> import torch
    >>> d = Poisson(torch.tensor([3.0]))
    >>> round(d.log_prob(torch.tensor([0.0])).item(), 4)
    -3.0
    """

    _params = ("rate",)

    def __init__(self, rate: Tensor, *, eps: float = 1e-8) -> None:
        self.rate, self.eps = rate, eps

    def log_prob(self, x: Tensor) -> Tensor:
        """Elementwise log-pmf of counts ``x``."""
        x = as_float(x, self.rate)
        return x * torch.log(self.rate + self.eps) - self.rate - torch.lgamma(x + 1.0)

    @property
    def mean(self) -> Tensor:
        return self.rate

    @property
    def variance(self) -> Tensor:
        return self.rate

    def _draw(self, shape: torch.Size, generator: torch.Generator | None) -> Tensor:
        return torch.poisson(self.rate.expand(shape), generator=generator)


class Bernoulli(CountDistributionBase):
    """Bernoulli with ``P(1) = sigmoid(logits)`` for binarized data.

    :meth:`log_prob` reads any ``x > 0`` as a one, so raw counts can be passed.

    Parameters
    ----------
    logits
        Log-odds of a non-zero observation.
    rate
        Alternatively (keyword), a binarized Poisson: ``P(x > 0) = 1 - exp(-rate)``; the
        logits ``rate + log(-expm1(-rate))`` are computed only when asked for.

    See Also
    --------
    Bernoulli.binarized_poisson : the decoder's form, ``rate = total * softmax(scores)``.

    Examples
    --------
    >>> import torch
    >>> d = Bernoulli(torch.tensor([0.0, 0.0]))
    >>> d.log_prob(torch.tensor([0.0, 7.0])).exp()
    tensor([0.5000, 0.5000])
    >>> Bernoulli(rate=torch.tensor([2.0])).mean  # 1 - exp(-2)
    tensor([0.8647])
    """

    _params = ("logits",)
    scores: Tensor | None = None
    total: Tensor | None = None
    min_rate: float = 1e-8

    def __init__(self, logits: Tensor | None = None, *, rate: Tensor | None = None) -> None:
        if (logits is None) == (rate is None):
            raise ValueError("Give Bernoulli either logits or rate (not both).")
        self._logits, self._rate = logits, rate

    @classmethod
    def binarized_poisson(cls, scores: Tensor, total: Tensor, *, min_rate: float = 1e-8
                          ) -> Bernoulli:
        """``P(x > 0) = 1 - exp(-rate)`` with ``rate = total * softmax(scores)`` (clamped at
        ``min_rate``), the rate kept implicit: the summed log-likelihood
        (:func:`omnivae.module.likelihood_sums.summed_log_prob`) then needs only a ``logsumexp`` of
        the scores densely (the rates sum to ``total``) and the rates at the non-zeros.

        Parameters
        ----------
        scores
            ``(n, g)`` unnormalised log-frequencies.
        total
            ``(n, 1)`` expected number of events (the cell's number of non-zero features).

        Examples
        --------
        >>> import torch
        >>> d = Bernoulli.binarized_poisson(torch.zeros(1, 2), torch.tensor([[2.0]]))
        >>> d.rate, d.mean  # 1 - exp(-1)
        (tensor([[1., 1.]]), tensor([[0.6321, 0.6321]]))
        """
        dist = cls(rate=scores)  # the rate is set lazily from the scores
        dist._rate, dist.scores, dist.total, dist.min_rate = None, scores, total, min_rate
        return dist

    @property
    def rate(self) -> Tensor | None:
        """The binarized Poisson's rate (``None`` for a Bernoulli given by its logits)."""
        if self._rate is None and self.scores is not None:
            assert self.total is not None
            self._rate = (self.total * torch.softmax(self.scores, dim=-1)).clamp(min=self.min_rate)
        return self._rate

    @property
    def logits(self) -> Tensor:
        """Log-odds of a non-zero observation."""
        if self._logits is None:
            rate = self.rate
            assert rate is not None
            self._logits = rate + torch.log(-torch.expm1(-rate))  # logit of 1 - exp(-rate)
        return self._logits

    def log_prob(self, x: Tensor) -> Tensor:
        """Elementwise ``log P(1{x > 0})``: ``-softplus(-logits)`` or ``-softplus(logits)``."""
        return -F.softplus(torch.where(x > 0, -self.logits, self.logits))

    @property
    def mean(self) -> Tensor:
        return torch.sigmoid(self.logits)

    @property
    def variance(self) -> Tensor:
        return torch.sigmoid(self.logits) * torch.sigmoid(-self.logits)

    def _draw(self, shape: torch.Size, generator: torch.Generator | None) -> Tensor:
        return torch.bernoulli(self.mean.expand(shape), generator=generator)


class NegativeBinomialMixture(CountDistributionBase):
    """totalVI protein likelihood: two NBs sharing ``theta``, mixed by a background probability.

    ``p(x) = pi NB(x; mu_background, theta) + (1 - pi) NB(x; mu_foreground, theta)`` with
    ``pi = sigmoid(mixture_logits)``, the probability of the background component.

    Parameters
    ----------
    mu_background, mu_foreground
        Component means (> 0).
    theta
        Shared inverse dispersion (> 0).
    mixture_logits
        Logits of the background probability.
    eps
        Guard added inside logarithms of parameters.

    Examples
    --------
    >>> import torch
    >>> d = NegativeBinomialMixture(torch.tensor([1.0]), torch.tensor([9.0]),
    ...                             torch.tensor([2.0]), torch.tensor([0.0]))
    >>> d.mean, d.foreground_probability
    (tensor([5.]), tensor([0.5000]))
    """

    _params = ("mu_background", "mu_foreground", "theta", "mixture_logits")

    def __init__(
        self, mu_background: Tensor, mu_foreground: Tensor, theta: Tensor,
        mixture_logits: Tensor, *, eps: float = 1e-8,
    ) -> None:
        self.mu_background, self.mu_foreground = mu_background, mu_foreground
        self.theta, self.mixture_logits, self.eps = theta, mixture_logits, eps

    @property
    def background_probability(self) -> Tensor:
        return torch.sigmoid(self.mixture_logits)

    @property
    def foreground_probability(self) -> Tensor:
        return torch.sigmoid(-self.mixture_logits)

    def log_prob(self, x: Tensor) -> Tensor:
        """Elementwise log-pmf of counts ``x`` (``logaddexp`` of the weighted components)."""
        x = as_float(x, self.mu_background)
        log_comb = log_gamma_ratio(x, self.theta) - torch.lgamma(x + 1.0)
        bg = F.logsigmoid(self.mixture_logits) + nb_mu_terms(
            x, self.mu_background, self.theta, self.eps)
        fg = F.logsigmoid(-self.mixture_logits) + nb_mu_terms(
            x, self.mu_foreground, self.theta, self.eps)
        return log_comb + torch.logaddexp(bg, fg)

    @property
    def mean(self) -> Tensor:
        pi = self.background_probability
        return pi * self.mu_background + (1.0 - pi) * self.mu_foreground

    @property
    def variance(self) -> Tensor:
        """Law of total variance: ``E[Var(x | c)] + Var(E[x | c])`` over the component ``c``."""
        pi = self.background_probability
        mb, mf = self.mu_background, self.mu_foreground
        within = pi * (mb + mb**2 / self.theta) + (1.0 - pi) * (mf + mf**2 / self.theta)
        return within + pi * (1.0 - pi) * (mb - mf) ** 2

    def _draw(self, shape: torch.Size, generator: torch.Generator | None) -> Tensor:
        pi = self.background_probability
        u = torch.rand(shape, generator=generator, dtype=pi.dtype, device=pi.device)
        mu = torch.where(u < pi, self.mu_background, self.mu_foreground)
        return gamma_poisson(mu, self.theta, shape, generator)


# what a decoder returns: any of the distributions above
CountDistribution = (
    NegativeBinomial | ZeroInflatedNegativeBinomial | Poisson | Bernoulli | NegativeBinomialMixture
)

__all__ = [
    "LIKELIHOOD_NAMES", "REQUIRES_INTEGER_COUNTS", "Bernoulli", "CountDistribution",
    "NegativeBinomial",
    "NegativeBinomialMixture", "Poisson", "ZeroInflatedNegativeBinomial",
    "check_likelihood_name",
]
