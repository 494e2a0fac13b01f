"""Training data that stays on disk: a backed ``.h5mu`` read in chunks of consecutive cells.

:func:`setup_backed` validates the counts and computes every per-cell summary (library sizes,
membership masks, batch codes) in one streaming pass over row chunks; the resulting
:class:`BackedCellData` keeps only those per-cell vectors in memory and reads counts on demand,
one contiguous row range per modality, into an in-memory :class:`~omnivae.data.cells.CellData`.
Memory therefore grows with the number of cells only through O(cells) vectors (a few dozen
bytes per cell), never through the cells x features counts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py
import mudata as md
import numpy as np
import scipy.sparse as sp

from omnivae.data.cells import CellData
from omnivae.data.checks import (
    check_counts,
    check_modality_axes,
    check_no_empty_cells,
    resolve_modalities,
    training_features,
    warn_if_no_counts,
)
from omnivae.data.files import read_h5mu, unreadable_file
from omnivae.data.setup import SetupInfo, default_likelihood, setup_info
from omnivae.data.store import CountsReader, contiguous_runs, store_node
from omnivae.module.likelihoods import check_likelihood_name
from omnivae.module.records import BatchData


@dataclasses.dataclass(frozen=True)
class BackedOptions:
    """How a backed store is read.

    Parameters
    ----------
    chunk_size
        Cells per read in the streaming passes (validation and summaries at setup, embedding,
        prediction). Memory of a pass is about ``chunk_size`` x features (dense for predictions).
    block_size
        Consecutive training cells per shuffled block. Smaller blocks mix cells better
        (minibatches closer to a uniform shuffle) but cost more, smaller reads.
    buffer_blocks
        Blocks read together each time; the cells of a buffer are shuffled together, so a
        minibatch draws from ``buffer_blocks`` places in the store. Memory of training is about
        ``block_size * buffer_blocks`` cells of counts.
    background_cells
        At most this many cells (evenly spaced) estimate the background of an ``nb_mixture`` (protein) modality
        (a per-feature quantile); below it the estimate equals the in-memory one.

    Examples
    --------
    >>> BackedOptions(block_size=128).buffer_cells
    4096
    """

    chunk_size: int = 4096
    block_size: int = 128
    buffer_blocks: int = 32
    background_cells: int = 100_000

    def __post_init__(self) -> None:
        for name in ("chunk_size", "block_size", "buffer_blocks", "background_cells"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"BackedOptions.{name} must be a positive integer, "
                                 f"got {getattr(self, name)}.")

    @property
    def buffer_cells(self) -> int:
        """Training cells held in memory at once."""
        return self.block_size * self.buffer_blocks


def open_backed(path: str | Path) -> md.MuData:
    """Open an ``.h5mu`` file in backed mode: cell and feature tables in memory, counts on disk.

    Examples
    --------
    >>> import omnivae, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "cells.h5mu")
    >>> omnivae.datasets.simulate(30, modalities=("rna",), seed=0).write(path)
    >>> mdata = open_backed(path)
    >>> mdata.isbacked, mdata.n_obs
    (True, 30)
    >>> mdata.file.close(); os.remove(path)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; pass the path of an .h5mu file.")
    try:
        return read_h5mu(path, backed=True)
    except (OSError, KeyError, ValueError) as err:
        raise unreadable_file(path, "an .h5mu file (MuData)", err) from None


