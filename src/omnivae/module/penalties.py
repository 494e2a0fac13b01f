"""Penalties on the dependence between the joint latent ``z`` and a categorical batch label.

Pure torch. Every estimator takes ``z`` ``(n, d)`` (or a diagonal Gaussian posterior), the batch
codes ``(n,)`` int64 in ``[0, n_batches)`` and returns a scalar to *add* to the loss (larger =
more batch information in ``z``). Sizes below: n cells, d latent dimensions, B batches.

``labels`` (optional, ``(n,)`` int64, e.g. cell types) conditions the penalty on the label: the
estimate is computed within each label group and averaged weighted by group size; groups with
fewer than 2 cells or a single batch are skipped, so only batch dependence *within* a cell type
is penalised. A penalty that has nothing to measure returns a zero still attached to the graph.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omnivae.module.records import check_choice

PENALTIES: tuple[str, ...] = ("hsic", "mmd", "adversarial", "pairwise_kl")


def check_penalty_name(name: str) -> str:
    """Return ``name`` lower-cased, or raise a ValueError listing the valid names.

    Examples
    --------
    >>> check_penalty_name("HSIC")
    'hsic'
    """
    return check_choice(name.lower(), PENALTIES, "penalty")


# helpers -------------------------------------------------------------------------------------
def _zero(x: Tensor) -> Tensor:
    """A scalar 0 attached to ``x``'s graph (backward works, gradients are exactly 0)."""
    return x[:0].sum()


def _sq_dists(z: Tensor) -> Tensor:
    """Pairwise squared Euclidean distances ``(n, n)`` in O(n^2 d), via the Gram matrix."""
    z = z - z.mean(dim=0, keepdim=True).detach()  # translation-invariant; less cancellation
    sq = (z * z).sum(dim=1)  # (n,)
    return (sq[:, None] + sq[None, :] - 2.0 * z @ z.T).clamp_min(0.0)


def _median_sq_dist(dist: Tensor) -> Tensor:
    """Lower median of the off-diagonal squared distances, no gradient (their mean if it is 0)."""
    d = dist.detach()
    n = d.shape[0]
    off = d[~torch.eye(n, dtype=torch.bool, device=d.device)]
    med = off.median()
    return torch.where(med > 0, med, off.mean()).clamp_min(torch.finfo(d.dtype).tiny)


def _within_labels(
    fn: Callable[..., Tensor], tensors: tuple[Tensor, ...], batch: Tensor, labels: Tensor | None
) -> Tensor:
    """``fn(*tensors, batch)`` overall, or size-weighted over label groups (see module doc)."""
    if labels is None:
        return fn(*tensors, batch)
    total, size = _zero(tensors[0]), 0
    for value in torch.unique(labels):
        rows = (labels == value).nonzero(as_tuple=True)[0]
        if rows.numel() < 2 or torch.unique(batch[rows]).numel() < 2:
            continue
        total = total + rows.numel() * fn(*(t[rows] for t in tensors), batch[rows])
        size += rows.numel()
    return total / size if size else total


# HSIC ----------------------------------------------------------------------------------------
def hsic(
    z: Tensor, batch: Tensor, n_batches: int, *, bandwidth: float | None = None,
    labels: Tensor | None = None,
) -> Tensor:
    """Biased empirical HSIC (Gretton et al. 2005) between ``z`` and the batch.

    ``HSIC = tr(K H L H) / (n - 1)^2`` with ``H = I - 11^T / n``, the Gaussian kernel
    ``K_ij = exp(-||z_i - z_j||^2 / h)`` and the delta kernel ``L = Y Y^T`` (``Y`` the one-hot
    batch matrix, ``L_ij = [b_i = b_j]``); ``h = bandwidth`` or, by default, the (lower) median of
    the off-diagonal squared distances (no gradient through ``h``). ``H`` is never formed: since
    ``tr(K H Y Y^T H) = sum((H Y) * (K H Y))``, only ``Y`` is centred (column means) and
    ``K`` multiplies it. Cost O(n^2 d + n^2 B) time, O(n^2) memory. HSIC >= 0 and equals 0
    (in population) iff ``z`` and the batch are independent; the biased estimate is O(1/n)
    under independence. Used for batch independence by Lopez et al. (2018).

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> b = torch.arange(100) % 2
    >>> z = torch.randn(100, 3, generator=g)
    >>> bool(hsic(z + 3.0 * b[:, None], b, 2) > 10 * hsic(z, b, 2))
    True
    """

    def one(z: Tensor, b: Tensor) -> Tensor:
        n = z.shape[0]
        if n < 2:
            return _zero(z)
        dist = _sq_dists(z)
        h = _median_sq_dist(dist) if bandwidth is None else bandwidth
        y = F.one_hot(b, n_batches).to(z.dtype)  # (n, B)
        y = y - y.mean(dim=0, keepdim=True)  # H Y
        return (y * (torch.exp(-dist / h) @ y)).sum() / (n - 1) ** 2

    return _within_labels(one, (z,), batch, labels)


