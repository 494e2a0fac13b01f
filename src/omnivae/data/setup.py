"""MuData in: choose modalities and likelihoods, validate counts (with the checks of
:mod:`omnivae.data.checks`), build :class:`CellData`.

Which cells have which modality comes from MuData membership: a cell absent from
``mdata.mod[name]`` lacks that modality. An all-zero row is an observed cell with no counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp

from omnivae.data.cells import CellData
from omnivae.data.checks import (
    check_counts,
    check_modality_axes,
    check_no_empty_cells,
    counts_matrix,
    resolve_modalities,
    training_features,
    warn_if_no_counts,
)
from omnivae.data.files import mudata_defaults
from omnivae.module.likelihoods import check_likelihood_name

# Default likelihood by modality kind. The kind is read from the modality's name or from the
# 10x ``var["feature_types"]`` column; anything unrecognised is treated as counts (NB).
# Proteins are a plain NB too: the totalVI-style background mixture (``nb_mixture``, one option
# away) can absorb an abundant, cell-type-dependent protein into its per-batch background and
# predicted withheld proteins worse on every CITE set measured (benchmarks/results/tuning.md,
# mosaic_gap.md).
_KIND_BY_NAME = {
    "rna": "nb", "gex": "nb", "gene": "nb", "genes": "nb", "expression": "nb",
    "atac": "bernoulli", "peaks": "bernoulli", "peak": "bernoulli", "chromatin": "bernoulli",
    "adt": "nb", "protein": "nb", "proteins": "nb", "prot": "nb", "cite": "nb", "antibody": "nb",
}
_KIND_BY_FEATURE_TYPE = {
    "gene expression": "nb", "peaks": "bernoulli", "antibody capture": "nb",
}


def default_likelihood(name: str, adata: ad.AnnData) -> str:
    """The default likelihood of a modality: Bernoulli for ATAC, NB for RNA, protein and any
    other counts (pass ``likelihoods={"adt": "nb_mixture"}`` for totalVI's protein
    background/foreground mixture).

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> default_likelihood("ATAC", ad.AnnData(np.zeros((2, 3))))
    'bernoulli'
    """
    key = name.lower()
    if key in _KIND_BY_NAME:
        return _KIND_BY_NAME[key]
    if "feature_types" in adata.var:
        types = adata.var["feature_types"].astype(str).str.lower().value_counts()
        if len(types) and types.index[0] in _KIND_BY_FEATURE_TYPE:
            return _KIND_BY_FEATURE_TYPE[types.index[0]]
    return "nb"


@dataclass(frozen=True)
class SetupInfo:
    """How a MuData was turned into model inputs; saved with a model and checked on load."""

    modalities: tuple[str, ...]
    likelihoods: dict[str, str]
    layers: dict[str, str | None]
    batch_key: str | None
    batch_categories: tuple[str, ...]
    var_names: dict[str, list[str]]
    library_scale: dict[str, float]
    # per nb_mixture modality, the initial protein background of each feature (log scale)
    background_init: dict[str, list[float]] = field(default_factory=dict)
    penalty_keys: tuple[str, ...] = ()
    penalty_categories: dict[str, tuple[str, ...]] = field(default_factory=dict)
    label_key: str | None = None
    label_categories: tuple[str, ...] = ()
    # without batch_key: the batch of every cell (a query model of a batchless reference: the
    # query's batch, omnivae.model.mapping.data); None: one batch, code 0
    implicit_batch: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SetupInfo:
        data = dict(data)
        legacy = data.pop("extra", None) or {}  # saved before background_init was a field
        data.setdefault("background_init", legacy.get("background_init", {}))
        data["modalities"] = tuple(data["modalities"])
        data["batch_categories"] = tuple(data["batch_categories"])
        data["penalty_keys"] = tuple(data.get("penalty_keys", ()))
        data["penalty_categories"] = {
            k: tuple(v) for k, v in data.get("penalty_categories", {}).items()
        }
        data["label_categories"] = tuple(data.get("label_categories", ()))
        if "implicit_batch" not in data:  # saved before the field: a batchless reference's
            # query model was recognised by its batch names
            implicit = (data["batch_key"] is None and QUERY_BATCH in data["batch_categories"])
            data["implicit_batch"] = QUERY_BATCH if implicit else None
        return cls(**data)


def refresh(mdata: md.MuData) -> None:
    """``mdata.update()`` after a modality changed, without pulling modality columns into
    ``mdata.obs`` (mudata's coming default) and without its warnings.

    Examples
    --------
    >>> import omnivae
    >>> sim = omnivae.datasets.simulate(40, modalities=("rna", "adt"), missing_fraction=0, seed=0)
    >>> sim.mod["adt"] = sim["adt"][:30].copy()  # 10 cells lose protein, keep RNA
    >>> refresh(sim)
    >>> sim.n_obs, sim["adt"].n_obs
    (40, 30)
    """
    with mudata_defaults():
        mdata.update()


def obs_column(mdata: md.MuData, key: str) -> pd.Series:
    """A cell-level column for every cell of ``mdata``, from ``mdata.obs`` or the modalities.

    Looks in ``mdata.obs[key]``, then in each modality's ``obs[key]`` (a cell takes the value
    of the first modality that has it). Values that disagree between modalities are an error.

    Examples
    --------
    >>> import omnivae
    >>> sim = omnivae.datasets.simulate(50, modalities=("rna",), seed=0)
    >>> obs_column(sim, "batch").shape
    (50,)
    """
    if key in mdata.obs:
        return mdata.obs[key]
    pieces = [a.obs[key] for a in mdata.mod.values() if key in a.obs]
    if not pieces:
        columns = sorted({c for a in mdata.mod.values() for c in a.obs} | set(mdata.obs))
        raise KeyError(
            f"Column {key!r} is neither in mdata.obs nor in any modality's obs. "
            f"Available columns: {', '.join(columns) or '(none)'}."
        )
    merged = pd.concat(pieces).astype(object)
    conflicts = merged.groupby(level=0).nunique(dropna=True)
    if (conflicts > 1).any():
        bad = conflicts.index[conflicts > 1][:5].tolist()
        raise ValueError(
            f"Column {key!r} disagrees between modalities for cells {bad}; give each cell one "
            f"value, e.g. in mdata.obs[{key!r}], which takes precedence."
        )
    merged = merged[~merged.index.duplicated(keep="first")]
    return merged.reindex(mdata.obs_names)


def _background_init(matrix: sp.csr_matrix, library: np.ndarray, scale: float) -> np.ndarray:
    """Log of a low quantile of depth-normalised counts per feature (protein background)."""
    dense = matrix.toarray() / (library[:, None] / scale)
    return np.log(np.percentile(dense, 30, axis=0) + 0.5).astype(np.float32)


def setup_mudata(
    mdata: md.MuData,
    *,
    modalities: Sequence[str] | None = None,
    likelihoods: Mapping[str, str] | None = None,
    layer: str | Mapping[str, str | None] | None = None,
    batch_key: str | None = None,
    penalty_keys: Sequence[str] = (),
    label_key: str | None = None,
    reference: SetupInfo | None = None,
) -> tuple[CellData, SetupInfo]:
    """Validate ``mdata`` and turn it into :class:`CellData`.

    Parameters
    ----------
    mdata
        The data; each modality holds raw counts in ``X`` or in ``layer``.
    modalities
        Names of the modalities to use (default: all of ``mdata.mod`` except the predictions
        :func:`omnivae.tl.predict` wrote, e.g. ``adt_imputed``).
    likelihoods
        Per-modality likelihood overrides (see :func:`default_likelihood` for the defaults).
    layer
        A layer name for all modalities, or a mapping per modality; ``None`` reads ``X``.
    batch_key
        Cell-level batch column (in ``mdata.obs`` or a modality's ``obs``); ``None``: one batch.
    penalty_keys
        Batch columns whose mutual information with the latent is penalised.
    label_key
        Label column within whose groups the penalty is computed (optional).
    reference
        The setup of a trained model: features and batch categories must match it.

    Examples
    --------
    >>> import omnivae
    >>> sim = omnivae.datasets.simulate(60, modalities=("rna", "adt"), seed=0)
    >>> data, info = setup_mudata(sim, batch_key="batch")
    >>> info.likelihoods
    {'rna': 'nb', 'adt': 'nb'}
    """
    if reference is not None:
        modalities, likelihoods = reference.modalities, reference.likelihoods
        layer, batch_key = reference.layers, reference.batch_key
        penalty_keys, label_key = reference.penalty_keys, reference.label_key
    names = resolve_modalities(mdata, modalities, likelihoods)
    obs_names = mdata.obs_names
    layers = dict(layer) if isinstance(layer, Mapping) else dict.fromkeys(names, layer)
    counts, library, liks, scales, var_names = {}, {}, {}, {}, {}
    background: dict[str, list[float]] = {}
    mask = np.zeros((len(obs_names), len(names)), dtype=bool)
    for m, name in enumerate(names):
        adata = mdata.mod[name]
        check_modality_axes(adata, name)
        lik = check_likelihood_name((likelihoods or {}).get(name) or default_likelihood(name, adata))
        if reference is not None and list(adata.var_names) != reference.var_names[name]:
            adata = training_features(adata, reference.var_names[name], name)
        matrix = counts_matrix(adata, layers.get(name), name)
        where = f"layer {layers.get(name)!r}" if layers.get(name) else "X"
        check_counts(matrix, name, lik, adata.obs_names, where, adata.var_names)
        if reference is None:  # training data; new cells may well lack counts
            warn_if_no_counts(name, float(matrix.data.sum()), matrix.shape[0], where)  # >= 0: checked
        rows = obs_names.get_indexer(adata.obs_names)
        if (rows < 0).any():
            raise ValueError(f"Modality {name!r} has cells not in mdata.obs_names; call mdata.update().")
        mask[rows, m] = True
        place = sp.csr_matrix(  # (n_cells, n_obs_m): puts the modality's rows at its cells
            (np.ones(len(rows), np.float32), (rows, np.arange(len(rows)))),
            shape=(len(obs_names), len(rows)),
        )
        aligned = (place @ matrix).tocsr()
        lib = (np.asarray((aligned > 0).sum(1)) if lik == "bernoulli"
               else np.asarray(aligned.sum(1))).ravel().astype(np.float32)
        present = lib[mask[:, m]]
        scale = reference.library_scale[name] if reference else max(float(np.median(present)), 1.0)
        lib = np.where(mask[:, m], np.maximum(lib, 1.0), 1.0).astype(np.float32)
        counts[name], library[name], liks[name], scales[name] = aligned, lib, lik, scale
        var_names[name] = [str(v) for v in adata.var_names]
        if lik == "nb_mixture":
            background[name] = _background_init(matrix, lib[rows], scale).tolist()
    check_no_empty_cells(mask, obs_names, names)
    info, batch_index, codes, labels = setup_info(
        mdata, names, liks, layers, var_names, scales, background, batch_key=batch_key,
        penalty_keys=penalty_keys, label_key=label_key, reference=reference)
    return CellData(names, counts, mask, batch_index, library, codes, labels), info


def setup_info(
    mdata: md.MuData, names: tuple[str, ...], likelihoods: dict[str, str],
    layers: Mapping[str, str | None], var_names: dict[str, list[str]],
    library_scale: dict[str, float], background: dict[str, list[float]], *,
    batch_key: str | None, penalty_keys: Sequence[str], label_key: str | None,
    reference: SetupInfo | None,
) -> tuple[SetupInfo, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The :class:`SetupInfo` of per-modality summaries and the cell columns (in memory or
    backed alike), with the batch codes, penalty codes and label codes of every cell.

    Examples
    --------
    >>> import omnivae
    >>> sim = omnivae.datasets.simulate(30, modalities=("rna",), n_batches=2, seed=0)
    >>> info, batch_index, _, _ = setup_info(
    ...     sim, ("rna",), {"rna": "nb"}, {}, {"rna": list(sim["rna"].var_names)}, {"rna": 1.0},
    ...     {}, batch_key="batch", penalty_keys=(), label_key=None, reference=None)
    >>> info.batch_categories, batch_index.shape
    (('batch-0', 'batch-1'), (30,))
    """
    batch_index, categories, codes, penalty_categories, labels, label_categories = cell_columns(
        mdata, batch_key, penalty_keys, label_key, reference)
    info = SetupInfo(
        modalities=names, likelihoods=likelihoods, layers={m: layers.get(m) for m in names},
        batch_key=batch_key, batch_categories=categories, var_names=var_names,
        library_scale=library_scale,
        background_init=background if reference is None else reference.background_init,
        penalty_keys=tuple(penalty_keys), penalty_categories=penalty_categories,
        label_key=label_key, label_categories=label_categories,
    )
    return info, batch_index, codes, labels


def cell_columns(
    mdata: md.MuData, batch_key: str | None, penalty_keys: Sequence[str], label_key: str | None,
    reference: SetupInfo | None,
) -> tuple[np.ndarray, tuple[str, ...], np.ndarray | None, dict[str, tuple[str, ...]],
           np.ndarray | None, tuple[str, ...]]:
    """Integer codes of the cell-level columns: batches, penalty columns (stacked, or None),
    labels (or None), with their categories (those of ``reference`` when given).

    Examples
    --------
    >>> import omnivae
    >>> sim = omnivae.datasets.simulate(30, modalities=("rna",), n_batches=2, seed=0)
    >>> cell_columns(sim, "batch", (), None, None)[1]
    ('batch-0', 'batch-1')
    """
    batch_index, categories = batch_codes(
        mdata, batch_key, reference.batch_categories if reference else None,
        unseen_fix=UNSEEN_BATCH_FIX, implicit=reference.implicit_batch if reference else None)
    penalty_columns, penalty_categories = [], {}
    for key in penalty_keys:
        column_codes, cats = batch_codes(
            mdata, key, reference.penalty_categories[key] if reference else None)
        penalty_columns.append(column_codes)
        penalty_categories[key] = cats
    labels, label_categories = (None, ()) if label_key is None else batch_codes(
        mdata, label_key, reference.label_categories if reference else None)
    codes = np.stack(penalty_columns, axis=1) if penalty_columns else None
    return batch_index, categories, codes, penalty_categories, labels, label_categories


# batch names when a reference was trained without batch_key (reference mapping,
# omnivae.model.mapping.data): its cells are one implicit batch, its query's cells one new batch
REFERENCE_BATCH = "reference"
QUERY_BATCH = "query"

# how to fix batch labels a trained model never saw (new cells, Model.load)
UNSEEN_BATCH_FIX = (
    "The model has no parameters for batches it never saw: map them with "
    "omnivae.Model.load_query(model, mdata) (reference mapping, which fits the new batches) "
    "or, if these cells come from a known batch, set their {key!r} to it."
)


def batch_codes(
    mdata: md.MuData, key: str | None, known: tuple[str, ...] | None,
    unseen_fix: str = "Map these cells onto a known batch, or retrain including them.",
    implicit: str | None = None,
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Integer codes of a categorical cell column; ``known`` categories are enforced (labels
    outside them are an error ending in ``unseen_fix``, formatted with ``key``).

    Without a column (``key=None``) every cell is in one batch: code 0, or the code of
    ``implicit`` among ``known`` (:attr:`SetupInfo.implicit_batch`: a query model of a
    reference trained without ``batch_key`` puts every cell in the query's batch, whatever
    modalities it has, as its own training cells are; see
    :func:`omnivae.model.mapping.data.setup_query`).

    Examples
    --------
    >>> import omnivae
    >>> sim = omnivae.datasets.simulate(6, modalities=("rna",), n_batches=2, seed=0)
    >>> codes, categories = batch_codes(sim, "batch", None)
    >>> categories, sorted(set(codes.tolist()))
    (('batch-0', 'batch-1'), [0, 1])
    >>> batch_codes(sim, None, None)[0].tolist()  # no batch column: one batch
    [0, 0, 0, 0, 0, 0]
    >>> batch_codes(sim, None, (REFERENCE_BATCH, QUERY_BATCH), implicit=QUERY_BATCH)[0].tolist()
    [1, 1, 1, 1, 1, 1]
    >>> batch_codes(sim, None, ("reference",), implicit="query")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: The implicit batch 'query' is not among the known batches ['reference']; ...
    """
    n = mdata.n_obs
    if key is None:
        categories = tuple(known or ())
        if implicit is not None and implicit not in categories:
            raise ValueError(f"The implicit batch {implicit!r} is not among the known batches "
                             f"{list(categories)}; the saved model's setup is inconsistent: "
                             "refit it.")
        code = 0 if implicit is None else categories.index(implicit)
        return np.full(n, code, dtype=np.int64), categories
    try:
        column = obs_column(mdata, key)
    except KeyError as err:
        raise KeyError(f"key={key!r}: {err.args[0]}") from None
    if column.isna().any():
        cells = column.index[column.isna()][:3].tolist()
        raise ValueError(
            f"Column {key!r} is missing for {int(column.isna().sum())} cells "
            f"(e.g. {cells}); fill it (e.g. with 'unknown') or drop those cells."
        )
    values = column.astype(str)
    if known is not None:
        categories = known
        unseen = sorted(set(values) - set(categories))
        if unseen:
            n_unseen = int((~values.isin(categories)).sum())
            raise ValueError(
                f"Labels {unseen[:5]} in column {key!r} were not seen in training "
                f"(known: {list(categories)[:10]}; {n_unseen} of {n} cells have them). "
                + unseen_fix.format(key=key)
            )
    else:
        categories = tuple(sorted(set(values)))
    lookup = {c: i for i, c in enumerate(categories)}
    return values.map(lookup).to_numpy(dtype=np.int64), categories
