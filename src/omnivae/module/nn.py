"""Neural building blocks: MLPs, per-modality encoders and count decoders (pure torch).

Shapes in comments: ``n`` cells, ``g`` features of a modality, ``d`` latent size,
``h`` hidden size, ``b`` number of batches.
"""

from __future__ import annotations

import math
from itertools import pairwise
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omnivae.module import likelihoods as lk
from omnivae.module.likelihoods import CountDistribution


def take(values: Tensor, index: Tensor, dim: int = 0) -> Tensor:
    """``values`` at the 1-D positions ``index`` (repeats allowed) along ``dim``: the same
    values as ``values[index]`` (``dim=0``), with a backward that is the same on every call.

    Autograd's backward of ``values[index]`` accumulates the gradient with parallel atomic
    adds on a CPU running more than one thread once the result has 32,768 elements or more,
    so the gradients of repeated positions are summed in a varying order and two identical
    runs drift apart in the last bits. The backward of
    :func:`torch.nn.functional.embedding`, used here, adds each row's gradients in index order
    on the CPU (and is not among PyTorch's nondeterministic CUDA operations, unlike
    ``index_select``'s). The forward values are those of ``values[index]``, bit for bit.

    Examples
    --------
    >>> import torch
    >>> x = torch.arange(6.0).reshape(2, 3)
    >>> take(x, torch.tensor([1, 1, 0])).tolist()
    [[3.0, 4.0, 5.0], [3.0, 4.0, 5.0], [0.0, 1.0, 2.0]]
    >>> take(x, torch.tensor([2, 0]), dim=1).tolist()
    [[2.0, 0.0], [5.0, 3.0]]
    """
    moved = values.movedim(dim, 0)
    rows = F.embedding(index, moved.reshape(moved.shape[0], math.prod(moved.shape[1:])))
    return rows.reshape(index.shape[0], *moved.shape[1:]).movedim(0, dim)


class MLP(nn.Module):
    """Fully connected layers (Linear -> LayerNorm -> ReLU -> Dropout) with covariates
    one-hot injected into every layer.

    Parameters
    ----------
    n_in, n_hidden, n_layers
        Input size, width and depth.
    n_covariates
        Size of the one-hot covariate vector concatenated to every layer's input (0: none).
    dropout
        Dropout rate after each layer.

    Examples
    --------
    >>> import torch
    >>> mlp = MLP(5, 8, 2, n_covariates=3)
    >>> mlp(torch.randn(4, 5), torch.eye(3)[[0, 1, 2, 0]]).shape
    torch.Size([4, 8])
    """

    def __init__(
        self, n_in: int, n_hidden: int, n_layers: int, *, n_covariates: int = 0, dropout: float = 0.1
    ) -> None:
        super().__init__()
        sizes = [n_in] + [n_hidden] * n_layers
        self.layers = nn.ModuleList(
            nn.Linear(a + n_covariates, b) for a, b in pairwise(sizes)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(b) for b in sizes[1:])
        self.dropout = nn.Dropout(dropout)
        self.n_covariates = n_covariates

    def forward(self, x: Tensor, covariates: Tensor | None = None) -> Tensor:
        for layer, norm in zip(self.layers, self.norms, strict=True):
            if self.n_covariates:
                x = torch.cat([x, covariates], dim=-1)  # type: ignore[list-item]
            x = self.dropout(F.relu(norm(layer(x))))
        return x


