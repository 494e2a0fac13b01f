"""Tests for omnivae.module.likelihoods: exactness against scipy / mpmath / scvi-tools, normalisation,
moments of samples, gradient stability and binarisation."""

from __future__ import annotations

import doctest
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats

from omnivae.module import likelihoods as lk

F64 = torch.float64

# Grids spanning the supported ranges; 50 / 150 straddle the Stirling switch at theta = 100.
MUS = [1e-8, 1e-4, 0.5, 10.0, 1e3, 1e6]
THETAS = [1e-4, 0.1, 1.0, 50.0, 150.0, 1e4, 1e6]
XS = [0.0, 1.0, 2.0, 5.0, 10.0, 100.0, 1e3, 1e4, 1e6]


def _t(a, dtype=F64) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=float), dtype=dtype)


def _nb_grid():
    mu, theta, x = np.meshgrid(MUS, THETAS, XS, indexing="ij")
    return mu.ravel(), theta.ravel(), x.ravel()


def _scipy_nb(x, mu, theta):
    return stats.nbinom.logpmf(x, theta, theta / (theta + mu))


# --------------------------------------------------------------------------- names


def test_names_and_integer_flags():
    assert lk.LIKELIHOOD_NAMES == ("nb", "zinb", "poisson", "bernoulli", "nb_mixture")
    assert set(lk.REQUIRES_INTEGER_COUNTS) == set(lk.LIKELIHOOD_NAMES)
    assert [n for n, v in lk.REQUIRES_INTEGER_COUNTS.items() if not v] == ["bernoulli"]


@pytest.mark.parametrize("name", lk.LIKELIHOOD_NAMES)
def test_check_likelihood_name_accepts_valid(name):
    assert lk.check_likelihood_name(name) == name


def test_check_likelihood_name_error_message():
    msg = "Unknown likelihood 'nbb'. Choose one of: nb, zinb, poisson, bernoulli, nb_mixture."
    with pytest.raises(ValueError, match=re.escape(msg)):
        lk.check_likelihood_name("nbb")


