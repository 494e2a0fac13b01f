"""Multi-process training on Lightning's distributed strategies (training layer).

omnivae does not ship its own distributed trainer: ``Model.train(devices=N, num_nodes=M,
strategy="ddp")`` hands the run to Lightning's DDP. This module holds the few pieces omnivae
needs on top of it:

- :class:`ShardSampler`, the sampler of omnivae's loaders. In one process it draws exactly
  what a shuffled :class:`~torch.utils.data.DataLoader` draws (so single-process runs, their
  checkpoints and their reproducibility are unchanged). Under DDP each process takes a disjoint
  shard of a permutation seeded by ``seed + epoch``: a new order every epoch, the same on every
  process, the same again after a resume. The process count is read when the sampler is
  iterated, so the same loader works in the process that built it and in processes Lightning
  starts.
- :func:`gather_rows`: concatenate a tensor's rows from every process (the batch probe).
- :func:`union_keys`: the same ordered list of loss terms on every process.
- :func:`check_launch`: refuse, with a clear message, launches that cannot work.
- :func:`return_callback_states`: with ``"ddp_notebook"`` (forked workers), bring the
  training history and early-stopping record back to the notebook's process.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import RandomSampler, Sampler


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process (``(0, 1)`` outside a process group).

    Examples
    --------
    >>> world()
    (0, 1)
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_size(n: int, world_size: int, *, pad: bool, rank: int = 0) -> int:
    """Cells one process gets out of ``n``: ``ceil(n / world_size)`` when padded (every process
    the same count, as DDP training needs), else the size of the strided shard ``rank``.

    Examples
    --------
    >>> shard_size(101, 2, pad=True), shard_size(101, 2, pad=False, rank=1)
    (51, 50)
    """
    if pad:
        return math.ceil(n / world_size)
    return len(range(rank, n, world_size))


def steps_per_epoch(n_cells: int, batch_size: int, world_size: int) -> int:
    """Optimiser steps each process makes per epoch when ``world_size`` processes share
    ``n_cells`` training cells in minibatches of ``batch_size`` (per process).

    Examples
    --------
    >>> steps_per_epoch(1000, 128, 1), steps_per_epoch(1000, 128, 2)
    (8, 4)
    """
    return max(1, math.ceil(shard_size(n_cells, world_size, pad=True) / batch_size))


class ShardSampler(Sampler[int]):
    """Positions ``0..n-1`` for this process: all of them in one process, a disjoint shard
    under a distributed strategy.

    Parameters
    ----------
    n
        Number of cells in the dataset.
    shuffle
        Draw a new random order every epoch. In one process the order comes from
        ``generator`` exactly as in ``DataLoader(shuffle=True, generator=generator)``; under a
        distributed strategy it is a permutation seeded with ``seed + epoch`` (Lightning calls
        :meth:`set_epoch` before every epoch), identical on every process.
    seed
        Seed of the distributed order.
    generator
        Generator of the single-process order.
    distributed
        ``None`` (default): shard when a :mod:`torch.distributed` process group is running;
        ``False``: never (a one-process Trainer in a program where a distributed run left its
        process group behind); ``True``: always.
    pad
        Under a distributed strategy, repeat the first ``world_size - n % world_size`` cells
        of the order so that every process gets the same number of cells (training: every
        process must make the same number of optimiser steps). Without padding (validation),
        shard ``r`` is ``order[r::world_size]`` and no cell is counted twice.

    Examples
    --------
    >>> s = ShardSampler(5, shuffle=False)
    >>> list(s), len(s)
    ([0, 1, 2, 3, 4], 5)
    >>> s.shard(rank=0, world_size=2), s.shard(rank=1, world_size=2)  # padded: equal shards
    ([0, 2, 4], [1, 3, 0])
    """

    def __init__(self, n: int, *, shuffle: bool, seed: int = 0,
                 generator: torch.Generator | None = None, pad: bool = True,
                 distributed: bool | None = None) -> None:
        self.n, self.shuffle, self.seed, self.pad = int(n), shuffle, int(seed), pad
        self.distributed = distributed
        self.generator = generator
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order the next iteration draws (distributed runs)."""
        self.epoch = int(epoch)

    def shard(self, rank: int, world_size: int) -> list[int]:
        """The positions process ``rank`` of ``world_size`` visits in the current epoch."""
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(
                self.seed + self.epoch)).tolist()
        else:
            order = list(range(self.n))
        if self.pad and self.n % world_size:
            extra = world_size - self.n % world_size
            order += (order * math.ceil(extra / max(self.n, 1)))[:extra]
        return order[rank::world_size]

    def _world(self) -> tuple[int, int]:
        return (0, 1) if self.distributed is False else world()

    def __iter__(self) -> Iterator[int]:
        rank, size = self._world()
        if size > 1:
            yield from self.shard(rank, size)
        elif self.shuffle:  # the same draws as DataLoader(shuffle=True, generator=...)
            yield from RandomSampler(range(self.n), generator=self.generator)
        else:
            yield from range(self.n)

    def __len__(self) -> int:
        rank, size = self._world()
        return shard_size(self.n, size, pad=self.pad, rank=rank) if size > 1 else self.n


def gather_rows(x: torch.Tensor, strategy: Any) -> torch.Tensor:
    """Rows of ``x`` from every process, concatenated in rank order (``x`` itself in one
    process); the processes may hold different numbers of rows. ``strategy`` is the
    Trainer's strategy (its ``all_gather`` does the communication); every process of a
    distributed strategy must call it.

    Examples
    --------
    >>> gather_rows(torch.ones(3, 2), strategy=None).shape
    torch.Size([3, 2])
    """
    if getattr(strategy, "world_size", 1) == 1:
        return x
    device = strategy.root_device
    counts = strategy.all_gather(torch.tensor([x.shape[0]], device=device)).reshape(-1).tolist()
    padded = x.new_zeros((max(counts), *x.shape[1:]))
    padded[: x.shape[0]] = x
    gathered = strategy.all_gather(padded.to(device)).cpu()  # (world, max rows, ...)
    return torch.cat([gathered[r, :c] for r, c in enumerate(counts)])


