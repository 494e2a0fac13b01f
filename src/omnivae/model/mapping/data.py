"""Query MuData for reference mapping: any subset of the reference's modalities and features.

A query may lack whole modalities (an RNA-only query of a CITE-seq reference), measure fewer
features of a modality (a smaller antibody panel), and come from batches the reference never
saw. :func:`setup_query` aligns it to the reference's features and returns which features
each modality measured; :mod:`omnivae.model.mapping.query` fills the unmeasured ones.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp

from omnivae.data.cells import CellData
from omnivae.data.checks import check_counts, counts_matrix
from omnivae.data.setup import (
    QUERY_BATCH,
    REFERENCE_BATCH,
    UNSEEN_BATCH_FIX,
    SetupInfo,
    batch_codes,
    obs_column,
)


def setup_query(
    mdata: md.MuData, reference: SetupInfo
) -> tuple[CellData, SetupInfo, dict[str, np.ndarray]]:
    """Align a query MuData to a reference model's modalities, features and batches.

    Returns
    -------
    data
        The query cells, with every reference modality (absent ones masked out) and every
        reference feature (unmeasured ones zero until filled).
    setup
        The reference setup with the query's new batch labels appended to its categories.
    measured
        Per modality the query has, a boolean ``(n_features,)`` array: which reference
        features the query measured.

    Examples
    --------
    >>> import omnivae
    >>> from omnivae.data import setup_mudata
    >>> sim = omnivae.datasets.simulate(60, modalities=("rna", "adt"), n_batches=2, seed=0)
    >>> _, ref = setup_mudata(sim, batch_key="batch")
    >>> query = omnivae.datasets.simulate(30, modalities=("rna",), n_batches=3, seed=1)
    >>> data, setup, measured = setup_query(query, ref)
    >>> setup.batch_categories, data.mask.any(axis=0).tolist(), list(measured)
    (('batch-0', 'batch-1', 'batch-2'), [True, False], ['rna'])
    """
    present = [m for m in reference.modalities if m in mdata.mod]
    if not present:
        raise ValueError(
            f"The query has none of the reference's modalities {list(reference.modalities)} "
            f"(it has {list(mdata.mod)}); rename its modalities to the reference's names."
        )
    if mdata.n_obs == 0:
        raise ValueError("The query has no cells.")
    if not mdata.obs_names.is_unique:
        raise ValueError("Query cell names are not unique; call mdata.obs_names_make_unique().")
    obs_names = mdata.obs_names
    n = len(obs_names)
    mask = np.zeros((n, len(reference.modalities)), dtype=bool)
    counts: dict[str, sp.csr_matrix] = {}
    library: dict[str, np.ndarray] = {}
    measured: dict[str, np.ndarray] = {}
    for m, name in enumerate(reference.modalities):
        ref_features = pd.Index(reference.var_names[name])
        if name not in present:
            counts[name] = sp.csr_matrix((n, len(ref_features)), dtype=np.float32)
            library[name] = np.ones(n, dtype=np.float32)
            continue
        adata = mdata.mod[name]
        if not adata.var_names.is_unique or not adata.obs_names.is_unique:
            raise ValueError(f"Query modality {name!r} has duplicate cell or feature names.")
        columns = ref_features.get_indexer(adata.var_names)
        keep = columns >= 0
        if not keep.any():
            raise ValueError(
                f"Query modality {name!r} shares no features with the reference "
                f"(reference e.g. {list(ref_features[:3])}, query e.g. {list(adata.var_names[:3])})."
            )
        if not keep.all():
            warnings.warn(f"Query modality {name!r}: {int((~keep).sum())} features unknown to "
                          "the reference are ignored.", stacklevel=3)
        likelihood = reference.likelihoods[name]
        matrix = counts_matrix(adata, reference.layers.get(name), name)[:, np.flatnonzero(keep)]
        check_counts(matrix, name, likelihood, adata.obs_names, "query")
        rows = obs_names.get_indexer(adata.obs_names)
        if (rows < 0).any():
            raise ValueError(f"Query modality {name!r} has cells not in mdata.obs_names; "
                             "call mdata.update().")
        mask[rows, m] = True
        coo = matrix.tocoo()
        counts[name] = sp.csr_matrix(
            (coo.data, (rows[coo.row], columns[keep][coo.col])), shape=(n, len(ref_features)),
            dtype=np.float32)
        lib = (counts[name] > 0).sum(1) if likelihood == "bernoulli" else counts[name].sum(1)
        library[name] = np.where(mask[:, m], np.maximum(np.asarray(lib).ravel(), 1.0),
                                 1.0).astype(np.float32)
        measured[name] = np.zeros(len(ref_features), dtype=bool)
        measured[name][columns[keep]] = True
    empty = ~mask.any(axis=1)
    if empty.any():
        raise ValueError(f"{int(empty.sum())} cells have no data in any of the modalities "
                         f"{list(reference.modalities)} (e.g. {obs_names[empty][:3].tolist()}); "
                         "drop them.")
    batch_index, setup = _query_batches(mdata, reference)
    data = CellData(reference.modalities, counts, mask, batch_index, library)
    return data, setup, measured


def setup_known_cells(mdata: md.MuData, reference: SetupInfo) -> CellData:
    """Cells other than a model's training data lacking some of its modalities (e.g. RNA
    only; which cells have which modality comes from MuData membership), with every feature of
    the modalities they have, coded in the model's batches like its training cells (and like
    such cells with every modality, :func:`omnivae.data.batch_codes`): one batch when it was
    trained without ``batch_key`` (for a query model of such a reference, the query's batch),
    else their labels, which must be known ones (new batches and smaller panels need reference
    mapping, :func:`omnivae.model.mapping.query.load_query`).

    Examples
    --------
    >>> import omnivae
    >>> from omnivae.data import setup_mudata
    >>> sim = omnivae.datasets.simulate(60, modalities=("rna", "adt"), missing_fraction=0, seed=0)
    >>> _, ref = setup_mudata(sim)  # no batch_key: one batch
    >>> del sim.mod["adt"]
    >>> data = setup_known_cells(sim, ref)
    >>> data.mask.sum(axis=0).tolist(), data.batch_index.tolist() == [0] * 60
    ([60, 0], True)
    """
    data, _, measured = setup_query(mdata, reference)
    partial = [m for m, v in measured.items() if not v.all()]
    if partial:
        raise ValueError(f"These cells have only some features of {partial}: map them with "
                         "omnivae.Model.load_query(model, mdata) (reference mapping).")
    # the training rule (setup_mudata): no batch_key, one batch; else known labels only
    batch_index, _ = batch_codes(mdata, reference.batch_key, reference.batch_categories,
                                  unseen_fix=UNSEEN_BATCH_FIX, implicit=reference.implicit_batch)
    return replace(data, batch_index=batch_index)


def _query_batches(mdata: md.MuData, reference: SetupInfo) -> tuple[np.ndarray, SetupInfo]:
    """Batch codes of the query; labels the reference never saw become new categories."""
    known = list(reference.batch_categories)
    if reference.batch_key is None:
        values = pd.Series(QUERY_BATCH, index=mdata.obs_names)
        known = known or [REFERENCE_BATCH]  # the reference's implicit batch keeps code 0
    else:
        column = obs_column(mdata, reference.batch_key)
        if column.isna().any():
            raise ValueError(f"Batch column {reference.batch_key!r} is missing for "
                             f"{int(column.isna().sum())} query cells; fill it.")
        values = column.astype(str)
    new = sorted(set(values) - set(known))
    categories = (*known, *new)
    lookup = {c: i for i, c in enumerate(categories)}
    codes = values.map(lookup).to_numpy(dtype=np.int64)
    implicit = QUERY_BATCH if reference.batch_key is None else None
    return codes, replace(reference, batch_categories=categories, implicit_batch=implicit)