def test_docstring_examples_run():
    result = doctest.testmod(lk, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 6
    assert result.failed == 0


# --------------------------------------------------------------------------- exact log_prob


def test_nb_matches_scipy_on_wide_grid():
    mu, theta, x = _nb_grid()
    ours = lk.NegativeBinomial(_t(mu), _t(theta), eps=0.0).log_prob(_t(x)).numpy()
    ref = _scipy_nb(x, mu, theta)
    # scipy takes p = theta / (theta + mu); when mu / (theta + mu) < 1e-12, rounding p loses
    # most digits of 1 - p and scipy itself is off (by 8e-4 relative at mu=1e-8, theta=1e6).
    # Those 18 cells are checked against the high-precision reference below instead.
    ok = mu / (theta + mu) > 1e-12
    assert ok.sum() == ok.size - 18
    np.testing.assert_allclose(ours[ok], ref[ok], rtol=1e-5)


def test_nb_matches_high_precision_reference_everywhere():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    mu, theta, x = _nb_grid()
    ours = lk.NegativeBinomial(_t(mu), _t(theta), eps=0.0).log_prob(_t(x)).numpy()

    def exact(xi, mi, ti):
        xi, mi, ti = mpmath.mpf(xi), mpmath.mpf(mi), mpmath.mpf(ti)
        comb = mpmath.loggamma(xi + ti) - mpmath.loggamma(ti) - mpmath.loggamma(xi + 1)
        return float(comb + ti * mpmath.log(ti / (ti + mi)) + xi * mpmath.log(mi / (ti + mi)))

    ref = np.array([exact(*v) for v in zip(x, mu, theta, strict=True)])
    np.testing.assert_allclose(ours, ref, rtol=1e-8)


def test_nb_float32_accuracy_large_theta():
    """float32 log_prob agrees with float64 to ~16 ulps of its largest intermediate term.

    That term is ``|log p|`` or ``lgamma(x + 1) ~ x log x``, so the tolerance is
    ``1e-3 + 1e-6 (|log p| + x log1p(x))`` for x <= 1e4 and theta up to 1e6. The plain
    ``lgamma(x + theta) - lgamma(theta)`` misses it by ~1 nat at theta = 1e6; the Stirling
    branch is what makes it pass (checked at the end, so the tolerance is meaningful).
    """
    mu, theta, x = _nb_grid()
    keep = x <= 1e4
    mu, theta, x = mu[keep], theta[keep], x[keep]
    ref = lk.NegativeBinomial(_t(mu), _t(theta), eps=0.0).log_prob(_t(x)).numpy()
    f32 = [_t(v, torch.float32) for v in (mu, theta, x)]
    ours = lk.NegativeBinomial(f32[0], f32[1], eps=0.0).log_prob(f32[2])
    assert ours.dtype == torch.float32
    tol = 1e-3 + 1e-6 * (np.abs(ref) + x * np.log1p(x))
    assert np.all(np.abs(ours.double().numpy() - ref) <= tol)
    m, t, xx = f32
    plain = (torch.lgamma(xx + t) - torch.lgamma(t) - torch.lgamma(xx + 1)
             + t * torch.log(t / (t + m)) + xx * torch.log(m / (t + m)))
    assert np.any(np.abs(plain.double().numpy() - ref) > tol)


@pytest.mark.parametrize("rate", [1e-8, 1e-3, 0.5, 10.0, 1e3, 1e6])
def test_poisson_matches_scipy(rate):
    x = np.array(XS)
    ours = lk.Poisson(_t([rate]), eps=0.0).log_prob(_t(x)).numpy()
    np.testing.assert_allclose(ours, stats.poisson.logpmf(x, rate), rtol=1e-5)


def test_bernoulli_matches_scipy():
    logits = np.array([-15.0, -3.0, -0.5, 0.0, 0.7, 4.0, 15.0])
    for k in (0.0, 1.0):
        ours = lk.Bernoulli(_t(logits)).log_prob(_t(np.full_like(logits, k))).numpy()
        np.testing.assert_allclose(ours, stats.bernoulli.logpmf(k, special.expit(logits)),
                                   rtol=1e-5)
    # beyond where expit rounds to 1 the log-probabilities stay exact
    big = np.array([-60.0, 60.0])
    d = lk.Bernoulli(_t(big))
    np.testing.assert_allclose(d.log_prob(_t([1.0, 1.0])).numpy(), special.log_expit(big))
    np.testing.assert_allclose(d.log_prob(_t([0.0, 0.0])).numpy(), special.log_expit(-big))


def test_bernoulli_treats_positive_counts_as_ones():
    logits = _t([-2.0, -0.3, 0.0, 1.5, 4.0])
    counts = _t([0.0, 1.0, 3.0, 17.0, 1e4])
    d = lk.Bernoulli(logits)
    torch.testing.assert_close(d.log_prob(counts), d.log_prob((counts > 0).to(F64)))
    torch.testing.assert_close(d.log_prob(counts)[1:], torch.nn.functional.logsigmoid(logits[1:]))
    assert d.log_prob(counts)[0] == torch.nn.functional.logsigmoid(-logits[0])
    assert lk.REQUIRES_INTEGER_COUNTS["bernoulli"] is False


def _zi_grid():
    mu, theta, x, z = np.meshgrid([1e-3, 0.5, 10.0, 1e3], [0.05, 1.0, 30.0, 500.0],
                                  [0.0, 1.0, 3.0, 50.0, 2e3], [-20.0, -2.0, 0.0, 1.5, 20.0],
                                  indexing="ij")
    return mu.ravel(), theta.ravel(), x.ravel(), z.ravel()


def test_zinb_matches_hand_computed_scipy_mixture():
    mu, theta, x, z = _zi_grid()
    ours = lk.ZeroInflatedNegativeBinomial(_t(mu), _t(theta), _t(z), eps=0.0).log_prob(_t(x))
    # pi = sigmoid(z) is the probability of the extra zero
    nb = _scipy_nb(x, mu, theta)
    ref = np.where(x == 0, np.logaddexp(special.log_expit(z), special.log_expit(-z) + nb),
                   special.log_expit(-z) + nb)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-5)


