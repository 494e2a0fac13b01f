"""Every objective of the model family against an independent hand computation on a tiny
case (fixed weights and noise; each reference written from the paper's formula)."""

from __future__ import annotations

import math

import pytest
import torch

from omnivae.module.models import MODELS, OBJECTIVES
from tests.family_helpers import (
    COMPLETE,
    MOSAIC,
    NAMES,
    enc,
    fixed_noise,
    kl_gauss,
    kl_std,
    log_normal,
    make_batch,
    make_vae,
    nll,
    observed,
    poe,
)


def subsets_of(kind):
    return {"poe": None, "moe": [[0], [1]], "mopoe": [[0], [1], [0, 1]]}[kind]


def ref_mixture_elbo(vae, batch, beta, kind):
    n = batch.n_cells
    strata = ([(list(range(2)), c) for c in range(n)] if kind == "poe" else
              [(s, c) for s in subsets_of(kind) for c in range(n)
               if all(batch.mask[c, m] for m in s)])
    eps = fixed_noise((len(strata), 2), torch.zeros(1))
    total = torch.zeros(())
    for p, (s, c) in enumerate(strata):
        obs = observed(batch, c)
        experts = [enc(vae, NAMES[m], batch, [c]) for m in s if m in obs]
        mu, lv = poe(experts)
        z = mu + (0.5 * lv).exp() * eps[p]
        rec = sum(nll(vae, NAMES[m], z, batch, [c]) for m in obs)
        n_comp = sum(1 for s2, c2 in strata if c2 == c)
        total = total + (rec + beta * kl_std(mu, lv)).sum() / n_comp
    return total / n


def ref_mvae(vae, batch, beta):
    n = batch.n_cells
    terms = [[(observed(batch, c), c) for c in range(n)]]
    for m in range(2):
        terms.append([([m], c) for c in range(n) if batch.mask[c, m] and len(observed(batch, c)) > 1])
    total = torch.zeros(())
    for term in terms:
        if not term:
            continue
        eps = fixed_noise((len(term), 2), torch.zeros(1))
        for p, (s, c) in enumerate(term):
            mu, lv = poe([enc(vae, NAMES[m], batch, [c]) for m in s])
            z = mu + (0.5 * lv).exp() * eps[p]
            rec = sum(nll(vae, NAMES[m], z, batch, [c]) for m in s)
            total = total + (rec + beta * kl_std(mu, lv)).sum()
    return total / n


def ref_mmvae(vae, batch, beta, k):
    n = batch.n_cells
    strata = [(m, c) for m in range(2) for c in range(n) if batch.mask[c, m]]
    eps = fixed_noise((k, len(strata), 2), torch.zeros(1))
    total = torch.zeros(())
    for p, (m, c) in enumerate(strata):
        obs = observed(batch, c)
        unimodal = {j: poe([enc(vae, NAMES[j], batch, [c])]) for j in obs}
        lws = []
        for i in range(k):
            z = unimodal[m][0] + (0.5 * unimodal[m][1]).exp() * eps[i, p]
            log_q = torch.logsumexp(torch.stack([log_normal(z, *unimodal[j]) for j in obs]), 0)
            log_q = log_q - math.log(len(obs))
            log_p = log_normal(z, torch.zeros_like(z), torch.zeros_like(z))
            lws.append(-sum(nll(vae, NAMES[j], z, batch, [c]) for j in obs)
                       + beta * (log_p - log_q))
        bound = torch.logsumexp(torch.stack(lws), 0) - math.log(k)
        total = total - bound.sum() / len(obs)
    return total / n


