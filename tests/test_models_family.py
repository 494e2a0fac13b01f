"""The model family at the module level: finite losses, exactly zero gradient for missing
modalities, clear errors, and each model's particular mechanics (DReG, subsets, flows, ...)."""

from __future__ import annotations

import pytest
import torch

from omnivae.module.models import MODELS, OBJECTIVES
from omnivae.module.vae import ModalitySpec, MultimodalVAE
from tests.family_helpers import (
    COMPLETE,
    FAST,
    MOSAIC,
    SPECS,
    fixed_noise,
    log_normal,
    make_batch,
    make_vae,
)


@pytest.mark.parametrize("model", MODELS)
def test_loss_and_gradients_are_finite(model):
    vae = make_vae(model).train()
    complete = OBJECTIVES[model].needs_complete_cells
    batch = make_batch(COMPLETE if complete else [*MOSAIC, [True, True]])
    record = vae.loss(batch, kl_weight=0.5)
    assert torch.isfinite(record.loss) and torch.isfinite(record.elbo)
    assert all(torch.isfinite(v) for v in record.reconstruction.values())
    record.loss.backward()
    grads = [p.grad for p in vae.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def _encoders_of(vae: MultimodalVAE, name: str) -> list[torch.nn.Module]:
    """Every network that reads modality ``name``'s counts."""
    nets: list[torch.nn.Module] = []
    if name in vae.encoders:
        nets.append(vae.encoders[name])
    objective = vae.objective
    for attr in ("private_encoders", "message_encoders", "bottom_experts"):
        if hasattr(objective, attr):
            nets.append(getattr(objective, attr)[name])
    for attr in ("encoder", "joint_encoder"):
        if hasattr(objective, attr):
            nets.append(getattr(objective, attr).blocks[name])
    return nets


@pytest.mark.parametrize("model", [m for m in MODELS if not OBJECTIVES[m].needs_complete_cells])
def test_missing_modality_encoder_gets_exactly_zero_gradient(model):
    vae = make_vae(model).train()
    vae.loss(make_batch([[True, False]] * 4)).loss.backward()
    for net in _encoders_of(vae, "b"):
        assert all(p.grad is None or torch.all(p.grad == 0) for p in net.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for net in _encoders_of(vae, "a") for p in net.parameters())


def test_jmvae_refuses_incomplete_training_cells_but_embeds_and_predicts_them():
    vae = make_vae("jmvae")
    batch = make_batch(MOSAIC)
    with pytest.raises(ValueError, match=r"2 of 3 cells lack one"):
        vae.loss(batch)
    z = vae.posterior(batch).mean
    assert torch.isfinite(z).all()
    # an incomplete cell is embedded by its unimodal expert product, not the joint encoder
    loc, logvar = vae.encoders["a"](batch.counts["a"][1:2], batch.library["a"][1:2])
    precision = 1 + torch.exp(-logvar)
    torch.testing.assert_close(z[1:2], torch.exp(-logvar) * loc / precision)
    assert torch.isfinite(vae.predict_normalized(batch, "b")[0]).all()


# --- independent hand computations -------------------------------------------------------


@pytest.mark.parametrize("model", ["mmvae", "mmvae+"])
def test_dreg_has_the_iwae_value_and_decoder_gradient_but_its_own_encoder_gradient(model):
    grads, values = {}, {}
    for estimator in ("iwae", "dreg"):
        vae = make_vae(model, {**FAST[model], "estimator": estimator})
        vae.objective.noise = fixed_noise  # type: ignore[method-assign]
        record = vae.loss(make_batch(MOSAIC, seed=5))
        record.loss.backward()
        values[estimator] = record.extra["bound"]
        grads[estimator] = {k: p.grad.clone() for k, p in vae.named_parameters()
                            if p.grad is not None}
    torch.testing.assert_close(values["iwae"], values["dreg"])
    decoder = [k for k in grads["iwae"] if k.startswith("decoders.")]
    encoder = [k for k in grads["iwae"] if k.startswith("encoders.")]
    for k in decoder:
        torch.testing.assert_close(grads["iwae"][k], grads["dreg"][k], rtol=1e-4, atol=1e-6)
    assert any(not torch.allclose(grads["iwae"][k], grads["dreg"][k]) for k in encoder)


def test_mvae_random_subsets_add_terms_for_three_modalities():
    specs = (*SPECS, ModalitySpec("c", 3, "bernoulli", 2.0))
    batch = make_batch([[True, True, True]] * 3, specs=specs)
    terms = make_vae("mvae", {"n_random_subsets": 2}, specs=specs).objective._terms(batch.mask)
    assert len(terms) == 1 + 3 + 2
    assert all(int(t[0].sum()) == 2 for t in terms[4:])  # subsets of size 2 of 3 modalities


def test_telbo_unimodal_terms_leave_the_decoders_alone():
    vae = make_vae("telbo").train()
    vae.loss(make_batch([[True, False], [False, True]])).loss.backward()  # no complete cell
    assert all(p.grad is None or torch.all(p.grad == 0) for p in vae.decoders.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for p in vae.encoders.parameters() if p.dim() == 2)


def test_jnf_flow_density_is_the_change_of_variables_of_its_base():
    from omnivae.module.models.jnf import Flow
    from omnivae.module.records import Gaussian

    torch.manual_seed(0)
    flow = Flow(3, 8, n_flows=3)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.5 * torch.randn(p.shape))
    base = Gaussian(torch.tensor([[0.3, -0.2, 0.1]]), torch.tensor([[0.2, -0.4, 0.0]]))
    z0 = torch.tensor([[0.5, 1.0, -0.7]])
    z = flow(z0)
    jac = torch.autograd.functional.jacobian(lambda x: flow(x.unsqueeze(0))[0], z0[0])
    expected = log_normal(z0, base.loc, base.logvar) - torch.linalg.slogdet(jac)[1]
    torch.testing.assert_close(flow.log_prob(z, base), expected, rtol=1e-5, atol=1e-5)


def test_jnf_embeds_incomplete_cells_with_its_unimodal_flows():
    vae = make_vae("jnf")
    batch = make_batch(MOSAIC)
    posterior = vae.posterior(batch)
    assert posterior.weights.sum(0).tolist() == [1.0, 1.0, 1.0]
    assert posterior.weights[-1].tolist() == [1.0, 0.0, 0.0]  # only cell 0 has both
    again = vae.posterior(batch).mean
    torch.testing.assert_close(posterior.mean, again)  # fixed-seed moments: deterministic
    with pytest.raises(ValueError, match=r"jnf.*2 of 3 cells lack one"):
        vae.loss(batch)


def test_nexus_forced_perceptual_dropout_keeps_a_proper_subset():
    specs = (*SPECS, ModalitySpec("c", 3, "bernoulli", 2.0))
    vae = make_vae("nexus", {"dropout_rate": 1.0}, specs=specs).train()
    mask = torch.tensor([[True, True, True]] * 50 + [[True, False, True]] * 50
                        + [[False, True, False]] * 5)
    kept = vae.objective._kept(mask)
    assert not (kept & ~mask).any()  # only observed modalities
    assert (kept.sum(1)[:100] < mask.sum(1)[:100]).all() and (kept.sum(1) >= 1).all()
    assert torch.equal(kept[100:], mask[100:])  # a single modality is always kept
    assert set(kept.sum(1)[:50].tolist()) == {1, 2}  # subsets of every proper size
    assert torch.equal(vae.eval().objective._kept(mask), mask)  # no dropout at inference
