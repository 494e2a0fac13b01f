"""Batch-dependence penalties: each estimator against a known answer.

Known answers used: direct NumPy/loop implementations (HSIC with explicit H, MMD block means),
``torch.distributions.kl_divergence``, a permutation null (independent data), Monte Carlo
mutual information (the pairwise-KL bounds) and a Bayes-optimal classifier (adversarial KL).
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from torch.distributions import Independent, Normal, kl_divergence

from omnivae.module import penalties as P

ESTIMATORS = ["hsic", "mmd", "pairwise_kl"]  # closed-form; the adversarial one is trained


def _stat(name, z, b, n_batches, labels=None):
    """The estimator ``name`` as a function of (z, batch); pairwise_kl uses fixed variances."""
    if name == "hsic":
        return P.hsic(z, b, n_batches, labels=labels)
    if name == "mmd":
        return P.mmd(z, b, n_batches, labels=labels)
    logvar = torch.full_like(z, -1.0)
    return P.pairwise_kl_bound(z, logvar, b, n_batches, pairs="across_batches", labels=labels)


def _shifted(n=200, d=5, n_batches=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = torch.randint(0, n_batches, (n,), generator=g)
    noise = torch.randn(n, d, generator=g)
    dirs = torch.nn.functional.normalize(torch.randn(n_batches, d, generator=g), dim=1)
    return b, noise, dirs, g


def _permute_within(b, labels, g):
    out = b.clone()
    for value in labels.unique():
        rows = (labels == value).nonzero(as_tuple=True)[0]
        out[rows] = b[rows[torch.randperm(rows.numel(), generator=g)]]
    return out


def _train(clf, z, b, labels=None, steps=300):
    opt = torch.optim.Adam(clf.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        loss, _ = P.adversarial_loss(clf, z, b, labels=labels)
        loss.backward()
        opt.step()
    return clf


def _lower_median(dist):
    off = np.sort(dist[~np.eye(len(dist), dtype=bool)])
    return off[(len(off) - 1) // 2]


# names -----------------------------------------------------------------------------------------
def test_check_penalty_name():
    assert P.PENALTIES == ("hsic", "mmd", "adversarial", "pairwise_kl")
    assert P.check_penalty_name("MMD") == "mmd"
    with pytest.raises(ValueError, match="Unknown penalty 'dcor'") as err:
        P.check_penalty_name("dcor")
    assert "hsic, mmd, adversarial, pairwise_kl" in str(err.value)


def test_penalties_module_imports_only_torch():
    tree = ast.parse(Path(P.__file__).read_text())
    roots, own = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots.add((node.module or "").split(".")[0])
            if (node.module or "").startswith("omnivae"):
                own.add(node.module)
    assert roots <= {"__future__", "collections", "typing", "torch", "omnivae"}, roots
    assert own <= {"omnivae.module.records"}, own  # only the pure-torch records of the module layer


# independence vs dependence --------------------------------------------------------------------
@pytest.mark.parametrize("name", ESTIMATORS)
def test_independent_within_permutation_null_dependent_above_and_monotone(name):
    b, noise, dirs, g = _shifted()
    null = torch.stack([_stat(name, noise, b[torch.randperm(len(b), generator=g)], 3)
                        for _ in range(40)])
    observed = _stat(name, noise, b, 3)
    assert observed <= torch.quantile(null, 0.95)
    shifted = [float(_stat(name, noise + s * dirs[b], b, 3)) for s in (0.75, 1.5, 3.0)]
    assert shifted[0] > float(null.max())
    assert shifted[0] < shifted[1] < shifted[2]
    if name != "pairwise_kl":  # HSIC and MMD estimate a dependence that is 0 here
        assert shifted[2] > 5 * float(observed)


# HSIC ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bandwidth", [None, 0.7])
def test_hsic_matches_explicit_centering_matrices(bandwidth):
    rng = np.random.default_rng(1)
    n, n_batches = 12, 3
    z = rng.normal(size=(n, 4))
    b = rng.integers(0, n_batches, n)
    dist = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    h = _lower_median(dist) if bandwidth is None else bandwidth
    K = np.exp(-dist / h)
    L = (b[:, None] == b[None, :]).astype(float)
    H = np.eye(n) - np.ones((n, n)) / n
    expected = np.trace(K @ H @ L @ H) / (n - 1) ** 2
    got = P.hsic(torch.from_numpy(z), torch.from_numpy(b), n_batches, bandwidth=bandwidth)
    assert got.dtype == torch.float64
    assert float(got) == pytest.approx(expected, rel=1e-10)


# MMD -------------------------------------------------------------------------------------------
def test_mmd_matches_loop_over_batches():
    rng = np.random.default_rng(2)
    b = np.array([0] * 6 + [1] * 5 + [3])  # batch 2 absent, batch 3 has one cell (skipped)
    z = rng.normal(size=(len(b), 3)) + b[:, None]
    scales = (0.1, 1.0, 10.0)
    dist = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    m = _lower_median(dist)
    values = []
    for batch in (0, 1):
        x, y = z[b == batch], z[b != batch]

        def k(u, v):
            dd = ((u[:, None, :] - v[None, :, :]) ** 2).sum(-1)
            return np.mean([np.exp(-dd / (s * m)) for s in scales], axis=0)

        values.append(k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean())
    got = P.mmd(torch.from_numpy(z), torch.from_numpy(b), 4, scales=scales)
    assert float(got) == pytest.approx(np.mean(values), rel=1e-10)


def test_mmd_of_identical_distributions_vanishes_for_large_n():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(1500, 3, generator=g)
    b = torch.randint(0, 2, (1500,), generator=g)
    same = float(P.mmd(z, b, 2))
    assert 0 <= same < 5e-3
    assert float(P.mmd(z + b[:, None], b, 2)) > 20 * same


# pairwise KL -----------------------------------------------------------------------------------
def test_pairwise_kl_matrix_matches_torch_distributions():
    g = torch.Generator().manual_seed(4)
    loc = 3 * torch.randn(5, 3, generator=g, dtype=torch.float64)
    logvar = torch.randn(5, 3, generator=g, dtype=torch.float64)
    q = Independent(Normal(loc, torch.exp(0.5 * logvar)), 1)
    expected = torch.stack([
        torch.stack([kl_divergence(
            Independent(Normal(loc[i], q.base_dist.scale[i]), 1),
            Independent(Normal(loc[j], q.base_dist.scale[j]), 1)) for j in range(5)])
        for i in range(5)])
    torch.testing.assert_close(P.pairwise_gaussian_kl(loc, logvar), expected)
    same = P.pairwise_gaussian_kl(loc[:1].expand(5, 3), logvar[:1].expand(5, 3))
    assert torch.equal(same, torch.zeros(5, 5, dtype=torch.float64))
    b = torch.tensor([0, 1, 0, 1, 2])
    for pairs in ("all", "across_batches"):
        bound = P.pairwise_kl_bound(loc[:1].expand(5, 3), logvar[:1].expand(5, 3), b, 3, pairs=pairs)
        assert float(bound) == 0.0


def test_pairwise_kl_bounds_monte_carlo_mutual_information():
    """I(z; c) <= across-batch bound <= all-pairs bound, and I(z; x) <= all-pairs bound."""
    loc = torch.tensor([[-1.0], [0.5], [0.0], [1.5], [2.0], [1.0]], dtype=torch.float64)
    logvar = torch.tensor([[0.0], [-1.0], [0.5], [-0.5], [0.0], [-1.0]], dtype=torch.float64)
    b = torch.tensor([0, 0, 0, 1, 1, 1])
    q = Normal(loc[:, 0], torch.exp(0.5 * logvar[:, 0]))  # n components
    g = torch.Generator().manual_seed(5)
    z = loc[:, 0] + torch.exp(0.5 * logvar[:, 0]) * torch.randn(20000, 6, generator=g, dtype=torch.float64)
    logq = q.log_prob(z[..., None])  # (S, i, j): log q_j(z_i)
    log_mix = torch.logsumexp(logq, -1) - math.log(6)
    log_cond = torch.stack([torch.logsumexp(logq[..., b == c], -1) - math.log(3) for c in (0, 1)], -1)
    own = logq.diagonal(dim1=1, dim2=2)
    mi_zx = float((own - log_mix).mean())
    mi_zc = float((log_cond[:, torch.arange(6), b] - log_mix).mean())
    across = float(P.pairwise_kl_bound(loc, logvar, b, 2, pairs="across_batches"))
    every = float(P.pairwise_kl_bound(loc, logvar, b, 2))
    assert 0.05 < mi_zc < across - 0.02 < every
    assert mi_zx < every


# adversarial -----------------------------------------------------------------------------------
def test_grad_reverse_flips_and_scales_the_gradient():
    x = torch.randn(4, 3, requires_grad=True)
    w = torch.randn(4, 3)
    y = P.grad_reverse(x, 2.5)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    torch.testing.assert_close(x.grad, -2.5 * w)
    (gx,) = torch.autograd.grad((P.grad_reverse(x) * w).sum(), x)
    torch.testing.assert_close(gx, -w)


def test_adversarial_classifier_learns_dependence_not_independence():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(6)
    n = 800
    b = torch.randint(0, 2, (n,), generator=g)
    noise = torch.randn(n, 5, generator=g)
    train, test = slice(0, 500), slice(500, n)
    results = {}
    for shift in (0.0, 1.0, 4.0):
        z = noise + shift * b[:, None].float() * torch.tensor([1.0, 0, 0, 0, 0])
        clf = _train(P.BatchClassifier(5, 2, n_hidden=32), z[train], b[train])
        with torch.no_grad():
            acc = float((clf(z[test]).argmax(1) == b[test]).float().mean())
            _, penalty = P.adversarial_loss(clf, z[test], b[test])
        results[shift] = (acc, float(penalty))
    assert results[4.0][0] > 0.9
    assert abs(results[0.0][0] - 0.5) < 0.1
    penalties = [results[s][1] for s in (0.0, 1.0, 4.0)]
    assert penalties[0] < penalties[1] < penalties[2] <= math.log(2) + 1e-6


def test_adversarial_kl_of_bayes_classifier_equals_mutual_information():
    mu = 1.0

    class Bayes(torch.nn.Module):  # exact log p(c | z) up to a constant, for z ~ N(±mu, 1)
        def forward(self, z):
            return torch.cat([mu * z, -mu * z], dim=1)

    g = torch.Generator().manual_seed(7)
    b = torch.arange(20000) % 2
    z = (1 - 2 * b[:, None]).double() * mu + torch.randn(20000, 1, generator=g, dtype=torch.float64)
    _, penalty = P.adversarial_loss(Bayes(), z, b)

    def entropy_given(x):
        p = 1 / (1 + np.exp(-2 * mu * x))
        return -(p * np.log(p) + (1 - p) * np.log1p(-p))

    density = lambda x: 0.5 * (stats.norm.pdf(x, mu) + stats.norm.pdf(x, -mu))  # noqa: E731
    mi = math.log(2) - integrate.quad(lambda x: density(x) * entropy_given(x), -12, 12)[0]
    assert float(penalty) == pytest.approx(mi, abs=0.01)
    _, neg_ce = P.adversarial_loss(Bayes(), z, b, mode="neg_ce")
    assert float(neg_ce) < 0


def test_adversarial_gradients_are_separated():
    clf = P.BatchClassifier(3, 2, n_hidden=8)
    z = torch.randn(10, 3, requires_grad=True)
    clf_loss, penalty = P.adversarial_loss(clf, z, torch.arange(10) % 2)
    assert not penalty.requires_grad or all(
        g is None for g in torch.autograd.grad(penalty, list(clf.parameters()), allow_unused=True))
    (gz,) = torch.autograd.grad(penalty, z)
    assert torch.isfinite(gz).all() and gz.abs().sum() > 0
    assert torch.autograd.grad(clf_loss, z, allow_unused=True)[0] is None


# label conditioning ----------------------------------------------------------------------------
def _confounded(n=300, seed=8):
    """Batch depends on the label (90 / 10), z on the label only: independent given the label."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    flip = torch.rand(n, generator=g) < 0.1
    b = torch.where(flip, 1 - labels, labels)
    z = torch.randn(n, 4, generator=g) + 4.0 * labels[:, None].float() * torch.tensor([1.0, 0, 0, 0])
    return z, b, labels, g