# MMD -----------------------------------------------------------------------------------------
def mmd(
    z: Tensor, batch: Tensor, n_batches: int, *,
    scales: Sequence[float] = (0.01, 0.1, 1.0, 10.0, 100.0), labels: Tensor | None = None,
) -> Tensor:
    """Multi-scale Gaussian MMD^2 between each batch and the rest, averaged over batches.

    The kernel is ``k(x, y) = (1/S) Σ_s exp(-||x - y||^2 / (s · m))`` where ``m`` is the (lower)
    median off-diagonal squared distance of the minibatch (no gradient), so ``scales`` are bandwidths
    *relative to* ``m`` (scale-free). For batch ``b`` (cells ``P``, the rest ``Q``) the biased
    estimator is ``MMD^2_b = mean K_PP + mean K_QQ - 2 mean K_PQ``; the result is the mean over
    the batches with at least 2 cells, or 0 when fewer than 2 batches are present. All blocks
    come from ``S = Y^T K Y`` (``Y`` one-hot): cost O(n^2 (d + S + B)) time, O(n^2) memory.
    The biased estimate is >= 0, and O(1/n) when the distributions are equal.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> b = torch.arange(100) % 2
    >>> z = torch.randn(100, 3, generator=g)
    >>> bool(mmd(z + 3.0 * b[:, None], b, 2) > 10 * mmd(z, b, 2))
    True
    """

    def one(z: Tensor, b: Tensor) -> Tensor:
        y = F.one_hot(b, n_batches).to(z.dtype)  # (n, B)
        count = y.sum(dim=0)  # (B,)
        if int((count > 0).sum()) < 2:
            return _zero(z)
        dist = _sq_dists(z)
        m = _median_sq_dist(dist)
        kernel = torch.stack([torch.exp(-dist / (s * m)) for s in scales]).mean(dim=0)
        blocks = y.T @ kernel @ y  # (B, B) sums of kernel blocks
        inside = blocks.diagonal()  # Σ K_PP
        cross = blocks.sum(dim=1) - inside  # Σ K_PQ
        outside = blocks.sum() - 2 * cross - inside  # Σ K_QQ
        rest = z.shape[0] - count
        keep = (count >= 2) & (rest >= 1)
        if not bool(keep.any()):
            return _zero(z)
        c, r = count.clamp_min(1), rest.clamp_min(1)
        per_batch = inside / c**2 + outside / r**2 - 2 * cross / (c * r)
        return per_batch[keep].mean()

    return _within_labels(one, (z,), batch, labels)