class Encoder(nn.Module):
    """Maps one modality's counts to a Gaussian likelihood expert over z.

    Input transform: ``log1p(scale * x / library)``, where ``scale`` is the modality's median
    library size, so cells of different depth look alike.

    After :meth:`enable_batch_shift` (reference mapping, :mod:`omnivae.model.mapping.query`), a learned
    per-batch, per-feature offset is added to that transformed input: zero for the batches
    the encoder was trained on, fitted for new query batches.
    """

    library_scale: Tensor
    batch_shift: nn.Parameter | None

    def __init__(
        self, n_features: int, n_latent: int, n_hidden: int, n_layers: int, dropout: float,
        library_scale: float,
    ) -> None:
        super().__init__()
        self.body = MLP(n_features, n_hidden, n_layers, dropout=dropout)
        self.loc = nn.Linear(n_hidden, n_latent)
        self.logvar = nn.Linear(n_hidden, n_latent)
        self.register_buffer("library_scale", torch.tensor(float(library_scale)))
        self.batch_shift = None

    def enable_batch_shift(self, n_batches: int) -> None:
        """Add a zero-initialised ``(n_batches, g)`` input offset per batch."""
        n_features = cast(nn.Linear, self.body.layers[0]).in_features
        self.batch_shift = nn.Parameter(torch.zeros(n_batches, n_features))

    def forward(
        self, counts: Tensor, library: Tensor, batch_index: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        x = torch.log1p(counts * (self.library_scale / library.clamp(min=1.0)))  # (n, g)
        if self.batch_shift is not None and batch_index is not None:
            x = x + take(self.batch_shift, batch_index)
        hidden = self.body(x)  # (n, h)
        logvar = self.logvar(hidden).clamp(-12.0, 8.0)
        return self.loc(hidden), logvar  # (n, d) each


class CountDecoder(nn.Module):
    """Decodes z (and the batch) into a count distribution for one modality.

    The likelihood decides the head:

    * ``nb``/``zinb``/``poisson``: mean ``library * softmax(W h)``; NB dispersion per feature;
      ZINB adds per-cell-and-feature dropout logits.
    * ``bernoulli``: P(x > 0) = 1 - exp(-library * softmax(W h)): a binarized Poisson, so the
      cell's depth (number of accessible peaks) is handled like in the count models.
    * ``nb_mixture`` (protein, after totalVI): a background and a foreground NB per cell and
      protein. The background profile is learned per batch (``softmax(beta[batch])``,
      initialised from a low quantile of each protein's counts), the foreground profile comes
      from z (``softmax(W h)``); both are scaled by the cell's library, and
      ``sigmoid(pi(h))`` is the background probability. Unlike totalVI the foreground is not
      forced above the background: the compositional form predicts withheld proteins better
      (measured in ``docs/design_evidence.md#protein-background-mixture``).

      Not the default for proteins (plain ``nb`` is), because of a known failure: the
      background profile is a share of the cell's library, constant within a batch, so a
      protein that is a large and cell-type-dependent share of the counts can be absorbed into
      it, and the renormalised predictions of every other protein are then off in the cell
      types where it is abundant. Plain ``nb`` has no such component (measured in
      benchmarks/results/mosaic_gap.md; summary in
      ``docs/design_evidence.md#protein-background-mixture``).
    """

    library_scale: Tensor

    def __init__(
        self, n_features: int, n_latent: int, n_hidden: int, n_layers: int, dropout: float,
        n_batches: int, likelihood: str, library_scale: float,
        background_init: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.likelihood = lk.check_likelihood_name(likelihood)
        self.n_batches = n_batches
        self.body = MLP(n_latent, n_hidden, n_layers, n_covariates=n_batches, dropout=dropout)
        self.head = nn.Linear(n_hidden + n_batches, n_features)
        self.register_buffer("library_scale", torch.tensor(float(library_scale)))
        if self.likelihood in ("nb", "zinb", "nb_mixture"):
            self.log_theta = nn.Parameter(torch.full((n_features,), math.log(2.0)))
        if self.likelihood == "zinb":
            self.dropout_head = nn.Linear(n_hidden + n_batches, n_features)
        if self.likelihood == "nb_mixture":
            init = background_init if background_init is not None else torch.zeros(n_features)
            self.log_background = nn.Parameter(init.expand(n_batches, n_features).clone())
            self.mixture_head = nn.Linear(n_hidden + n_batches, n_features)
            nn.init.constant_(self.mixture_head.bias, -2.0)  # start mostly foreground

    def _hidden(self, z: Tensor, batch_index: Tensor) -> Tensor:
        onehot = F.one_hot(batch_index, self.n_batches).to(z.dtype)  # (n, b)
        return torch.cat([self.body(z, onehot), onehot], dim=-1)  # (n, h + b)

    def forward(self, z: Tensor, batch_index: Tensor, library: Tensor) -> CountDistribution:
        """The count distribution of ``(n, g)`` counts at observed ``library`` ``(n, 1)``."""
        hidden = self._hidden(z, batch_index)
        if self.likelihood == "nb_mixture":
            background = library * torch.softmax(take(self.log_background, batch_index), dim=-1)
            foreground = library * torch.softmax(self.head(hidden), dim=-1)
            return lk.NegativeBinomialMixture(
                background, foreground, torch.exp(self.log_theta), self.mixture_head(hidden)
            )
        if self.likelihood == "bernoulli":  # P(x > 0) = 1 - exp(-rate), rate implicit
            return lk.Bernoulli.binarized_poisson(self.head(hidden), library)
        rate = library * torch.softmax(self.head(hidden), dim=-1)  # (n, g)
        if self.likelihood == "nb":
            return lk.NegativeBinomial(rate, torch.exp(self.log_theta))
        if self.likelihood == "zinb":
            return lk.ZeroInflatedNegativeBinomial(
                rate, torch.exp(self.log_theta), self.dropout_head(hidden)
            )
        return lk.Poisson(rate)

    def normalized(self, z: Tensor, batch_index: Tensor) -> Tensor:
        """Expected expression as proportions summing to one per cell, ``(n, g)``.

        For the count models this is the decoder's frequency vector; for the protein mixture it
        is the mixture mean at the median depth, renormalised. It needs no observed library, so
        it predicts modalities a cell does not have.
        """
        if self.likelihood == "nb_mixture":
            library = self.library_scale.expand(z.shape[0], 1)
            mean = self.forward(z, batch_index, library).mean
            return mean / mean.sum(dim=-1, keepdim=True)
        hidden = self._hidden(z, batch_index)
        freq = torch.softmax(self.head(hidden), dim=-1)
        if self.likelihood == "zinb":
            freq = freq * torch.sigmoid(-self.dropout_head(hidden))
            freq = freq / freq.sum(dim=-1, keepdim=True)
        return freq
