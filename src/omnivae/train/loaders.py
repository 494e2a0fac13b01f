"""The training layer's data: the train/validation split of cells and the minibatch loaders.

Data in memory (:class:`~omnivae.data.cells.CellData`) are gathered with one sparse row slice
per modality and minibatch (no per-cell Python), densified, and moved to the device by
Lightning; data on disk are read by blocks of consecutive cells (:mod:`omnivae.train.blocks`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from omnivae.data.cells import CellData
from omnivae.module.records import BatchData
from omnivae.train.blocks import BlockShuffleDataset, RowSource
from omnivae.train.distributed import ShardSampler


class CellDataset(Dataset):
    """Map-style dataset over a subset of cells; ``__getitems__`` gathers a whole minibatch."""

    def __init__(self, data: CellData, indices: np.ndarray) -> None:
        self.data = data
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> BatchData:
        return self.data.batch(self.indices[[i]])

    def __getitems__(self, positions: Sequence[int]) -> BatchData:
        return self.data.batch(self.indices[np.asarray(positions, dtype=np.int64)])


def _keep(batch: Any) -> Any:
    return batch


def make_loader(data: CellData | RowSource, indices: np.ndarray, batch_size: int, shuffle: bool,
                seed: int = 0, *, block_size: int = 128, buffer_blocks: int = 32) -> DataLoader:
    """A DataLoader yielding :class:`BatchData` minibatches (no worker processes).

    Data in memory (:class:`CellData`) is shuffled cell by cell; its
    :class:`~omnivae.train.distributed.ShardSampler` gives each process of a distributed run a
    disjoint shard (padded to equal sizes when shuffling, as training needs). Data read from
    disk (any other :class:`~omnivae.train.blocks.RowSource`) by blocks of ``block_size``
    consecutive cells, ``buffer_blocks`` blocks at a time (:mod:`omnivae.train.blocks`).

    Examples
    --------
    >>> import omnivae
    >>> from omnivae.data import setup_mudata
    >>> data, _ = setup_mudata(omnivae.datasets.simulate(100, modalities=("rna",), seed=0))
    >>> loader = make_loader(data, np.arange(100), 32, shuffle=True)
    >>> [batch.n_cells for batch in loader]
    [32, 32, 32, 4]
    """
    generator = torch.Generator().manual_seed(seed)
    if not isinstance(data, CellData):
        dataset = BlockShuffleDataset(data, indices, batch_size, block_size=block_size,
                                      buffer_blocks=buffer_blocks,
                                      generator=generator if shuffle else None, pad=shuffle)
        return DataLoader(dataset, batch_size=None, collate_fn=_keep, num_workers=0,
                          generator=generator)
    sampler = ShardSampler(len(indices), shuffle=shuffle, seed=seed, generator=generator,
                           pad=shuffle)
    return DataLoader(
        CellDataset(data, indices), batch_size=batch_size, sampler=sampler,
        collate_fn=_keep, num_workers=0, generator=generator,
    )


def split_cells(n_cells: int, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random train/validation split of cell positions.

    Examples
    --------
    >>> train, val = split_cells(100, 0.1, seed=0)
    >>> len(train), len(val)
    (90, 10)
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}.")
    order = np.random.default_rng(seed).permutation(n_cells)
    n_val = round(n_cells * validation_fraction)
    if n_cells - n_val < 1:
        n_val = 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])
