"""What every named model shares: the :class:`Objective` interface and reconstruction helpers.

An objective is a small ``nn.Module`` owned by :class:`~omnivae.module.MultimodalVAE`
(``vae.objective``). It holds only what its model adds (extra encoders, auxiliary priors) and
reads everything shared (per-modality encoders, count decoders, the prior, fusion) from the
``vae`` it is given, so a model that differs only in its objective is one short file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from omnivae.module.fusion import FUSIONS, Mixture, fuse
from omnivae.module.likelihood_sums import summed_log_prob
from omnivae.module.records import BatchData, Gaussian, is_every_row

if TYPE_CHECKING:
    from omnivae.module.vae import ModuleConfig, MultimodalVAE


@dataclass(frozen=True)
class NoOptions:
    """Options of a model that has none."""


@dataclass(frozen=True)
class ObjectiveOutput:
    """One evaluation of a model's objective on a minibatch.

    Parameters
    ----------
    loss
        Scalar to minimise (mean over cells; for DReG a surrogate with the right gradient).
    reconstruction
        Per modality, mean negative log-likelihood over the cells that have it.
    kl
        Mean over cells of the objective's KL / latent-regularisation term.
    elbo
        Mean over cells of the negative objective at KL weight 1 (what validation monitors).
    embedding
        The cells' joint posterior; its mean is the joint embedding.
    joint
        One Gaussian per cell summarising the joint posterior (used by the pairwise-KL penalty).
    extra
        Any further scalars to log.
    """

    loss: Tensor
    reconstruction: dict[str, Tensor]
    kl: Tensor
    elbo: Tensor
    embedding: Mixture
    joint: Gaussian
    extra: dict[str, Tensor] = field(default_factory=dict)


def gaussian_kl(q: Gaussian, p: Gaussian) -> Tensor:
    """Closed-form KL(q || p) between diagonal Gaussians, summed over the last dimension.

    Examples
    --------
    >>> import torch
    >>> q = Gaussian(torch.ones(1, 2), torch.zeros(1, 2))
    >>> gaussian_kl(q, Gaussian(torch.zeros(1, 2), torch.zeros(1, 2))).tolist()
    [1.0]
    """
    ratio = torch.exp(q.logvar - p.logvar)
    return 0.5 * torch.sum(ratio + (q.loc - p.loc) ** 2 * torch.exp(-p.logvar) - 1.0
                           - (q.logvar - p.logvar), dim=-1)


def make_options(options_class: type, values: dict[str, Any], model: str) -> Any:
    """Build ``options_class(**values)`` or raise a ValueError naming the valid options.

    Examples
    --------
    >>> make_options(NoOptions, {}, "mopoe")
    NoOptions()
    """
    names = [f.name for f in dataclasses.fields(options_class)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(
            f"Unknown model_options {unknown} for model={model!r}; valid options: "
            f"{names or 'none'}."
        )
    return options_class(**values)


def observed_rows(mask: Tensor, m: int) -> Tensor:
    """Positions of the rows whose modality ``m`` is observed."""
    return mask[:, m].nonzero(as_tuple=True)[0]


def modality_nll(vae: MultimodalVAE, name: str, z: Tensor, cells: Tensor,
                 batch: BatchData, frozen: bool = False) -> Tensor:
    """``-log p(x_name | z)`` summed over features, for latent rows ``z`` ``(P, d')`` of the
    cells ``cells`` ``(P,)`` (all of which must have modality ``name``); shape ``(P,)``.
    ``frozen`` evaluates the decoder with its parameters detached (gradients reach ``z`` only).
    """
    decoder = vae.decoders[name]
    args = (z, batch.batch_index[cells], batch.library[name][cells])
    if frozen:
        detached = {k: v.detach() for k, v in decoder.named_parameters()}
        dist = torch.func.functional_call(decoder, detached, args)
    else:
        dist = decoder(*args)
    counts, nonzero = batch.counts[name], batch.nonzero_of(name)
    if is_every_row(cells, batch.n_cells):
        return -summed_log_prob(dist, counts, nonzero)
    # the decoded rows only; the dense rows are gathered only for likelihoods that need them
    return -summed_log_prob(dist, lambda: counts[cells], nonzero.select(cells))


def decode_nll(vae: MultimodalVAE, z: Tensor, cells: Tensor, batch: BatchData,
               reconstruct: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Negative log-likelihood of the modalities selected by ``reconstruct`` ``(P, M)`` at the
    latent rows ``z`` ``(P, d')`` of cells ``cells`` ``(P,)``.

    Returns the total per row ``(P,)`` and, per modality, its own ``(P,)`` (zero where the
    modality is not reconstructed). Decoders run only on the rows that need them.
    """
    total = z.new_zeros(z.shape[0])
    per_modality: dict[str, Tensor] = {}
    for m, name in enumerate(vae.config.names):
        rows = observed_rows(reconstruct, m)
        nll = z.new_zeros(z.shape[0])
        if rows.numel():
            nll = nll.index_put((rows,), modality_nll(vae, name, z[rows], cells[rows], batch))
        per_modality[name] = nll
        total = total + nll
    return total, per_modality


def mean_over_observed(per_modality: dict[str, Tensor], observed: Tensor,
                       weight: Tensor | None = None) -> dict[str, Tensor]:
    """Per modality, the (weighted) sum of its NLL rows divided by how many rows observe it."""
    out = {}
    for m, (name, nll) in enumerate(per_modality.items()):
        w = nll if weight is None else weight * nll
        out[name] = w.sum() / observed[:, m].sum().clamp(min=1)
    return out


def random_proper_subsets(mask: Tensor, rate: float) -> Tensor:
    """With probability ``rate``, replace a cell's modalities ``mask`` ``(n, M)`` by a random
    non-empty proper subset of them (cells with one modality keep it).

    Examples
    --------
    >>> import torch
    >>> mask = torch.ones(4, 3, dtype=torch.bool)
    >>> random_proper_subsets(mask, 1.0).sum(1).lt(3).all().item()
    True
    """
    if rate <= 0:
        return mask
    n_obs = mask.sum(dim=1, keepdim=True)
    drop = (torch.rand(n_obs.shape, device=mask.device) < rate) & (n_obs > 1)
    size = 1 + (torch.rand(n_obs.shape, device=mask.device) * (n_obs - 1)).floor()
    rank = torch.where(mask, torch.rand(mask.shape, device=mask.device), 2.0)
    order = rank.argsort(dim=1).argsort(dim=1)  # each modality's place in a random order
    return torch.where(drop, mask & (order < size), mask)


def single(q: Gaussian) -> Mixture:
    """A one-component mixture holding ``q`` ``(n, d)``."""
    return Mixture(Gaussian(q.loc.unsqueeze(0), q.logvar.unsqueeze(0)),
                   q.loc.new_ones((1, q.loc.shape[0])))


class Objective(nn.Module):
    """Interface of a named model's objective (subclasses set the class attributes).

    Attributes
    ----------
    name
        Registry name (``omnivae.Model(mdata, model=name)``).
    fusions
        The aggregations the model can use; the first is its own. Empty: the model fuses
        nothing (``fusion=`` must not be given).
    options_class
        Frozen dataclass of the model's options (``model_options=`` of :class:`omnivae.Model`).
    unimodal_encoders
        Whether the module builds the shared per-modality encoders.
    needs_complete_cells
        The objective cannot train on cells lacking a modality.
    samples_one_component
        The objective can estimate its sum over mixture components from one component per
        cell while training (``mixture_sampling="one"``, see :mod:`omnivae.module.models.elbo`).
    """

    name: ClassVar[str] = ""
    fusions: ClassVar[tuple[str, ...]] = FUSIONS
    options_class: ClassVar[type] = NoOptions
    unimodal_encoders: ClassVar[bool] = True
    needs_complete_cells: ClassVar[bool] = False
    samples_one_component: ClassVar[bool] = False

    def __init__(self, config: ModuleConfig) -> None:
        super().__init__()
        self.config = config
        self.options = make_options(self.options_class, dict(config.model_options), self.name)

    @classmethod
    def decoder_latent_dim(cls, config: ModuleConfig) -> int:
        """Input size of the count decoders (the shared latent, plus any private latent)."""
        return config.n_latent

    @property
    def fusion(self) -> str:
        """The aggregation this objective uses."""
        return self.config.fusion

    def noise(self, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """Standard normal noise of the reparameterisation (tests replace it by fixed noise)."""
        return torch.randn(shape, dtype=like.dtype, device=like.device)

    def rsample(self, q: Gaussian, n_samples: int | None = None) -> Tensor:
        """``loc + scale * eps``: shape of ``q.loc``, with a leading ``n_samples`` if given."""
        shape = tuple(q.loc.shape) if n_samples is None else (n_samples, *q.loc.shape)
        return q.loc + q.scale * self.noise(shape, q.loc)

    def loss(self, vae: MultimodalVAE, batch: BatchData, kl_weight: float) -> ObjectiveOutput:
        """Evaluate the objective; ``kl_weight`` scales its KL terms (warm-up)."""
        raise NotImplementedError

    def posterior(self, vae: MultimodalVAE, batch: BatchData) -> Mixture:
        """Joint posterior of the shared latent given the cells' observed modalities
        (default: the model's fusion of the unimodal experts)."""
        loc, logvar = vae.experts(batch)
        return fuse(loc, logvar, batch.mask, self.fusion)

    def decoder_input(self, vae: MultimodalVAE, batch: BatchData, z: Tensor, target: str,
                      sample: bool, generator: torch.Generator | None = None) -> Tensor:
        """What the decoder of ``target`` takes for shared latents ``z`` of the cells in
        ``batch`` (encoded from its observed modalities; ``sample``: ``z`` is a posterior
        draw, so draw any other latent too). Default: ``z`` itself."""
        return z

    def check_training_mask(self, mask: Tensor) -> None:
        """Raise a clear ValueError when the objective cannot train on cells ``mask``."""
        if self.needs_complete_cells and not bool(mask.all()):
            lacking = int((~mask.all(dim=1)).sum())
            raise ValueError(
                f"model={self.name!r} needs every modality of every training cell (its joint "
                f"encoder reads them all), but {lacking} of {mask.shape[0]} cells lack one. "
                "Train on the complete cells (it still embeds and predicts incomplete ones) or "
                "pick a model that handles missing modalities (for example mopoe, mvae, mmvae+, "
                "telbo or early)."
            )
