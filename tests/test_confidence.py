"""Evidence-aware over-confidence penalty (omnivae.module.confidence)."""

from __future__ import annotations

import pytest
import torch

import omnivae
from omnivae.module.confidence import evidence_penalty, overconfidence
from omnivae.module.records import BatchData
from omnivae.module.vae import ModalitySpec, ModuleConfig, MultimodalVAE


def test_overconfidence_is_one_sided_and_only_widens_the_partial_posterior():
    full_loc, full_logvar = torch.zeros(4, 3), torch.zeros(4, 3)
    sub_loc = torch.full((4, 3), 2.0, requires_grad=True)  # 2 away: needs variance 1 + 4
    sub_logvar = torch.full((4, 3), 0.0, requires_grad=True)
    penalty = overconfidence(sub_loc, sub_logvar, full_loc, full_logvar)
    expected = 0.5 * 3 * (5.0 - 1.0 - torch.log(torch.tensor(5.0)))
    assert torch.allclose(penalty, expected.expand(4))
    penalty.sum().backward()
    assert sub_loc.grad is None or torch.all(sub_loc.grad == 0)  # means are not moved
    assert torch.all(sub_logvar.grad < 0)  # gradient descent widens the posterior
    wide = overconfidence(torch.zeros(2, 3), torch.full((2, 3), 1.0), full_loc[:2], full_logvar[:2])
    assert torch.all(wide == 0)


def test_cells_with_one_modality_are_not_penalised():
    loc = torch.randn(2, 5, 3) * 3
    logvar = torch.full((2, 5, 3), -5.0)
    single = torch.tensor([[True, False]] * 5)
    assert evidence_penalty(loc, logvar, single).item() == 0.0
    assert evidence_penalty(loc, logvar, torch.ones(5, 2, dtype=torch.bool)).item() > 1.0


def _batch(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = {"a": torch.poisson(torch.rand(n, 20, generator=g) * 5),
         "b": torch.poisson(torch.rand(n, 8, generator=g) * 5)}
    lib = {k: v.sum(1, keepdim=True).clamp(min=1) for k, v in x.items()}
    return BatchData(x, torch.ones(n, 2, dtype=torch.bool), torch.zeros(n, dtype=torch.long), lib)


def test_penalty_in_the_loss_widens_unimodal_posteriors():
    torch.manual_seed(0)
    cfg = ModuleConfig((ModalitySpec("a", 20, "nb"), ModalitySpec("b", 8, "poisson")),
                       n_latent=3, confidence_penalty=10.0)
    vae = MultimodalVAE(cfg)
    with torch.no_grad():  # make the encoders over-confident and disagree
        for enc in vae.encoders.values():
            enc.logvar.bias.fill_(-6.0)
    batch = _batch()
    before = vae.loss(batch).extra["confidence_penalty"]
    logvar_before = vae.experts(batch)[1].mean()
    optim = torch.optim.Adam(vae.parameters(), lr=1e-2)
    for _ in range(30):
        optim.zero_grad()
        vae.loss(batch).loss.backward()
        optim.step()
    after = vae.loss(batch).extra["confidence_penalty"]
    assert after < 0.5 * before
    assert vae.experts(batch)[1].mean() > logvar_before


def test_confidence_penalty_is_validated_and_saved(tmp_path):
    sim = omnivae.datasets.simulate(80, modalities=("rna", "adt"), seed=0)
    with pytest.raises(ValueError, match="confidence_penalty"):
        omnivae.Model(sim, confidence_penalty=-1.0)
    model = omnivae.Model(sim, n_latent=3, confidence_penalty=2.0)
    model.save(tmp_path / "m")
    assert omnivae.Model.load(tmp_path / "m", sim).config.confidence_penalty == 2.0
