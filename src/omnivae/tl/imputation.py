"""``omnivae.tl.predict``: a modality for every cell, as a MuData modality (or ``obsm``
DataFrames of an AnnData), with intervals."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from omnivae.data.setup import refresh
from omnivae.model.inference import device_batches
from omnivae.module.sampling import sample_normalized

if TYPE_CHECKING:
    from omnivae.model.model import Model


def predict(
    mdata: md.MuData | ad.AnnData,
    model: Model,
    *,
    target: str,
    n_samples: int = 0,
    interval: float | None = None,
    predictive: bool = False,
    key_added: str | None = None,
    batch_size: int = 1024,
    seed: int = 0,
    copy: bool = False,
) -> md.MuData | ad.AnnData | None:
    """Predict modality ``target`` for every cell and add it as modality ``key_added``
    (to a MuData) or as ``obsm`` entries (to an AnnData).

    Parameters
    ----------
    mdata
        The cells (those the model was trained on, or new ones with the same features): a
        MuData, or an AnnData read as the model's training AnnData was (``protein_key`` ...).
    model
        A trained :class:`omnivae.Model` (or a query model from reference mapping).
    target
        The modality to predict.
    n_samples
        0 decodes the posterior mean; ``n > 0`` averages ``n`` posterior draws and adds their
        standard deviation as ``layers["std"]``.
    interval
        E.g. ``0.9``: add ``layers["lower"]``/``layers["upper"]``, the 5 % and 95 % quantiles
        of the draws (needs ``n_samples > 0``; use at least ~50 for stable tails).
    predictive
        ``False`` (default): draws of the expression level (the model's uncertainty about the
        cell); ``True``: posterior predictive draws of counts at the modality's median depth,
        divided by it (adds counting noise: intervals for a new measurement of the cell).
        Cross-modal predictions are shrunk toward the population profile as
        :meth:`omnivae.Model.predict` does (:mod:`omnivae.model.prediction.shrinkage`), draw by draw; the
        count draws of ``predictive=True`` are not.
    key_added
        Name of the new modality (default ``f"{target}_imputed"``); the parameters go to
        ``mdata.uns[key_added]["params"]``.
    batch_size, seed
        Cells per forward pass; seed of the draws.
    copy
        Return a modified copy instead of writing into ``mdata``.

    Returns
    -------
    ``None`` (or the copy). The new modality covers every cell of ``mdata``: ``X`` holds
    normalised expression (proportions summing to one per cell), ``obs["observed"]`` marks
    cells that measured ``target``; a cell that has ``target`` is predicted from its other
    modalities when it has any, so the prediction is a genuine cross-modal one.

    For an AnnData the same arrays go to ``obsm`` as DataFrames (cells by ``target``'s
    feature names): ``obsm[key_added]`` (the proportions), and with draws
    ``obsm[f"{key_added}_std"]``, ``obsm[f"{key_added}_lower"]``,
    ``obsm[f"{key_added}_upper"]`` (entries of an earlier call that this one does not make
    are removed); the cells that measured ``target`` are those the AnnData holds it for.

    Examples
    --------
    >>> import omnivae
    >>> sim = omnivae.datasets.simulate(150, modalities=("rna", "adt"), seed=0)
    >>> model = omnivae.Model(sim, n_latent=4)
    >>> model.train(max_epochs=2, progress_bar=False)
    >>> omnivae.tl.predict(sim, model, target="adt", n_samples=20, interval=0.9)
    >>> imputed = sim["adt_imputed"]
    >>> imputed.n_obs == sim.n_obs, sorted(k for k in imputed.layers if k)
    (True, ['lower', 'std', 'upper'])
    >>> bool((imputed.layers["lower"] <= imputed.layers["upper"]).all())
    True

    An AnnData (RNA in ``X``, proteins in ``obsm``) gets ``obsm`` DataFrames:

    >>> adata = sim["rna"].copy()   # e.g. cells measured without protein
    >>> omnivae.tl.predict(adata, model, target="adt", n_samples=5)
    >>> list(adata.obsm["adt_imputed"].columns) == list(sim["adt"].var_names)
    True
    >>> sorted(k for k in adata.obsm if k.startswith("adt_imputed"))
    ['adt_imputed', 'adt_imputed_std']
    """
    if interval is not None and not (0.0 < interval < 1.0 and n_samples > 0):
        raise ValueError(f"interval={interval} needs 0 < interval < 1 and n_samples > 0 "
                         "(e.g. interval=0.9, n_samples=100).")
    if predictive and n_samples <= 0:
        raise ValueError("predictive=True needs n_samples > 0.")
    out = mdata.copy() if copy else mdata
    key = key_added or f"{target}_imputed"
    result = model.predict(target, mdata=out, n_samples=0, batch_size=batch_size)
    if n_samples > 0:
        data = model.cell_data(out)
        module = model.module.eval()
        device = model.device
        generator = torch.Generator(device=device).manual_seed(seed)
        levels = [] if interval is None else [(1 - interval) / 2, (1 + interval) / 2]
        stats: dict[str, list[np.ndarray]] = {"mean": [], "std": [], "lower": [], "upper": []}
        # count draws (predictive=True) are not shrunk; expression draws are, like Model.predict
        shrinkage = None if predictive else model.shrinkage.get(target)
        t = model.setup.modalities.index(target)
        for batch in device_batches(module, data, batch_size):
            draws = sample_normalized(module, batch, target, n_samples,
                                      predictive=predictive, generator=generator)
            if shrinkage is not None:  # draw by draw
                shrunk, _ = shrinkage.apply_cross_modal(draws.cpu().numpy(),
                                                       batch.mask.cpu().numpy(), t)
                draws = torch.from_numpy(shrunk).to(device)
            stats["mean"].append(draws.mean(0).cpu().numpy())
            stats["std"].append(draws.std(0).cpu().numpy())
            if levels:
                q = torch.quantile(draws, torch.tensor(levels, device=device), dim=0)
                stats["lower"].append(q[0].cpu().numpy())
                stats["upper"].append(q[1].cpu().numpy())
        result.X = np.concatenate(stats["mean"])
        for name in ("std", "lower", "upper"):
            if stats[name]:
                result.layers[name] = np.concatenate(stats[name])
    if isinstance(out, ad.AnnData):
        _write_obsm(out, key, result)
    else:
        out.mod[key] = result
        refresh(out)  # the imputed modality shares the target's feature names: no warning
    out.uns[key] = {"params": {
        "target": target, "n_samples": n_samples, "interval": interval or 0.0,
        "predictive": predictive, "seed": seed,
        "normalization": "proportions summing to 1 per cell"}}
    return out if copy else None


def _write_obsm(adata: ad.AnnData, key: str, result: ad.AnnData) -> None:
    """``result``'s ``X`` and its layers ``std``, ``lower``, ``upper`` as DataFrames in
    ``adata.obsm`` (``key``, ``f"{key}_std"``, ...); stale ones of an earlier call go."""
    columns = pd.Index([str(v) for v in result.var_names])
    arrays = {key: result.X, **{f"{key}_{name}": result.layers.get(name)
                                 for name in ("std", "lower", "upper")}}
    for name, values in arrays.items():
        if values is None:
            adata.obsm.pop(name, None)
            continue
        dense = values.toarray() if sp.issparse(values) else np.asarray(values)
        adata.obsm[name] = pd.DataFrame(dense, index=adata.obs_names, columns=columns)
