"""MVAE: product of experts with sub-sampled ELBO terms.

Wu & Goodman (2018), "Multimodal Generative Models for Scalable Weakly-Supervised Learning",
NeurIPS.

With ``q_S = p(z) Π_{m ∈ S} q~_m`` (the prior expert counted once, :mod:`omnivae.module.fusion`) and
``ELBO(X_S) = E_{q_S}[ Σ_{m ∈ S} log p(x_m | z) ] - β KL(q_S || p)``, the objective maximised
for a cell with observed modalities ``O`` is the paper's sub-sampled sum::

    L(X_O) = ELBO(X_O) + Σ_{m ∈ O} ELBO(x_m) + Σ_{j=1..k} ELBO(X_{S_j})

where the ``k = n_random_subsets`` subsets ``S_j`` are drawn uniformly per minibatch among the
subsets of size ``2 .. M-1`` (none exist for two modalities) and count for the cells that
have all of ``S_j``. Terms that would repeat the joint term are dropped: a cell with a single
modality has only ``ELBO(x_m)``, and ``S_j = O`` is skipped. The reported ``kl`` and
per-modality reconstruction are those of the joint term; ``elbo`` is the whole sum at β = 1.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from omnivae.module.fusion import product_of_experts
from omnivae.module.models.base import Objective, ObjectiveOutput, decode_nll, single
from omnivae.module.records import BatchData

if TYPE_CHECKING:
    from omnivae.module.vae import MultimodalVAE


@dataclass(frozen=True)
class MVAEOptions:
    """Options of MVAE.

    Parameters
    ----------
    n_random_subsets
        ``k``: random subsets of size 2 .. M-1 added per minibatch (paper: a few).
    """

    n_random_subsets: int = 1


class MVAE(Objective):
    """MVAE objective (see module docstring)."""

    name = "mvae"
    fusions = ("poe",)
    options_class = MVAEOptions

    def _terms(self, mask: Tensor) -> list[Tensor]:
        """Expert masks ``(n, M)`` of each ELBO term (rows of all-False: no term)."""
        n_mod = mask.shape[1]
        several = mask.sum(dim=1, keepdim=True) > 1  # (n, 1)
        terms = [mask]
        eye = torch.eye(n_mod, dtype=torch.bool, device=mask.device)
        terms += [mask & eye[m] & several for m in range(n_mod)]
        middle = [c for size in range(2, n_mod) for c in itertools.combinations(range(n_mod), size)]
        if middle and self.options.n_random_subsets > 0:
            picks = torch.randint(len(middle), (self.options.n_random_subsets,))
            for p in picks.tolist():
                subset = torch.zeros(n_mod, dtype=torch.bool, device=mask.device)
                subset[list(middle[p])] = True
                has_all = (mask & subset).eq(subset).all(dim=1, keepdim=True)
                proper = (mask & ~subset).any(dim=1, keepdim=True)
                terms.append(subset & has_all & proper)
        return terms

    def loss(self, vae: MultimodalVAE, batch: BatchData, kl_weight: float) -> ObjectiveOutput:
        loc, logvar = vae.experts(batch)
        n = batch.n_cells
        nll_sum = loc.new_zeros(())
        kl_sum = loc.new_zeros(())
        reconstruction: dict[str, Tensor] = {}
        kl_joint = loc.new_zeros(())
        for t, experts in enumerate(self._terms(batch.mask)):
            cells = experts.any(dim=1).nonzero(as_tuple=True)[0]
            if cells.numel() == 0:
                continue
            q = product_of_experts(loc[:, cells], logvar[:, cells], experts[cells])
            z = self.rsample(q)
            kl = vae.prior.kl(q, z)
            nll, per_modality = decode_nll(vae, z, cells, batch, experts[cells])
            nll_sum = nll_sum + nll.sum()
            kl_sum = kl_sum + kl.sum()
            if t == 0:  # the joint term is the one reported per modality
                kl_joint = kl.sum() / n
                reconstruction = {
                    name: v.sum() / batch.mask[:, m].sum().clamp(min=1)
                    for m, (name, v) in enumerate(per_modality.items())
                }
        joint = product_of_experts(loc, logvar, batch.mask)
        return ObjectiveOutput(
            loss=(nll_sum + kl_weight * kl_sum) / n, reconstruction=reconstruction,
            kl=kl_joint, elbo=(nll_sum + kl_sum) / n, embedding=single(joint), joint=joint,
        )

