"""Learned priors: mixture of Gaussians and VampPrior (omnivae.module.priors)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import omnivae
from omnivae.module.priors import MixtureOfGaussians, StandardNormal, VampPrior, make_prior
from omnivae.module.records import Gaussian
from omnivae.module.vae import ModalitySpec, ModuleConfig, MultimodalVAE


def test_mixture_log_prob_matches_a_direct_computation():
    prior = MixtureOfGaussians(2, n_components=3)
    z = torch.randn(7, 2)
    loc, logvar, log_w = prior.components()
    dens = sum(
        log_w[k].exp() * torch.exp(torch.distributions.Normal(loc[k], (0.5 * logvar[k]).exp())
                                   .log_prob(z).sum(-1))
        for k in range(3)
    )
    assert torch.allclose(prior.log_prob(z), torch.log(dens), atol=1e-5)


def test_monte_carlo_kl_is_unbiased_for_a_one_component_standard_mixture():
    prior = MixtureOfGaussians(3, n_components=1)
    with torch.no_grad():
        prior.loc.zero_()
    q = Gaussian(torch.full((20000, 3), 0.5), torch.full((20000, 3), -1.0))
    estimate = prior.kl(q, q.rsample()).mean()
    exact = StandardNormal(3).kl(q, q.loc).mean()
    assert abs(float((estimate - exact).detach())) < 0.05


def test_vamp_prior_uses_the_encoders_without_owning_them():
    cfg = ModuleConfig((ModalitySpec("a", 6, "nb"), ModalitySpec("b", 4, "poisson")),
                       n_latent=2, prior="vamp", prior_components=5)
    vae = MultimodalVAE(cfg)
    assert isinstance(vae.prior, VampPrior)
    keys = list(vae.state_dict())
    assert not any(k.startswith("prior.") and "encoders" in k for k in keys)
    assert {"prior.pseudo_inputs.a", "prior.pseudo_inputs.b"} <= set(keys)
    before = vae.prior.components()[0].detach().clone()
    with torch.no_grad():
        vae.encoders["a"].loc.bias.add_(1.0)  # the prior moves with the encoders
    assert not torch.allclose(vae.prior.components()[0], before)
    z = vae.prior.sample(3)
    assert z.shape == (3, 2) and torch.isfinite(vae.prior.log_prob(z)).all()


def test_unknown_prior_and_vamp_without_encoders_are_explained():
    with pytest.raises(ValueError, match="Unknown prior 'flow'"):
        omnivae.Model(omnivae.datasets.simulate(50, modalities=("rna",), seed=0), prior="flow")
    with pytest.raises(ValueError, match="encoders"):
        make_prior("vamp", 3)


@pytest.mark.parametrize("prior", ["mog", "vamp"])
def test_learned_prior_trains_and_round_trips(prior, tmp_path):
    sim = omnivae.datasets.simulate(150, modalities=("rna", "adt"), seed=0)
    model = omnivae.Model(sim, n_latent=3, prior=prior, prior_components=4)
    model.train(max_epochs=3, progress_bar=False)
    assert math.isfinite(model.history["validation_elbo"].iloc[-1])
    model.save(tmp_path / "m")
    loaded = omnivae.Model.load(tmp_path / "m", sim)
    assert loaded.config.prior == prior
    z = torch.randn(5, 3)
    assert torch.allclose(loaded.module.prior.log_prob(z), model.module.prior.log_prob(z))
    np.testing.assert_allclose(loaded.get_latent_representation(),
                               model.get_latent_representation(), rtol=1e-5)
