"""Posterior-collapse measurements (pure torch): per-modality KL, active units, precision shares.

* **Per-modality KL**: ``KL(q_m || p)`` of each modality's unimodal posterior
  ``q_m = p(z) q~_m(z | x_m)`` (see :mod:`omnivae.module.fusion`), averaged over the cells that have
  the modality. A modality whose KL is near zero tells the latent nothing.
* **Active units** (Burda et al. 2016): latent dimension ``u`` is active when the posterior mean
  varies across cells, ``Cov_x(E_q[z_u]) > 0.01``. Counted for the joint posterior and for each
  modality's unimodal posterior.
* **Precision share**: in the product of experts the joint precision is ``1 + Σ_m Λ_m`` (the 1
  is the prior expert). The share of modality ``m`` is ``Λ_m / (1 + Σ_m Λ_m)``, averaged over
  latent dimensions and over the cells that have all the modalities (where every modality
  competes); the shares and the prior's share sum to one. A modality with a share near zero is
  ignored by the joint posterior.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from omnivae.module.fusion import product_of_experts
from omnivae.module.records import Gaussian

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. (2016)


def active_units(means: Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """Number of latent dimensions whose posterior mean varies across cells.

    Parameters
    ----------
    means
        ``(n, d)`` posterior means of ``n >= 2`` cells.
    threshold
        Minimum variance across cells for a unit to count as active.

    Examples
    --------
    >>> import torch
    >>> means = torch.stack([torch.linspace(-1, 1, 50), torch.full((50,), 0.3)], dim=1)
    >>> active_units(means)    # the first unit varies, the second is constant
    1
    """
    if means.shape[0] < 2:
        return 0
    return int((means.var(dim=0) > threshold).sum())


def precision_shares(logvar: Tensor, mask: Tensor) -> Tensor:
    """Share of the joint product-of-experts precision held by each modality.

    Parameters
    ----------
    logvar
        ``(M, n, d)`` expert log-variances.
    mask
        ``(n, M)`` which modalities each cell has.

    Returns
    -------
    ``(M,)`` shares averaged over dimensions and over the cells that have every modality
    (NaN when no cell does); ``1 - shares.sum()`` is the prior expert's share.

    Examples
    --------
    >>> import torch
    >>> logvar = torch.stack([torch.zeros(4, 2), torch.full((4, 2), 10.0)])  # 2nd is vague
    >>> shares = precision_shares(logvar, torch.ones(4, 2, dtype=torch.bool))
    >>> [round(s, 3) for s in shares.tolist()]     # precision 1 vs ~0; the prior holds 1/2
    [0.5, 0.0]
    """
    complete = mask.all(dim=1)
    if not bool(complete.any()):
        return torch.full((logvar.shape[0],), float("nan"))
    return cell_precision_shares(logvar[:, complete], mask[complete]).mean(dim=1)


def cell_precision_shares(logvar: Tensor, mask: Tensor) -> Tensor:
    """Per cell, each modality's share of its product-of-experts precision, averaged over the
    latent dimensions; modalities a cell lacks hold none (the prior holds the rest).

    Parameters
    ----------
    logvar
        ``(M, n, d)`` expert log-variances.
    mask
        ``(n, M)`` which modalities each cell has.

    Returns
    -------
    ``(M, n)`` shares.

    Examples
    --------
    >>> import torch
    >>> logvar = torch.zeros(2, 2, 3)  # two unit-precision experts, two cells
    >>> cell_precision_shares(logvar, torch.tensor([[True, True], [True, False]])).tolist()
    [[0.3333333432674408, 0.5], [0.3333333432674408, 0.0]]
    """
    precision = torch.exp(-logvar) * mask.T[:, :, None].to(logvar.dtype)  # (M, n, d)
    return (precision / (1.0 + precision.sum(dim=0, keepdim=True))).mean(dim=2)


def unimodal_posteriors(loc: Tensor, logvar: Tensor) -> Gaussian:
    """Each expert times the N(0, I) prior expert: ``q_m`` with ``(M, n, d)`` parameters.

    Examples
    --------
    >>> import torch
    >>> q = unimodal_posteriors(torch.full((1, 1, 1), 2.0), torch.zeros(1, 1, 1))
    >>> q.loc.item(), round(q.logvar.exp().item(), 2)     # precision 1 + 1
    (1.0, 0.5)
    """
    precision = 1.0 + torch.exp(-logvar)
    return Gaussian(torch.exp(-logvar) * loc / precision, -torch.log(precision))


def collapse_terms(loc: Tensor, logvar: Tensor, mask: Tensor, names: tuple[str, ...],
                   prior_kl: Callable[[Gaussian, Tensor], Tensor]) -> dict[str, Tensor]:
    """Per-modality KL, active units and precision shares of one minibatch, as flat scalars.

    Parameters
    ----------
    loc, logvar
        ``(M, n, d)`` expert parameters.
    mask
        ``(n, M)`` modality membership.
    names
        Modality names (order of ``M``).
    prior_kl
        ``kl(q, z)`` of the model's prior (for example ``module.prior.kl``).

    Returns
    -------
    ``{"kl_<m>", "active_units_<m>", "precision_share_<m>", "active_units"}`` (detached
    scalars; NaN where a minibatch has no cell to measure).

    Examples
    --------
    >>> import torch
    >>> from omnivae.module.priors import StandardNormal
    >>> loc, logvar = torch.randn(2, 30, 3), torch.zeros(2, 30, 3)
    >>> mask = torch.ones(30, 2, dtype=torch.bool)
    >>> terms = collapse_terms(loc, logvar, mask, ("a", "b"), StandardNormal(3).kl)
    >>> sorted(terms)[:3], round(terms["precision_share_a"].item(), 4)
    (['active_units', 'active_units_a', 'active_units_b'], 0.3333)
    """
    with torch.no_grad():
        out: dict[str, Tensor] = {}
        unimodal = unimodal_posteriors(loc, logvar)
        shares = precision_shares(logvar, mask)
        nan = loc.new_tensor(float("nan"))
        for m, name in enumerate(names):
            rows = mask[:, m]
            if bool(rows.any()):
                q = Gaussian(unimodal.loc[m, rows], unimodal.logvar[m, rows])
                out[f"kl_{name}"] = prior_kl(q, q.rsample()).mean()
                out[f"active_units_{name}"] = loc.new_tensor(float(active_units(q.loc)))
            else:
                out[f"kl_{name}"] = nan
                out[f"active_units_{name}"] = nan
            out[f"precision_share_{name}"] = shares[m].to(loc.dtype)
        joint = product_of_experts(loc, logvar, mask)
        out["active_units"] = loc.new_tensor(float(active_units(joint.loc)))
        return out
