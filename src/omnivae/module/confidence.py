"""Evidence-aware confidence: a penalty on posteriors too sharp for the evidence seen (pure torch).

A product of experts already makes a posterior from fewer modalities wider (precisions add),
but nothing stops one encoder from being sure of itself: a unimodal expert can claim a
precision its modality does not support, and every prediction made from that modality alone
then carries intervals that are too narrow. The penalty here measures sharpness against the
only reference the data offers, the posterior that has *all* the evidence a cell has.

For a cell with observed modalities ``O`` (``|O| >= 2``) and each proper non-empty subset
``S ⊂ O`` (fewer modalities, less evidence), let ``q_O = N(μ_O, σ²_O)`` and
``q_S = N(μ_S, σ²_S)`` be the product-of-experts posteriors. If ``q_S`` is honest, it should
cover ``q_O``: the variance it needs, per latent dimension, is what minimises
``KL(q_O || q_S)`` over ``σ²_S``::

    σ²_needed = σ²_O + (μ_O - μ_S)²

``q_S`` is over-confident where ``σ²_S < σ²_needed``. With ``r = σ²_needed / σ²_S`` the
penalty is the variance part of that KL, kept only on the over-confident side::

    penalty(S) = 1/2 Σ_d  [r_d - 1 - log r_d] · 1[r_d > 1]

(zero when ``q_S`` is wide enough, convex in ``log σ²_S``). ``q_O`` and ``μ_S`` are detached:
the penalty widens a partial-evidence posterior, it never sharpens the full one or moves
means. It depends on the number *and kind* of modalities because every subset is compared
with what the cell's other modalities add. The per-cell penalty is averaged over the subsets
a cell has and over cells; cells with one modality contribute zero.
"""

from __future__ import annotations

import torch
from torch import Tensor

from omnivae.module.fusion import fusion_subsets, product_of_experts


def overconfidence(sub_loc: Tensor, sub_logvar: Tensor, full_loc: Tensor,
                   full_logvar: Tensor) -> Tensor:
    """Over-confidence of partial-evidence posteriors relative to full-evidence ones.

    Parameters
    ----------
    sub_loc, sub_logvar
        The partial-evidence posterior ``q_S``, ``(..., d)``.
    full_loc, full_logvar
        The full-evidence posterior ``q_O``, broadcastable to ``(..., d)``; treated as fixed.

    Returns
    -------
    ``(...)`` non-negative penalty in nats (see the module docstring).

    Examples
    --------
    >>> import torch
    >>> full = torch.zeros(1, 2), torch.log(torch.ones(1, 2))      # q_O = N(0, 1)
    >>> wide = overconfidence(torch.zeros(1, 2), torch.log(torch.full((1, 2), 2.0)), *full)
    >>> sharp = overconfidence(torch.zeros(1, 2), torch.log(torch.full((1, 2), 0.1)), *full)
    >>> wide.item(), round(sharp.item(), 3)    # wide enough: 0; too sharp: penalised
    (0.0, 6.697)
    """
    needed = torch.exp(full_logvar.detach()) + (full_loc.detach() - sub_loc.detach()) ** 2
    log_ratio = torch.log(needed) - sub_logvar  # log r
    excess = torch.exp(log_ratio) - 1.0 - log_ratio
    return 0.5 * torch.where(log_ratio > 0, excess, torch.zeros_like(excess)).sum(dim=-1)


def evidence_penalty(loc: Tensor, logvar: Tensor, mask: Tensor) -> Tensor:
    """Mean over cells of the over-confidence of every partial-evidence posterior.

    Parameters
    ----------
    loc, logvar
        Expert parameters ``(M, n, d)`` (the encoders' likelihood experts).
    mask
        ``(n, M)`` boolean: which modalities each cell has.

    Returns
    -------
    Scalar tensor; 0 when no cell has two modalities.

    Examples
    --------
    >>> import torch
    >>> mask = torch.tensor([[True, True]])
    >>> honest = evidence_penalty(torch.zeros(2, 1, 3), torch.zeros(2, 1, 3), mask)
    >>> loc = torch.tensor([[[3.0, 3.0, 3.0]], [[-3.0, -3.0, -3.0]]])   # disagreeing experts
    >>> sharp = evidence_penalty(loc, torch.full((2, 1, 3), -4.0), mask)
    >>> honest.item(), sharp.item() > 1.0
    (0.0, True)
    """
    n_modalities = mask.shape[1]
    if n_modalities < 2:
        return loc.new_zeros(())
    full = product_of_experts(loc, logvar, mask)  # (n, d)
    subsets = fusion_subsets(n_modalities, "mopoe").to(mask.device)  # (K, M)
    proper = subsets[subsets.sum(dim=1) < n_modalities]  # (K', M)
    # a subset counts for a cell when it is fully observed and strictly smaller than O
    observed = (proper.unsqueeze(1) & ~mask.unsqueeze(0)).sum(dim=-1) == 0  # (K', n)
    strictly_smaller = proper.sum(dim=1, keepdim=True) < mask.sum(dim=1).unsqueeze(0)
    valid = observed & strictly_smaller
    if not bool(valid.any()):
        return loc.new_zeros(())
    sub = product_of_experts(loc, logvar, proper.unsqueeze(1).expand(-1, mask.shape[0], -1))
    per_subset = overconfidence(sub.loc, sub.logvar, full.loc, full.logvar)  # (K', n)
    per_cell = (per_subset * valid).sum(dim=0) / valid.sum(dim=0).clamp(min=1)
    return per_cell.sum() / mask.shape[0]