@dataclasses.dataclass(frozen=True)
class BackedCellData:
    """Per-cell vectors in memory, counts on disk; the backed counterpart of
    :class:`~omnivae.data.cells.CellData` (see there for ``mask``, ``library``, ...).

    ``local_rows[m][i]`` is cell ``i``'s row in modality ``m``'s store (-1: absent). When a
    modality's cells are stored in the order of the MuData's cells, consecutive cells are one
    contiguous read; otherwise each run of nearby rows is one read (slower, same result).
    """

    modalities: tuple[str, ...]
    readers: dict[str, CountsReader]
    local_rows: dict[str, np.ndarray]
    mask: np.ndarray
    batch_index: np.ndarray
    library: dict[str, np.ndarray]
    penalty_codes: np.ndarray | None
    labels: np.ndarray | None
    options: BackedOptions

    @property
    def n_cells(self) -> int:
        return int(self.mask.shape[0])

    def read_range(self, start: int, stop: int) -> dict[str, sp.csr_matrix]:
        """Counts of cells ``start:stop`` per modality, aligned to the cells (rows of cells
        lacking a modality are empty)."""
        out = {}
        for m in self.modalities:
            local = self.local_rows[m][start:stop]
            present = np.flatnonzero(local >= 0)
            lengths = np.zeros(stop - start, dtype=np.int64)
            data, indices = np.zeros(0, np.float32), np.zeros(0, np.int64)
            if len(present):
                block = self._read_local(m, local[present])
                lengths[present] = np.diff(block.indptr)
                data, indices = block.data, block.indices
            indptr = np.concatenate([[0], np.cumsum(lengths)])
            out[m] = sp.csr_matrix((data, indices, indptr),
                                   shape=(stop - start, self.readers[m].shape[1]))
        return out

    def _read_local(self, m: str, local: np.ndarray, max_gap: int = 256) -> sp.csr_matrix:
        """Rows ``local`` of modality ``m``'s store, in that order: one contiguous read per run
        of rows less than ``max_gap`` apart (one read when the store is in cell order)."""
        order = np.argsort(local, kind="stable")
        ordered = local[order]
        runs = contiguous_runs(ordered, max_gap, self.options.chunk_size)
        parts = [self.readers[m].read(int(r[0]), int(r[-1]) + 1)[r - r[0]] for r in runs]
        block = parts[0] if len(parts) == 1 else sp.vstack(parts, format="csr")
        if np.all(order[:-1] < order[1:]):
            return block
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return block[inverse]

    def read(self, rows: Sequence[int] | np.ndarray, max_gap: int = 256) -> CellData:
        """Cells ``rows`` (any order) in memory: sorted, split where consecutive rows are more
        than ``max_gap`` apart and into spans of at most ``options.chunk_size`` rows, each
        run read contiguously (see :func:`contiguous_runs`).

        Examples
        --------
        >>> import omnivae, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "cells.h5mu")
        >>> omnivae.datasets.simulate(50, modalities=("rna", "adt"), seed=0).write(path)
        >>> data, _ = setup_backed(open_backed(path))
        >>> data.read([40, 3]).n_cells
        2
        >>> os.remove(path)
        """
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        parts: dict[str, list[sp.csr_matrix]] = {m: [] for m in self.modalities}
        for run in contiguous_runs(ordered, max_gap, self.options.chunk_size):
            counts = self.read_range(int(run[0]), int(run[-1]) + 1)
            for m in self.modalities:
                parts[m].append(counts[m][run - run[0]])
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        counts = {m: sp.vstack(parts[m], format="csr")[inverse] if parts[m]
                  else sp.csr_matrix((0, self.readers[m].shape[1]), dtype=np.float32)
                  for m in self.modalities}
        return CellData(
            self.modalities, counts, self.mask[rows], self.batch_index[rows],
            {m: self.library[m][rows] for m in self.modalities},
            None if self.penalty_codes is None else self.penalty_codes[rows],
            None if self.labels is None else self.labels[rows])

    def batch(self, rows: Sequence[int] | np.ndarray) -> BatchData:
        """Gather ``rows`` into a dense :class:`~omnivae.module.records.BatchData` (read from disk)."""
        return self.read(rows).batch(np.arange(len(rows)))


def _local_rows(obs_names: object, modality_names: object, name: str) -> np.ndarray:
    import pandas as pd

    assert isinstance(obs_names, pd.Index) and isinstance(modality_names, pd.Index)
    rows = obs_names.get_indexer(modality_names)
    if (rows < 0).any():
        raise ValueError(f"Modality {name!r} has cells not in mdata.obs_names; call mdata.update().")
    local = np.full(len(obs_names), -1, dtype=np.int64)
    local[rows] = np.arange(len(rows))
    return local


