"""CMVAE's clusters: the post-hoc selection of the number of clusters (hand-computed criterion,
pruning to the occupied components, missing modalities ignored) and ``omnivae.tl.cluster``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

import omnivae
from omnivae.module.models.cmvae_selection import select_clusters
from tests.conftest import benchmark_script, shared_file


def _two_modalities(occupied, n_components, n_per=30, d=3, seed=0):
    """Cells around ``occupied`` components' means (both modalities near the same mean)."""
    gen = torch.Generator().manual_seed(seed)
    means = 6.0 * torch.randn(n_components, d, generator=gen)
    centre = means[torch.tensor(occupied)].repeat_interleave(n_per, 0)  # (n, d)
    z = centre + 0.3 * torch.randn(2, len(centre), d, generator=gen)
    return means, z, torch.ones(2, len(centre), dtype=torch.bool)


def test_criterion_matches_a_hand_computation():
    log_weights = torch.tensor([0.3, -0.2])
    means = torch.tensor([[0.0, 0.0], [1.5, -1.0]])
    z = torch.tensor([[[0.2, 0.1], [1.0, -0.5], [3.0, 1.0]],
                      [[9.0, 9.0], [1.4, -1.2], [0.0, 0.5]]])
    observed = torch.tensor([[True, True, True], [False, True, True]])  # cell 0: modality 0 only
    beta = 0.7
    got = select_clusters(log_weights, means, z, observed, beta=beta, prune=False)

    weights = np.exp([0.3, -0.2]) / np.exp([0.3, -0.2]).sum()
    entropies, log_densities, probabilities = [], [], []
    for cell in range(3):
        h, ell, p_mean = [], [], np.zeros(2)
        for m in range(2):
            if not observed[m, cell]:
                continue
            joint = np.array([w * stats.multivariate_normal(mu.numpy(), np.eye(2)).pdf(
                z[m, cell].numpy()) for w, mu in zip(weights, means, strict=True)])
            q = joint / joint.sum()
            h.append(-(q * np.log(q)).sum() / math.log(2))
            ell.append(np.log(joint.sum()) / 2)
            p_mean += q
        entropies.append(np.mean(h))
        log_densities.append(np.mean(ell))
        probabilities.append(p_mean / len(h))
    expected = beta * np.mean(entropies) - np.mean(log_densities)
    assert got.criterion == pytest.approx((expected,), rel=1e-5)
    np.testing.assert_allclose(got.probabilities.numpy(), np.array(probabilities), rtol=1e-5)
    assert got.kept == (0, 1) and got.pruned == ()
    assert got.labels.tolist() == np.argmax(probabilities, axis=1).tolist()


def test_pruning_keeps_exactly_the_occupied_components():
    occupied = [1, 4, 6]
    means, z, observed = _two_modalities(occupied, n_components=8)
    result = select_clusters(torch.zeros(8), means, z, observed)
    assert result.kept == tuple(occupied)
    assert len(result.criterion) == 8 and len(result.pruned) == 7
    assert set(result.pruned[:5]) == {0, 2, 3, 5, 7}  # the empty components go first
    # the criterion falls as each empty component goes, then rises when an occupied one does
    assert np.all(np.diff(result.criterion[:6]) < 0) and result.criterion[6] > result.criterion[5]
    truth = torch.tensor(occupied).repeat_interleave(30)
    assert torch.equal(result.labels, truth)
    np.testing.assert_allclose(result.probabilities.sum(1).numpy(), 1.0, rtol=1e-6)


def test_a_missing_modalitys_latent_is_ignored():
    means, z, observed = _two_modalities([0, 2], n_components=4)
    observed[1, :20] = False  # 20 cells lack modality 1
    wild = z.clone()
    wild[1, :20] = 1e3 * torch.randn(20, z.shape[-1])
    a = select_clusters(torch.zeros(4), means, z, observed)
    b = select_clusters(torch.zeros(4), means, wild, observed)
    assert a.kept == b.kept and a.criterion == pytest.approx(b.criterion)
    assert torch.equal(a.labels, b.labels)


def test_bad_input_gets_a_clear_error():
    means, z, observed = _two_modalities([0], n_components=2)
    with pytest.raises(ValueError, match=r"z of shape \(M, n, 3\)"):
        select_clusters(torch.zeros(2), means, z[..., :2], observed)
    observed[:, 0] = False
    with pytest.raises(ValueError, match="at least one observed modality"):
        select_clusters(torch.zeros(2), means, z, observed)


def test_tl_cluster_needs_a_trained_cmvae():
    sim = omnivae.datasets.simulate(60, modalities=("rna", "adt"), seed=0)
    with pytest.raises(ValueError, match=r"model=.cmvae.*sc\.tl\.leiden"):
        omnivae.tl.cluster(sim, omnivae.Model(sim, n_latent=3))
    with pytest.raises(ValueError, match="not trained"):
        omnivae.tl.cluster(sim, omnivae.Model(sim, model="cmvae", n_latent=3))


