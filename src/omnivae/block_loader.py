"""Minibatches from data on disk: block shuffling over contiguous reads.

Each epoch the training cells (sorted) are cut into blocks of ``block_size`` consecutive
cells; the order of the blocks is shuffled, ``buffer_blocks`` blocks at a time are read (one
contiguous range per block and modality) and their cells shuffled together into minibatches.
Cells left over at the end of a buffer (fewer than a minibatch) join the next buffer, so every
minibatch but the last is full and every training cell is visited exactly once per epoch.
The shuffle draws from one ``torch.Generator``: the same seed gives the same epochs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import IterableDataset

from omnivae._types import BatchData
from omnivae.cell_data import CellData


class RowSource(Protocol):
    """Anything that reads cells into memory (e.g. :class:`omnivae.backed.BackedCellData`)."""

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


class BlockShuffleDataset(IterableDataset):
    """Minibatches of ``indices`` read from ``source`` buffer by buffer (see module doc)."""

    def __init__(self, source: RowSource, indices: np.ndarray, batch_size: int, *,
                 block_size: int, buffer_blocks: int, generator: torch.Generator | None) -> None:
        self.source, self.indices = source, np.sort(np.asarray(indices, dtype=np.int64))
        self.batch_size, self.block_size = batch_size, block_size
        self.buffer_blocks, self.generator = buffer_blocks, generator

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)

    def __iter__(self) -> Iterator[BatchData]:
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            raise RuntimeError("Training on a backed store runs in one process; train with "
                               "devices=1, or load the data in memory for multi-device training.")
        for buffer in plan_epoch(self.indices, self.batch_size, self.block_size,
                                 self.buffer_blocks, self.generator):
            rows = np.sort(np.concatenate(buffer))
            data = self.source.read(rows)
            for batch in buffer:
                yield data.batch(np.searchsorted(rows, batch))