def test_mixture_matches_hand_computed_scipy_mixture():
    mu, theta, x, z = _zi_grid()
    mu_fg = 7.0 * mu + 3.0
    ours = lk.NegativeBinomialMixture(_t(mu), _t(mu_fg), _t(theta), _t(z), eps=0.0).log_prob(_t(x))
    # pi = sigmoid(z) is the probability of the background component (mu_background)
    ref = np.logaddexp(special.log_expit(z) + _scipy_nb(x, mu, theta),
                       special.log_expit(-z) + _scipy_nb(x, mu_fg, theta))
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-5)


NORMALISATION_CASES = {
    "nb_overdispersed": lambda: lk.NegativeBinomial(_t([3.0]), _t([0.7])),
    "nb_near_poisson": lambda: lk.NegativeBinomial(_t([50.0]), _t([2e4])),
    "nb_tiny_mean": lambda: lk.NegativeBinomial(_t([1e-3]), _t([0.2])),
    "zinb": lambda: lk.ZeroInflatedNegativeBinomial(_t([10.0]), _t([2.0]), _t([0.3])),
    "zinb_big_theta": lambda: lk.ZeroInflatedNegativeBinomial(_t([200.0]), _t([500.0]),
                                                             _t([-1.0])),
    "poisson": lambda: lk.Poisson(_t([30.0])),
    "mixture": lambda: lk.NegativeBinomialMixture(_t([2.0]), _t([80.0]), _t([5.0]), _t([0.5])),
    "mixture_overlap": lambda: lk.NegativeBinomialMixture(_t([20.0]), _t([25.0]), _t([150.0]),
                                                         _t([-2.0])),
}


@pytest.mark.parametrize("case", NORMALISATION_CASES)
def test_probabilities_sum_to_one(case):
    d = NORMALISATION_CASES[case]()
    x = torch.arange(0, 6000, dtype=F64)
    p = d.log_prob(x).exp()
    assert abs(p.sum().item() - 1.0) < 1e-7
    assert abs((x * p).sum().item() - d.mean.item()) < 1e-5 * max(1.0, d.mean.item())


def test_bernoulli_sums_to_one():
    d = lk.Bernoulli(_t([-3.0, 0.2, 9.0]))
    total = d.log_prob(_t([0.0] * 3)).exp() + d.log_prob(_t([1.0] * 3)).exp()
    torch.testing.assert_close(total, torch.ones(3, dtype=F64))


# --------------------------------------------------------------------------- scvi-tools oracle


def _random_params(seed: int, shape=(64, 40)):
    rng = np.random.default_rng(seed)
    mu = np.exp(rng.normal(0.0, 2.5, shape))
    theta = np.exp(rng.normal(0.0, 2.5, shape))
    x = rng.negative_binomial(theta, theta / (theta + mu)).astype(float)
    x[rng.random(shape) < 0.2] = 0.0
    logits = rng.normal(0.0, 3.0, shape)
    return _t(mu), _t(theta), _t(x), _t(logits)


