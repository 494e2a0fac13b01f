"""The multimodal VAE as a pure torch module: inference -> generative -> loss.

Modalities are data, keyed by name: the module is built from a :class:`ModuleConfig` listing
them; nothing here knows which biology a modality holds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, cast

import torch
from torch import Tensor, nn

from omnivae._types import BatchData, Gaussian, LossRecord
from omnivae.fusion import Mixture, check_fusion_name, fuse, product_of_experts
from omnivae.likelihoods import check_likelihood_name
from omnivae.nn import CountDecoder, Encoder
from omnivae.penalties import BatchClassifier, check_penalty_name, combined_penalty
from omnivae.priors import check_prior_name, make_prior


@dataclass(frozen=True)
class ModalitySpec:
    """One modality as the module sees it.

    Parameters
    ----------
    name
        The modality's key (as in ``mdata.mod``).
    n_features
        Number of features.
    likelihood
        One of ``nb``, ``zinb``, ``poisson``, ``bernoulli``, ``nb_mixture``.
    library_scale
        Median library size of the cells that have the modality (input normalisation).
    """

    name: str
    n_features: int
    likelihood: str
    library_scale: float = 1.0


@dataclass(frozen=True)
class ModuleConfig:
    """Flat configuration of :class:`MultimodalVAE` (JSON-serialisable via :meth:`to_dict`).

    Examples
    --------
    >>> cfg = ModuleConfig(modalities=(ModalitySpec("rna", 50, "nb"),), n_latent=4)
    >>> ModuleConfig.from_dict(cfg.to_dict()) == cfg
    True
    """

    modalities: tuple[ModalitySpec, ...]
    n_batches: int = 1
    n_latent: int = 20
    n_hidden: int = 128
    n_layers: int = 1
    dropout: float = 0.1
    fusion: str = "poe"
    prior: str = "normal"
    extra: dict[str, Any] = field(default_factory=dict)
    batch_penalty: str | None = None
    penalty_weight: float = 0.0
    penalty_n_batches: tuple[int, ...] = ()
    penalty_n_labels: int = 0

    def __post_init__(self) -> None:
        check_fusion_name(self.fusion)
        check_prior_name(self.prior)
        if self.batch_penalty is not None:
            check_penalty_name(self.batch_penalty)
            if not self.penalty_n_batches:
                raise ValueError("batch_penalty needs at least one batch column to penalise.")
        for spec in self.modalities:
            check_likelihood_name(spec.likelihood)
        if not self.modalities:
            raise ValueError("A model needs at least one modality.")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.modalities)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModuleConfig:
        data = dict(data)
        data["modalities"] = tuple(ModalitySpec(**spec) for spec in data["modalities"])
        data["penalty_n_batches"] = tuple(data.get("penalty_n_batches", ()))
        return cls(**data)


class MultimodalVAE(nn.Module):
    """Per-modality encoders, a fusion of their experts, batch-conditioned count decoders.

    The loss is the negative ELBO averaged over the fusion's mixture components
    (stratified: every component a cell has is sampled once)::

        L(x) = Σ_k w_k [ Σ_{m observed} -log p(x_m | z_k, batch)  +  β · KL(q_k || p) ],
        z_k ~ q_k

    For one component (``poe``) this is the usual ELBO; for mixtures it is the bound of
    MMVAE/MoPoE in which the mixture's KL is replaced by the mean of its components' KLs
    (Jensen), still a lower bound of log p(x).

    Examples
    --------
    >>> import torch
    >>> from omnivae._types import BatchData
    >>> cfg = ModuleConfig((ModalitySpec("a", 6, "nb"), ModalitySpec("b", 4, "poisson")), n_latent=2)
    >>> vae = MultimodalVAE(cfg)
    >>> x = {"a": torch.poisson(torch.ones(3, 6) * 3), "b": torch.poisson(torch.ones(3, 4))}
    >>> lib = {k: v.sum(1, keepdim=True).clamp(min=1) for k, v in x.items()}
    >>> mask = torch.tensor([[True, True], [True, False], [False, True]])
    >>> rec = vae.loss(BatchData(x, mask, torch.zeros(3, dtype=torch.long), lib))
    >>> bool(torch.isfinite(rec.loss))
    True
    """

    def __init__(
        self, config: ModuleConfig, background_init: dict[str, Tensor] | None = None
    ) -> None:
        super().__init__()
        self.config = config
        background_init = background_init or {}
        c = config
        self.encoders = nn.ModuleDict(
            {
                s.name: Encoder(s.n_features, c.n_latent, c.n_hidden, c.n_layers, c.dropout,
                                s.library_scale)
                for s in c.modalities
            }
        )
        self.decoders = nn.ModuleDict(
            {
                s.name: CountDecoder(s.n_features, c.n_latent, c.n_hidden, c.n_layers, c.dropout,
                                     c.n_batches, s.likelihood, s.library_scale,
                                     background_init.get(s.name))
                for s in c.modalities
            }
        )
        self.prior = make_prior(c.prior, c.n_latent)
        # one batch classifier per penalised column when the penalty is adversarial
        self.batch_classifiers = nn.ModuleList(
            BatchClassifier(c.n_latent, n, n_labels=c.penalty_n_labels)
            for n in (c.penalty_n_batches if c.batch_penalty == "adversarial" else ())
        )

    def decoder(self, name: str) -> CountDecoder:
        """The decoder of modality ``name``."""
        return cast(CountDecoder, self.decoders[name])

    # inference ---------------------------------------------------------------------------
    def experts(self, batch: BatchData) -> tuple[Tensor, Tensor]:
        """Expert parameters ``(M, n, d)``; each encoder runs only on cells that have its
        modality, so a missing modality's encoder receives exactly zero gradient."""
        n, d = batch.n_cells, self.config.n_latent
        locs, logvars = [], []
        for m, name in enumerate(self.config.names):
            rows = batch.mask[:, m].nonzero(as_tuple=True)[0]
            counts = batch.counts[name]
            loc = counts.new_zeros((n, d))
            logvar = torch.zeros_like(loc)
            if rows.numel():
                sub_loc, sub_logvar = self.encoders[name](counts[rows], batch.library[name][rows])
                loc = loc.to(sub_loc.dtype).index_put((rows,), sub_loc)
                logvar = logvar.to(sub_logvar.dtype).index_put((rows,), sub_logvar)
            locs.append(loc)
            logvars.append(logvar)
        return torch.stack(locs), torch.stack(logvars)

    def posterior(self, batch: BatchData, fusion: str | None = None) -> Mixture:
        """The fused posterior q(z | observed modalities) of every cell in ``batch``."""
        loc, logvar = self.experts(batch)
        return fuse(loc, logvar, batch.mask, fusion or self.config.fusion)

    # loss --------------------------------------------------------------------------------
    def loss(
        self, batch: BatchData, kl_weight: float = 1.0, penalty_weight: float = 1.0
    ) -> LossRecord:
        """Negative ELBO of a minibatch (see the class docstring), plus
        ``penalty_weight`` times the batch mutual-information penalty when one is configured
        (and, for the adversarial penalty, the batch classifiers' own loss)."""
        loc, logvar = self.experts(batch)
        mixture = fuse(loc, logvar, batch.mask, self.config.fusion)
        comp, cell = (mixture.weights > 0).nonzero(as_tuple=True)  # (P,) component/cell pairs
        weight = mixture.weights[comp, cell]
        q = Gaussian(mixture.components.loc[comp, cell], mixture.components.logvar[comp, cell])
        z = q.rsample()  # (P, d)
        kl = self.prior.kl(q, z)  # (P,)
        nll_total = torch.zeros_like(kl)
        reconstruction: dict[str, Tensor] = {}
        for m, name in enumerate(self.config.names):
            has = batch.mask[cell, m]
            rows = has.nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                reconstruction[name] = kl.new_zeros(())
                continue
            cells = cell[rows]
            dist = self.decoders[name](z[rows], batch.batch_index[cells], batch.library[name][cells])
            nll = -dist.log_prob(batch.counts[name][cells]).sum(dim=-1)  # (P_m,)
            nll_total = nll_total.index_add(0, rows, nll)
            reconstruction[name] = (weight[rows] * nll).sum() / batch.mask[:, m].sum()
        n = batch.n_cells
        kl_mean = (weight * kl).sum() / n
        nll_mean = (weight * nll_total).sum() / n
        loss = nll_mean + kl_weight * kl_mean
        extra: dict[str, Tensor] = {}
        if self.config.batch_penalty is not None and batch.penalty_codes is not None:
            penalty, classifier_loss = self.batch_penalty(batch, mixture, loc, logvar)
            loss = loss + penalty_weight * penalty + classifier_loss
            extra = {"batch_penalty": penalty.detach(), "classifier_loss": classifier_loss.detach()}
        return LossRecord(loss=loss, reconstruction=reconstruction, kl=kl_mean,
                          elbo=nll_mean + kl_mean, extra=extra)

    def batch_penalty(
        self, batch: BatchData, mixture: Mixture, loc: Tensor, logvar: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The configured estimator of I(z; batch columns) on the cells' joint embedding
        (the mixture mean; the joint product of experts for ``pairwise_kl``), summed over the
        penalised columns, and the batch classifiers' loss (0 unless adversarial)."""
        assert batch.penalty_codes is not None and self.config.batch_penalty is not None
        columns = list(batch.penalty_codes.unbind(dim=1))
        z, z_logvar, options = mixture.mean, None, dict[str, Any]()
        if self.config.batch_penalty == "pairwise_kl":  # pairs of cells from different batches
            joint = product_of_experts(loc, logvar, batch.mask)
            z, z_logvar, options = joint.loc, joint.logvar, {"pairs": "across_batches"}
        return combined_penalty(
            self.config.batch_penalty, z, columns, self.config.penalty_n_batches,
            labels=batch.labels, logvar=z_logvar,
            classifiers=list(self.batch_classifiers) or None, **options,
        )

    # generative --------------------------------------------------------------------------
    @torch.no_grad()
    def predict_normalized(
        self, batch: BatchData, target: str, n_samples: int = 0,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Normalised expression of ``target`` from the cells' observed modalities.

        With ``n_samples == 0`` decodes the posterior mean; otherwise returns the mean and the
        standard deviation over ``n_samples`` posterior draws (the model's uncertainty).
        A cell that has ``target`` is predicted from its *other* modalities when it has any,
        so the prediction is a genuine cross-modal one.
        """
        t = self.config.names.index(target)
        others = batch.mask.clone()
        others[:, t] = False
        has_other = others.any(dim=1, keepdim=True)
        mask = torch.where(has_other, others, batch.mask)
        fused = self.posterior(BatchData(batch.counts, mask, batch.batch_index, batch.library))
        decoder = self.decoder(target)
        if n_samples <= 0:
            return decoder.normalized(fused.mean, batch.batch_index), None
        draws = torch.stack(
            [decoder.normalized(fused.sample(generator), batch.batch_index)
             for _ in range(n_samples)]
        )
        return draws.mean(dim=0), draws.std(dim=0)