def ref_mvtcae(vae, batch, beta, alpha=0.9, weight=1.0):
    n = batch.n_cells
    eps = fixed_noise((n, 2), torch.zeros(1))
    total = torch.zeros(())
    for c in range(n):
        obs = observed(batch, c)
        experts = {m: enc(vae, NAMES[m], batch, [c]) for m in obs}
        joint = poe(list(experts.values()))
        z = joint[0] + (0.5 * joint[1]).exp() * eps[c]
        rec = sum(nll(vae, NAMES[m], z, batch, [c]) for m in obs)
        kls = sum(kl_gauss(joint, poe([experts[m]])) for m in obs)
        k = len(obs)
        total = total + ((k - alpha) / k * rec
                         + beta * weight * ((1 - alpha) * kl_std(*joint) + alpha / k * kls)).sum()
    return total / n


def ref_jmvae(vae, batch, beta, alpha=0.1):
    q = vae.objective.joint_encoder(batch)
    z = q.loc + q.scale * fixed_noise(tuple(q.loc.shape), q.loc)
    cells = list(range(batch.n_cells))
    rec = sum(nll(vae, name, z, batch, cells) for name in NAMES)
    align = sum(kl_gauss((q.loc, q.logvar), poe([enc(vae, name, batch, cells)])) for name in NAMES)
    return (rec + beta * (kl_std(q.loc, q.logvar) + alpha * align)).mean()


def ref_early(vae, batch, beta):
    q = vae.objective.encoder(batch)
    z = q.loc + q.scale * fixed_noise(tuple(q.loc.shape), q.loc)
    total = kl_std(q.loc, q.logvar) * beta
    for m, name in enumerate(NAMES):
        rows = batch.mask[:, m].nonzero(as_tuple=True)[0].tolist()
        total = total.index_add(0, torch.tensor(rows), nll(vae, name, z[rows], batch, rows))
    return total.mean()


def standard_log_prior(vae, z):
    return log_normal(z, torch.zeros_like(z), torch.zeros_like(z))


def cluster_log_prior(vae, z):
    """The paper's explicit expectation over q(c|z) = p(c)p(z|c) / Σ_c' p(c')p(z|c')."""
    obj = vae.objective
    log_pc = torch.log(torch.softmax(obj.cluster_logits, 0))
    log_pz_c = torch.stack([log_normal(z, mu, torch.zeros_like(mu)) for mu in obj.cluster_means])
    joint = log_pc[:, None] + log_pz_c  # (C, 1)
    q_c = joint.exp() / joint.exp().sum(0)
    return (q_c * (joint - q_c.log())).sum(0)


def ref_mmvae_plus(vae, batch, beta, k=2, d_w=2, log_prior_z=standard_log_prior):
    n, obj = batch.n_cells, vae.objective
    strata = [(m, c) for m in range(2) for c in range(n) if batch.mask[c, m]]
    eps_z = fixed_noise((k, len(strata), 2), torch.zeros(1))
    eps_w = fixed_noise((k, len(strata), d_w), torch.zeros(1))
    aux = {}
    for j in range(2):
        rows = [p for p, (_, c) in enumerate(strata) if batch.mask[c, j]]
        noise = fixed_noise((k, len(rows), d_w), torch.zeros(1))
        aux[j] = {p: obj.auxiliary_log_scale[j].exp() * noise[:, r] for r, p in enumerate(rows)}
    total = torch.zeros(())
    for p, (m, c) in enumerate(strata):
        obs = observed(batch, c)
        unimodal = {j: poe([enc(vae, NAMES[j], batch, [c])]) for j in obs}
        w_mu, w_lv = obj.private_encoders[NAMES[m]](batch.counts[NAMES[m]][[c]],
                                                    batch.library[NAMES[m]][[c]])
        lws = []
        for i in range(k):
            z = unimodal[m][0] + (0.5 * unimodal[m][1]).exp() * eps_z[i, p]
            w = w_mu + (0.5 * w_lv).exp() * eps_w[i, p]
            log_px = sum(-nll(vae, NAMES[j], torch.cat([z, w if j == m else aux[j][p][i:i + 1]], -1),
                              batch, [c]) for j in obs)
            log_q = torch.logsumexp(torch.stack([log_normal(z, *unimodal[j]) for j in obs]), 0)
            log_q = log_q - math.log(len(obs))
            log_prior = log_prior_z(vae, z) + log_normal(w, torch.zeros_like(w),
                                                         torch.zeros_like(w))
            lws.append(log_px + beta * (log_prior - log_q - log_normal(w, w_mu, w_lv)))
        bound = torch.logsumexp(torch.stack(lws), 0) - math.log(k)
        total = total - bound.sum() / len(obs)
    return total / n


