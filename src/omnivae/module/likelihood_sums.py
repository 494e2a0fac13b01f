"""Log-likelihoods summed over features, with the count-dependent terms on the non-zeros only.

A minibatch's counts are mostly zeros (a few percent of RNA, under one percent of ATAC peaks
are non-zero). Every term of the count likelihoods that involves the counts vanishes at zero:
``lgamma(x + theta) - lgamma(theta)``, ``lgamma(x + 1)``, ``x log mu``. So the sum over
features is a dense part that depends on the parameters only (``-theta log1p(mu / theta)``
for the NB, ``-rate`` for the Poisson) plus those terms evaluated at the non-zero entries and
added to their rows. Same function as ``dist.log_prob(x).sum(-1)`` (the sums are only ordered
differently) at a fraction of the special-function calls. Pure torch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from omnivae.module import likelihoods as lk
from omnivae.module.count_math import log_gamma_ratio
from omnivae.module.likelihoods import CountDistribution
from omnivae.module.records import NonZero


class _Gather(torch.autograd.Function):
    """``values[index]`` for a 1-D ``values`` whose backward sums the gradients of repeated
    indices with ``bincount`` (serial, so the same on every call; the parallel accumulation of
    autograd's indexing backward adds them in a varying order on CPU)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, values: Tensor, index: Tensor) -> Tensor:
        ctx.save_for_backward(index)
        ctx.size = values.shape[0]  # type: ignore[attr-defined]
        return values[index]

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx,  # type: ignore[override]
                 grad: Tensor) -> tuple[Tensor, None]:
        (index,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return _scatter_sum(grad, index, ctx.size), None  # type: ignore[attr-defined]


def _scatter_sum(values: Tensor, index: Tensor, size: int) -> Tensor:
    """``out[i] = sum of values[index == i]``, deterministic."""
    return torch.bincount(index, weights=values, minlength=size).to(values.dtype)


class _RowSum(torch.autograd.Function):
    """Per row sums of non-zero terms ``(nnz,)`` into ``(n,)``, deterministic (see _Gather)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, values: Tensor, rows: Tensor,
                n: int) -> Tensor:
        ctx.save_for_backward(rows)
        return _scatter_sum(values, rows, n)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx,  # type: ignore[override]
                 grad: Tensor) -> tuple[Tensor, None, None]:
        (rows,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return grad[rows], None, None


def _at(param: Tensor, nz: NonZero, shape: torch.Size) -> Tensor:
    """``param`` broadcast to ``shape`` ``(n, g)``, read at the non-zeros ``(nnz,)``; a
    per-feature parameter is gathered by column without materialising the broadcast."""
    if param.dim() == 1 or (param.dim() == 2 and param.shape[0] == 1 and shape[0] != 1):
        return _Gather.apply(param.reshape(-1).expand(shape[-1]).contiguous(), nz.cols)
    return param.expand(shape)[nz.rows, nz.cols]  # distinct positions: order-free backward


def _row_sums(nz: NonZero, sparse: Tensor) -> Tensor:
    """Per row of ``nz``, the sum of the non-zero terms ``sparse`` ``(nnz,)``."""
    return _RowSum.apply(sparse, nz.rows, nz.n_rows)


def _add_rows(dense: Tensor, nz: NonZero, sparse: Tensor) -> Tensor:
    """Per row: ``dense`` ``(n, g)`` summed over features plus ``sparse`` ``(nnz,)`` of its
    non-zeros."""
    total = dense.sum(dim=-1)
    return total + _row_sums(nz, sparse.to(total.dtype))


class _NBZeroSum(torch.autograd.Function):
    """``sum_g -theta_g log1p(mu_ng / (theta_g + eps))`` per row for a per-feature ``theta``
    ``(g,)``, with a hand-written backward with few dense passes (autograd's version divides by
    a broadcast ``theta`` several times, the slowest elementwise kernel on CPU).

    ``d/dmu = -theta / (t + mu)``, ``d/dtheta = -log1p(mu/t) + theta mu / (t (t + mu))``
    with ``t = theta + eps``.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)  # sums in float32
    def forward(ctx: torch.autograd.function.FunctionCtx, mu: Tensor, theta: Tensor,
                eps: float) -> Tensor:
        t = theta + eps
        log1p = torch.log1p(mu * t.reciprocal())  # (n, g)
        ctx.save_for_backward(mu, theta, log1p)
        ctx.eps = eps  # type: ignore[attr-defined]
        return -(log1p * theta).sum(dim=-1)  # (n,); ATen's sums, reproducible for a fixed
        # thread count (a BLAS matrix-vector product may split its sum differently per call)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx: torch.autograd.function.FunctionCtx,  # type: ignore[override]
                 grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        mu, theta, log1p = ctx.saved_tensors  # type: ignore[attr-defined]
        t = theta + ctx.eps  # type: ignore[attr-defined]
        inv = (mu + t).reciprocal_()  # (n, g): 1 / (t + mu)
        grad_mu = grad_theta = None
        if ctx.needs_input_grad[1]:  # type: ignore[attr-defined]
            weighted = grad.unsqueeze(-1)  # (n, 1)
            grad_theta = ((theta / t) * (mu * inv * weighted).sum(dim=0)
                          - (log1p * weighted).sum(dim=0))
        if ctx.needs_input_grad[0]:  # type: ignore[attr-defined]
            grad_mu = inv.mul_(theta).mul_(-grad.unsqueeze(-1))
        return grad_mu, grad_theta, None


