"""Posterior-collapse diagnostics of a trained model, with warnings (MuData-facing).

What is measured (formulas in :mod:`omnivae.module.collapse`), one row per modality plus ``joint``:

* ``kl``: KL of the modality's unimodal posterior to the prior (the joint row: of the fused
  posterior), nats per cell;
* ``active_units``: latent units whose posterior mean varies across cells (Burda et al.);
* ``precision_share``: the modality's share of the product-of-experts precision in cells that
  have every modality (joint row: the prior expert's share);
* ``decoder_gain``: how much the modality's decoder uses z: the mean increase of its negative
  log-likelihood per cell when every cell's z is replaced by another cell's (same batch and
  depth kept), relative to the shuffled value. Near 0: the decoder ignores the latent.

Warnings (``warnings.warn``, category :class:`PosteriorCollapseWarning`) are raised when a
decoder ignores the latent (``decoder_gain`` < :data:`MIN_DECODER_GAIN`), when a modality is
ignored by the joint posterior (``precision_share`` < :data:`MIN_PRECISION_SHARE`), or when no
latent unit is active. The same quantities are logged every epoch during training
(``model.history["validation_kl_<m>"]``, ``..._precision_share_<m>``, ``..._active_units``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from omnivae.data.backed import BackedCellData
from omnivae.data.cells import CellData
from omnivae.model.inference import device_batches
from omnivae.module.collapse import (
    active_units,
    cell_precision_shares,
    precision_shares,
    unimodal_posteriors,
)
from omnivae.module.records import BatchData
from omnivae.module.vae import MultimodalVAE

MIN_DECODER_GAIN = 0.005  # relative NLL increase when z is shuffled
MIN_PRECISION_SHARE = 0.02


class PosteriorCollapseWarning(UserWarning):
    """A decoder ignores the latent, or the joint posterior ignores a modality."""


@torch.no_grad()
def diagnostics(module: MultimodalVAE, data: CellData | BackedCellData, *, warn: bool = True,
                batch_size: int = 1024, seed: int = 0) -> pd.DataFrame:
    """Per-modality KL, active units, precision share and decoder use of the latent.

    Parameters
    ----------
    module
        A (trained) network, e.g. ``model.module``.
    data
        The cells to measure on, e.g. ``model.cell_data(mdata)`` (``model.cells``: the
        training cells; :meth:`omnivae.Model.diagnostics` passes these).
    warn
        Raise :class:`PosteriorCollapseWarning` for the failures listed in the module doc.
    batch_size
        Cells per forward pass.
    seed
        Seed of the shuffle and of the KL's Monte Carlo draw (learned priors).

    Returns
    -------
    DataFrame indexed by modality (and ``"joint"``) with columns ``kl``, ``active_units``,
    ``precision_share``, ``decoder_gain``, ``n_cells``; ``attrs["warnings"]`` lists the
    messages.

    Examples
    --------
    >>> import omnivae
    >>> sim = omnivae.datasets.simulate(120, modalities=("rna", "adt"), seed=0)
    >>> model = omnivae.Model(sim, n_latent=4)
    >>> model.train(max_epochs=2, progress_bar=False)
    >>> list(diagnostics(model.module, model.cells, warn=False).index)
    ['rna', 'adt', 'joint']
    """
    names = module.config.names
    module.eval()
    torch.manual_seed(seed)
    generator = np.random.default_rng(seed)
    locs, logvars, masks, joint_locs = [], [], [], []
    nll = {m: [0.0, 0.0] for m in names}  # [own z, shuffled z]
    kl_sum = dict.fromkeys([*names, "joint"], 0.0)
    for batch in device_batches(module, data, batch_size):
        loc, logvar = module.experts(batch)
        joint = module.posterior(batch)
        z = joint.mean
        locs.append(loc.cpu())
        logvars.append(logvar.cpu())
        masks.append(batch.mask.cpu())
        joint_locs.append(z.cpu())
        q = joint.components
        k_kl = module.prior.kl(q, q.rsample())  # (K, n)
        kl_sum["joint"] += float((joint.weights * k_kl).sum())
        unimodal = unimodal_posteriors(loc, logvar)
        for m, name in enumerate(names):
            has = batch.mask[:, m]
            if not bool(has.any()):
                continue
            q_m = type(q)(unimodal.loc[m, has], unimodal.logvar[m, has])
            kl_sum[name] += float(module.prior.kl(q_m, q_m.rsample()).sum())
            nll[name][0] += _nll(module, batch, name, has, z)
            other = z[torch.as_tensor(generator.permutation(len(z)))]
            nll[name][1] += _nll(module, batch, name, has, other)
    loc, logvar, mask = torch.cat(locs, 1), torch.cat(logvars, 1), torch.cat(masks)
    unimodal = unimodal_posteriors(loc, logvar)
    shares = precision_shares(logvar, mask).numpy()
    rows_out = {}
    for m, name in enumerate(names):
        n_m = int(mask[:, m].sum())
        own, shuffled = nll[name]
        rows_out[name] = {
            "kl": kl_sum[name] / max(n_m, 1),
            "active_units": active_units(unimodal.loc[m, mask[:, m]]),
            "precision_share": float(shares[m]),
            "decoder_gain": (shuffled - own) / abs(shuffled) if n_m else float("nan"),
            "n_cells": n_m,
        }
    rows_out["joint"] = {
        "kl": kl_sum["joint"] / data.n_cells,
        "active_units": active_units(torch.cat(joint_locs)),
        "precision_share": float(1.0 - np.nansum(shares)) if np.isfinite(shares).all()
        else float("nan"),
        "decoder_gain": float("nan"), "n_cells": data.n_cells,
    }
    table = pd.DataFrame.from_dict(rows_out, orient="index")
    table.index.name = "modality"
    table.attrs["warnings"] = _messages(table, names, module.config.n_latent)
    if warn:
        for message in table.attrs["warnings"]:
            warnings.warn(message, PosteriorCollapseWarning, stacklevel=2)
    return table


def _nll(module: torch.nn.Module, batch: BatchData, name: str, has: torch.Tensor,
         z: torch.Tensor) -> float:
    dist = module.decoder(name)(z[has], batch.batch_index[has], batch.library[name][has])  # type: ignore[operator]
    return float(-dist.log_prob(batch.counts[name][has]).sum())


def _messages(table: pd.DataFrame, names: tuple[str, ...], n_latent: int) -> list[str]:
    out = []
    for name in names:
        row = table.loc[name]
        if row["decoder_gain"] < MIN_DECODER_GAIN:
            out.append(
                f"The decoder of {name!r} ignores the latent: shuffling z across cells changes "
                f"its reconstruction by {100 * row['decoder_gain']:.2f}% (< "
                f"{100 * MIN_DECODER_GAIN:.1f}%). Posterior collapse: try a longer KL warm-up "
                f"(train(kl_warmup_epochs=...)), a smaller n_hidden/n_layers, or check that "
                f"{name!r} varies between cells."
            )
        if row["precision_share"] < MIN_PRECISION_SHARE:
            out.append(
                f"The joint posterior ignores {name!r}: it holds {100 * row['precision_share']:.1f}% "
                f"of the product-of-experts precision (< {100 * MIN_PRECISION_SHARE:.0f}%), so "
                f"the embedding is made from the other modalities. Check {name!r}'s counts and "
                f"likelihood, or use fusion='mopoe' / 'moe' so each modality must explain z alone."
            )
    if table.loc["joint", "active_units"] == 0:
        out.append(f"No latent unit is active (of {n_latent}): the posterior has collapsed "
                   "onto the prior for every cell.")
    return out


@torch.no_grad()
def modality_shares(module: MultimodalVAE, data: CellData | BackedCellData,
                    obs_names: Sequence[str], *, batch_size: int = 1024) -> pd.DataFrame:
    """Each modality's share of every cell's joint posterior (its share of the precision).

    Per cell and latent dimension, a modality's share is its expert's precision over the
    total precision of the product of the cell's experts and the prior,
    ``exp(-logvar_m) / (1 + Σ_k exp(-logvar_k))`` (modalities the cell lacks hold none),
    averaged over the dimensions; the ``prior`` column is the rest. A modality with a share
    near zero is ignored by the joint posterior of those cells. For models whose posterior is
    not fused from these experts (JMVAE's joint encoder for complete cells), the shares
    describe the unimodal experts.

    Parameters
    ----------
    module
        A network with one encoder per modality (the product/mixture-of-experts models),
        e.g. ``model.module``.
    data, obs_names
        The cells to measure and their names, e.g. ``model.cell_data(mdata)`` and
        ``mdata.obs_names``.
    batch_size
        Cells per forward pass.

    Returns
    -------
    DataFrame ``(n_cells, n_modalities + 1)`` indexed by cell, rows summing to one.

    Examples
    --------
    >>> import omnivae
    >>> sim = omnivae.datasets.simulate(80, modalities=("rna", "adt"), seed=0)
    >>> model = omnivae.Model(sim, n_latent=3)
    >>> shares = modality_shares(model.module, model.cells, sim.obs_names)
    >>> list(shares.columns), bool(abs(shares.sum(axis=1) - 1).max() < 1e-5)
    (['rna', 'adt', 'prior'], True)
    """
    if len(module.encoders) != len(module.config.names):
        raise ValueError(f"model={module.config.model!r} has no encoder per modality (it reads "
                         "them jointly), so its posterior has no per-modality shares.")
    module.eval()
    parts = []
    for batch in device_batches(module, data, batch_size):
        _, logvar = module.experts(batch)  # (M, n, d)
        parts.append(cell_precision_shares(logvar, batch.mask).T.cpu().numpy())  # (n, M)
    shares = np.concatenate(parts)
    table = pd.DataFrame(shares, columns=list(module.config.names), index=pd.Index(obs_names))
    table["prior"] = 1.0 - shares.sum(axis=1)
    return table
