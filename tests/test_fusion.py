"""Fusion closed forms: the prior is counted once, weights sum to one, masks are honoured."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from omnivae.module.fusion import fuse, fusion_subsets, product_of_experts


def test_poe_matches_closed_form_with_one_prior_expert():
    loc = torch.tensor([[[1.0]], [[3.0]]])  # two experts, one cell, d=1
    logvar = torch.log(torch.tensor([[[0.5]], [[0.25]]]))  # precisions 2 and 4
    q = product_of_experts(loc, logvar, torch.tensor([[True, True]]))
    # prior precision 1 + 2 + 4 = 7; mean (2*1 + 4*3) / 7
    assert torch.allclose(q.logvar.exp(), torch.tensor([[1 / 7]]))
    assert torch.allclose(q.loc, torch.tensor([[14 / 7]]))


def test_single_observed_expert_gives_prior_times_expert_not_prior_twice():
    loc, logvar = torch.tensor([[[2.0]], [[-5.0]]]), torch.zeros(2, 1, 1)
    q = product_of_experts(loc, logvar, torch.tensor([[True, False]]))
    assert torch.allclose(q.loc, torch.tensor([[1.0]]))  # (1 * 2) / (1 + 1)
    assert torch.allclose(q.logvar.exp(), torch.tensor([[0.5]]))


def test_no_expert_gives_the_prior():
    q = product_of_experts(torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.zeros(3, 2, dtype=torch.bool))
    assert torch.all(q.loc == 0) and torch.all(q.logvar == 0)


def test_subset_tables():
    assert fusion_subsets(3, "poe").tolist() == [[True, True, True]]
    assert fusion_subsets(3, "moe").sum().item() == 3
    assert fusion_subsets(3, "mopoe").shape == (7, 3)


def test_moe_components_are_the_unimodal_posteriors_and_skip_missing():
    loc, logvar = torch.randn(2, 2, 3), torch.randn(2, 2, 3)
    mask = torch.tensor([[True, True], [False, True]])
    mix = fuse(loc, logvar, mask, "moe")
    assert mix.weights.tolist() == [[0.5, 0.0], [0.5, 1.0]]
    single = product_of_experts(loc, logvar, torch.tensor([[True, False], [True, False]]))
    assert torch.allclose(mix.components.loc[0, 0], single.loc[0])
    # the second cell's embedding is its only available component
    assert torch.allclose(mix.mean[1], mix.components.loc[1, 1])


def test_mopoe_includes_the_full_product():
    loc, logvar = torch.randn(2, 1, 3), torch.randn(2, 1, 3)
    mix = fuse(loc, logvar, torch.tensor([[True, True]]), "mopoe")
    full = product_of_experts(loc, logvar, torch.tensor([[True, True]]))
    assert torch.allclose(mix.components.loc[2, 0], full.loc[0])
    assert torch.allclose(mix.weights[:, 0], torch.full((3,), 1 / 3))


@settings(max_examples=40, deadline=None)
@given(n_mod=st.integers(1, 4), n_cells=st.integers(1, 6), seed=st.integers(0, 10_000),
       fusion=st.sampled_from(["poe", "moe", "mopoe"]))
def test_weights_sum_to_one_and_precision_adds_up(n_mod, n_cells, seed, fusion):
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(n_mod, n_cells, 2, generator=g)
    logvar = torch.randn(n_mod, n_cells, 2, generator=g)
    mask = torch.rand(n_cells, n_mod, generator=g) > 0.4
    mask[:, 0] |= ~mask.any(1)  # every cell has data
    mix = fuse(loc, logvar, mask, fusion)
    assert torch.allclose(mix.weights.sum(0), torch.ones(n_cells))
    joint = product_of_experts(loc, logvar, mask)
    expected = 1 + (mask.T.unsqueeze(-1) * torch.exp(-logvar)).sum(0)
    assert torch.allclose(torch.exp(-joint.logvar), expected, rtol=1e-5)
    assert mix.sample(torch.Generator().manual_seed(0)).shape == (n_cells, 2)