def setup_backed(
    mdata: md.MuData,
    options: BackedOptions | None = None,
    *,
    modalities: Sequence[str] | None = None,
    likelihoods: Mapping[str, str] | None = None,
    layer: str | Mapping[str, str | None] | None = None,
    batch_key: str | None = None,
    penalty_keys: Sequence[str] = (),
    label_key: str | None = None,
    reference: SetupInfo | None = None,
) -> tuple[BackedCellData, SetupInfo]:
    """:func:`omnivae.data.setup_mudata` for a MuData opened with ``backed=True``: the same
    checks and summaries, computed in one pass over chunks of ``options.chunk_size`` cells.

    Errors in the counts (negative, non-integer, NaN) are those of the in-memory setup,
    reported for the first chunk that has any.

    Examples
    --------
    >>> import omnivae, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "cells.h5mu")
    >>> omnivae.datasets.simulate(60, modalities=("rna", "adt"), seed=0).write(path)
    >>> data, info = setup_backed(open_backed(path), BackedOptions(chunk_size=16))
    >>> data.n_cells, info.likelihoods
    (60, {'rna': 'nb', 'adt': 'nb'})
    >>> os.remove(path)
    """
    if not mdata.isbacked or mdata.filename is None:
        raise ValueError("setup_backed needs a MuData opened with backed=True "
                         "(omnivae.data.backed.open_backed(path)); use setup_mudata for data in memory.")
    options = options or BackedOptions()
    if reference is not None:
        modalities, likelihoods = reference.modalities, reference.likelihoods
        layer, batch_key = reference.layers, reference.batch_key
        penalty_keys, label_key = reference.penalty_keys, reference.label_key
    names = resolve_modalities(mdata, modalities, likelihoods)
    layers = dict(layer) if isinstance(layer, Mapping) else dict.fromkeys(names, layer)
    handle = h5py.File(mdata.filename, "r")
    obs_names, n = mdata.obs_names, mdata.n_obs
    readers, local_rows, liks, scales, var_names = {}, {}, {}, {}, {}
    library: dict[str, np.ndarray] = {}
    background: dict[str, list[float]] = {}
    mask = np.zeros((n, len(names)), dtype=bool)
    for m, name in enumerate(names):
        adata = mdata.mod[name]
        check_modality_axes(adata, name)
        lik = check_likelihood_name((likelihoods or {}).get(name) or default_likelihood(name, adata))
        where = f"layer {layers.get(name)!r}" if layers.get(name) else "X"
        columns, features = None, adata.var_names
        if reference is not None and list(adata.var_names) != reference.var_names[name]:
            if set(adata.var_names) != set(reference.var_names[name]):
                training_features(adata, reference.var_names[name], name)  # raises, explains
            columns = adata.var_names.get_indexer(reference.var_names[name])
            features = adata.var_names[columns]
        readers[name] = CountsReader(store_node(handle, name, layers.get(name)),
                                     name, where, columns)
        local_rows[name] = _local_rows(obs_names, adata.obs_names, name)
        mask[:, m] = local_rows[name] >= 0
        lib, sample = _stream_summaries(readers[name], adata.obs_names, features, lik, where,
                                        options)
        if reference is None:
            warn_if_no_counts(name, float(lib.sum()), len(lib), where)
        scale = reference.library_scale[name] if reference else max(float(np.median(lib)), 1.0)
        lib = np.maximum(lib, 1.0).astype(np.float32)
        library[name] = np.ones(n, dtype=np.float32)
        library[name][mask[:, m]] = lib[local_rows[name][mask[:, m]]]
        liks[name], scales[name] = lik, scale
        var_names[name] = [str(v) for v in features]
        if lik == "nb_mixture":
            background[name] = _background_from_sample(readers[name], sample, lib, scale)
    check_no_empty_cells(mask, obs_names, names)
    info, batch_index, codes, labels = setup_info(
        mdata, names, liks, layers, var_names, scales, background, batch_key=batch_key,
        penalty_keys=penalty_keys, label_key=label_key, reference=reference)
    data = BackedCellData(names, readers, local_rows, mask, batch_index, library, codes, labels,
                          options)
    return data, info


def _stream_summaries(reader: CountsReader, obs_names: object, var_names: object, lik: str,
                      where: str, options: BackedOptions) -> tuple[np.ndarray, np.ndarray]:
    """Check every chunk of a modality's counts; return its cells' library sizes (before the
    floor at 1) and the rows sampled for the background estimate."""
    import pandas as pd

    assert isinstance(obs_names, pd.Index) and isinstance(var_names, pd.Index)
    n_rows = reader.shape[0]
    lib = np.zeros(n_rows, dtype=np.float32)
    for start in range(0, n_rows, options.chunk_size):
        stop = min(start + options.chunk_size, n_rows)
        chunk = reader.read(start, stop)
        check_counts(chunk, reader.name, lik, obs_names[start:stop], where, var_names)
        lib[start:stop] = (np.asarray((chunk > 0).sum(1)) if lik == "bernoulli"
                           else np.asarray(chunk.sum(1))).ravel()
    step = max(1, -(-n_rows // options.background_cells))
    return lib, np.arange(0, n_rows, step)


def _background_from_sample(reader: CountsReader, sample: np.ndarray, library: np.ndarray,
                            scale: float) -> list[float]:
    """Log of the 30 % quantile of depth-normalised counts per feature over ``sample`` rows
    (as :func:`omnivae.data._background_init` over all cells when ``sample`` is every row)."""
    pieces = []
    for start in range(0, len(sample), 4096):
        rows = sample[start:start + 4096]
        block = reader.read(int(rows[0]), int(rows[-1]) + 1)[rows - rows[0]]
        pieces.append(block.toarray() / (library[rows][:, None] / scale))
    dense = np.concatenate(pieces)
    return np.log(np.percentile(dense, 30, axis=0) + 0.5).astype(np.float32).tolist()


def resolve_backed(mdata: md.MuData | str | Path, backed: bool | BackedOptions | None,
                   ) -> tuple[md.MuData, BackedOptions | None]:
    """The MuData a :class:`omnivae.Model` works on and its backed options (``None``: in
    memory). A path opens backed unless ``backed=False``; a backed MuData is read from disk
    unless ``backed=False``, which loads it into memory.

    Examples
    --------
    >>> import omnivae
    >>> sim = omnivae.datasets.simulate(20, modalities=("rna",), seed=0)
    >>> resolve_backed(sim, None)[1] is None
    True
    """
    if isinstance(mdata, (str, Path)):
        mdata = open_backed(mdata) if backed is not False else read_h5mu(Path(mdata))
    if backed is False:
        if mdata.isbacked and mdata.filename is not None:
            mdata = read_h5mu(mdata.filename)
        return mdata, None
    if backed is None and not mdata.isbacked:
        return mdata, None
    if not mdata.isbacked:
        raise ValueError("backed=True needs the data on disk: pass the path of an .h5mu file, "
                         "or a MuData opened with mudata.read_h5mu(path, backed=True).")
    return mdata, backed if isinstance(backed, BackedOptions) else BackedOptions()
