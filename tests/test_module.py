"""The pure-torch module: layering, finite loss, zero gradient for missing modalities."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from omnivae.module.records import BatchData
from omnivae.module.vae import ModalitySpec, ModuleConfig, MultimodalVAE

LIKELIHOODS = ["nb", "zinb", "poisson", "bernoulli", "nb_mixture"]


def _batch(mask: torch.Tensor, sizes: dict[str, int], seed: int = 0) -> BatchData:
    g = torch.Generator().manual_seed(seed)
    counts = {k: torch.poisson(torch.full((mask.shape[0], n), 2.0), generator=g) for k, n in sizes.items()}
    for m, k in enumerate(sizes):
        counts[k][~mask[:, m]] = 0.0
    library = {k: v.sum(1, keepdim=True).clamp(min=1) for k, v in counts.items()}
    return BatchData(counts, mask, torch.tensor([0, 1] * (mask.shape[0] // 2)), library)


def _vae(fusion: str, likelihoods=("nb", "nb_mixture")) -> MultimodalVAE:
    specs = tuple(ModalitySpec(f"m{i}", 7 + i, lik, 10.0) for i, lik in enumerate(likelihoods))
    torch.manual_seed(0)
    return MultimodalVAE(ModuleConfig(specs, n_batches=2, n_latent=3, n_hidden=16, fusion=fusion))


def test_module_layer_imports_no_anndata_or_lightning():
    code = ("import sys, omnivae.module; "
            "bad = [m for m in ('anndata', 'mudata', 'lightning', 'scanpy') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("fusion", ["poe", "moe", "mopoe"])
@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_loss_finite_for_every_fusion_and_likelihood(fusion, likelihood):
    vae = _vae(fusion, ("nb", likelihood))
    mask = torch.tensor([[True, True], [True, False], [False, True], [True, True]])
    record = vae.loss(_batch(mask, {"m0": 7, "m1": 8}))
    assert torch.isfinite(record.loss)
    assert record.elbo >= record.kl > 0
    record.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in vae.parameters() if p.grad is not None)


@pytest.mark.parametrize("fusion", ["poe", "moe", "mopoe"])
def test_missing_modality_encoder_gets_zero_gradient(fusion):
    vae = _vae(fusion)
    mask = torch.tensor([[True, False], [True, False], [True, False], [True, False]])
    vae.loss(_batch(mask, {"m0": 7, "m1": 8})).loss.backward()
    for p in vae.encoders["m1"].parameters():
        assert p.grad is None or torch.all(p.grad == 0)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in vae.encoders["m0"].parameters())


def test_encoder_output_of_absent_cells_does_not_change_the_loss():
    vae = _vae("poe").eval()
    mask = torch.tensor([[True, False], [True, True]])
    batch = _batch(mask, {"m0": 7, "m1": 8})
    noisy = dict(batch.counts)
    noisy["m1"] = batch.counts["m1"].clone()
    noisy["m1"][0] = 1000.0  # garbage in the row of a cell that lacks m1
    torch.manual_seed(1)
    a = vae.loss(batch).loss
    torch.manual_seed(1)
    b = vae.loss(BatchData(noisy, batch.mask, batch.batch_index, batch.library)).loss
    assert torch.allclose(a, b)


def test_poe_loss_equals_hand_computed_elbo_for_one_cell():
    vae = _vae("poe", ("poisson",)).eval()
    mask = torch.tensor([[True], [True]])
    batch = _batch(mask, {"m0": 7})
    torch.manual_seed(3)
    record = vae.loss(batch)
    # recompute by hand with the same noise
    torch.manual_seed(3)
    loc, logvar = vae.experts(batch)
    precision = 1 + torch.exp(-logvar[0])
    mu, var = loc[0] * torch.exp(-logvar[0]) / precision, 1 / precision
    z = mu + var.sqrt() * torch.randn(mu.shape)
    rate = vae.decoders["m0"](z, batch.batch_index, batch.library["m0"]).rate
    x = batch.counts["m0"]
    nll = -(x * torch.log(rate) - rate - torch.lgamma(x + 1)).sum(1)
    kl = 0.5 * (mu**2 + var - 1 - torch.log(var)).sum(1)
    assert torch.allclose(record.loss, (nll + kl).mean(), rtol=1e-4)


def test_configs_saved_with_extra_dicts_load_into_typed_fields():
    # omnivae 0.1 kept the seed, the query's batches and the protein background in "extra"
    from omnivae.data import SetupInfo

    spec = {"name": "adt", "n_features": 2, "likelihood": "nb_mixture", "library_scale": 1.0}
    old = {"modalities": [spec], "n_batches": 3,
           "extra": {"seed": 7, "n_reference_batches": 2, "fill_steps": 5}}
    config = ModuleConfig.from_dict(old)
    assert (config.seed, config.n_reference_batches, config.fill_steps) == (7, 2, 5)
    assert "extra" not in config.to_dict()
    setup = SetupInfo.from_dict({
        "modalities": ["adt"], "likelihoods": {"adt": "nb_mixture"}, "layers": {"adt": None},
        "batch_key": None, "batch_categories": [], "var_names": {"adt": ["a", "b"]},
        "library_scale": {"adt": 1.0}, "extra": {"background_init": {"adt": [0.5, 1.5]}}})
    assert setup.background_init == {"adt": [0.5, 1.5]}
