"""Minibatches from data on disk: block shuffling over contiguous reads.

Each epoch the training cells (sorted) are cut into blocks of ``block_size`` consecutive
cells; the order of the blocks is shuffled, ``buffer_blocks`` blocks at a time are read (one
contiguous range per block and modality) and their cells shuffled together into minibatches.
Cells left over at the end of a buffer (fewer than a minibatch) join the next buffer, so every
minibatch but the last is full and every training cell is visited exactly once per epoch.
The shuffle draws from one ``torch.Generator``: the same seed gives the same epochs.

Under a distributed strategy (``distributed=True`` and several processes), each epoch draws one
seed from that generator (the same on every process), shuffles the block order with it, and
gives process ``r`` the blocks ``r, r + N, r + 2N, ...`` of that order: disjoint shards of whole
blocks (contiguous reads stay contiguous). Training shards are padded with repeats of the
process's own first cells to the largest shard, so every process makes the same number of
optimiser steps, as DDP needs; validation cells are dealt out one by one, not padded.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import IterableDataset

from omnivae.data.cells import CellData
from omnivae.module.records import BatchData
from omnivae.train.distributed import world


class RowSource(Protocol):
    """Anything that reads cells into memory (e.g. :class:`omnivae.data.backed.BackedCellData`)."""

    @property
    def n_cells(self) -> int: ...

    def read(self, rows: np.ndarray) -> CellData: ...


def plan_epoch(indices: np.ndarray, batch_size: int, block_size: int, buffer_blocks: int,
               generator: torch.Generator | None) -> list[list[np.ndarray]]:
    """One epoch's minibatches (cell positions), grouped by the buffer they are read in.

    ``generator=None``: no shuffling (blocks and cells in order, e.g. for validation).

    Examples
    --------
    >>> plan = plan_epoch(np.arange(10), 4, 2, 2, torch.Generator().manual_seed(0))
    >>> sorted(np.concatenate([b for buf in plan for b in buf]).tolist()) == list(range(10))
    True
    >>> [len(b) for buf in plan for b in buf]
    [4, 4, 2]
    """
    indices = np.sort(np.asarray(indices, dtype=np.int64))
    blocks = [indices[i:i + block_size] for i in range(0, len(indices), block_size)]
    if generator is not None:
        blocks = [blocks[i] for i in torch.randperm(len(blocks), generator=generator).tolist()]
    plan: list[list[np.ndarray]] = []
    carry = np.zeros(0, dtype=np.int64)
    for start in range(0, len(blocks), buffer_blocks):
        cells = np.concatenate([carry, *blocks[start:start + buffer_blocks]])
        if generator is not None:
            cells = cells[torch.randperm(len(cells), generator=generator).numpy()]
        last = start + buffer_blocks >= len(blocks)
        n_full = len(cells) if last else len(cells) // batch_size * batch_size
        batches = [cells[i:i + batch_size] for i in range(0, n_full, batch_size)]
        carry = cells[n_full:]
        if batches:
            plan.append(batches)
    return plan


def shard_blocks(indices: np.ndarray, block_size: int, rank: int, world_size: int, *,
                 order_seed: int | None, pad: bool) -> np.ndarray:
    """The cells process ``rank`` of ``world_size`` reads in one epoch.

    Training (``pad=True``): every ``world_size``-th block of the block order (shuffled with
    ``order_seed``; ``None`` keeps it), padded with repeats of its own first cells to the
    largest shard. Blocks shrink (to no fewer than 8 per process) when there are too few cells
    for ``block_size``, so small data is not split unevenly. Validation (``pad=False``): every
    ``world_size``-th cell, in order (every process gets some when there are enough cells).

    Examples
    --------
    >>> cells = np.arange(40)
    >>> [shard_blocks(cells, 4, r, 2, order_seed=None, pad=True)[:6].tolist() for r in (0, 1)]
    [[0, 1, 4, 5, 8, 9], [2, 3, 6, 7, 10, 11]]
    >>> shard_blocks(np.arange(5), 4, 1, 2, order_seed=None, pad=False).tolist()
    [1, 3]
    """
    indices = np.sort(np.asarray(indices, dtype=np.int64))
    if not pad:
        return indices[rank::world_size]
    block_size = max(1, min(block_size, len(indices) // (8 * world_size)))
    blocks = [indices[i:i + block_size] for i in range(0, len(indices), block_size)]
    if order_seed is not None:
        order = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(order_seed))
        blocks = [blocks[i] for i in order.tolist()]
    shards = [blocks[r::world_size] for r in range(world_size)]
    mine = np.concatenate(shards[rank]) if shards[rank] else np.zeros(0, dtype=np.int64)
    target = max(sum(len(b) for b in shard) for shard in shards)
    if 0 < len(mine) < target:
        mine = np.concatenate([mine, np.resize(mine, target - len(mine))])
    return mine


class BlockShuffleDataset(IterableDataset):
    """Minibatches of ``indices`` read from ``source`` buffer by buffer (see module doc).

    ``distributed`` (set by ``Model.train`` when its Trainer runs several processes) shards
    the blocks over the processes; ``pad`` (training) equalises the shards.
    """

    def __init__(self, source: RowSource, indices: np.ndarray, batch_size: int, *,
                 block_size: int, buffer_blocks: int, generator: torch.Generator | None,
                 pad: bool = True) -> None:
        self.source, self.indices = source, np.sort(np.asarray(indices, dtype=np.int64))
        self.batch_size, self.block_size = batch_size, block_size
        self.buffer_blocks, self.generator, self.pad = buffer_blocks, generator, pad
        self.distributed = False

    def _world(self) -> tuple[int, int]:
        return world() if self.distributed else (0, 1)

    def __len__(self) -> int:
        rank, size = self._world()
        n = len(self.indices) if size == 1 else len(
            shard_blocks(self.indices, self.block_size, rank, size, order_seed=None,
                         pad=self.pad))
        return -(-n // self.batch_size)

    def _plan(self) -> list[list[np.ndarray]]:
        rank, size = self._world()
        if size == 1:
            return plan_epoch(self.indices, self.batch_size, self.block_size,
                              self.buffer_blocks, self.generator)
        seed = None if self.generator is None else int(
            torch.randint(0, 2**62, (1,), generator=self.generator))  # one draw per epoch
        mine = shard_blocks(self.indices, self.block_size, rank, size, order_seed=seed,
                            pad=self.pad)
        local = None if seed is None else torch.Generator().manual_seed(seed + 1 + rank)
        return plan_epoch(mine, self.batch_size, self.block_size, self.buffer_blocks, local)

    def __iter__(self) -> Iterator[BatchData]:
        for buffer in self._plan():
            rows = np.unique(np.concatenate(buffer))  # padding may repeat a cell
            data = self.source.read(rows)
            for batch in buffer:
                yield data.batch(np.searchsorted(rows, batch))
