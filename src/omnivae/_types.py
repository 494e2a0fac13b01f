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
        noise = torch.randn(
            self.loc.shape, device=self.loc.device, dtype=self.loc.dtype, generator=generator
        )
        return self.loc + self.scale * noise

    def kl_to_standard_normal(self) -> Tensor:
        """KL(q || N(0, I)) summed over the latent dimension, shape ``(...)``."""
        return 0.5 * torch.sum(self.loc**2 + torch.exp(self.logvar) - 1.0 - self.logvar, dim=-1)


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
        ``(n,)`` integer batch codes (zeros when there is no batch column).
    library
        Per modality ``(n, 1)`` observed library sizes (total counts); 1 where absent.
    penalty_codes
        ``(n, K)`` integer codes of the K batch columns whose mutual information with the
        latent is penalised (``None`` when no penalty is configured).
    labels
        ``(n,)`` integer label codes when the penalty is conditioned on a label column.
    """

    counts: dict[str, Tensor]
    mask: Tensor
    batch_index: Tensor
    library: dict[str, Tensor]
    penalty_codes: Tensor | None = None
    labels: Tensor | None = None

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