def test_tl_cluster_writes_labels_probabilities_and_the_selection():
    sim = omnivae.datasets.simulate(120, modalities=("rna", "adt"), seed=1)
    model = omnivae.Model(sim, model="cmvae", n_latent=3,
                          model_options={"n_clusters": 5, "n_samples": 2})
    model.train(max_epochs=3, progress_bar=False)
    every = omnivae.tl.cluster(sim, model, select_n_clusters=False, copy=True,
                               key_added="all")
    assert "all" not in sim.obs  # copy=True leaves the input alone
    omnivae.tl.cluster(sim, model)
    info, probs = sim.uns["omnivae_cluster"], sim.obsm["omnivae_cluster_probabilities"]
    assert probs.shape == (sim.n_obs, info["n_clusters"]) and len(info["clusters"]) == \
        info["n_clusters"]
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    labels = sim.obs["omnivae_cluster"].astype(int).to_numpy()
    np.testing.assert_array_equal(labels, np.asarray(info["clusters"])[probs.argmax(1)])
    assert every.uns["all"]["n_clusters"] == 5 and every.uns["all"]["pruned"] == []
    # the unpruned probabilities are the objective's q(c|z), averaged over the modalities
    z, observed = omnivae.model.inference.modality_latent_means(model.module, model.cells,
                                                           batch_size=64, num_threads=1)
    with torch.no_grad():
        q = model.module.objective.cluster_probabilities(z.reshape(-1, 3)).view(2, -1, 5)
    w = observed.float() / observed.sum(0)
    np.testing.assert_allclose(every.obsm["all_probabilities"], (w[..., None] * q).sum(0),
                               rtol=1e-5, atol=1e-6)



def test_the_benchmark_scores_labelled_cells_only_and_reports_means_over_seeds():
    script = benchmark_script("cmvae_clusters")
    labels = np.array(["a", "a", "b", "b", "nan", "nan"])
    assert script.agreement(labels, np.array([0, 0, 1, 1, 0, 1]))["ari"] == 1.0
    assert script.agreement(labels, np.array([0, 1, 0, 1, 0, 1]))["ari"] < 0
    base = {"dataset": "d", "cells": 6, "cell types": 2, "epochs": 100, "fit seconds": 1.0}
    rows = [{**base, "seed": s, "components": 10, "method": "CMVAE mixture, selected",
             "clusters": c, "ari": ari, "nmi": 0.5} for s, c, ari in ((0, 4, 0.2), (1, 6, 0.4))]
    rows.append({**base, "seed": 0, "components": None, "method": "Leiden, resolution 1 (x)",
                 "clusters": 8, "ari": 0.3, "nmi": 0.6})
    text = script.report(rows, "note")
    assert "| CMVAE mixture, selected | 10 | 5.0 | 0.300 ± 0.141 | 0.500 ± 0.000 |" in text
    assert "| Leiden, resolution 1 (x) | - | 8.0 | 0.300 | 0.600 |" in text
    assert "seeds [0, 1]" in text


@pytest.mark.realdata
def test_cmvae_clusters_match_the_cell_types_of_a_real_mosaic():
    """600 cells of the PBMC mosaic (300 paired, 150 RNA-only, 150 ADT-only; 8 cell types):
    the selected clusters agree with the cell types, for the cells lacking a modality too
    (seeds 0/1/2: 6/5/4 clusters, ARI 0.79/0.66/0.67, on the unpaired cells 0.76/0.63/0.62;
    trained 50 epochs instead of 150: 2/2/3 clusters, ARI 0.08/0.40/0.46)."""
    from sklearn.metrics import adjusted_rand_score

    shared_file("quickstart_pbmc_mosaic")
    mdata = omnivae.datasets.load("quickstart_pbmc_mosaic", download=False)
    names = mdata.obs_names
    rna, adt = names.isin(mdata["rna"].obs_names), names.isin(mdata["adt"].obs_names)
    rng = np.random.default_rng(0)
    pick = np.concatenate([rng.choice(np.where(a)[0], k, replace=False)
                           for a, k in ((rna & adt, 300), (rna & ~adt, 150), (~rna & adt, 150))])
    data = mdata[names[np.sort(pick)]].copy()
    model = omnivae.Model(data, model="cmvae", batch_key="batch", seed=0,
                          model_options={"n_samples": 2})
    model.train(150, progress_bar=False, batch_probe_every=0)
    omnivae.tl.cluster(data, model)
    types = data.obs["celltype"].astype(str).to_numpy()
    clusters = data.obs["omnivae_cluster"].astype(str).to_numpy()
    unpaired = ~(rna & adt)[np.sort(pick)]
    assert 3 <= data.uns["omnivae_cluster"]["n_clusters"] <= 10
    assert adjusted_rand_score(types, clusters) > 0.5
    assert adjusted_rand_score(types[unpaired], clusters[unpaired]) > 0.45
