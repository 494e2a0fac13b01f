"""The multimodal VAE family: one objective per named model, sharing everything else.

Every model uses the same per-modality encoders, count decoders, batch handling, fusion
functions, priors and missing-modality masks (:mod:`omnivae.module`); a model only adds its
objective and any extra networks it needs. Pick one by name::

    omnivae.Model(mdata, model="mmvae+", model_options={"n_private": 8})

=========  ====================================================================================
name       objective
=========  ====================================================================================
elbo       generic stratified ELBO over any ``fusion`` (``poe``/``moe``/``mopoe``)
mvae       PoE + sub-sampled unimodal/subset ELBO terms (Wu & Goodman 2018)
mmvae      MoE, stratified IWAE/DReG bound (Shi et al. 2019)
mopoe      mixture of products of experts over all subsets (Sutter et al. 2021)
mvtcae     PoE + total-correlation (conditional VIB) terms (Hwang et al. 2021)
mmvae+     MoE + modality-specific latents and auxiliary priors (Palumbo et al. 2023)
jmvae      joint encoder + unimodal encoders aligned by KL (Suzuki et al. 2016)
dmvae      PoE shared latent + private latents, joint and cross-modal ELBOs (Lee & Pavlovic 2021)
crmvae     PoE + coordinated unimodal reconstructions and KLs (Suzuki & Matsuo 2023)
telbo      joint encoder + unimodal ELBOs with fixed decoders (Vedantam et al. 2018)
cmvae      MMVAE+ with a Gaussian-mixture (cluster) prior (Palumbo et al. 2024)
nexus      modality latents below a shared nexus latent (Vasco et al. 2022)
mhvae      two latent levels, a product of experts at each (Dorent et al. 2023)
jnf        joint VAE + normalizing-flow unimodal posteriors fitted to it (Senellart et al. 2023)
early      one VAE on the concatenated modalities (early-integration baseline)
=========  ====================================================================================
"""

from __future__ import annotations

from omnivae.module.fusion import FUSIONS, check_fusion_name
from omnivae.module.models.base import Objective, ObjectiveOutput
from omnivae.module.models.cmvae import CMVAE
from omnivae.module.models.crmvae import CRMVAE
from omnivae.module.models.dmvae import DMVAE
from omnivae.module.models.early import EarlyIntegration
from omnivae.module.models.elbo import MixtureELBO
from omnivae.module.models.jmvae import JMVAE
from omnivae.module.models.jnf import JNF
from omnivae.module.models.mhvae import MHVAE
from omnivae.module.models.mmvae import MMVAE
from omnivae.module.models.mmvae_plus import MMVAEPlus
from omnivae.module.models.mopoe import MoPoE
from omnivae.module.models.mvae import MVAE
from omnivae.module.models.mvtcae import MVTCAE
from omnivae.module.models.nexus import Nexus
from omnivae.module.models.telbo import TELBO
from omnivae.module.records import check_choice

OBJECTIVES: dict[str, type[Objective]] = {
    cls.name: cls
    for cls in (MVAE, MMVAE, MoPoE, MVTCAE, MMVAEPlus, JMVAE, DMVAE, CRMVAE, TELBO, JNF,
                Nexus, MHVAE, CMVAE, EarlyIntegration, MixtureELBO)
}
MODELS: tuple[str, ...] = tuple(OBJECTIVES)
DEFAULT_MODEL = "mopoe"

__all__ = ["MODELS", "OBJECTIVES", "Objective", "ObjectiveOutput", "check_model_name",
           "resolve_model"]


def check_model_name(name: str) -> str:
    """Return ``name`` lower-cased, or raise a ValueError listing the models.

    Examples
    --------
    >>> check_model_name("MMVAE+")
    'mmvae+'
    """
    return check_choice(name.lower(), MODELS, "model")


def resolve_model(model: str | None, fusion: str | None) -> tuple[str, str]:
    """The ``(model, fusion)`` pair that ``omnivae.Model(model=..., fusion=...)`` trains.

    * neither given: the default, ``("mopoe", "mopoe")``;
    * only ``fusion``: ``"mopoe"`` is the MoPoE model, ``"poe"``/``"moe"`` the generic ELBO
      of that fusion (``model="elbo"``, what ``fusion=`` trained before models had names);
    * only ``model``: the model's own fusion (``early`` fuses nothing and records ``"poe"``);
    * both: they must agree (``elbo`` takes any fusion), else a ValueError says why.

    Examples
    --------
    >>> resolve_model(None, None), resolve_model(None, "poe"), resolve_model("mmvae", None)
    (('mopoe', 'mopoe'), ('elbo', 'poe'), ('mmvae', 'moe'))
    """
    if model is None:
        fusion = check_fusion_name(fusion or DEFAULT_MODEL)
        return ("mopoe" if fusion == "mopoe" else "elbo"), fusion
    model = check_model_name(model)
    allowed = OBJECTIVES[model].fusions
    if fusion is None:
        return model, allowed[0] if allowed else "poe"
    fusion = check_fusion_name(fusion)
    if not allowed:
        raise ValueError(f"model={model!r} fuses no experts; drop fusion={fusion!r}.")
    if fusion not in allowed:
        raise ValueError(
            f"model={model!r} aggregates with fusion={allowed[0]!r}, which contradicts "
            f"fusion={fusion!r}. Drop fusion=, or use model='elbo' with any of "
            f"{', '.join(FUSIONS)}."
        )
    return model, fusion