def _nb_zero_sum(mu: Tensor, theta: Tensor, eps: float, shape: torch.Size) -> Tensor:
    """Per row, ``sum_g -theta log1p(mu / (theta + eps))`` (``log NB(0)`` summed)."""
    if theta.dim() == 1 and mu.dim() == 2 and mu.shape == shape:
        return _NBZeroSum.apply(mu, theta, eps)
    return (-theta * torch.log1p(mu / (theta + eps))).expand(shape).sum(dim=-1)


def _nb_sparse(v: Tensor, mu: Tensor, theta: Tensor, nz: NonZero, shape: torch.Size,
               eps: float) -> Tensor:
    """The count-dependent NB terms at the non-zeros (``lgamma(x + 1)`` left out, see
    :func:`_log_factorial`): the ``lgamma`` ratio and ``x log(mu / (theta + mu))``.
    ``lgamma(theta)`` of a per-feature ``theta`` is computed per feature, not per non-zero."""
    th = _at(theta, nz, shape)
    per_feature = theta.dim() == 1 or (theta.dim() == 2 and theta.shape[0] == 1)
    lgamma_theta = _at(torch.lgamma(theta), nz, shape) if per_feature else None
    log_ratio = log_gamma_ratio(v, th, lgamma_theta)
    mu_nz = _at(mu, nz, shape)
    return log_ratio + v * (torch.log(mu_nz + eps) - torch.log(th + mu_nz + eps))


def _log_factorial(nz: NonZero) -> Tensor:
    """Per row, ``sum lgamma(x + 1)`` over its counts: a constant of the data, precomputed
    per cell when the minibatch carries it."""
    if nz.log_factorial is not None:
        return nz.log_factorial
    return _scatter_sum(torch.lgamma(nz.values + 1.0), nz.rows, nz.n_rows)


def summed_log_prob(dist: CountDistribution, x: Tensor | Callable[[], Tensor],
                    nz: NonZero) -> Tensor:
    """``dist.log_prob(x).sum(-1)`` for ``(n, g)`` counts ``x`` whose non-zeros are ``nz``.

    NB, ZINB, Poisson and Bernoulli (given its ``rate``) evaluate the count terms on the
    non-zeros only and never read ``x``; other distributions (the protein NB mixture, whose
    components need the counts everywhere) fall back to the dense sum. ``x`` may be a
    function returning the counts, called only then.

    Examples
    --------
    >>> import torch
    >>> from omnivae.module.records import NonZero
    >>> x = torch.tensor([[0.0, 3.0, 0.0], [1.0, 0.0, 0.0]])
    >>> d = lk.NegativeBinomial(torch.rand(2, 3) + 0.1, torch.tensor([0.5, 2.0, 300.0]))
    >>> fast = summed_log_prob(d, x, NonZero.from_dense(x))
    >>> torch.allclose(fast, d.log_prob(x).sum(-1))
    True
    """
    shape = nz.shape
    if isinstance(dist, lk.NegativeBinomial):
        mu, theta = dist.mu, dist.theta
        sparse = _nb_sparse(nz.values, mu, theta, nz, shape, dist.eps)
        total = _nb_zero_sum(mu, theta, dist.eps, shape) + _row_sums(nz, sparse)
        return total - _log_factorial(nz)
    if isinstance(dist, lk.ZeroInflatedNegativeBinomial):
        mu, theta, logits = dist.mu, dist.theta, dist.zi_logits
        log_pi, log_not_pi = F.logsigmoid(logits), F.logsigmoid(-logits)
        nb_zero = -theta * torch.log1p(mu / (theta + dist.eps))  # log NB(0)
        zero = torch.logaddexp(log_pi, log_not_pi + nb_zero).expand(shape)
        nonzero = (_at(log_not_pi, nz, shape) + _at(nb_zero, nz, shape)
                   + _nb_sparse(nz.values, mu, theta, nz, shape, dist.eps))
        return _add_rows(zero, nz, nonzero - _at(zero, nz, shape)) - _log_factorial(nz)
    if isinstance(dist, lk.Poisson):
        rate = dist.rate
        v = nz.values
        sparse = v * torch.log(_at(rate, nz, shape) + dist.eps)
        return _add_rows(-rate.expand(shape), nz, sparse) - _log_factorial(nz)
    if isinstance(dist, lk.Bernoulli) and dist.scores is not None:
        # P(x > 0) = 1 - exp(-rate): log P(0) = -rate, log P(1) = log(-expm1(-rate)), and the
        # rates sum to ``total`` (before the clamp at min_rate, which only guards the logs)
        assert dist.total is not None
        total = dist.total.reshape(-1).expand(shape[0])  # (n,)
        freq = torch.softmax(dist.scores, dim=-1)  # one fused pass each way (logsumexp's
        r = (total[nz.rows] * _at(freq, nz, shape)).clamp(min=dist.min_rate)  # backward is slower)
        return _row_sums(nz, torch.log(-torch.expm1(-r)) + r) - total
    if isinstance(dist, lk.Bernoulli) and dist.rate is not None:
        rate = dist.rate
        r = _at(rate, nz, shape)
        return _add_rows(-rate.expand(shape), nz, torch.log(-torch.expm1(-r)) + r)
    return dist.log_prob(x if isinstance(x, Tensor) else x()).sum(dim=-1)


__all__ = ["summed_log_prob"]
