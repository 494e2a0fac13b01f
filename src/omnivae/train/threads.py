"""The CPU thread count torch trains and embeds with, pinned so that results do not depend on
what other libraries set it to."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def _default_num_threads() -> int:
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else torch.get_num_threads()


# Other libraries change the process-wide OpenMP thread count behind torch's back (numba, used by
# scanpy's neighbours, sets it to the number of CPUs), and a different count changes float
# sums, hence a trained model. Training therefore runs at a count fixed when omnivae is imported.
DEFAULT_NUM_THREADS = _default_num_threads()


@contextmanager
def pinned_threads(num_threads: int | None = None) -> Iterator[int]:
    """Run the block with torch using ``num_threads`` CPU threads (default
    :data:`DEFAULT_NUM_THREADS`: ``$OMP_NUM_THREADS``, else torch's count at import), then
    restore the previous count.

    Examples
    --------
    >>> with pinned_threads(1) as n:
    ...     torch.get_num_threads() == n == 1
    True
    """
    n = DEFAULT_NUM_THREADS if num_threads is None else int(num_threads)
    if n < 1:
        raise ValueError(f"num_threads must be a positive integer, got {num_threads}.")
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(previous)
