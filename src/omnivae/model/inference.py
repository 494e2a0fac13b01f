"""The minibatch loops behind :meth:`omnivae.Model.get_latent_representation`,
:meth:`omnivae.Model.predict` and :func:`omnivae.tl.cluster`: the joint latent's posterior
mean, a modality's normalised prediction as AnnData, and each modality encoder's posterior
mean."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import torch

from omnivae.data.setup import SetupInfo
from omnivae.model.prediction.shrinkage import Shrinkage
from omnivae.module.records import BatchData
from omnivae.module.vae import MultimodalVAE
from omnivae.train.threads import pinned_threads


def device_batches(module: MultimodalVAE, data: Any, batch_size: int) -> Iterator[BatchData]:
    """``data``'s cells in order, ``batch_size`` at a time, on ``module``'s device.

    Examples
    --------
    >>> import omnivae
    >>> model = omnivae.Model(omnivae.datasets.simulate(60, modalities=("rna",)), n_latent=4)
    >>> [len(b.mask) for b in device_batches(model.module, model.cells, 25)]
    [25, 25, 10]
    """
    device = _device(module)
    for start in range(0, data.n_cells, batch_size):
        yield data.batch(np.arange(start, min(start + batch_size, data.n_cells))).to(device)


@torch.no_grad()
def latent_mean(module: MultimodalVAE, data: Any, *, batch_size: int,
                num_threads: int | None) -> np.ndarray:
    """Posterior mean of the joint latent for every cell of ``data``, ``(n_cells, n_latent)``,
    ``batch_size`` cells per forward pass with torch on ``num_threads`` threads
    (:func:`~omnivae.train.threads.pinned_threads`).

    Examples
    --------
    >>> import omnivae
    >>> model = omnivae.Model(omnivae.datasets.simulate(60, modalities=("rna",)), n_latent=4)
    >>> latent_mean(model.module, model.cells, batch_size=16, num_threads=1).shape
    (60, 4)
    """
    module.eval()
    out = []
    with pinned_threads(num_threads):
        for batch in device_batches(module, data, batch_size):
            out.append(module.posterior(batch).mean.cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def modality_latent_means(module: MultimodalVAE, data: Any, *, batch_size: int,
                          num_threads: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each modality encoder's posterior mean for every cell of ``data``, ``(M, n, d)``, and
    which cells have each modality, ``(M, n)`` boolean (rows of missing modalities are zero).

    Examples
    --------
    >>> import omnivae
    >>> model = omnivae.Model(omnivae.datasets.simulate(60, modalities=("rna", "adt")),
    ...                       n_latent=4)
    >>> loc, observed = modality_latent_means(model.module, model.cells, batch_size=16,
    ...                                       num_threads=1)
    >>> tuple(loc.shape), tuple(observed.shape)
    ((2, 60, 4), (2, 60))
    >>> bool((loc[~observed] == 0).all())   # the simulation's cells lacking a modality
    True
    """
    module.eval()
    locs, masks = [], []
    with pinned_threads(num_threads):
        for batch in device_batches(module, data, batch_size):
            loc, _ = module.experts(batch)
            locs.append(loc.cpu())
            masks.append(batch.mask.T.cpu())
    return torch.cat(locs, dim=1), torch.cat(masks, dim=1)


@torch.no_grad()
def predicted_modality(module: MultimodalVAE, data: Any, setup: SetupInfo, target: str, *,
                       obs_names: pd.Index, n_samples: int, batch_size: int,
                       seed: int, shrinkage: Shrinkage | None = None) -> ad.AnnData:
    """Modality ``target`` predicted for every cell of ``data`` (rows named ``obs_names``) as
    normalised expression; with ``n_samples > 0`` the mean of that many posterior draws and
    their standard deviation in ``layers["std"]`` (see :meth:`omnivae.Model.predict`). The
    rows predicted from other modalities are shrunk by ``shrinkage`` when given
    (:meth:`~omnivae.model.prediction.shrinkage.Shrinkage.apply_cross_modal`); its weight (1 without) is
    ``uns["omnivae"]["shrinkage_weight"]``.

    Examples
    --------
    >>> import omnivae
    >>> sim = omnivae.datasets.simulate(60, modalities=("rna", "adt"))
    >>> model = omnivae.Model(sim, n_latent=4)
    >>> pred = predicted_modality(model.module, model.cells, model.setup, "adt",
    ...                           obs_names=sim.obs_names, n_samples=3, batch_size=32, seed=0)
    >>> pred.shape == (60, sim["adt"].n_vars), sorted(k for k in pred.layers if k)
    (True, ['std'])
    >>> pred.uns["omnivae"]["shrinkage_weight"]
    1.0
    """
    module.eval()
    generator = torch.Generator(device=_device(module)).manual_seed(seed)
    means, stds = [], []
    for batch in device_batches(module, data, batch_size):
        mean, std = module.predict_normalized(batch, target, n_samples, generator)
        means.append(mean.cpu())
        if std is not None:
            stds.append(std.cpu())
    t = setup.modalities.index(target)
    obs = pd.DataFrame({"observed": data.mask[:, t]}, index=obs_names.copy())
    result = ad.AnnData(
        X=torch.cat(means).numpy(), obs=obs,
        var=pd.DataFrame(index=pd.Index(setup.var_names[target])),
    )
    if stds:
        result.layers["std"] = torch.cat(stds).numpy()
    if shrinkage is not None:
        result.X, spread = shrinkage.apply_cross_modal(result.X, np.asarray(data.mask), t,
                                                       result.layers.get("std"))
        if spread is not None:
            result.layers["std"] = spread
    result.uns["omnivae"] = {"target": target, "n_samples": n_samples,
                             "normalization": "proportions summing to 1 per cell",
                             "shrinkage_weight": 1.0 if shrinkage is None else shrinkage.weight}
    return result


def _device(module: MultimodalVAE) -> torch.device:
    return next(module.parameters()).device
