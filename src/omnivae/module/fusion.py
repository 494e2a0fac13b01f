"""Fusion of per-modality experts into one joint posterior (pure functions).

Convention (see ``../shared/background``): each modality's encoder outputs a Gaussian
*likelihood term* ``q~_m(z | x_m)``, not a full posterior. The posterior given any set ``S`` of
observed modalities is the product of the prior expert and the terms in ``S``::

    q_S(z | x_S)  ∝  p(z) · Π_{m in S} q~_m(z | x_m),        p(z) = N(0, I)

so the prior is counted exactly once, whatever ``|S|`` is, and the unimodal posterior of
modality ``m`` is ``q_{m} = p(z) q~_m``. With Gaussians the product is closed form: precisions
add, ``Λ_S = 1 + Σ_m Λ_m`` and ``μ_S = Λ_S^{-1} Σ_m Λ_m μ_m``.

All three fusions are then mixtures over subsets of experts:

* ``"poe"`` (MVAE): one component, the product of all observed experts.
* ``"moe"`` (MMVAE): one component per observed modality, ``q = (1/|O|) Σ_{m in O} q_{m}``.
* ``"mopoe"`` (MoPoE-VAE): one component per non-empty subset of the observed modalities.

A component exists for a cell only when the cell has the modalities it needs (MuData
membership), so missing modalities drop out; mixture weights are uniform over the components
that exist and sum to one for every cell with data.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor

from omnivae.module.records import Gaussian, check_choice

FUSIONS: tuple[str, ...] = ("poe", "moe", "mopoe")
_MAX_MOPOE_MODALITIES = 6  # 2**6 - 1 = 63 components


def check_fusion_name(fusion: str) -> str:
    """Return ``fusion`` lower-cased, or raise a ValueError listing the valid names.

    Examples
    --------
    >>> check_fusion_name("PoE")
    'poe'
    """
    return check_choice(fusion.lower(), FUSIONS, "fusion")


def product_of_experts(loc: Tensor, logvar: Tensor, experts: Tensor) -> Gaussian:
    """Gaussian product of the prior N(0, I) and the selected likelihood experts.

    Parameters
    ----------
    loc, logvar
        Expert means and log-variances, ``(M, n, d)``.
    experts
        ``(n, M)`` or ``(K, n, M)`` boolean: which experts enter the product for each cell.

    Returns
    -------
    Gaussian with shape ``(n, d)`` (or ``(K, n, d)`` when ``experts`` has a leading K).

    Examples
    --------
    >>> import torch
    >>> loc = torch.ones(2, 1, 1)
    >>> logvar = torch.zeros(2, 1, 1)  # two unit-precision experts at 1
    >>> q = product_of_experts(loc, logvar, torch.tensor([[True, True]]))
    >>> round(q.loc.item(), 4), round(q.logvar.exp().item(), 4)  # precision 1 + 1 + 1 = 3
    (0.6667, 0.3333)
    """
    weight = experts.movedim(-1, -2).unsqueeze(-1).to(loc.dtype)  # (..., M, n, 1)
    # Exact zeros (not tiny numbers) for unselected experts keep their encoders' gradient at 0.
    precision = torch.where(weight > 0, torch.exp(-logvar), torch.zeros_like(logvar))
    joint_precision = 1.0 + precision.sum(dim=-3)  # prior expert contributes precision 1
    joint_loc = (precision * loc).sum(dim=-3) / joint_precision
    return Gaussian(joint_loc, -torch.log(joint_precision))


def fusion_subsets(n_modalities: int, fusion: str) -> Tensor:
    """Boolean ``(K, M)`` table of the expert subsets that form the mixture components.

    Examples
    --------
    >>> fusion_subsets(2, "mopoe").int().tolist()
    [[1, 0], [0, 1], [1, 1]]
    """
    fusion = check_fusion_name(fusion)
    if fusion == "poe":
        return torch.ones(1, n_modalities, dtype=torch.bool)
    if fusion == "moe":
        return torch.eye(n_modalities, dtype=torch.bool)
    if n_modalities > _MAX_MOPOE_MODALITIES:
        raise ValueError(
            f"fusion='mopoe' enumerates 2**M - 1 subsets; M={n_modalities} modalities is too "
            f"many (at most {_MAX_MOPOE_MODALITIES}). Use fusion='poe' or 'moe'."
        )
    rows = [
        [m in combo for m in range(n_modalities)]
        for size in range(1, n_modalities + 1)
        for combo in itertools.combinations(range(n_modalities), size)
    ]
    return torch.tensor(rows, dtype=torch.bool)


@dataclass(frozen=True)
class Mixture:
    """A uniform mixture of Gaussian components per cell.

    Parameters
    ----------
    components
        Gaussian with ``(K, n, d)`` parameters.
    weights
        ``(K, n)`` mixture weights; each column sums to one (zero for components a cell lacks).
    """

    components: Gaussian
    weights: Tensor

    @property
    def mean(self) -> Tensor:
        """Mixture mean ``(n, d)``: the joint embedding."""
        return (self.weights.unsqueeze(-1) * self.components.loc).sum(dim=0)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """One draw per cell ``(n, d)``: pick a component by weight, then sample it."""
        pick = torch.multinomial(self.weights.T, 1, generator=generator).squeeze(-1)  # (n,)
        cells = torch.arange(pick.shape[0], device=pick.device)
        chosen = Gaussian(
            self.components.loc[pick, cells], self.components.logvar[pick, cells]
        )
        return chosen.rsample(generator)


def fuse(loc: Tensor, logvar: Tensor, mask: Tensor, fusion: str) -> Mixture:
    """Combine ``(M, n, d)`` experts of cells with modality ``mask`` ``(n, M)``.

    Parameters
    ----------
    loc, logvar
        Expert parameters; rows of missing modalities are ignored (their values do not matter).
    mask
        ``(n, M)`` boolean: which modalities each cell has.
    fusion
        ``"poe"``, ``"moe"`` or ``"mopoe"``.

    Returns
    -------
    Mixture with one component per subset in :func:`fusion_subsets`. A cell with no modality
    gets all-zero weights; callers must not pass such cells (the data layer rejects them).

    Examples
    --------
    >>> import torch
    >>> loc, logvar = torch.randn(2, 3, 4), torch.zeros(2, 3, 4)
    >>> mask = torch.tensor([[True, True], [True, False], [False, True]])
    >>> fuse(loc, logvar, mask, "mopoe").weights.sum(0).tolist()
    [1.0, 1.0, 1.0]
    """
    fusion = check_fusion_name(fusion)
    subsets = fusion_subsets(mask.shape[1], fusion).to(mask.device)  # (K, M)
    experts = subsets.unsqueeze(1) & mask.unsqueeze(0)  # (K, n, M)
    if fusion == "poe":
        valid = experts.any(dim=-1)  # the product of whatever the cell has
    else:
        valid = (experts == subsets.unsqueeze(1)).all(dim=-1)  # subset fully observed
    counts = valid.sum(dim=0, keepdim=True).clamp(min=1)
    weights = valid.to(loc.dtype) / counts.to(loc.dtype)
    return Mixture(product_of_experts(loc, logvar, experts), weights)