# pairwise KL bound (Moyer et al. 2018) -------------------------------------------------------
def pairwise_gaussian_kl(loc: Tensor, logvar: Tensor) -> Tensor:
    """Matrix ``(n, n)`` of ``KL(q_i || q_j)`` between diagonal Gaussians ``q_i = N(μ_i, σ_i^2)``.

    ``KL_ij = 1/2 Σ_k [log σ_jk^2 - log σ_ik^2 + (σ_ik^2 + (μ_ik - μ_jk)^2) / σ_jk^2 - 1]``,
    expanded into two ``(n, d) @ (d, n)`` products, O(n^2 d) time, O(n^2) memory, no loop.

    Examples
    --------
    >>> import torch
    >>> kl = pairwise_gaussian_kl(torch.tensor([[0.0], [1.0]]), torch.zeros(2, 1))
    >>> kl.tolist()
    [[0.0, 0.5], [0.5, 0.0]]
    """
    loc = loc - loc.mean(dim=0, keepdim=True).detach()  # KL is translation-invariant
    precision = torch.exp(-logvar)  # (n, d)
    second = (torch.exp(logvar) + loc**2) @ precision.T  # Σ_k (σ_ik^2 + μ_ik^2) / σ_jk^2
    cross = loc @ (loc * precision).T  # Σ_k μ_ik μ_jk / σ_jk^2
    own = (loc**2 * precision + logvar).sum(dim=1)  # Σ_k μ_jk^2 / σ_jk^2 + log σ_jk^2
    kl = 0.5 * (second - 2 * cross + own[None, :] - logvar.sum(dim=1)[:, None] - loc.shape[1])
    off = ~torch.eye(loc.shape[0], dtype=torch.bool, device=loc.device)
    return kl.clamp_min(0.0) * off  # exact zeros on the diagonal


def pairwise_kl_bound(
    loc: Tensor, logvar: Tensor, batch: Tensor, n_batches: int, *, pairs: str = "all",
    labels: Tensor | None = None,
) -> Tensor:
    """Closed-form upper bound on the latent's information (Moyer et al. 2018).

    With the minibatch as the data distribution (cell ``i`` drawn uniformly, ``z ~ q_i``, the
    encoder's diagonal Gaussian), ``q(z) = (1/n) Σ_j q_j`` and convexity of KL give

    * ``pairs="all"`` (the paper's form): ``I(z; x) <= (1/n^2) Σ_{i,j} KL(q_i || q_j)``. Since the
      encoder does not see the batch ``c``, ``I(z; c) = I(z; x) - I(z; x | c)`` and
      ``I(z; x | c) >= H(x | c) + E log p(x | z, c)``: the penalty bounds ``I(z; c)`` together
      with the (batch-conditioned) reconstruction term already in the ELBO, up to a constant.
      ``batch`` is not used.
    * ``pairs="across_batches"``: ``I(z; c) <= (1/n^2) Σ_{i,j: c_i != c_j} KL(q_i || q_j)``,
      a direct and tighter bound on ``I(z; c)`` (write ``q(z) = Σ_c' π_c' q(z | c')``, use
      convexity in the second argument, where ``c' = c`` terms vanish, then joint convexity on
      ``q(z | c) = mean_{i in c} q_i``). Normalised by ``n^2``, not by the number of pairs.

    Both are >= 0, but not 0 under independence (they bound, not estimate, the information).
    Cost O(n^2 d) time, O(n^2) memory (:func:`pairwise_gaussian_kl`). ``n_batches`` is only
    checked against the codes.

    Examples
    --------
    >>> import torch
    >>> loc, logvar = torch.tensor([[0.0], [1.0], [2.0]]), torch.zeros(3, 1)
    >>> b = torch.tensor([0, 0, 1])
    >>> round(float(pairwise_kl_bound(loc, logvar, b, 2)), 4)  # (2 * (0.5 + 2 + 0.5)) / 9
    0.6667
    >>> round(float(pairwise_kl_bound(loc, logvar, b, 2, pairs="across_batches")), 4)
    0.5556
    """
    if pairs not in ("all", "across_batches"):
        raise ValueError(f"pairs must be 'all' or 'across_batches', got {pairs!r}")
    if batch.numel() and int(batch.max()) >= n_batches:
        raise ValueError(f"batch codes must be < n_batches={n_batches}")

    def one(loc: Tensor, logvar: Tensor, b: Tensor) -> Tensor:
        n = loc.shape[0]
        if n < 2:
            return _zero(loc)
        kl = pairwise_gaussian_kl(loc, logvar)
        if pairs == "across_batches":
            kl = kl * (b[:, None] != b[None, :])
        return kl.sum() / n**2

    return _within_labels(one, (loc, logvar), batch, labels)