def ref_crmvae(vae, batch, beta):
    n, n_mod = batch.n_cells, 2
    eps_joint = fixed_noise((n, 2), torch.zeros(1))
    eps = {m: fixed_noise((int(batch.mask[:, m].sum()), 2), torch.zeros(1)) for m in range(2)}
    total = torch.zeros(())
    for c in range(n):
        obs = observed(batch, c)
        experts = {m: enc(vae, NAMES[m], batch, [c]) for m in obs}
        joint = poe(list(experts.values()))
        z = joint[0] + (0.5 * joint[1]).exp() * eps_joint[c]
        rec = sum(nll(vae, NAMES[m], z, batch, [c]) for m in obs)
        kl = kl_std(*joint)
        for m in obs:
            q_m = poe([experts[m]])
            row = int(batch.mask[:c, m].sum())  # position of cell c among the cells with m
            rec = rec + nll(vae, NAMES[m], q_m[0] + (0.5 * q_m[1]).exp() * eps[m][row], batch, [c])
            kl = kl + kl_gauss(joint, q_m)
        total = total + (rec / (2 * (n_mod + 1)) + beta * kl / (n_mod + 1)).sum()
    return total / n


def ref_dmvae(vae, batch, beta, d_w=4):
    n, obj = batch.n_cells, vae.objective
    private = {m: obj.private_encoders[NAMES[m]](batch.counts[NAMES[m]], batch.library[NAMES[m]])
               for m in range(2)}
    terms = [[(observed(batch, c), c) for c in range(n)]]
    for m in range(2):
        terms.append([([m], c) for c in range(n) if batch.mask[c, m] and len(observed(batch, c)) > 1])
    total = torch.zeros(())
    for term in terms:
        if not term:
            continue
        eps_z = fixed_noise((len(term), 2), torch.zeros(1))
        eps_w = {k: fixed_noise((sum(1 for _, c in term if batch.mask[c, k]), d_w), torch.zeros(1))
                 for k in range(2) if batch.mask[:, k].any()}
        for p, (s, c) in enumerate(term):
            q = poe([enc(vae, NAMES[m], batch, [c]) for m in s])
            z = q[0] + (0.5 * q[1]).exp() * eps_z[p]
            value = beta * kl_std(*q)
            for k in observed(batch, c):
                mu, lv = private[k][0][c:c + 1], private[k][1][c:c + 1]
                row = sum(1 for _, c2 in term[:p] if batch.mask[c2, k])
                w = mu + (0.5 * lv).exp() * eps_w[k][row]
                value = value + nll(vae, NAMES[k], torch.cat([z, w], -1), batch, [c])
                value = value + beta * kl_std(mu, lv)
            total = total + value.sum()
    return total / n


def ref_telbo(vae, batch, beta):
    n = batch.n_cells
    complete = [c for c in range(n) if len(observed(batch, c)) == 2]
    total = torch.zeros(())
    if complete:
        q = vae.objective.joint_encoder(batch)
        eps = fixed_noise((len(complete), 2), torch.zeros(1))
        for p, c in enumerate(complete):
            mu, lv = q.loc[c:c + 1], q.logvar[c:c + 1]
            z = mu + (0.5 * lv).exp() * eps[p]
            rec = sum(nll(vae, name, z, batch, [c]) for name in NAMES)
            total = total + (rec + beta * kl_std(mu, lv)).sum()
    for m in range(2):
        cells = [c for c in range(n) if batch.mask[c, m]]
        eps = fixed_noise((len(cells), 2), torch.zeros(1))
        for p, c in enumerate(cells):
            mu, lv = poe([enc(vae, NAMES[m], batch, [c])])
            z = mu + (0.5 * lv).exp() * eps[p]
            total = total + (nll(vae, NAMES[m], z, batch, [c]) + beta * kl_std(mu, lv)).sum()
    return total / n


