"""The one-component estimator of mixture objectives (``mixture_sampling="one"``): same
objective in expectation as the stratified one, only components of observed modalities,
exact zero gradient for missing modalities, validation stays stratified, saved and loaded."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import omnivae
from omnivae.module.models.elbo import sample_components
from omnivae.module.records import BatchData
from omnivae.module.vae import ModalitySpec, ModuleConfig, MultimodalVAE
from tests.family_helpers import MOSAIC, SPECS, make_batch

SPECS3 = (*SPECS, ModalitySpec("c", 3, "poisson", 4.0))


def _vae(sampling: str, model: str = "mopoe", fusion: str = "mopoe",
         specs=SPECS) -> MultimodalVAE:
    torch.manual_seed(0)
    config = ModuleConfig(specs, n_batches=2, n_latent=2, n_hidden=8, dropout=0.0,
                          fusion=fusion, model=model,
                          model_options={"mixture_sampling": sampling})
    return MultimodalVAE(config)


def _zero_noise(vae: MultimodalVAE) -> None:
    """z = the component's mean: the component draw is then the only randomness."""
    vae.objective.noise = lambda shape, like: torch.zeros(shape, dtype=like.dtype)


def _cell(batch: BatchData, c: int) -> BatchData:
    rows = slice(c, c + 1)
    return BatchData({k: v[rows] for k, v in batch.counts.items()}, batch.mask[rows],
                     batch.batch_index[rows], {k: v[rows] for k, v in batch.library.items()})


@pytest.mark.parametrize(("fusion", "specs", "mask"), [
    ("mopoe", SPECS, [*MOSAIC, [True, True]]),
    ("moe", SPECS, [*MOSAIC, [True, True]]),
    ("mopoe", SPECS3, [[True, True, True], [True, False, True], [False, True, True]]),
])
def test_one_component_estimate_has_the_stratified_loss_as_expectation(fusion, specs, mask):
    """E_k~w[loss with component k] over each cell's draws equals the stratified loss (z fixed
    at the component means, so the component is the only randomness), while weightings a bug
    could introduce (keeping w_k, always the joint, uniform over every component) do not."""
    model = "mopoe" if fusion == "mopoe" else "elbo"
    vae = _vae("one", model, fusion, specs)
    _zero_noise(vae)
    batch = make_batch(mask, specs)
    with torch.no_grad():
        stratified = vae.eval().loss(batch, kl_weight=0.7).loss.item()
        weights = vae.posterior(batch).weights  # (K, n)
        vae.train()
        loss = torch.zeros(weights.shape)  # loss of each cell when it draws component k
        for c in range(batch.n_cells):
            for k in range(weights.shape[0]):
                vae.objective.draw_components = lambda w, k=k: torch.full((w.shape[1],), k)
                loss[k, c] = vae.loss(_cell(batch, c), kl_weight=0.7).loss
    expectations = {
        "right": (weights * loss).sum(0).mean(),
        "w_k kept": (weights**2 * loss).sum(0).mean(),
        "always joint": loss[-1].mean(),
        "uniform": loss.mean(0).mean(),
    }
    assert expectations.pop("right").item() == pytest.approx(stratified, rel=1e-5)
    for name, value in expectations.items():
        assert value.item() != pytest.approx(stratified, rel=1e-3), name


def test_cells_only_draw_components_of_their_observed_modalities():
    vae = _vae("one", specs=SPECS3)
    batch = make_batch([[True, True, True], [True, False, True], [False, True, False]], SPECS3)
    weights = vae.posterior(batch).weights  # (7, 3)
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_components(weights, g) for _ in range(4000)])  # (4000, 3)
    for c in range(3):
        freq = torch.bincount(draws[:, c], minlength=weights.shape[0]).float() / len(draws)
        assert torch.all(freq[weights[:, c] == 0] == 0)
        torch.testing.assert_close(freq, weights[:, c], atol=0.03, rtol=0)


def test_missing_modality_encoder_gets_exactly_zero_gradient_when_sampling():
    vae = _vae("one").train()
    vae.loss(make_batch([[True, False]] * 4 + [[True, True]] * 2)).loss.backward()
    grads_b = [p.grad for p in vae.encoders["b"].parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads_b)  # complete cells reach b
    vae.zero_grad(set_to_none=True)
    vae.loss(make_batch([[True, False]] * 4)).loss.backward()
    assert all(p.grad is None or torch.all(p.grad == 0) for p in vae.encoders["b"].parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in vae.encoders["a"].parameters())


