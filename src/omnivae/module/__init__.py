"""Layer 1, pure torch: the multimodal VAE and its parts. No AnnData, MuData or Lightning.

- :mod:`~omnivae.module.records` — typed records between layers (``Gaussian``, ``BatchData``,
  ``LossRecord``, ``NonZero``).
- :mod:`~omnivae.module.likelihoods` — count likelihoods (NB, ZINB, Poisson, Bernoulli, NB
  mixture), with :mod:`~omnivae.module.count_math` (their numerics) and
  :mod:`~omnivae.module.likelihood_sums` (sums over features on the non-zeros).
- :mod:`~omnivae.module.nn` — MLPs, per-modality encoders and count decoders.
- :mod:`~omnivae.module.fusion` — product / mixture / mixture-of-products of experts.
- :mod:`~omnivae.module.priors` — normal, mixture-of-Gaussians and VampPrior.
- :mod:`~omnivae.module.penalties` — latent-batch dependence penalties (MMD, HSIC, ...).
- :mod:`~omnivae.module.confidence`, :mod:`~omnivae.module.collapse` — over-confidence
  penalty and posterior-collapse measurements.
- :mod:`~omnivae.module.sampling` — posterior draws of a modality's normalised expression.
- :mod:`~omnivae.module.models` — one objective per named model (MVAE, MMVAE, MoPoE, ...).
- :mod:`~omnivae.module.vae` — :class:`MultimodalVAE`: inference -> generative -> loss.
"""

from omnivae.module.vae import ModalitySpec, ModuleConfig, MultimodalVAE

__all__ = ["ModalitySpec", "ModuleConfig", "MultimodalVAE"]