def inverse_coupling(layer, z):
    """z0 and log|det dz0/dz| of one affine coupling layer, from its parts."""
    kept = z * layer.mask
    log_scale, shift = layer.net(kept).chunk(2, dim=-1)
    log_scale = torch.tanh(log_scale) * (1 - layer.mask)
    shift = shift * (1 - layer.mask)
    return (z - shift) * torch.exp(-log_scale), -log_scale.sum(-1)


def ref_jnf(vae, batch, beta):
    q = vae.objective.joint_encoder(batch)
    z = q.loc + q.scale * fixed_noise(tuple(q.loc.shape), q.loc)
    cells = list(range(batch.n_cells))
    rec = sum(nll(vae, name, z, batch, cells) for name in NAMES)
    fit = torch.zeros(batch.n_cells)
    for name in NAMES:
        mu, lv = enc(vae, name, batch, cells)
        z0, log_det = z, torch.zeros(batch.n_cells)
        for layer in reversed(vae.objective.flows[name].layers):
            z0, step = inverse_coupling(layer, z0)
            log_det = log_det + step
        fit = fit - (log_normal(z0, mu, lv) + log_det)
    return (rec + beta * kl_std(q.loc, q.logvar) + fit).mean()


def ref_nexus(vae, batch, beta, adapt=False):
    n, obj = batch.n_cells, vae.objective
    bottom, total = {}, torch.zeros(n)
    for m, name in enumerate(NAMES):
        cells = [c for c in range(n) if batch.mask[c, m]]
        mu, lv = enc(vae, name, batch, cells)
        z = mu + (0.5 * lv).exp() * fixed_noise(tuple(mu.shape), mu)
        total = total.index_add(0, torch.tensor(cells),
                                nll(vae, name, z, batch, cells) + beta * kl_std(mu, lv))
        bottom[m] = dict(zip(cells, z, strict=True))
    messages = torch.stack([
        sum(obj.message_encoders[NAMES[m]](bottom[m][c][None]) for m in observed(batch, c))
        / len(observed(batch, c)) for c in range(n)])[:, 0]
    q = obj.nexus_encoder(messages)
    z_top = q.loc + q.scale * fixed_noise(tuple(q.loc.shape), q.loc)
    means = {(c, m): obj.top_decoders[NAMES[m]](z_top[c:c + 1])
             for c in range(n) for m in observed(batch, c)}
    log_variance = {m: torch.zeros(()) for m in range(len(NAMES))}
    if adapt:  # each modality's mean squared residual over its cells and units
        for m in range(len(NAMES)):
            residuals = [bottom[m][c][None] - means[c, m] for c in bottom[m]]
            log_variance[m] = torch.cat(residuals).pow(2).mean().log()
    for (c, m), mean in means.items():
        total[c] = total[c] - obj.options.gamma * log_normal(
            bottom[m][c][None], mean, log_variance[m].expand_as(mean))[0]
    return (total + beta * kl_std(q.loc, q.logvar)).mean()


def ref_mhvae(vae, batch, beta, n_bottom=8):
    n, obj = batch.n_cells, vae.objective
    eps_z = fixed_noise((n, 2), torch.zeros(1))
    eps_u = fixed_noise((n, n_bottom), torch.zeros(1))
    total = torch.zeros(())
    for c in range(n):
        obs = observed(batch, c)
        top = poe([enc(vae, NAMES[m], batch, [c]) for m in obs])
        z = top[0] + (0.5 * top[1]).exp() * eps_z[c]
        prior = obj.bottom_prior(z)
        precision = (-prior.logvar).exp()
        weighted = precision * prior.loc
        for m in obs:
            e = obj.bottom_experts[NAMES[m]](batch.counts[NAMES[m]][[c]],
                                             batch.library[NAMES[m]][[c]], z)
            precision = precision + (-e.logvar).exp()
            weighted = weighted + (-e.logvar).exp() * e.loc
        q_u = (weighted / precision, -precision.log())
        u = q_u[0] + (0.5 * q_u[1]).exp() * eps_u[c]
        rec = sum(nll(vae, NAMES[m], torch.cat([z, u], -1), batch, [c]) for m in obs)
        kl = kl_std(*top) + kl_gauss(q_u, (prior.loc, prior.logvar))
        total = total + (rec + beta * kl).sum()
    return total / n


