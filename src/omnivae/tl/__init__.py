"""Scanpy-style functions: data object first, keyword-only options, results written into it.

The data object is a MuData or an AnnData (read by :func:`omnivae.data.inputs.as_mudata`:
RNA in ``X``, or ``X`` split by ``var["feature_types"]``, proteins in ``obsm[protein_key]``);
outputs go into it: ``obsm[key_added]`` for embeddings, and predictions as a modality of a
MuData or ``obsm`` DataFrames of an AnnData (:func:`predict`).
Parameters of each call are recorded in ``mdata.uns[key_added]["params"]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import mudata as md

from omnivae.data.inputs import InputOptions, as_mudata
from omnivae.model.model import Model, QueryModel
from omnivae.tl.clustering import cluster
from omnivae.tl.de import differential_expression
from omnivae.tl.embedding import umap
from omnivae.tl.imputation import predict
from omnivae.train.interrupts import TrainingInterrupted, TrainingTerminated

__all__ = ["cluster", "differential_expression", "impute", "integrate", "map_query", "predict",
           "umap"]


def integrate(
    mdata: md.MuData | ad.AnnData,
    *,
    protein_key: str | None = None,
    protein_names: Sequence[str] | None = None,
    feature_types: bool | Mapping[str, str] | None = None,
    modalities: Sequence[str] | None = None,
    batch_key: str | None = None,
    layer: str | Mapping[str, str | None] | None = None,
    likelihoods: Mapping[str, str] | None = None,
    model: str | None = None,
    fusion: str | None = None,
    n_latent: int = 20,
    max_epochs: int | None = None,
    batch_size: int = 256,
    accelerator: str = "auto",
    seed: int = 0,
    key_added: str = "X_omnivae",
    progress_bar: bool = True,
    copy: bool = False,
    return_model: bool = False,
    **train_kwargs: Any,
) -> md.MuData | ad.AnnData | Model | tuple[md.MuData | ad.AnnData, Model] | None:
    """Train an omnivae model and write the joint embedding to ``mdata.obsm[key_added]``.

    Parameters
    ----------
    mdata
        MuData with raw counts per modality (cells may lack modalities), or an AnnData: RNA
        counts in ``X``, a 10x multi-feature ``X`` (split by ``var["feature_types"]``),
        proteins in ``obsm[protein_key]``; the embedding is written into it.
    protein_key, protein_names, feature_types
        How an AnnData is read, as in :class:`omnivae.Model`.
    modalities, batch_key, layer, likelihoods, model, fusion, n_latent
        As in :class:`omnivae.Model`.
    max_epochs, batch_size, accelerator
        As in :meth:`omnivae.Model.train`.
    seed
        Random seed.
    key_added
        ``obsm`` key of the embedding and ``uns`` key of the recorded parameters.
    progress_bar
        Show the training progress bar.
    copy
        Return a modified copy instead of writing into ``mdata``.
    return_model
        Also return the trained :class:`omnivae.Model`.
    **train_kwargs
        Passed to :meth:`omnivae.Model.train`: ``verbose=True`` shows Lightning's messages,
        and any :class:`lightning.pytorch.Trainer` keyword overrides omnivae's defaults.

    Returns
    -------
    ``None`` (or the copy with ``copy=True``); the model too with ``return_model=True``.

    Examples
    --------
    >>> import omnivae
    >>> sim = omnivae.datasets.simulate(150, modalities=("rna", "atac"), seed=0)
    >>> omnivae.tl.integrate(sim, batch_key="batch", n_latent=4, max_epochs=2, progress_bar=False)
    >>> sim.obsm["X_omnivae"].shape, sim.uns["X_omnivae"]["params"]["fusion"]
    ((150, 4), 'mopoe')

    An AnnData with protein counts in ``obsm`` (totalVI's layout) gets the embedding too:

    >>> cite = omnivae.datasets.simulate(100, modalities=("rna", "adt"), missing_fraction=0)
    >>> adata = cite["rna"].copy()
    >>> adata.obsm["protein_expression"] = cite["adt"].to_df().loc[adata.obs_names]
    >>> omnivae.tl.integrate(adata, protein_key="protein_expression", n_latent=4, max_epochs=1,
    ...                      progress_bar=False)
    >>> adata.obsm["X_omnivae"].shape, adata.uns["X_omnivae"]["params"]["modalities"]
    ((100, 4), ['rna', 'adt'])
    """
    target = mdata.copy() if copy else mdata
    fitted = Model(target, protein_key=protein_key, protein_names=protein_names,
                   feature_types=feature_types, modalities=modalities, likelihoods=likelihoods,
                   layer=layer, batch_key=batch_key, model=model, fusion=fusion,
                   n_latent=n_latent, seed=seed)
    try:
        fitted.train(max_epochs, batch_size=batch_size, accelerator=accelerator,
                     progress_bar=progress_bar, **train_kwargs)
    except (TrainingInterrupted, TrainingTerminated) as stopped:
        stopped.model = fitted  # the weights trained so far
        raise
    target.obsm[key_added] = fitted.get_latent_representation()
    target.uns[key_added] = {"params": {
        "modalities": list(fitted.setup.modalities), "likelihoods": dict(fitted.setup.likelihoods),
        "batch_key": batch_key or "", "model": fitted.config.model,
        "fusion": fitted.config.fusion, "n_latent": n_latent,
        "epochs_trained": len(fitted.history), "batch_size": batch_size, "seed": seed,
    }}
    if copy:
        return (target, fitted) if return_model else target
    return fitted if return_model else None


def impute(
    mdata: md.MuData | ad.AnnData,
    model: Model,
    *,
    target: str,
    n_samples: int = 0,
    key_added: str | None = None,
    **kwargs: Any,
) -> md.MuData | ad.AnnData | None:
    """Predict modality ``target`` for every cell and add it as modality ``key_added``
    (``obsm`` entries of an AnnData; the same as :func:`predict`, which explains every option).

    Examples
    --------
    >>> import omnivae
    >>> sim = omnivae.datasets.simulate(150, modalities=("rna", "adt"), seed=0)
    >>> model = omnivae.Model(sim, n_latent=4)
    >>> model.train(max_epochs=2, progress_bar=False)
    >>> omnivae.tl.impute(sim, model, target="adt", n_samples=5)
    >>> sim["adt_imputed"].shape == (sim.n_obs, sim["adt"].n_vars)
    True
    """
    return predict(mdata, model, target=target, n_samples=n_samples, key_added=key_added,
                   **kwargs)


def map_query(
    query_mdata: md.MuData | ad.AnnData,
    reference: Model | str | Path,
    *,
    protein_key: str | None = None,
    protein_names: Sequence[str] | None = None,
    feature_types: bool | Mapping[str, str] | None = None,
    max_epochs: int | None = None,
    key_added: str = "X_omnivae",
    progress_bar: bool = True,
    copy: bool = False,
    return_model: bool = False,
    **train_kwargs: Any,
) -> md.MuData | ad.AnnData | Model | tuple[md.MuData | ad.AnnData, Model] | None:
    """Map query cells onto a trained reference model and write their embedding to
    ``query_mdata.obsm[key_added]`` (scanpy style; see :mod:`omnivae.model.mapping.query` for the method).

    Parameters
    ----------
    query_mdata
        The new cells: any subset of the reference's modalities and features, the
        reference's batch column (new batch labels get new parameters). An AnnData is read
        as in :func:`integrate` and gets the embedding; the query model then writes
        :func:`predict` outputs into it too.
    protein_key, protein_names, feature_types
        How an AnnData is read, as in :class:`omnivae.Model`.
    reference
        A trained :class:`omnivae.Model` or the folder it was saved to.
    max_epochs
        Epochs fitting the new batches' parameters (default 100; none without new batches).
    key_added
        ``obsm`` key of the embedding and ``uns`` key of the parameters.
    progress_bar, **train_kwargs
        As in :meth:`omnivae.Model.train`.
    copy, return_model
        Return a modified copy; also return the query model (for ``predict``, ``tl.predict``).

    Examples
    --------
    >>> import omnivae
    >>> sim = omnivae.datasets.simulate(150, modalities=("rna", "adt"), n_batches=3, seed=0)
    >>> model = omnivae.Model(sim[sim.obs["batch"] != "batch-2"].copy(), batch_key="batch",
    ...                       n_latent=4)
    >>> query = sim[sim.obs["batch"] == "batch-2"].copy()
    >>> q = omnivae.tl.map_query(query, model, max_epochs=2, progress_bar=False,
    ...                          return_model=True)
    >>> query.obsm["X_omnivae"].shape[1], query.uns["X_omnivae"]["params"]["new_batches"]
    (4, ['batch-2'])
    """
    from omnivae.model.model import map_query as map_onto

    target = query_mdata.copy() if copy else query_mdata
    inputs = InputOptions(protein_key, protein_names, feature_types)
    data = as_mudata(target, protein_key=protein_key, protein_names=protein_names,
                     feature_types=feature_types)
    model = map_onto(reference, data, max_epochs=max_epochs, progress_bar=progress_bar,
                     **train_kwargs)
    if isinstance(target, ad.AnnData):  # tl.predict(target, model) writes into it
        model.adata, model.inputs = target, inputs
    target.obsm[key_added] = model.get_latent_representation()
    target.uns[key_added] = {"params": mapping_params(model)}
    if copy:
        return (target, model) if return_model else target
    return model if return_model else None


def mapping_params(model: QueryModel) -> dict[str, Any]:
    """What :func:`map_query` records in ``uns[key_added]["params"]``: the reference's and
    the new batches, the parameters fitted, the epochs trained and, per modality, how many of
    the reference's features the query measured.

    Examples
    --------
    >>> import omnivae
    >>> ref = omnivae.datasets.simulate(100, modalities=("rna",), n_batches=2, seed=0)
    >>> query = omnivae.datasets.simulate(30, modalities=("rna",), n_batches=1, seed=1)
    >>> query.obs["batch"] = "new_lab"
    >>> reference = omnivae.Model(ref, batch_key="batch", n_latent=3)
    >>> reference.train(max_epochs=1, progress_bar=False)
    >>> q = omnivae.Model.load_query(reference, query)
    >>> params = mapping_params(q)
    >>> params["reference_batches"], params["new_batches"], params["measured"]
    (['batch-0', 'batch-1'], ['new_lab'], {'rna': 1000})
    """
    return {
        "reference_batches": list(model.setup.batch_categories[:model.n_reference_batches]),
        "new_batches": list(model.setup.batch_categories[model.n_reference_batches:]),
        "n_trainable": model.n_trainable, "epochs_trained": len(model.history),
        "measured": {m: int(v.sum()) for m, v in model.measured.items()},
    }
