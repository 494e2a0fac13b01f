"""The fast paths give what the plain ones give: CSR gathering, non-zero likelihood sums,
hand-written gradients, the minibatch order, per-epoch logging, precision and compile options."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import omnivae
from omnivae.data.cells import CellData, gather_rows
from omnivae.module import likelihoods as lk
from omnivae.module.likelihood_sums import summed_log_prob
from omnivae.module.records import NonZero
from omnivae.train.loaders import make_loader
from omnivae.train.plan import training_precision


def _counts(n: int = 40, g: int = 30, density: float = 0.2, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    x = rng.poisson(3.0, (n, g)) * (rng.random((n, g)) < density)
    return torch.tensor(x, dtype=torch.float32)


def test_gather_rows_equals_the_dense_rows_with_explicit_zeros_and_duplicates():
    x = _counts().numpy()
    m = sp.csr_matrix(x)
    m.data[::7] = 0.0  # explicit zeros stored in the matrix
    # an unsorted, duplicated copy of the same matrix (as products of sparse matrices give)
    coo = m.tocoo()
    dup = sp.csr_matrix((np.r_[coo.data / 2, coo.data / 2], (np.r_[coo.row, coo.row],
                         np.r_[coo.col, coo.col])), shape=m.shape)
    data = CellData(("a",), {"a": dup}, np.ones((40, 1), bool), np.zeros(40, "int64"),
                    {"a": np.ones(40, "float32")})
    rows = np.array([5, 0, 5, 39, 12])
    dense, nz = gather_rows(data.counts["a"], rows)
    np.testing.assert_array_equal(dense.numpy(), m[rows].toarray())
    ref = NonZero.from_dense(dense)
    for got, want in zip((nz.rows, nz.cols, nz.values), (ref.rows, ref.cols, ref.values),
                         strict=True):
        torch.testing.assert_close(got, want)
    batch = data.batch(rows)
    assert batch.nonzero is not None and batch.nonzero["a"].shape == (5, 30)


def test_nonzero_select_equals_the_nonzeros_of_the_selected_rows():
    x = _counts()
    cells = torch.tensor([3, 3, 0, 39, 7, 3])
    got, want = NonZero.from_dense(x).select(cells), NonZero.from_dense(x[cells])
    assert got.shape == want.shape
    for a, b in zip((got.rows, got.cols, got.values), (want.rows, want.cols, want.values),
                    strict=True):
        torch.testing.assert_close(a, b)


def _distributions(n: int, g: int, theta: torch.Tensor) -> list:
    gen = torch.Generator().manual_seed(1)
    mu = torch.rand(n, g, generator=gen) * 4 + 1e-3
    logits = torch.randn(n, g, generator=gen)
    return [
        lk.NegativeBinomial(mu, theta),
        lk.NegativeBinomial(mu, theta.expand(n, g).clone()),  # per-cell dispersion
        lk.ZeroInflatedNegativeBinomial(mu, theta, logits),
        lk.Poisson(mu),
        lk.Bernoulli(rate=mu),
        lk.Bernoulli.binarized_poisson(logits, mu.sum(-1, keepdim=True)),
        lk.Bernoulli(logits),
        lk.NegativeBinomialMixture(mu, mu * 3, theta, logits),
    ]


@pytest.mark.parametrize("big_theta", [False, True])  # Stirling branch of the lgamma ratio
def test_summed_log_prob_equals_the_dense_sum(big_theta):
    x = _counts()
    theta = torch.rand(30) * (500.0 if big_theta else 3.0) + 0.05
    for dist in _distributions(40, 30, theta):
        fast = summed_log_prob(dist, x, NonZero.from_dense(x))
        torch.testing.assert_close(fast, dist.log_prob(x).sum(-1), rtol=1e-5, atol=1e-3)


def test_nb_sum_gradients_equal_autograd_of_the_dense_sum():
    x = _counts()
    weights = torch.linspace(0.5, 2.0, 40)
    grads = []
    for fast in (True, False):
        mu = (torch.rand(40, 30, generator=torch.Generator().manual_seed(2)) * 3 + 1e-3)
        theta = torch.rand(30, generator=torch.Generator().manual_seed(3)) * 50 + 0.1
        mu.requires_grad_()
        theta.requires_grad_()
        dist = lk.NegativeBinomial(mu, theta)
        out = summed_log_prob(dist, x, NonZero.from_dense(x)) if fast else dist.log_prob(x).sum(-1)
        (out * weights).sum().backward()
        grads.append((mu.grad, theta.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-4, atol=1e-4)


def test_loader_yields_every_cell_once_in_the_seeded_order():
    n = 23
    ids = sp.csr_matrix(np.arange(1, n + 1, dtype="float32")[:, None])  # cell i holds i + 1
    data = CellData(("a",), {"a": ids}, np.ones((n, 1), bool), np.zeros(n, "int64"),
                    {"a": np.ones(n, "float32")})
    loader = make_loader(data, np.arange(n), batch_size=5, shuffle=True, seed=4)
    epochs = [(torch.cat([b.counts["a"][:, 0] for b in loader]).long() - 1).tolist()
              for _ in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(n))
    assert epochs[0] != epochs[1]
    # the seeded shuffler: each epoch's iterator draws a base seed, then the permutation
    generator = torch.Generator().manual_seed(4)
    torch.empty((), dtype=torch.int64).random_(generator=generator)
    assert epochs[0] == torch.randperm(n, generator=generator).tolist()


def test_diagnostics_and_terms_are_logged_every_epoch(small_sim):
    model = omnivae.Model(small_sim, batch_key="batch", n_latent=4, n_hidden=16)
    model.train(max_epochs=2, progress_bar=False, batch_probe_every=0)
    history = model.history
    assert len(history) == 2
    for name in model.config.names:
        for key in (f"train_kl_{name}", f"train_active_units_{name}", f"train_nll_{name}",
                    f"validation_precision_share_{name}"):
            assert key in history.columns, key
    for key in ("train_loss", "train_elbo", "train_active_units", "kl_weight"):
        assert np.isfinite(history[key]).all(), key
    assert history["kl_weight"].iloc[1] > history["kl_weight"].iloc[0]


def test_epoch_means_average_each_term_over_the_steps_that_had_it(small_sim, monkeypatch):
    from omnivae.train.plan import TrainingPlan

    model = omnivae.Model(small_sim, n_latent=4, n_hidden=16)
    plan = TrainingPlan(model.module)
    logged: dict[str, float] = {}
    monkeypatch.setattr(plan, "log", lambda key, value, **kw: logged.__setitem__(key, float(value)))
    monkeypatch.setattr(TrainingPlan, "kl_weight", 0.5)
    plan.on_train_epoch_start()
    t = torch.tensor
    plan._accumulate({"loss": t(1.0), "nll_rna": t(3.0)}, 10)
    plan._accumulate({"loss": t(2.0), "penalty": t(7.0), "nll_rna": t(5.0)}, 30)  # new term
    plan._accumulate({"loss": t(4.0), "nll_rna": t(1.0)}, 20)  # missing again
    plan._accumulate({"loss": t(3.0), "penalty": t(9.0), "nll_rna": t(2.0)}, 10)
    plan._log_epoch_means()
    assert logged["train_loss"] == pytest.approx((10 + 60 + 80 + 30) / 70)
    assert logged["train_nll_rna"] == pytest.approx((30 + 150 + 20 + 20) / 70)
    assert logged["train_penalty"] == pytest.approx((210 + 90) / 40)  # its own 40 cells
    assert logged["kl_weight"] == pytest.approx(0.5)
    assert plan._train_sums.sums is None  # reset for the next epoch


def test_precision_bf16_falls_back_to_float32_on_cpu_and_bad_values_are_refused():
    with pytest.warns(UserWarning, match="CUDA"):
        assert training_precision("bf16", "cpu") == "32-true"
    assert training_precision("32", "auto") == "32-true"
    with pytest.raises(ValueError, match="precision"):
        training_precision("16", "cpu")


@pytest.mark.slow
def test_compiled_training_gives_the_same_losses(small_sim):
    losses = []
    for compile in (False, True):
        model = omnivae.Model(small_sim, batch_key="batch", n_latent=4, n_hidden=16)
        model.train(max_epochs=2, progress_bar=False, batch_probe_every=0, compile=compile)
        losses.append(model.history["validation_elbo"].to_numpy())
    # compiled code draws its own random numbers, so equal up to the sampling noise
    np.testing.assert_allclose(losses[1], losses[0], rtol=0.02)
