"""Per-epoch means of logged loss terms, exact over all cells of all processes (training layer).

Lightning's own epoch reduction of ``self.log(..., batch_size=n, sync_dist=True)`` is not used:
it makes one call per term and step, and under DDP it averages the per-process cell counts in
integer arithmetic, so with shards of unequal size (21 and 20 validation cells) the mean is
off (it divides by 20 instead of 20.5). Here every step adds its terms, weighted by its cells,
to one stacked tensor (no host synchronisation), and at the end of the epoch the sums and
counts are summed over the processes once, in float.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from omnivae.train.distributed import union_keys


class EpochSums:
    """Running sums of loss terms over an epoch.

    Each term keeps its own count of cells and steps, so a term present in only some steps
    (it appears mid-epoch, or some minibatches lack it) is averaged over the steps that had
    it. Terms named in ``per_step`` (e.g. the KL weight) are averaged over steps, not cells.

    Examples
    --------
    >>> sums = EpochSums()
    >>> sums.add({"elbo": torch.tensor(1.0)}, 10)
    >>> sums.add({"elbo": torch.tensor(4.0)}, 20)
    >>> float(sums.means()["elbo"])
    3.0
    """

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.per_step: set[str] = set()
        self.sums: Tensor | None = None  # (3, n_keys): weighted sums, cells, steps
        self._step_mask: Tensor | None = None

    def reset(self) -> None:
        """Start a new epoch."""
        self.keys, self.sums, self._step_mask = [], None, None

    def add(self, terms: Mapping[str, Tensor], n: int, per_step: Iterable[str] = ()) -> None:
        """Add one step's ``terms`` (means over its ``n`` cells)."""
        self.per_step.update(per_step)
        keys = list(terms)
        values = torch.stack([v.float().reshape(()) for v in terms.values()])
        if keys != self.keys or self.sums is None or self._step_mask is None:
            self._extend(keys, values)
        assert self.sums is not None and self._step_mask is not None
        if keys == self.keys:  # every step but rare ones
            weighted = torch.where(self._step_mask, values, values * n)
            self.sums = self.sums + torch.stack([weighted, torch.full_like(values, n),
                                                 torch.ones_like(values)])
            return
        index = torch.tensor([self.keys.index(k) for k in keys], device=values.device)
        mask = self._step_mask[index]
        row = torch.stack([torch.where(mask, values, values * n), torch.full_like(values, n),
                           torch.ones_like(values)])
        self.sums = self.sums.index_add(1, index, row)

    def _extend(self, keys: list[str], like: Tensor) -> None:
        """Grow the sums to the union of the terms seen so far and ``keys``."""
        union = list(self.keys) + [k for k in keys if k not in self.keys]
        self._reorder(union, like)

    def _reorder(self, keys: list[str], like: Tensor) -> None:
        sums = like.new_zeros((3, len(keys)))
        if self.sums is not None and self.keys:
            old = torch.tensor([keys.index(k) for k in self.keys], device=like.device)
            sums[:, old] = self.sums
        self.keys, self.sums = keys, sums
        self._step_mask = torch.tensor([k in self.per_step for k in keys], device=like.device)

    def reduce(self, strategy: Any, device: torch.device) -> None:
        """Sum over the processes of a distributed run (every process must call it, with its
        Trainer's ``strategy``); nothing in one process."""
        size = getattr(strategy, "world_size", 1)
        if size == 1:
            return
        keys = union_keys(self.keys, size)  # the same order on every process
        like = self.sums if self.sums is not None else torch.zeros(0, device=device)
        self._reorder(keys, like)
        assert self.sums is not None
        self.sums = strategy.reduce(self.sums, reduce_op="sum")

    def means(self) -> dict[str, Tensor]:
        """``{term: mean}``: over cells, or over steps for the ``per_step`` terms."""
        if self.sums is None or self._step_mask is None:
            return {}
        counts = torch.where(self._step_mask, self.sums[2], self.sums[1]).clamp(min=1)
        return dict(zip(self.keys, (self.sums[0] / counts).unbind(), strict=True))
