"""Shared pieces of the model-family tests: a tiny two-modality case and its hand maths."""

from __future__ import annotations

import math

import torch

from omnivae.module.models import resolve_model
from omnivae.module.records import BatchData
from omnivae.module.vae import ModalitySpec, ModuleConfig, MultimodalVAE

NAMES = ("a", "b")
SPECS = (ModalitySpec("a", 5, "nb", 10.0), ModalitySpec("b", 4, "poisson", 6.0))
FAST = {"mmvae": {"n_samples": 3, "estimator": "iwae"},
        "mmvae+": {"n_samples": 2, "n_private": 2, "estimator": "iwae"},
        "cmvae": {"n_samples": 2, "n_private": 2, "estimator": "iwae", "n_clusters": 3}}


def make_vae(model: str, options: dict | None = None, fusion: str | None = None,
             specs=SPECS) -> MultimodalVAE:
    name, fusion = resolve_model(model, fusion)
    torch.manual_seed(0)
    config = ModuleConfig(specs, n_batches=2, n_latent=2, n_hidden=8, fusion=fusion, model=name,
                          model_options=options if options is not None else FAST.get(name, {}))
    return MultimodalVAE(config).eval()


def make_batch(mask: list[list[bool]], specs=SPECS, seed: int = 0) -> BatchData:
    mask_t = torch.tensor(mask)
    g = torch.Generator().manual_seed(seed)
    counts = {s.name: torch.poisson(torch.full((len(mask), s.n_features), 3.0), generator=g)
              for s in specs}
    for m, s in enumerate(specs):
        counts[s.name][~mask_t[:, m]] = 0.0
    library = {k: v.sum(1, keepdim=True).clamp(min=1) for k, v in counts.items()}
    return BatchData(counts, mask_t, torch.arange(len(mask)) % 2, library)


def fixed_noise(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    return torch.linspace(-1.2, 1.3, math.prod(shape), dtype=like.dtype).reshape(shape)


MOSAIC = [[True, True], [True, False], [False, True]]
COMPLETE = [[True, True], [True, True]]


def enc(vae, name, batch, cells):
    return vae.encoders[name](batch.counts[name][cells], batch.library[name][cells])


def poe(experts):
    """Product of N(0, I) and the Gaussian experts [(loc, logvar), ...]."""
    precision = 1 + sum(torch.exp(-lv) for _, lv in experts)
    loc = sum(torch.exp(-lv) * mu for mu, lv in experts) / precision
    return loc, -torch.log(precision)


def nll(vae, name, z, batch, cells):
    dist = vae.decoders[name](z, batch.batch_index[cells], batch.library[name][cells])
    return -dist.log_prob(batch.counts[name][cells]).sum(-1)


def kl_std(mu, lv):
    return 0.5 * (mu**2 + lv.exp() - 1 - lv).sum(-1)


def kl_gauss(q, p):
    (m1, l1), (m2, l2) = q, p
    return 0.5 * ((l1 - l2).exp() + (m1 - m2) ** 2 / l2.exp() - 1 - (l1 - l2)).sum(-1)


def log_normal(z, mu, lv):
    return (-0.5 * (math.log(2 * math.pi) + lv + (z - mu) ** 2 / lv.exp())).sum(-1)


def observed(batch, c):
    return [m for m in range(len(NAMES)) if batch.mask[c, m]]


def subsets_of(kind):
    return {"poe": None, "moe": [[0], [1]], "mopoe": [[0], [1], [0, 1]]}[kind]
