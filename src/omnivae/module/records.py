"""Typed records passed between omnivae's layers.

Pure Python + torch: the module layer returns these, the training layer logs them and the
model layer reads them. Nothing here knows about AnnData or Lightning.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


def check_choice(name: str, choices: tuple[str, ...], what: str) -> str:
    """Return ``name`` if it is in ``choices``, else raise a ValueError listing them.

    Examples
    --------
    >>> check_choice("poe", ("poe", "moe"), "fusion")
    'poe'
    """
    if name not in choices:
        raise ValueError(f"Unknown {what} {name!r}. Choose one of: {', '.join(choices)}.")
    return name


@dataclass(frozen=True)
class Gaussian:
    """A diagonal Gaussian over the latent space.

    Parameters
    ----------
    loc
        Means, shape ``(..., n_latent)``.
    logvar
        Log-variances, same shape as ``loc``.

    Examples
    --------
    >>> import torch
    >>> g = Gaussian(torch.zeros(2, 3), torch.zeros(2, 3))
    >>> g.rsample().shape
    torch.Size([2, 3])
    """

    loc: Tensor
    logvar: Tensor

    @property
    def scale(self) -> Tensor:
        """Standard deviations."""
        return torch.exp(0.5 * self.logvar)

    def rsample(self, generator: torch.Generator | None = None) -> Tensor:
        """Reparameterised sample with the same shape as ``loc``."""
        if generator is None:  # the global generator (torch.compile traces this form)
            noise = torch.randn_like(self.loc)
        else:
            noise = torch.randn(self.loc.shape, device=self.loc.device, dtype=self.loc.dtype,
                                generator=generator)
        return self.loc + self.scale * noise

    def kl_to_standard_normal(self) -> Tensor:
        """KL(q || N(0, I)) summed over the latent dimension, shape ``(...)``."""
        return 0.5 * torch.sum(self.loc**2 + torch.exp(self.logvar) - 1.0 - self.logvar, dim=-1)


def is_every_row(cells: Tensor, n_rows: int) -> bool:
    """Whether ``cells`` is ``0, 1, ..., n_rows - 1`` (selecting it changes nothing).

    Examples
    --------
    >>> import torch
    >>> is_every_row(torch.arange(3), 3), is_every_row(torch.tensor([0, 2]), 3)
    (True, False)
    """
    return int(cells.numel()) == n_rows and bool(
        torch.equal(cells, torch.arange(n_rows, device=cells.device)))


@dataclass(frozen=True)
class NonZero:
    """The non-zero entries of one modality's ``(n, g)`` counts, in row-major order.

    Lets the likelihoods evaluate their count-dependent terms (``lgamma`` of the counts,
    ``x log mu``) on the non-zeros only: for sparse single-cell counts that is a few percent of
    the dense matrix.

    Parameters
    ----------
    rows, cols
        ``(nnz,)`` int64 row and column of each non-zero, rows ascending.
    values
        ``(nnz,)`` the counts there.
    n_rows, n_cols
        Shape of the dense matrix.
    log_factorial
        ``(n_rows,)`` per row ``sum lgamma(x + 1)`` of its counts (a constant of the data,
        precomputed once per cell), or ``None``: computed from ``values`` when needed.

    Examples
    --------
    >>> import torch
    >>> nz = NonZero.from_dense(torch.tensor([[0.0, 2.0], [3.0, 0.0]]))
    >>> nz.rows.tolist(), nz.cols.tolist(), nz.values.tolist()
    ([0, 1], [1, 0], [2.0, 3.0])
    >>> sub = nz.select(torch.tensor([1, 1]))  # rows of cells 1 and 1 again
    >>> sub.rows.tolist(), sub.cols.tolist(), sub.shape
    ([0, 1], [0, 0], torch.Size([2, 2]))
    """

    rows: Tensor
    cols: Tensor
    values: Tensor
    n_rows: int
    n_cols: int
    log_factorial: Tensor | None = None

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.n_rows, self.n_cols))

    @classmethod
    def from_dense(cls, x: Tensor) -> NonZero:
        """The non-zeros of a dense ``(n, g)`` tensor (one full pass over it)."""
        rows, cols = x.nonzero(as_tuple=True)
        return cls(rows, cols, x[rows, cols], int(x.shape[0]), int(x.shape[1]))

    def to(self, device: torch.device | str) -> NonZero:
        return NonZero(self.rows.to(device, non_blocking=True),
                       self.cols.to(device, non_blocking=True),
                       self.values.to(device, non_blocking=True), self.n_rows, self.n_cols,
                       None if self.log_factorial is None
                       else self.log_factorial.to(device, non_blocking=True))

    def select(self, cells: Tensor) -> NonZero:
        """The non-zeros of the rows ``cells`` (positions, repeats allowed), renumbered
        ``0..len(cells)-1`` in that order: what ``dense[cells]`` holds."""
        n = int(cells.numel())
        if is_every_row(cells, self.n_rows):
            return self
        counts = torch.bincount(self.rows, minlength=self.n_rows)  # (n_rows,)
        starts = torch.cumsum(counts, 0) - counts
        lengths = counts[cells]  # (P,)
        new_rows = torch.repeat_interleave(torch.arange(n, device=cells.device), lengths)
        first = torch.cumsum(lengths, 0) - lengths  # position of each row's first entry
        index = starts[cells][new_rows] + torch.arange(new_rows.numel(), device=cells.device) \
            - first[new_rows]
        return NonZero(new_rows, self.cols[index], self.values[index], n, self.n_cols,
                       None if self.log_factorial is None else self.log_factorial[cells])


@dataclass(frozen=True)
class BatchData:
    """One minibatch as the module sees it.

    Parameters
    ----------
    counts
        Dense counts per modality name, each ``(n, n_features_m)``; rows of cells that lack the
        modality are zeros and are ignored because of ``mask``.
    mask
        ``(n, n_modalities)`` boolean, True where the cell has the modality, columns ordered as
        the module's modality names.
    batch_index
        ``(n,)`` integer batch codes (one code for every cell when there is no batch column).
    library
        Per modality ``(n, 1)`` observed library sizes (total counts); 1 where absent.
    penalty_codes
        ``(n, K)`` integer codes of the K batch columns whose mutual information with the
        latent is penalised (``None`` when no penalty is configured).
    labels
        ``(n,)`` integer label codes when the penalty is conditioned on a label column.
    nonzero
        Per modality, the non-zero entries of ``counts`` (gathered from the sparse data, so
        the likelihoods need not scan the dense matrix); ``None`` or a missing modality: found
        from the dense counts when needed.
    """

    counts: dict[str, Tensor]
    mask: Tensor
    batch_index: Tensor
    library: dict[str, Tensor]
    penalty_codes: Tensor | None = None
    labels: Tensor | None = None
    nonzero: dict[str, NonZero] | None = None

    def nonzero_of(self, name: str) -> NonZero:
        """The non-zeros of modality ``name``'s counts."""
        if self.nonzero is not None and name in self.nonzero:
            return self.nonzero[name]
        return NonZero.from_dense(self.counts[name])

    @property
    def n_cells(self) -> int:
        return int(self.mask.shape[0])

    def to(self, device: torch.device | str) -> BatchData:
        """Copy to ``device`` (no-op when already there)."""
        return BatchData(
            counts={k: v.to(device, non_blocking=True) for k, v in self.counts.items()},
            mask=self.mask.to(device, non_blocking=True),
            batch_index=self.batch_index.to(device, non_blocking=True),
            library={k: v.to(device, non_blocking=True) for k, v in self.library.items()},
            penalty_codes=None if self.penalty_codes is None
            else self.penalty_codes.to(device, non_blocking=True),
            labels=None if self.labels is None else self.labels.to(device, non_blocking=True),
            nonzero=None if self.nonzero is None
            else {k: v.to(device) for k, v in self.nonzero.items()},
        )


@dataclass(frozen=True)
class LossRecord:
    """What one forward pass of the multimodal VAE reports.

    Parameters
    ----------
    loss
        Scalar to minimise: mean over cells of ``reconstruction + kl_weight * kl``.
    reconstruction
        Per modality, the mean over cells of the negative log-likelihood of the cells that have
        the modality (summed over features, averaged over the fusion's mixture components).
    kl
        Mean over cells of the KL term of the ELBO (before weighting).
    elbo
        Mean over cells of the negative ELBO at KL weight 1 (the quantity to monitor).
    extra
        Any additional scalars a model wants logged.
    """

    loss: Tensor
    reconstruction: dict[str, Tensor]
    kl: Tensor
    elbo: Tensor
    extra: dict[str, Tensor] = field(default_factory=dict)

    def terms(self) -> dict[str, Tensor]:
        """Every term keyed by a flat name (``loss``, ``elbo``, ``kl``, ``nll_<modality>``,
        extras), detached: what the training layer logs."""
        out = {"loss": self.loss, "elbo": self.elbo, "kl": self.kl, **self.extra}
        out.update({f"nll_{k}": v for k, v in self.reconstruction.items()})
        return {k: v.detach() for k, v in out.items()}