REFERENCES = {
    "elbo": lambda vae, b, beta: ref_mixture_elbo(vae, b, beta, "moe"),
    "mopoe": lambda vae, b, beta: ref_mixture_elbo(vae, b, beta, "mopoe"),
    "mvae": ref_mvae,
    "mmvae": lambda vae, b, beta: ref_mmvae(vae, b, beta, k=3),
    "mvtcae": ref_mvtcae,
    "mmvae+": ref_mmvae_plus,
    "jmvae": ref_jmvae,
    "dmvae": ref_dmvae,
    "crmvae": ref_crmvae,
    "telbo": ref_telbo,
    "jnf": ref_jnf,
    "nexus": ref_nexus,
    "mhvae": ref_mhvae,
    "cmvae": lambda vae, b, beta: ref_mmvae_plus(vae, b, beta, log_prior_z=cluster_log_prior),
    "early": ref_early,
}


def test_every_registered_model_has_a_hand_computed_reference():
    assert set(REFERENCES) == set(MODELS)


@pytest.mark.parametrize("model", MODELS)
def test_objective_matches_hand_computed_value(model):
    fusion = "moe" if model == "elbo" else None
    vae = make_vae(model, fusion=fusion)
    if model in ("mmvae+", "cmvae"):
        with torch.no_grad():
            vae.objective.auxiliary_log_scale.copy_(torch.tensor([[0.2, -0.3], [0.4, 0.1]]))
    if model == "jnf":  # move the flows away from their identity initialisation
        with torch.no_grad():
            for p in vae.objective.flows.parameters():
                p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(7)))
    vae.objective.noise = fixed_noise  # type: ignore[method-assign]
    complete = OBJECTIVES[model].needs_complete_cells
    batch = make_batch(COMPLETE if complete else [*MOSAIC, [True, True]], seed=3)
    with torch.no_grad():
        record = vae.loss(batch, kl_weight=0.7)
        expected = REFERENCES[model](vae, batch, 0.7)
        expected_at_one = REFERENCES[model](vae, batch, 1.0)
    torch.testing.assert_close(record.loss, expected.reshape(()), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(record.elbo, expected_at_one.reshape(()), rtol=1e-5, atol=1e-4)


def test_nexus_adapted_top_variance_matches_hand_computed_value():
    vae = make_vae("nexus", {"adapt_top_variance": True})
    vae.objective.noise = fixed_noise  # type: ignore[method-assign]
    batch = make_batch([*MOSAIC, [True, True]], seed=5)
    with torch.no_grad():
        record = vae.loss(batch, kl_weight=0.4)
        torch.testing.assert_close(record.loss, ref_nexus(vae, batch, 0.4, adapt=True),
                                   rtol=1e-5, atol=1e-4)
        unit = ref_nexus(vae, batch, 0.4)
    assert abs(float(record.loss - unit)) > 1e-2  # the option changes the objective


def test_poe_elbo_reference_too():
    vae = make_vae("elbo", fusion="poe")
    vae.objective.noise = fixed_noise  # type: ignore[method-assign]
    batch = make_batch(MOSAIC, seed=4)
    with torch.no_grad():
        torch.testing.assert_close(vae.loss(batch, kl_weight=0.3).loss,
                                   ref_mixture_elbo(vae, batch, 0.3, "poe"), rtol=1e-5, atol=1e-4)
