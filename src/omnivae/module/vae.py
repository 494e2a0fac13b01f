"""The multimodal VAE as a pure torch module: inference -> generative -> loss.

Modalities are data, keyed by name: the module is built from a :class:`ModuleConfig` listing
them; nothing here knows which biology a modality holds. The objective is pluggable: the
config names a model of :mod:`omnivae.module.models` (MVAE, MMVAE, MoPoE, ...), whose objective the
module evaluates; encoders, decoders, prior, fusion and batch penalties are shared by all.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, cast

import torch
from torch import Tensor, nn

from omnivae.module.arguments import check_int, check_number
from omnivae.module.collapse import collapse_terms
from omnivae.module.confidence import evidence_penalty
from omnivae.module.fusion import Mixture, check_fusion_name
from omnivae.module.likelihoods import check_likelihood_name
from omnivae.module.models import OBJECTIVES, check_model_name
from omnivae.module.models.base import make_options
from omnivae.module.nn import CountDecoder, Encoder
from omnivae.module.penalties import BatchClassifier, check_penalty_name, combined_penalty
from omnivae.module.priors import check_prior_name, make_prior
from omnivae.module.records import BatchData, Gaussian, LossRecord


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

    The objective's own options (e.g. MoPoE's ``mixture_sampling``) are in ``model_options``.

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
    prior_components: int = 0
    confidence_penalty: float = 0.0
    # seed of the weights and of training (Model(seed=...))
    seed: int = 0
    # a reference-mapped query model: how many of the n_batches are the reference's, and the
    # optimisation steps that fill the features a query did not measure (omnivae.model.mapping)
    n_reference_batches: int | None = None
    fill_steps: int = 100
    batch_penalty: str | None = None
    penalty_weight: float = 0.0
    penalty_n_batches: tuple[int, ...] = ()
    penalty_n_labels: int = 0
    model: str = "elbo"
    model_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("n_latent", "n_hidden", "n_layers", "n_batches"):
            check_int(name, getattr(self, name), 1)
        for name in ("prior_components", "seed", "fill_steps", "penalty_n_labels"):
            check_int(name, getattr(self, name), 0)
        check_int("n_reference_batches", self.n_reference_batches, 0, none="for a reference")
        check_number("dropout", self.dropout, low=0, high=1, high_open=True)
        check_number("confidence_penalty", self.confidence_penalty, low=0)
        check_number("penalty_weight", self.penalty_weight, low=0)
        check_fusion_name(self.fusion)
        objective = OBJECTIVES[check_model_name(self.model)]
        if objective.fusions and self.fusion not in objective.fusions:
            raise ValueError(f"model={self.model!r} needs fusion in {objective.fusions}, "
                             f"not {self.fusion!r}.")
        make_options(objective.options_class, dict(self.model_options), self.model)
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
    def mixture_sampling(self) -> str:
        """How training estimates a mixture objective's sum over components (``"one"`` only
        for objectives with that option: :mod:`omnivae.module.models.elbo`)."""
        return str(self.model_options.get("mixture_sampling", "stratified"))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.modalities)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModuleConfig:
        data = dict(data)
        sampling = data.pop("mixture_sampling", None)  # saved as a field of every model
        if sampling is not None and OBJECTIVES[check_model_name(data.get("model", "elbo"))
                                               ].samples_one_component:
            data["model_options"] = {"mixture_sampling": sampling,
                                     **(data.get("model_options") or {})}
        legacy = data.pop("extra", None) or {}  # saved before these were typed fields
        for key in ("seed", "n_reference_batches", "fill_steps"):
            if key in legacy:
                data.setdefault(key, legacy[key])
        data["modalities"] = tuple(ModalitySpec(**spec) for spec in data["modalities"])
        data["penalty_n_batches"] = tuple(data.get("penalty_n_batches", ()))
        return cls(**data)


class MultimodalVAE(nn.Module):
    """Per-modality encoders, a fusion of their experts, batch-conditioned count decoders,
    and the objective of the configured model (``vae.objective``, see :mod:`omnivae.module.models`).

    The default model ``"elbo"`` is the negative ELBO averaged over the fusion's mixture
    components (:class:`omnivae.module.models.elbo.MixtureELBO`); every model reports its terms in a
    :class:`~omnivae.module.records.LossRecord`, to which the batch penalty, when configured, is added.

    Examples
    --------
    >>> import torch
    >>> from omnivae.module.records import BatchData
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
        self._memoize_experts = False
        self._experts_memo: tuple[BatchData, tuple[Tensor, Tensor]] | None = None
        self.config = config
        background_init = background_init or {}
        c = config
        objective = OBJECTIVES[c.model]
        n_decoder_in = objective.decoder_latent_dim(c)
        self.encoders = nn.ModuleDict(
            {
                s.name: Encoder(s.n_features, c.n_latent, c.n_hidden, c.n_layers, c.dropout,
                                s.library_scale)
                for s in (c.modalities if objective.unimodal_encoders else ())
            }
        )
        self.decoders = nn.ModuleDict(
            {
                s.name: CountDecoder(s.n_features, n_decoder_in, c.n_hidden, c.n_layers,
                                     c.dropout, c.n_batches, s.likelihood, s.library_scale,
                                     background_init.get(s.name))
                for s in c.modalities
            }
        )
        if c.n_reference_batches is not None:  # a reference-mapped query model
            for encoder in self.encoders.values():
                cast(Encoder, encoder).enable_batch_shift(c.n_batches)
        self.prior = make_prior(c.prior, c.n_latent, n_components=c.prior_components,
                                encoders=dict(self.encoders))
        # one batch classifier per penalised column when the penalty is adversarial
        self.batch_classifiers = nn.ModuleList(
            BatchClassifier(c.n_latent, n, n_labels=c.penalty_n_labels)
            for n in (c.penalty_n_batches if c.batch_penalty == "adversarial" else ())
        )
        self.objective = objective(c)

    def decoder(self, name: str) -> CountDecoder:
        """The decoder of modality ``name``."""
        return cast(CountDecoder, self.decoders[name])

    # inference ---------------------------------------------------------------------------
    def experts(self, batch: BatchData) -> tuple[Tensor, Tensor]:
        """Expert parameters ``(M, n, d)``; each encoder runs only on cells that have its
        modality, so a missing modality's encoder receives exactly zero gradient.

        Within one :meth:`loss` call the result for a given ``batch`` object is computed
        once: the objective and the collapse terms / confidence penalty share it."""
        memo = self._experts_memo
        if memo is not None and memo[0] is batch:
            return memo[1]
        n, d = batch.n_cells, self.config.n_latent
        locs, logvars = [], []
        for m, name in enumerate(self.config.names):
            rows = batch.mask[:, m].nonzero(as_tuple=True)[0]
            counts = batch.counts[name]
            loc = counts.new_zeros((n, d))
            logvar = torch.zeros_like(loc)
            if rows.numel() == n:  # every cell has it: no copy of the counts
                loc, logvar = self.encoders[name](counts, batch.library[name], batch.batch_index)
            elif rows.numel():
                sub_loc, sub_logvar = self.encoders[name](
                    counts[rows], batch.library[name][rows], batch.batch_index[rows])
                loc = loc.to(sub_loc.dtype).index_put((rows,), sub_loc)
                logvar = logvar.to(sub_logvar.dtype).index_put((rows,), sub_logvar)
            locs.append(loc)
            logvars.append(logvar)
        result = torch.stack(locs), torch.stack(logvars)
        if self._memoize_experts:
            self._experts_memo = (batch, result)
        return result

    def posterior(self, batch: BatchData) -> Mixture:
        """The joint posterior q(z | observed modalities) of every cell in ``batch``
        (the model's fusion of the experts, or its own joint encoder)."""
        return self.objective.posterior(self, batch)

    # loss --------------------------------------------------------------------------------
    def loss(
        self, batch: BatchData, kl_weight: float = 1.0, penalty_weight: float = 1.0
    ) -> LossRecord:
        """The model's objective on a minibatch (see :mod:`omnivae.module.models`), plus
        ``penalty_weight`` times the batch mutual-information penalty when one is configured
        (and, for the adversarial penalty, the batch classifiers' own loss)."""
        self._memoize_experts = True  # encoders run once per batch in this call
        try:
            out = self.objective.loss(self, batch, kl_weight)
            loss, extra = out.loss, dict(out.extra)
            unimodal = len(self.encoders) == len(self.config.modalities)
            experts = self.experts(batch) if unimodal else None
        finally:
            self._memoize_experts, self._experts_memo = False, None
        if experts is not None:  # models with unimodal experts
            loc, logvar = experts
            extra.update(collapse_terms(loc, logvar, batch.mask, self.config.names, self.prior.kl))
            if self.config.confidence_penalty > 0:  # see omnivae.module.confidence
                confidence = evidence_penalty(loc, logvar, batch.mask)
                loss = loss + kl_weight * self.config.confidence_penalty * confidence
                extra["confidence_penalty"] = confidence.detach()
        if self.config.batch_penalty is not None and batch.penalty_codes is not None:
            penalty, classifier_loss = self.batch_penalty(batch, out.embedding, out.joint)
            loss = loss + penalty_weight * penalty + classifier_loss
            extra.update(batch_penalty=penalty.detach(), classifier_loss=classifier_loss.detach())
        return LossRecord(loss=loss, reconstruction=out.reconstruction, kl=out.kl,
                          elbo=out.elbo, extra=extra)

    def batch_penalty(
        self, batch: BatchData, mixture: Mixture, joint: Gaussian
    ) -> tuple[Tensor, Tensor]:
        """The configured estimator of I(z; batch columns) on the cells' joint embedding
        (the mixture mean; the single joint Gaussian for ``pairwise_kl``), summed over the
        penalised columns, and the batch classifiers' loss (0 unless adversarial)."""
        assert batch.penalty_codes is not None and self.config.batch_penalty is not None
        columns = list(batch.penalty_codes.unbind(dim=1))
        z, z_logvar, options = mixture.mean, None, dict[str, Any]()
        if self.config.batch_penalty == "pairwise_kl":  # pairs of cells from different batches
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
        source = BatchData(batch.counts, mask, batch.batch_index, batch.library)
        fused = self.posterior(source)
        decoder = self.decoder(target)

        def latent(z: Tensor, sample: bool) -> Tensor:
            return self.objective.decoder_input(self, source, z, target, sample, generator)

        if n_samples <= 0:
            return decoder.normalized(latent(fused.mean, False), batch.batch_index), None
        draws = torch.stack(
            [decoder.normalized(latent(fused.sample(generator), True), batch.batch_index)
             for _ in range(n_samples)]
        )
        return draws.mean(dim=0), draws.std(dim=0)
