"""Reading rows of counts from an ``.h5mu`` file with h5py: one contiguous range at a time."""

from __future__ import annotations

import h5py
import numpy as np
import scipy.sparse as sp


class CountsReader:
    """Rows of one modality's counts (a CSR group or a dense dataset) in an open HDF5 file.

    The CSR row pointer (one int64 per cell) is held in memory; a row range reads exactly the
    stored values of those rows.
    """

    def __init__(self, node: h5py.Group | h5py.Dataset, name: str, where: str,
                 columns: np.ndarray | None = None) -> None:
        self.node, self.name, self.columns = node, name, columns
        encoding = str(node.attrs.get("encoding-type", "array"))
        if isinstance(node, h5py.Group) and encoding != "csr_matrix":
            raise ValueError(
                f"Modality {name!r} ({where}) is stored as {encoding}; backed training reads "
                "cells as rows and needs CSR (or dense) counts. Convert it once in memory, "
                f"e.g. mdata.mod[{name!r}].X = mdata.mod[{name!r}].X.tocsr(), and write again.")
        self.sparse = isinstance(node, h5py.Group)
        dtype = node["data"].dtype if self.sparse else node.dtype
        if np.dtype(dtype).kind not in "biuf":
            raise ValueError(
                f"Modality {name!r} ({where}) holds {dtype} values, not numbers; store the raw "
                "counts as an integer or float matrix.")
        self.shape = tuple(int(v) for v in (node.attrs["shape"] if self.sparse else node.shape))
        self.indptr = node["indptr"][:].astype(np.int64) if self.sparse else None

    def read(self, start: int, stop: int) -> sp.csr_matrix:
        """Rows ``start:stop`` as a canonical float32 CSR (columns in training order)."""
        if self.indptr is None:
            matrix = sp.csr_matrix(np.asarray(self.node[start:stop], dtype=np.float32))
        else:
            lo, hi = int(self.indptr[start]), int(self.indptr[stop])
            matrix = sp.csr_matrix(
                (np.asarray(self.node["data"][lo:hi], dtype=np.float32),
                 np.asarray(self.node["indices"][lo:hi], dtype=np.int64),
                 self.indptr[start:stop + 1] - lo), shape=(stop - start, self.shape[1]))
        if self.columns is not None:
            matrix = matrix[:, self.columns]
        matrix.sum_duplicates()
        return matrix


def contiguous_runs(rows: np.ndarray, max_gap: int, max_span: int) -> list[np.ndarray]:
    """Sorted ``rows`` cut into runs to read contiguously: a new run starts after a gap of
    more than ``max_gap`` rows or when the run would span more than ``max_span`` rows, so a
    read never holds more than ``max_span`` rows (sparse picks, e.g. validation cells, cost
    reading their neighbours but not more memory).

    Examples
    --------
    >>> [r.tolist() for r in contiguous_runs(np.array([0, 1, 5, 900, 901, 950]), 100, 40)]
    [[0, 1, 5], [900, 901], [950]]
    """
    if not len(rows):
        return []
    starts = [0]
    for i in range(1, len(rows)):
        if rows[i] - rows[i - 1] > max_gap or rows[i] - rows[starts[-1]] >= max_span:
            starts.append(i)
    return np.split(rows, starts[1:])


def store_node(handle: h5py.File, name: str, layer: str | None) -> h5py.Group | h5py.Dataset:
    """The HDF5 node holding modality ``name``'s counts in an open ``.h5mu``: ``X``, or the
    layer ``layer``; a missing one is an error naming what the modality has.

    Examples
    --------
    >>> import os, tempfile, h5py, omnivae
    >>> path = os.path.join(tempfile.mkdtemp(), "cells.h5mu")
    >>> omnivae.datasets.simulate(20, modalities=("rna",), seed=0).write(path)
    >>> with h5py.File(path, "r") as handle:
    ...     store_node(handle, "rna", None).name
    '/mod/rna/X'
    >>> os.remove(path)
    """
    group = handle["mod"][name]
    if layer is not None:
        if "layers" not in group or layer not in group["layers"]:
            have = list(group["layers"]) if "layers" in group else []
            raise KeyError(f"Modality {name!r} has no layer {layer!r}; its layers are {have}. "
                           "Pass layer=None to read counts from X.")
        return group["layers"][layer]
    if "X" not in group:
        raise ValueError(f"Modality {name!r} has no X; pass layer= naming its counts layer.")
    return group["X"]