@pytest.mark.parametrize("name", ESTIMATORS)
def test_label_conditioning_removes_confounded_dependence(name):
    z, b, labels, g = _confounded()
    plain = float(_stat(name, z, b, 2))
    conditioned = float(_stat(name, z, b, 2, labels))
    null = torch.stack([_stat(name, z, _permute_within(b, labels, g), 2, labels) for _ in range(30)])
    assert conditioned <= float(torch.quantile(null, 0.95))
    assert plain > 3 * conditioned and plain > float(null.max())


def test_label_conditioning_of_adversarial_penalty():
    torch.manual_seed(0)
    z, b, labels, _ = _confounded(n=1200)
    fit, held = slice(0, 600), slice(600, 1200)
    plain = _train(P.BatchClassifier(4, 2, n_hidden=16), z[fit], b[fit], steps=150)
    cond = _train(P.BatchClassifier(4, 2, n_hidden=16, n_labels=2), z[fit], b[fit], labels[fit],
                  steps=150)
    with torch.no_grad():
        _, pen_plain = P.adversarial_loss(plain, z[held], b[held])
        _, pen_cond = P.adversarial_loss(cond, z[held], b[held], labels=labels[held])
    mi_label_batch = math.log(2) + 0.9 * math.log(0.9) + 0.1 * math.log(0.1)  # I(c; label) ≈ 0.37
    assert float(pen_plain) > 0.6 * mi_label_batch
    assert float(pen_cond) < 0.05