def gather_objects(obj: Any, world_size: int) -> list[Any]:
    """``obj`` of every process, in rank order (``[obj]`` in one process). Every process of a
    run with ``world_size`` processes must call it.

    Examples
    --------
    >>> gather_objects({"a": 1}, world_size=1)
    [{'a': 1}]
    """
    if world_size == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def union_keys(keys: Sequence[str], world_size: int) -> list[str]:
    """The union of every process's ``keys``, in the same order on every process (first seen
    on the lowest rank first); ``list(keys)`` in one process. Every process of a run with
    ``world_size`` processes must call it.

    Examples
    --------
    >>> union_keys(["elbo", "kl"], world_size=1)
    ['elbo', 'kl']
    """
    union: list[str] = []
    for rank_keys in gather_objects(list(keys), world_size):
        union += [k for k in rank_keys if k not in union]
    return union


def _script_can_relaunch() -> bool:
    """Whether Lightning's ``"ddp"`` launcher can start this program again (a script file or a
    ``python -m`` module, not an interactive session or ``python -c``)."""
    main = sys.modules.get("__main__")
    if main is None:
        return False
    if getattr(main, "__spec__", None) is not None:
        return True
    interactive = hasattr(sys, "ps1") or bool(sys.flags.interactive)
    path = getattr(main, "__file__", None)
    return not interactive and path is not None and os.path.isfile(path)


def _forks(launcher: Any) -> bool:
    """Whether ``launcher`` forks its workers and has the hooks that carry results back."""
    return (getattr(launcher, "_start_method", None) == "fork"
            and hasattr(launcher, "get_extra_results")
            and hasattr(launcher, "update_main_process_results"))


def return_callback_states(strategy: Any, callbacks: Sequence[Any]) -> None:
    """With a launcher that trains in forked workers (``"ddp_notebook"``, ``"ddp_fork"``),
    send the ``state_dict()`` of each of ``callbacks`` from worker 0 back to this process
    and load it there, along with the final weights Lightning sends back itself. Nothing for
    other strategies.

    Examples
    --------
    >>> return_callback_states(None, [])  # one process: nothing to do
    """
    launcher: Any = getattr(strategy, "launcher", None)
    if type(launcher).__name__ != "_MultiProcessingLauncher" or not _forks(launcher):
        return
    get_extra, update = launcher.get_extra_results, launcher.update_main_process_results

    def get_extra_results(trainer: Any) -> dict[str, Any]:  # in worker 0
        extra = get_extra(trainer)
        # through a file, as Lightning sends the weights: the queue is read only after the
        # workers have ended, so a large message (the best weights) would block them
        fd, path = tempfile.mkstemp(suffix=".omnivae.pt")
        os.close(fd)
        torch.save([cb.state_dict() for cb in callbacks], path)
        extra["omnivae_callbacks"] = path
        return extra

    def update_main_process_results(trainer: Any, extra: dict[str, Any]) -> None:  # here
        update(trainer, extra)
        path = extra["omnivae_callbacks"]
        try:
            states = torch.load(path, weights_only=True)
        finally:
            os.remove(path)
        for cb, state in zip(callbacks, states, strict=True):
            cb.load_state_dict(state)

    launcher.get_extra_results = get_extra_results  # the forked workers share these objects
    launcher.update_main_process_results = update_main_process_results


def check_launch(strategy: Any, world_size: int) -> None:
    """Raise a ValueError when the Trainer's ``strategy`` cannot train omnivae with
    ``world_size`` processes from this program; say what to use instead.

    - ``"ddp"`` starts the processes by running the user's program again: it needs a script
      (``python train.py``, ``omnivae fit``, ``srun``, ``torchrun``), not a notebook, an
      interactive prompt or ``python -c``.
    - ``"ddp_notebook"``/``"ddp_fork"`` train in forked worker processes (the way to use
      several devices from a notebook); :func:`return_callback_states` brings omnivae's
      history back from them.
    - ``"ddp_spawn"`` would pickle the model and the data into fresh processes and send only
      the final weights back: it is refused.

    Examples
    --------
    >>> check_launch(None, 1)  # one process: nothing to check
    """
    if world_size <= 1 or strategy is None:
        return
    launcher = getattr(strategy, "launcher", None)
    name = type(launcher).__name__
    how = ("Put the training in a script and run it with strategy='ddp' (python train.py, "
           "omnivae fit --devices N --strategy ddp, srun or torchrun); see docs/distributed.md.")
    if name == "_MultiProcessingLauncher" and not _forks(launcher):
        raise ValueError(
            f"strategy {type(strategy).__name__} with start method "
            f"{getattr(launcher, '_start_method', '?')!r} (ddp_spawn) would copy the model and "
            "the data into new worker processes and send back only the final weights; "
            "omnivae's training history and best-weights record would be lost. From a "
            "notebook use strategy='ddp_notebook' (CPU, or GPUs before CUDA is initialised). "
            + how)
    if name == "_SubprocessScriptLauncher":
        external = strategy.cluster_environment.creates_processes_externally
        if not external and not _script_can_relaunch():
            raise ValueError(
                "strategy='ddp' starts its other processes by running this program again, which "
                "is impossible from an interactive session, a notebook or python -c. There, use "
                "strategy='ddp_notebook' (forked workers; CPU, or GPUs before CUDA is "
                "initialised), or: " + how)