def test_against_scvi_tools():
    """scvi-tools conventions (scvi/distributions/_negative_binomial.py):

    * ``ZeroInflatedNegativeBinomial(mu, theta, zi_logits)``: ``sigmoid(zi_logits)`` is the
      probability of the extra zero ("logit of the dropout parameter", softplus(-pi) terms),
      i.e. the same sign as our ``zi_logits``.
    * ``NegativeBinomialMixture(mu1, mu2, theta1, mixture_logits)``: ``sigmoid(mixture_logits)``
      is the probability of component 1 and totalVI passes the background as ``mu1``; so
      ``mu1 = mu_background``, ``mu2 = mu_foreground``, same ``mixture_logits``, ``theta2=None``.
    * Both use ``eps = 1e-8`` inside ``log(mu + eps)``, ``log(theta + eps)`` like our default.
    """
    sd = pytest.importorskip("scvi.distributions")
    mu, theta, x, logits = _random_params(0)
    mu_fg = mu * (1.0 + _random_params(1)[0])
    pairs = [
        (lk.NegativeBinomial(mu, theta), sd.NegativeBinomial(mu=mu, theta=theta)),
        (lk.ZeroInflatedNegativeBinomial(mu, theta, logits),
         sd.ZeroInflatedNegativeBinomial(mu=mu, theta=theta, zi_logits=logits)),
        (lk.NegativeBinomialMixture(mu, mu_fg, theta, logits),
         sd.NegativeBinomialMixture(mu1=mu, mu2=mu_fg, theta1=theta, mixture_logits=logits)),
    ]
    for ours, theirs in pairs:
        torch.testing.assert_close(ours.log_prob(x), theirs.log_prob(x), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(ours.mean, theirs.mean, rtol=1e-10, atol=0.0)
    torch.testing.assert_close(pairs[1][0].variance, pairs[1][1].variance, rtol=1e-10, atol=0.0)


# --------------------------------------------------------------------------- moments of samples

N_SAMPLES = 200_000
VAR_RTOL = 0.04  # empirical variance; a sampling error this large is > 4 standard errors here

MOMENT_CASES = {
    "nb": (lambda d: lk.NegativeBinomial(_t([4.0, 30.0], d), _t([0.8, 5.0], d)),
           # wrong: over-dispersion term doubled / halved
           lambda d: [d.mu + 2 * d.mu**2 / d.theta, d.mu + d.mu**2 / (2 * d.theta)]),
    "zinb": (lambda d: lk.ZeroInflatedNegativeBinomial(_t([6.0, 40.0], d), _t([1.5, 8.0], d),
                                                      _t([0.4, -0.6], d)),
             # wrong: NB variance scaled by (1 - pi), i.e. the pi * mu term forgotten
             lambda d: [(1 - d.zi_probs) * (d.mu + d.mu**2 / d.theta)]),
    "poisson": (lambda d: lk.Poisson(_t([0.7, 25.0], d)), lambda d: [d.rate * 1.1]),
    "bernoulli": (lambda d: lk.Bernoulli(_t([-1.2, 0.8], d)), lambda d: [d.mean]),
    "nb_mixture": (
        lambda d: lk.NegativeBinomialMixture(_t([2.0, 5.0], d), _t([30.0, 60.0], d),
                                             _t([3.0, 10.0], d), _t([0.5, -1.0], d)),
        # wrong: the between-component term of the law of total variance forgotten
        lambda d: [d.variance - d.background_probability * d.foreground_probability
                   * (d.mu_background - d.mu_foreground) ** 2]),
}


@pytest.mark.parametrize("case", MOMENT_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_sample_moments_match_mean_and_variance(case, dtype):
    make, wrong_variances = MOMENT_CASES[case]
    d = make(dtype)
    gen = torch.Generator().manual_seed(1234)
    s = d.sample(gen, sample_shape=(N_SAMPLES,))
    assert s.shape == (N_SAMPLES, 2) and s.dtype == dtype
    assert torch.all(s >= 0) and torch.all(s == s.round())
    s = s.double()
    mean, var = d.mean.double(), d.variance.double()
    emp_mean, emp_var = s.mean(0), s.var(0)
    assert torch.all((emp_mean - mean).abs() <= 5 * (var / N_SAMPLES).sqrt())
    assert torch.all(((emp_var - var) / var).abs() <= VAR_RTOL)
    # the check is sharp enough to reject a wrong formula: doubled, or the plausible slip
    for wrong in [2 * var, *(w.double() for w in wrong_variances(d))]:
        assert torch.any(((emp_var - wrong) / wrong).abs() > VAR_RTOL)


def test_sampling_is_reproducible_with_generator_and_broadcasts():
    mu = torch.rand(3, 4) * 10 + 0.1
    theta = torch.rand(4) + 0.5
    logits = torch.randn(3, 1)
    for d in [lk.NegativeBinomial(mu, theta), lk.ZeroInflatedNegativeBinomial(mu, theta, logits),
              lk.Poisson(mu), lk.Bernoulli(logits.expand(3, 4)),
              lk.NegativeBinomialMixture(mu, 3 * mu, theta, logits)]:
        a = d.sample(torch.Generator().manual_seed(7), sample_shape=(5,))
        b = d.sample(torch.Generator().manual_seed(7), sample_shape=(5,))
        assert a.shape == (5, 3, 4) and torch.equal(a, b)
        assert d.sample().shape == (3, 4) == d.mean.shape == d.variance.shape
        assert d.log_prob(torch.ones(3, 4, dtype=torch.long)).shape == (3, 4)


def test_samples_do_not_track_gradients():
    mu = torch.full((4,), 3.0, requires_grad=True)
    assert not lk.NegativeBinomial(mu, torch.ones(4)).sample().requires_grad


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sampling_and_log_prob_on_cuda():
    dev = torch.device("cuda")
    mu = torch.full((1000, 3), 5.0, device=dev)
    theta, logits = torch.full((3,), 2.0, device=dev), torch.zeros(1000, 3, device=dev)
    for d in [lk.NegativeBinomial(mu, theta), lk.ZeroInflatedNegativeBinomial(mu, theta, logits),
              lk.Poisson(mu), lk.Bernoulli(logits),
              lk.NegativeBinomialMixture(mu, 4 * mu, theta, logits)]:
        a = d.sample(torch.Generator(dev).manual_seed(3))
        b = d.sample(torch.Generator(dev).manual_seed(3))
        assert a.device.type == "cuda" and torch.equal(a, b)
        assert torch.isfinite(d.log_prob(a)).all()


# --------------------------------------------------------------------------- stability


def _all_distributions(mu, theta, logits):
    return [lk.NegativeBinomial(mu, theta), lk.ZeroInflatedNegativeBinomial(mu, theta, logits),
            lk.Poisson(mu), lk.Bernoulli(logits),
            lk.NegativeBinomialMixture(mu, mu * 5.0 + 1.0, theta, logits)]


@pytest.mark.parametrize("mu", [0.0, 1e-8, 1.0, 1e6])
@pytest.mark.parametrize("theta", [1e-4, 100.0, 1e6])
def test_gradients_finite_for_extreme_parameters_float32(mu, theta):
    x = torch.tensor([0.0, 1.0, 1e4])
    for logit in (-30.0, 0.0, 30.0):
        m = torch.full((3,), mu, requires_grad=True)
        t = torch.full((3,), theta, requires_grad=True)
        z = torch.full((3,), logit, requires_grad=True)
        for d in _all_distributions(m, t, z):
            lp = d.log_prob(x)
            assert lp.dtype == torch.float32 and torch.isfinite(lp).all(), (type(d), lp)
            m.grad = t.grad = z.grad = None
            lp.sum().backward()
            for p in (m, t, z):
                assert p.grad is None or torch.isfinite(p.grad).all(), (type(d), p.grad)


@settings(max_examples=150, deadline=None)
@given(
    log_mu=st.floats(-8.0, 6.0), log_theta=st.floats(-4.0, 6.0), logit=st.floats(-30.0, 30.0),
    x=st.one_of(st.integers(0, 20), st.integers(0, 10**6)), rel=st.floats(0.0, 3.0),
)
def test_log_prob_is_a_finite_log_probability(log_mu, log_theta, logit, x, rel):
    mu, theta = 10.0**log_mu, 10.0**log_theta
    xs = torch.tensor([float(x), float(round(mu * rel))], dtype=F64)  # also near the mean
    m, t, z = _t([mu]), _t([theta]), _t([logit])
    for d in _all_distributions(m, t, z):
        lp = d.log_prob(xs)
        assert torch.isfinite(lp).all(), (type(d), lp)
        # <= 0 up to float64 rounding of logaddexp(log pi, log(1 - pi)) ~ log 1
        assert (lp <= 1e-12).all(), (type(d), lp)
    lp32 = [d.log_prob(xs.float()) for d in _all_distributions(m.float(), t.float(), z.float())]
    assert all(torch.isfinite(v).all() for v in lp32)