@pytest.mark.parametrize("name", ESTIMATORS)
def test_label_groups_are_size_weighted_and_degenerate_groups_skipped(name):
    g = torch.Generator().manual_seed(9)
    z = torch.randn(40, 3, generator=g, dtype=torch.float64)
    b = torch.randint(0, 3, (40,), generator=g)
    labels = torch.tensor([0] * 15 + [1] * 20 + [2] * 4 + [3])  # 2: single batch, 3: one cell
    b[35:39] = 2
    z[35:] += 10 * b[35:, None]  # would dominate if the degenerate groups were not skipped
    g0, g1 = slice(0, 15), slice(15, 35)
    expected = (15 * _stat(name, z[g0], b[g0], 3) + 20 * _stat(name, z[g1], b[g1], 3)) / 35
    torch.testing.assert_close(_stat(name, z, b, 3, labels), expected)


# gradients, dtypes, tiny inputs ----------------------------------------------------------------
def _penalty(name, z, b, n_batches, labels=None, pairs="all"):
    if name == "adversarial":
        torch.manual_seed(0)
        clf = P.BatchClassifier(z.shape[1], n_batches, n_hidden=8).to(z.dtype)
        return P.adversarial_loss(clf, z, b, labels=labels)[1]
    if name == "pairwise_kl":
        return P.pairwise_kl_bound(z, 0.1 * z, b, n_batches, labels=labels, pairs=pairs)
    return _stat(name, z, b, n_batches, labels)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", P.PENALTIES)
