"""Property tests (hypothesis): fusion algebra and likelihoods against scipy.stats."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import special, stats

from omnivae.module import likelihoods as lk
from omnivae.module.fusion import fuse, fusion_subsets, product_of_experts

F64 = torch.float64
FUSIONS = st.sampled_from(["poe", "moe", "mopoe"])


@st.composite
def experts(draw, max_modalities=4, max_cells=6, max_latent=3):
    """Random expert parameters ``(M, n, d)`` and a mask in which every cell has data."""
    m = draw(st.integers(1, max_modalities))
    n = draw(st.integers(1, max_cells))
    d = draw(st.integers(1, max_latent))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    loc = torch.randn(m, n, d, generator=g, dtype=F64) * draw(st.sampled_from([0.1, 1.0, 10.0]))
    logvar = torch.randn(m, n, d, generator=g, dtype=F64) * 3.0
    mask = torch.rand(n, m, generator=g) < draw(st.floats(0.2, 1.0))
    mask[torch.arange(n), torch.randint(m, (n,), generator=g)] = True  # >= 1 modality per cell
    return loc, logvar, mask


# --------------------------------------------------------------------------- fusion


@settings(max_examples=60, deadline=None)
@given(experts())
def test_poe_precisions_add_up_with_the_prior_once(case):
    loc, logvar, mask = case
    joint = product_of_experts(loc, logvar, mask)
    precision = torch.exp(-logvar) * mask.T.unsqueeze(-1)  # (M, n, d), 0 where missing
    torch.testing.assert_close(torch.exp(-joint.logvar), 1.0 + precision.sum(0))
    torch.testing.assert_close(joint.loc, (precision * loc).sum(0) / (1.0 + precision.sum(0)))


@settings(max_examples=60, deadline=None)
@given(experts(), FUSIONS)
def test_mixture_weights_sum_to_one_over_components_the_cell_has(case, fusion):
    loc, logvar, mask = case
    mix = fuse(loc, logvar, mask, fusion)
    torch.testing.assert_close(mix.weights.sum(0), torch.ones(mask.shape[0], dtype=F64))
    subsets = fusion_subsets(mask.shape[1], fusion)
    has_all = (subsets.unsqueeze(1) <= mask.unsqueeze(0)).all(-1)  # (K, n) subset observed
    if fusion != "poe":
        assert torch.equal(mix.weights > 0, has_all)
        # uniform over the components that exist
        expected = (1.0 / has_all.sum(0).to(F64)).expand_as(has_all)
        assert torch.allclose(mix.weights[has_all], expected[has_all])


@settings(max_examples=60, deadline=None)
@given(experts(), FUSIONS, st.integers(0, 2**31 - 1))
def test_a_missing_modality_never_changes_the_posterior(case, fusion, seed):
    loc, logvar, mask = case
    g = torch.Generator().manual_seed(seed)
    noise_loc = torch.randn(loc.shape, generator=g, dtype=F64) * 1e3
    noise_logvar = torch.randn(loc.shape, generator=g, dtype=F64) * 5
    missing = ~mask.T.unsqueeze(-1)  # (M, n, 1)
    other_loc = torch.where(missing, noise_loc, loc)  # whatever a missing encoder would say
    other_logvar = torch.where(missing, noise_logvar, logvar)
    a, b = fuse(loc, logvar, mask, fusion), fuse(other_loc, other_logvar, mask, fusion)
    assert torch.equal(a.weights, b.weights)
    used = a.weights > 0
    assert torch.equal(a.components.loc[used], b.components.loc[used])
    assert torch.equal(a.components.logvar[used], b.components.logvar[used])
    assert torch.equal(a.mean, b.mean)


@settings(max_examples=40, deadline=None)
@given(experts(max_modalities=3))
def test_moe_mean_is_the_average_of_unimodal_posterior_means(case):
    loc, logvar, mask = case
    mix = fuse(loc, logvar, mask, "moe")
    unimodal = [product_of_experts(loc, logvar, torch.eye(mask.shape[1], dtype=torch.bool)[m]
                                   .expand_as(mask)).loc for m in range(mask.shape[1])]
    stacked = torch.stack(unimodal) * mask.T.unsqueeze(-1)
    torch.testing.assert_close(mix.mean, stacked.sum(0) / mask.sum(1, keepdim=True))


# --------------------------------------------------------------------------- likelihoods

MU = st.floats(1e-3, 1e4)
THETA = st.floats(1e-2, 1e4)
LOGIT = st.floats(-20.0, 20.0)
COUNT = st.integers(0, 5000)


def _t(value):
    return torch.tensor([float(value)], dtype=F64)


def _nb_ref(x, mu, theta):
    return stats.nbinom.logpmf(x, theta, theta / (theta + mu))


@settings(max_examples=150, deadline=None)
@given(x=COUNT, mu=MU, theta=THETA)
def test_nb_log_prob_matches_scipy(x, mu, theta):
    got = lk.NegativeBinomial(_t(mu), _t(theta), eps=0.0).log_prob(_t(x)).item()
    ref = _nb_ref(x, mu, theta)
    assert np.isfinite(got) and np.isclose(got, ref, rtol=1e-6, atol=1e-6), (got, ref)


@settings(max_examples=150, deadline=None)
@given(x=COUNT, rate=MU)
def test_poisson_log_prob_matches_scipy(x, rate):
    got = lk.Poisson(_t(rate), eps=0.0).log_prob(_t(x)).item()
    assert np.isclose(got, stats.poisson.logpmf(x, rate), rtol=1e-9, atol=1e-9)


@settings(max_examples=100, deadline=None)
@given(x=st.integers(0, 50), logit=LOGIT)
@example(x=0, logit=20.0)  # where bernoulli.logpmf(0, expit(logit)) was off by ~5e-8
def test_bernoulli_log_prob_matches_scipy(x, logit):
    got = lk.Bernoulli(_t(logit)).log_prob(_t(x)).item()
    # log_expit, not bernoulli.logpmf(., expit(logit)): that forms 1 - p, whose rounding at
    # logit 20 (1 - p = 2e-9) exceeds the 1e-9 tolerance.
    ref = special.log_expit(logit if x > 0 else -logit)
    assert np.isclose(got, ref, rtol=1e-9, atol=1e-9), (got, ref)
    assert np.isclose(np.exp(got), stats.bernoulli.pmf(int(x > 0), special.expit(logit)),
                      rtol=1e-6, atol=1e-12)


@settings(max_examples=150, deadline=None)
@given(x=COUNT, mu=MU, theta=THETA, logit=LOGIT)
def test_zinb_log_prob_matches_the_scipy_mixture(x, mu, theta, logit):
    got = lk.ZeroInflatedNegativeBinomial(_t(mu), _t(theta), _t(logit), eps=0.0).log_prob(_t(x)).item()
    log_pi, log_not_pi = special.log_expit(logit), special.log_expit(-logit)
    ref = log_not_pi + _nb_ref(x, mu, theta)
    if x == 0:
        ref = np.logaddexp(log_pi, ref)
    assert np.isclose(got, ref, rtol=1e-6, atol=1e-6), (got, ref)


@settings(max_examples=150, deadline=None)
@given(x=COUNT, mu=MU, ratio=st.floats(1.0, 100.0), theta=THETA, logit=LOGIT)
def test_protein_mixture_log_prob_matches_the_scipy_mixture(x, mu, ratio, theta, logit):
    dist = lk.NegativeBinomialMixture(_t(mu), _t(mu * ratio), _t(theta), _t(logit), eps=0.0)
    ref = np.logaddexp(special.log_expit(logit) + _nb_ref(x, mu, theta),
                       special.log_expit(-logit) + _nb_ref(x, mu * ratio, theta))
    got = dist.log_prob(_t(x)).item()
    assert np.isclose(got, ref, rtol=1e-6, atol=1e-6), (got, ref)


@settings(max_examples=100, deadline=None)
@given(mu=st.floats(1e-8, 1e6), theta=st.floats(1e-4, 1e6), logit=LOGIT,
       x=st.floats(0, 1e6).map(round))
def test_log_probs_are_finite_non_positive_in_float32(mu, theta, logit, x):
    m, t, z, v = (torch.tensor([value], dtype=torch.float32) for value in (mu, theta, logit, x))
    for dist in (lk.NegativeBinomial(m, t), lk.ZeroInflatedNegativeBinomial(m, t, z),
                 lk.Poisson(m), lk.Bernoulli(z), lk.NegativeBinomialMixture(m, m * 3 + 1, t, z)):
        value = dist.log_prob(v)
        assert torch.isfinite(value).all() and (value <= 1e-5).all(), (type(dist).__name__, value)
