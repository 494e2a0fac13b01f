"""An encoder of all modalities at once (early integration's and JMVAE's joint encoder)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omnivae.module.nn import MLP
from omnivae.module.records import BatchData, Gaussian

if TYPE_CHECKING:
    from omnivae.module.vae import ModuleConfig


class ConcatEncoder(nn.Module):
    """Gaussian ``q(z | x_1, ..., x_M)`` from the concatenated, normalised modalities.

    The first layer is a linear map of ``[t(x_1), ..., t(x_M), 1 - mask]`` with
    ``t(x) = log1p(scale * x / library)`` (as :class:`omnivae.module.nn.Encoder`), written as a sum of
    per-modality blocks: a cell lacking modality ``m`` gets zeros for its block (which therefore
    receives exactly zero gradient from that cell) and a "missing" indicator instead.

    Examples
    --------
    >>> import torch
    >>> from omnivae.module.records import BatchData
    >>> enc = ConcatEncoder({"a": (3, 1.0), "b": (2, 1.0)}, n_latent=2, n_hidden=4)
    >>> x = {"a": torch.ones(2, 3), "b": torch.ones(2, 2)}
    >>> mask = torch.tensor([[True, True], [True, False]])
    >>> enc(BatchData(x, mask, torch.zeros(2, dtype=torch.long), {"a": x["a"].sum(1, True),
    ...     "b": x["b"].sum(1, True)})).loc.shape
    torch.Size([2, 2])
    """

    library_scale: Tensor

    def __init__(self, modalities: dict[str, tuple[int, float]], n_latent: int, n_hidden: int,
                 n_layers: int = 1, dropout: float = 0.1) -> None:
        super().__init__()
        self.names = tuple(modalities)
        self.blocks = nn.ModuleDict(
            {name: nn.Linear(n_in, n_hidden, bias=False) for name, (n_in, _) in modalities.items()}
        )
        self.register_buffer(
            "library_scale", torch.tensor([float(s) for _, s in modalities.values()])
        )
        self.missing = nn.Linear(len(modalities), n_hidden)  # indicator weights + the bias
        self.norm = nn.LayerNorm(n_hidden)
        self.dropout = nn.Dropout(dropout)
        self.body = MLP(n_hidden, n_hidden, n_layers - 1, dropout=dropout)
        self.loc = nn.Linear(n_hidden, n_latent)
        self.logvar = nn.Linear(n_hidden, n_latent)

    def forward(self, batch: BatchData) -> Gaussian:
        hidden = self.missing((~batch.mask).to(self.loc.weight.dtype))  # (n, h)
        for m, name in enumerate(self.names):
            rows = batch.mask[:, m].nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                continue
            scale = self.library_scale[m] / batch.library[name][rows].clamp(min=1.0)
            x = torch.log1p(batch.counts[name][rows] * scale)  # (n_m, g)
            block: nn.Module = self.blocks[name]
            hidden = hidden.index_add(0, rows, block(x))
        hidden = self.body(self.dropout(F.relu(self.norm(hidden))))
        return Gaussian(self.loc(hidden), self.logvar(hidden).clamp(-12.0, 8.0))


def concat_encoder(config: ModuleConfig) -> ConcatEncoder:
    """The :class:`ConcatEncoder` of a :class:`~omnivae.module.ModuleConfig`'s modalities."""
    return ConcatEncoder(
        {s.name: (s.n_features, s.library_scale) for s in config.modalities},
        config.n_latent, config.n_hidden, config.n_layers, config.dropout,
    )