def test_gradients_reach_z_and_are_finite(name, dtype):
    b, noise, dirs, _ = _shifted(n=64, d=4)
    z = (noise + dirs[b]).to(dtype).requires_grad_(True)
    labels = torch.arange(64) % 2
    for lab, pairs in [(None, "all"), (labels, "all"), (None, "across_batches")]:
        value = _penalty(name, z, b, 3, lab, pairs)
        assert value.dtype == dtype and value.shape == ()
        (grad,) = torch.autograd.grad(value, z)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", P.PENALTIES)
def test_tiny_inputs(name, dtype):
    for n, b in [(1, [0]), (2, [1, 1]), (3, [0, 0, 0]), (2, [0, 1]), (3, [0, 1, 1])]:
        z = torch.randn(n, 2, dtype=dtype, requires_grad=True)
        batch = torch.tensor(b)
        for labels in (None, torch.arange(n)):
            value = _penalty(name, z, batch, 2, labels, pairs="across_batches")
            (grad,) = torch.autograd.grad(value, z)
            assert torch.isfinite(value) and torch.isfinite(grad).all()
            if len(set(b)) == 1 or labels is not None:  # nothing to compare: exactly 0
                assert value.item() == 0.0 and not grad.any()
            every = _penalty(name, z, batch, 2, labels, pairs="all")  # I(z; x) bound: batch-free
            assert torch.isfinite(torch.autograd.grad(every, z)[0]).all()
    mmd_two_singletons = P.mmd(torch.randn(2, 2), torch.tensor([0, 1]), 2)
    assert float(mmd_two_singletons) == 0.0


# several batch keys ----------------------------------------------------------------------------
def test_combined_penalty_sums_over_batch_keys():
    b1, z, _, g = _shifted(n=60, d=4, n_batches=3)
    b2 = torch.randint(0, 2, (60,), generator=g)
    logvar = torch.zeros_like(z)
    for name, single in [
        ("hsic", lambda b, nb: P.hsic(z, b, nb, bandwidth=2.0)),
        ("mmd", lambda b, nb: P.mmd(z, b, nb)),
        ("pairwise_kl", lambda b, nb: P.pairwise_kl_bound(z, logvar, b, nb, pairs="across_batches")),
    ]:
        options = {"hsic": {"bandwidth": 2.0}, "pairwise_kl": {"pairs": "across_batches"}}.get(name, {})
        pen, clf = P.combined_penalty(name, z, [b1, b2], [3, 2], weights=[1.0, 0.5],
                                      logvar=logvar, **options)
        torch.testing.assert_close(pen, single(b1, 3) + 0.5 * single(b2, 2))
        assert float(clf) == 0.0
    clfs = [P.BatchClassifier(4, 3, n_hidden=8), P.BatchClassifier(4, 2, n_hidden=8)]
    pen, clf = P.combined_penalty("adversarial", z, [b1, b2], [3, 2], classifiers=clfs)
    parts = [P.adversarial_loss(c, z, b) for c, b in zip(clfs, [b1, b2], strict=True)]
    torch.testing.assert_close(pen, parts[0][1] + parts[1][1])
    torch.testing.assert_close(clf, parts[0][0] + parts[1][0])
    with pytest.raises(ValueError, match="logvar"):
        P.combined_penalty("pairwise_kl", z, [b1], [3])
    with pytest.raises(ValueError, match="classifier"):
        P.combined_penalty("adversarial", z, [b1], [3])
    with pytest.raises(ValueError, match="Unknown penalty"):
        P.combined_penalty("wasserstein", z, [b1], [3])
