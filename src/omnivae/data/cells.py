"""Model-ready arrays of a multimodal dataset: no AnnData, no Lightning.

The MuData layer (:mod:`omnivae.data`) builds a :class:`CellData`; the training layer turns
minibatches of it into :class:`~omnivae.module.records.BatchData` on the device.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch
from scipy.special import gammaln

from omnivae.module.records import BatchData, NonZero


@dataclasses.dataclass(frozen=True)
class CellData:
    """Counts of every modality aligned to one list of cells.

    Parameters
    ----------
    modalities
        Modality names, in the model's order.
    counts
        Per modality, a float32 CSR ``(n_cells, n_features)``; rows of cells that lack the
        modality are empty (and ignored because of ``mask``).
    mask
        ``(n_cells, n_modalities)`` boolean membership, from MuData (never from zero rows).
    batch_index
        ``(n_cells,)`` int64 batch codes.
    library
        Per modality ``(n_cells,)`` float32 library sizes used by the decoder (total counts;
        number of non-zero features for a Bernoulli modality); 1 where absent.
    penalty_codes
        ``(n_cells, K)`` int64 codes of the batch columns of the mutual-information penalty.
    labels
        ``(n_cells,)`` int64 codes of the label column the penalty is conditioned on.
    """

    modalities: tuple[str, ...]
    counts: dict[str, sp.csr_matrix]
    mask: np.ndarray
    batch_index: np.ndarray
    library: dict[str, np.ndarray]
    penalty_codes: np.ndarray | None = None
    labels: np.ndarray | None = None
    _log_factorial: dict[str, np.ndarray] = dataclasses.field(
        init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        for matrix in self.counts.values():  # canonical CSR: gather_rows reads indptr directly
            matrix.sum_duplicates()  # sorts column indices too; a no-op when already canonical
        # per cell sum of lgamma(x + 1): a constant of the count likelihoods, computed once
        object.__setattr__(self, "_log_factorial",
                           {m: row_log_factorial(c) for m, c in self.counts.items()})

    @property
    def n_cells(self) -> int:
        return int(self.mask.shape[0])

    def batch(self, rows: Sequence[int] | np.ndarray) -> BatchData:
        """Gather ``rows`` into a dense :class:`BatchData` on the CPU.

        Examples
        --------
        >>> import numpy as np, scipy.sparse as sp
        >>> data = CellData(("a",), {"a": sp.csr_matrix(np.eye(3, dtype="float32"))},
        ...                 np.ones((3, 1), bool), np.zeros(3, "int64"), {"a": np.ones(3, "float32")})
        >>> data.batch([2, 0]).counts["a"].tolist()
        [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
        """
        rows = np.asarray(rows, dtype=np.int64)
        counts, nonzero = {}, {}
        for m in self.modalities:
            counts[m], nz = gather_rows(self.counts[m], rows)
            nonzero[m] = dataclasses.replace(
                nz, log_factorial=torch.from_numpy(self._log_factorial[m][rows]))
        return BatchData(
            counts=counts,
            mask=torch.from_numpy(self.mask[rows]),
            batch_index=torch.from_numpy(self.batch_index[rows]),
            library={
                m: torch.from_numpy(self.library[m][rows]).unsqueeze(-1) for m in self.modalities
            },
            penalty_codes=None if self.penalty_codes is None
            else torch.from_numpy(self.penalty_codes[rows]),
            labels=None if self.labels is None else torch.from_numpy(self.labels[rows]),
            nonzero=nonzero,
        )


def row_log_factorial(matrix: sp.csr_matrix, chunk: int = 65536) -> np.ndarray:
    """Per row, ``sum lgamma(x + 1)`` over its stored counts (float32), in row chunks so the
    temporary stays small.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> row_log_factorial(sp.csr_matrix(np.array([[3.0, 0.0, 2.0], [0.0, 0.0, 0.0]]))).round(4)
    array([2.4849, 0.    ], dtype=float32)
    """
    out = np.zeros(matrix.shape[0], dtype=np.float64)
    for start in range(0, matrix.shape[0], chunk):
        block = matrix[start:start + chunk]
        values = gammaln(np.asarray(block.data, dtype=np.float64) + 1.0)
        rows = np.repeat(np.arange(block.shape[0]), np.diff(block.indptr))
        out[start:start + block.shape[0]] = np.bincount(rows, weights=values,
                                                        minlength=block.shape[0])
    return out.astype(np.float32)


def gather_rows(matrix: sp.csr_matrix, rows: np.ndarray) -> tuple[torch.Tensor, NonZero]:
    """Rows ``rows`` of a CSR matrix as a dense tensor and as their non-zero entries.

    Index arithmetic on ``indptr`` (no per-cell Python, no intermediate sparse matrix): the
    positions of the gathered rows' entries are one ``np.repeat`` away from their starts.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> m = sp.csr_matrix(np.array([[0, 1, 0], [2, 0, 3]], dtype="float32"))
    >>> dense, nz = gather_rows(m, np.array([1, 0]))
    >>> dense.tolist(), nz.rows.tolist(), nz.cols.tolist(), nz.values.tolist()
    ([[2.0, 0.0, 3.0], [0.0, 1.0, 0.0]], [0, 0, 1], [0, 2, 1], [2.0, 3.0, 1.0])
    """
    # index first, then widen: casting the whole indptr would copy it every minibatch
    starts = matrix.indptr[rows].astype(np.int64)
    lengths = matrix.indptr[rows + 1].astype(np.int64) - starts
    out_rows = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)
    first = np.cumsum(lengths) - lengths
    positions = np.repeat(starts - first, lengths) + np.arange(len(out_rows), dtype=np.int64)
    cols = matrix.indices[positions].astype(np.int64, copy=False)
    values = np.asarray(matrix.data[positions], dtype=np.float32)
    keep = values != 0  # explicit zeros stored in the matrix are not non-zeros
    if not keep.all():
        out_rows, cols, values = out_rows[keep], cols[keep], values[keep]
    dense = np.zeros((len(rows), matrix.shape[1]), dtype=np.float32)
    dense[out_rows, cols] = values
    nz = NonZero(torch.from_numpy(out_rows), torch.from_numpy(cols), torch.from_numpy(values),
                 len(rows), int(matrix.shape[1]))
    return torch.from_numpy(dense), nz
