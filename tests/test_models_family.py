"""The model family at the module level: finite losses, zero gradient for missing modalities,
and every objective against an independent hand computation on a tiny case."""

from __future__ import annotations

import math

import pytest
import torch

from omnivae._types import BatchData
from omnivae.models import MODELS, OBJECTIVES, resolve_model
from omnivae.module import ModalitySpec, ModuleConfig, MultimodalVAE

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
def enc(vae, name, batch, cells):
    return vae.encoders[name](batch.counts[name][cells], batch.library[name][cells])


def poe(experts):
    """Product of N(0, I) and the Gaussian experts [(loc, logvar), ...]."""
    precision = 1 + sum(torch.exp(-lv) for _, lv in experts)
    loc = sum(torch.exp(-lv) * mu for mu, lv in experts) / precision
    return loc, -torch.log(precision)


def nll(vae, name, z, batch, cells, z_dim_extra=None):
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


def ref_nexus(vae, batch, beta):
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
    for c in range(n):
        for m in observed(batch, c):
            mean = obj.top_decoders[NAMES[m]](z_top[c:c + 1])
            total[c] = total[c] - log_normal(bottom[m][c][None], mean, torch.zeros_like(mean))[0]
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


def test_poe_elbo_reference_too():
    vae = make_vae("elbo", fusion="poe")
    vae.objective.noise = fixed_noise  # type: ignore[method-assign]
    batch = make_batch(MOSAIC, seed=4)
    with torch.no_grad():
        torch.testing.assert_close(vae.loss(batch, kl_weight=0.3).loss,
                                   ref_mixture_elbo(vae, batch, 0.3, "poe"), rtol=1e-5, atol=1e-4)


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
    from omnivae._types import Gaussian
    from omnivae.models.jnf import Flow

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