def test_evaluation_mode_and_single_components_use_the_stratified_estimator():
    batch = make_batch([*MOSAIC, [True, True]])
    one, stratified = _vae("one").eval(), _vae("stratified").eval()
    torch.manual_seed(3)
    a = one.loss(batch).loss
    torch.manual_seed(3)
    assert torch.equal(a, stratified.loss(batch).loss)  # validation losses stay comparable
    one_poe, strat_poe = _vae("one", "elbo", "poe").train(), _vae("stratified", "elbo", "poe").train()
    torch.manual_seed(3)
    a = one_poe.loss(batch).loss
    torch.manual_seed(3)
    assert torch.equal(a, strat_poe.loss(batch).loss)  # one component: the same computation


def test_models_that_need_every_component_refuse_one_component_sampling():
    # an option of the mixture ELBOs only: other objectives have no such option
    with pytest.raises(ValueError, match=r"Unknown model_options \['mixture_sampling'\].*mmvae"):
        ModuleConfig(SPECS, fusion="moe", model="mmvae", model_options={"mixture_sampling": "one"})
    with pytest.raises(ValueError, match=r"Unknown mixture_sampling 'two'"):
        ModuleConfig(SPECS, fusion="mopoe", model="mopoe",
                     model_options={"mixture_sampling": "two"})
    sim = omnivae.datasets.simulate(40, modalities=("rna", "adt"), seed=0)
    assert omnivae.Model(sim, model="mmvae", n_latent=2).config.mixture_sampling == "stratified"
    with pytest.raises(ValueError, match=r"evaluates every mixture component"):
        omnivae.Model(sim, model="mmvae", mixture_sampling="one")


def test_option_is_saved_and_older_files_load_stratified(tmp_path):
    sim = omnivae.datasets.simulate(120, modalities=("rna", "adt"), missing_fraction=0.2, seed=0)
    model = omnivae.Model(sim, n_latent=3, n_hidden=16, mixture_sampling="one")
    model.train(4, progress_bar=False)
    assert model.config.mixture_sampling == "one"
    train_elbo = model.history["train_elbo"].to_numpy()
    assert np.isfinite(train_elbo).all() and train_elbo[-1] < train_elbo[0]  # it learns
    model.save(tmp_path / "m")
    loaded = omnivae.Model.load(tmp_path / "m", sim)
    assert loaded.config.mixture_sampling == "one"
    np.testing.assert_array_equal(loaded.get_latent_representation(),
                                  model.get_latent_representation())
    meta_file = tmp_path / "m" / "omnivae.json"
    meta = json.loads(meta_file.read_text())
    assert meta["module"]["model_options"] == {"mixture_sampling": "one"}
    # a file of omnivae 0.1 kept the option as a field of every config (and had no checksum
    # of the description)
    del meta["description_sha256"]
    meta["module"]["model_options"] = {}
    meta["module"]["mixture_sampling"] = "one"
    meta_file.write_text(json.dumps(meta))
    assert omnivae.Model.load(tmp_path / "m", sim).config.mixture_sampling == "one"
    del meta["module"]["mixture_sampling"]  # a file saved before the option existed
    meta_file.write_text(json.dumps(meta))
    assert omnivae.Model.load(tmp_path / "m", sim).config.mixture_sampling == "stratified"


def test_cli_fit_takes_the_option(tmp_path):
    from omnivae.cli import main

    sim = omnivae.datasets.simulate(60, modalities=("rna", "adt"), seed=0)
    src = tmp_path / "in.h5mu"
    sim.write_h5mu(src)
    code = main(["fit", str(src), "-o", str(tmp_path / "out.h5mu"), "--mixture-sampling",
                 "one", "--max-epochs", "1", "--n-latent", "3", "--no-progress", "--no-impute",
                 "--save-model", str(tmp_path / "model")])
    assert code == 0
    meta = json.loads((tmp_path / "model" / "omnivae.json").read_text())
    assert meta["module"]["model_options"]["mixture_sampling"] == "one"


def test_new_models_train_stratified_unless_asked_and_able():
    sim = omnivae.datasets.simulate(40, modalities=("rna", "adt"), seed=0)
    assert omnivae.Model(sim, n_latent=2).config.mixture_sampling == "stratified"  # mopoe
    assert omnivae.Model(sim, mixture_sampling="One", n_latent=2).config.mixture_sampling == "one"
    assert omnivae.Model(sim, fusion="poe", n_latent=2,
                         mixture_sampling="one").config.mixture_sampling == "one"
    assert omnivae.Model(sim, model="mvae", n_latent=2).config.mixture_sampling == "stratified"