# adversarial ---------------------------------------------------------------------------------
class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:  # type: ignore[override]
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return -ctx.scale * grad, None


def grad_reverse(x: Tensor, scale: float = 1.0) -> Tensor:
    """Identity forward; multiplies the gradient by ``-scale`` backward (Ganin & Lempitsky 2015).

    ``cross_entropy(classifier(grad_reverse(z)), batch)`` trains the classifier to predict the
    batch and, in the same backward pass, the encoder to defeat it.

    Examples
    --------
    >>> import torch
    >>> x = torch.ones(2, requires_grad=True)
    >>> grad_reverse(x, 0.5).sum().backward()
    >>> x.grad.tolist()
    [-0.5, -0.5]
    """
    return _GradReverse.apply(x, scale)


class BatchClassifier(nn.Module):
    """MLP ``d -> hidden -> B`` (Linear, LayerNorm, ReLU per hidden layer) predicting the batch.

    With ``n_labels > 0`` the one-hot label is concatenated to ``z`` (``forward(z, labels)``), so
    the classifier estimates ``p(c | z, label)`` for the label-conditioned penalty.

    Examples
    --------
    >>> import torch
    >>> BatchClassifier(4, 3)(torch.zeros(5, 4)).shape
    torch.Size([5, 3])
    """

    def __init__(
        self, n_latent: int, n_batches: int, n_hidden: int = 128, n_layers: int = 1,
        n_labels: int = 0,
    ) -> None:
        super().__init__()
        self.n_labels = n_labels
        layers: list[nn.Module] = []
        width = n_latent + n_labels
        for _ in range(n_layers):
            layers += [nn.Linear(width, n_hidden), nn.LayerNorm(n_hidden), nn.ReLU()]
            width = n_hidden
        self.net = nn.Sequential(*layers, nn.Linear(width, n_batches))

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Logits ``(n, B)``."""
        if self.n_labels:
            if labels is None:
                raise ValueError("This classifier was built with n_labels > 0: pass labels.")
            z = torch.cat([z, F.one_hot(labels, self.n_labels).to(z.dtype)], dim=1)
        return self.net(z)


def adversarial_loss(
    classifier: nn.Module, z: Tensor, batch: Tensor, *, labels: Tensor | None = None,
    mode: str = "kl",
) -> tuple[Tensor, Tensor]:
    """``(classifier_loss, encoder_penalty)`` for adversarial batch removal.

    ``classifier_loss`` is the cross-entropy of the classifier on ``z.detach()`` (gradients only
    to the classifier). ``encoder_penalty`` is computed with the classifier's parameters
    detached (gradients only to ``z``), so ``loss + λ · penalty + classifier_loss`` can be
    minimised by one optimiser. ``mode="kl"`` (default):
    ``mean_i KL(p̂(· | z_i) || π_i)`` with ``π_i`` the batch frequencies of the minibatch (of
    cell ``i``'s label group when ``labels`` are given) and ``p̂`` renormalised over the batches
    present there. It lies in ``[0, log B]``, vanishes when predictions carry no batch
    information, and for a Bayes-optimal classifier equals ``I(z; c)`` (``I(z; c | label)``):
    bounded and stable, unlike ``mode="neg_ce"`` (``-cross_entropy``, unbounded below, which
    rewards a confidently *wrong* classifier). In ``"kl"`` mode, cells of label groups with
    < 2 cells or one batch are left out of the penalty. Cost O(n · classifier + n B).

    Examples
    --------
    >>> import torch
    >>> clf = BatchClassifier(3, 2, n_hidden=8)
    >>> clf_loss, penalty = adversarial_loss(clf, torch.randn(10, 3), torch.arange(10) % 2)
    >>> bool(clf_loss > 0), bool(penalty >= 0)
    (True, True)
    """
    if mode not in ("kl", "neg_ce"):
        raise ValueError(f"mode must be 'kl' or 'neg_ce', got {mode!r}")
    extra = (labels,) if getattr(classifier, "n_labels", 0) else ()
    classifier_loss = F.cross_entropy(classifier(z.detach(), *extra), batch)
    frozen = {k: v.detach() for k, v in classifier.state_dict(keep_vars=True).items()}
    logits = torch.func.functional_call(classifier, frozen, (z, *extra))  # (n, B)
    if mode == "neg_ce":
        return classifier_loss, -F.cross_entropy(logits, batch)
    n, n_batches = logits.shape
    group = (torch.zeros_like(batch) if labels is None
             else torch.unique(labels, return_inverse=True)[1])  # (n,) group index
    counts = logits.new_zeros(int(group.max()) + 1 if n else 0, n_batches)
    counts = counts.index_put((group, batch), torch.ones_like(logits[:, 0]), accumulate=True)
    size = counts.sum(dim=1, keepdim=True)  # (G, 1)
    ok = (size[:, 0] >= 2) & ((counts > 0).sum(dim=1) >= 2)  # (G,)
    keep = ok[group]  # (n,)
    if not bool(keep.any()):
        return classifier_loss, _zero(z)
    present = counts[group] > 0  # (n, B)
    log_prior = torch.log((counts / size.clamp_min(1))[group].clamp_min(torch.finfo(z.dtype).tiny))
    lse = torch.logsumexp(logits.masked_fill(~present, float("-inf")), dim=1, keepdim=True)
    log_p = torch.where(present, logits - lse, 0.0)  # renormalised over present batches
    kl = (present * torch.exp(log_p) * (log_p - log_prior)).sum(dim=1)  # (n,)
    return classifier_loss, kl[keep].mean()


# several batch keys --------------------------------------------------------------------------
def combined_penalty(
    name: str, z: Tensor, batches: Sequence[Tensor], n_batches: Sequence[int], *,
    labels: Tensor | None = None, weights: Sequence[float] | None = None,
    logvar: Tensor | None = None, classifiers: Sequence[nn.Module] | None = None,
    **options: Any,
) -> tuple[Tensor, Tensor]:
    """``(Σ_k w_k penalty_k, Σ_k classifier_loss_k)`` of one estimator over several batch keys.

    ``name`` is one of :data:`PENALTIES`; ``batches[k]`` has ``n_batches[k]`` codes; ``weights``
    default to 1. ``pairwise_kl`` reads ``z`` as the posterior mean and needs ``logvar``;
    ``adversarial`` needs one classifier per key. The classifier loss is 0 for the others.
    ``options`` go to the estimator (``bandwidth``, ``scales``, ``pairs``, ``mode``).
    Cost: the sum of the estimators' costs.

    Examples
    --------
    >>> import torch
    >>> z, b1, b2 = torch.randn(8, 2), torch.arange(8) % 2, torch.arange(8) % 4
    >>> pen, clf = combined_penalty("hsic", z, [b1, b2], [2, 4], weights=[1.0, 0.5])
    >>> float(clf), bool(pen >= 0)
    (0.0, True)
    """
    key = check_penalty_name(name)
    if len(batches) != len(n_batches):
        raise ValueError("batches and n_batches must have the same length")
    weights = [1.0] * len(batches) if weights is None else list(weights)
    if len(weights) != len(batches):
        raise ValueError("weights must have one entry per batch key")
    if key == "pairwise_kl" and logvar is None:
        raise ValueError("pairwise_kl needs logvar (z is read as the posterior mean)")
    if key == "adversarial" and (classifiers is None or len(classifiers) != len(batches)):
        raise ValueError("adversarial needs one classifier per batch key")
    penalty, classifier_loss = _zero(z), _zero(z).detach()
    for k, (b, nb, w) in enumerate(zip(batches, n_batches, weights, strict=True)):
        if key == "adversarial":
            clf, term = adversarial_loss(classifiers[k], z, b, labels=labels, **options)  # type: ignore[index]
            classifier_loss = classifier_loss + clf
        elif key == "pairwise_kl":
            term = pairwise_kl_bound(z, logvar, b, nb, labels=labels, **options)  # type: ignore[arg-type]
        else:
            term = (hsic if key == "hsic" else mmd)(z, b, nb, labels=labels, **options)
        penalty = penalty + w * term
    return penalty, classifier_loss
