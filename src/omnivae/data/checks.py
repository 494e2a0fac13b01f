"""Checks of a MuData before training or inference, in memory or backed alike: which
modalities to use, their cell and feature names, the counts (numbers, non-negative, integer
where the likelihood needs it), and the training features of new data. Each error says what is
wrong and how to fix it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp

from omnivae.module.likelihoods import REQUIRES_INTEGER_COUNTS


def resolve_modalities(mdata: md.MuData, modalities: Sequence[str] | None,
                       likelihoods: Mapping[str, str] | None) -> tuple[str, ...]:
    """The modalities to use (default: all but omnivae's predictions), checked against
    ``mdata``; cell names must be unique.

    Examples
    --------
    >>> import omnivae
    >>> resolve_modalities(omnivae.datasets.simulate(30, modalities=("rna", "adt")), None, None)
    ('rna', 'adt')
    """
    names = tuple(modalities) if modalities is not None else tuple(
        m for m in mdata.mod if not is_prediction_modality(mdata, m))
    if not names:
        raise ValueError("mdata has no modalities; add at least one AnnData to mdata.mod.")
    unknown = [m for m in names if m not in mdata.mod]
    if unknown:
        raise KeyError(f"Modalities {unknown} are not in mdata (it has {list(mdata.mod)}).")
    extra = set(likelihoods or {}) - set(names)
    if extra:
        raise KeyError(f"likelihoods given for {sorted(extra)}, which are not among {names}.")
    if not mdata.obs_names.is_unique:
        dup = mdata.obs_names[mdata.obs_names.duplicated()][:3].tolist()
        raise ValueError(f"Cell names are not unique (e.g. {dup}); call mdata.obs_names_make_unique().")
    return names


def check_modality_axes(adata: ad.AnnData, name: str) -> None:
    """Raise a ValueError when modality ``name`` has no cells or features, or duplicate names.

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> check_modality_axes(ad.AnnData(np.ones((2, 2))), "rna")
    """
    if adata.n_vars == 0:
        raise ValueError(f"Modality {name!r} has no features; drop it with modalities=[...].")
    if adata.n_obs == 0:
        raise ValueError(f"Modality {name!r} has no cells; drop it with modalities=[...].")
    for axis, index, fix in (("cell", adata.obs_names, "obs_names_make_unique"),
                             ("feature", adata.var_names, "var_names_make_unique")):
        if not index.is_unique:
            dup = index[index.duplicated()].unique()[:3].tolist()
            raise ValueError(f"Modality {name!r} has duplicate {axis} names (e.g. {dup}); "
                             f"make them unique: mdata.mod[{name!r}].{fix}().")


def check_no_empty_cells(mask: np.ndarray, obs_names: pd.Index, names: Sequence[str]) -> None:
    """Raise a ValueError naming the cells that have none of the modalities ``names``.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> check_no_empty_cells(np.ones((2, 1), bool), pd.Index(["a", "b"]), ["rna"])
    """
    empty = ~mask.any(axis=1)
    if empty.any():
        raise ValueError(
            f"{int(empty.sum())} cells have no data in any of the modalities {list(names)} "
            f"(e.g. {obs_names[empty][:3].tolist()}); drop them, e.g. "
            "mdata = mdata[mdata.obs_names.isin(set().union(*(a.obs_names for a in mdata.mod.values())))]."
        )


def is_prediction_modality(mdata: md.MuData, name: str) -> bool:
    """Whether modality ``name`` holds omnivae's predictions (``uns[name]["params"]["target"]``
    written by :func:`omnivae.tl.predict`), not measured counts.

    Examples
    --------
    >>> import omnivae
    >>> sim = omnivae.datasets.simulate(30, modalities=("rna",))
    >>> sim.uns["rna_imputed"] = {"params": {"target": "rna", "normalization": "proportions"}}
    >>> is_prediction_modality(sim, "rna_imputed"), is_prediction_modality(sim, "rna")
    (True, False)
    """
    entry = mdata.uns.get(name)
    params = entry.get("params") if isinstance(entry, Mapping) else None
    return isinstance(params, Mapping) and "target" in params and "normalization" in params


def counts_matrix(adata: ad.AnnData, layer: str | None, name: str) -> sp.csr_matrix:
    """The counts of modality ``name`` (``X``, or ``layer``; read into memory when backed) as
    a float32 CSR matrix; an error naming the fix when the layer is missing or not numeric.

    Parameters
    ----------
    adata
        The modality.
    layer
        The layer holding its raw counts, or ``None`` for ``X``.
    name
        The modality's name, for the error messages.

    Returns
    -------
    ``(n_cells, n_features)`` float32 CSR matrix.

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> adata = ad.AnnData(np.array([[0, 2], [1, 0]]), layers={"counts": np.ones((2, 2))})
    >>> counts_matrix(adata, None, "rna").toarray().tolist()
    [[0.0, 2.0], [1.0, 0.0]]
    >>> counts_matrix(adata, "raw", "rna")
    Traceback (most recent call last):
    ...
    KeyError: "Modality 'rna' has no layer 'raw'; its layers are ['counts']. Pass layer=None to read counts from X."
    """
    if layer is not None and layer not in adata.layers:
        raise KeyError(
            f"Modality {name!r} has no layer {layer!r}; its layers are {[k for k in adata.layers if k is not None]}. "
            "Pass layer=None to read counts from X."
        )
    matrix = adata.layers[layer] if layer is not None else adata.X
    if matrix is None:
        raise ValueError(f"Modality {name!r} has no X; pass layer= naming its counts layer.")
    if not isinstance(matrix, (np.ndarray, sp.spmatrix, sp.sparray)):
        matrix = matrix[:] if hasattr(matrix, "__getitem__") else np.asarray(matrix)  # backed
    if np.dtype(matrix.dtype).kind not in "biuf":
        raise ValueError(
            f"Modality {name!r} ({f'layer {layer!r}' if layer else 'X'}) holds {matrix.dtype} "
            "values, not numbers; store the raw counts as an integer or float matrix."
        )
    return sp.csr_matrix(matrix, dtype=np.float32)


def check_counts(matrix: sp.csr_matrix, name: str, likelihood: str, obs_names: pd.Index,
                 where: str, var_names: pd.Index | None = None) -> None:
    """Raise a ValueError when the counts of modality ``name`` do not suit ``likelihood``:
    NaN or infinite values, negative values, or non-integer values where the likelihood needs
    integer counts; the message names the first offending cells (and features).

    Parameters
    ----------
    matrix
        The counts, ``(n_cells, n_features)`` CSR (rows ordered as ``obs_names``).
    name
        The modality's name.
    likelihood
        Its likelihood (a key of :data:`~omnivae.module.likelihoods.REQUIRES_INTEGER_COUNTS`).
    obs_names
        The cell names of the rows of ``matrix``.
    where
        Where the counts were read from (e.g. ``"X"``), for the message.
    var_names
        The feature names of the columns of ``matrix`` (optional, for the message).

    Examples
    --------
    >>> import numpy as np, pandas as pd, scipy.sparse as sp
    >>> cells = pd.Index(["a", "b"])
    >>> check_counts(sp.csr_matrix(np.array([[0.0, 3.0], [1.0, 0.0]])), "rna", "nb", cells, "X")
    >>> check_counts(sp.csr_matrix(np.array([[0.0, 0.5], [1.0, 0.0]])), "rna", "nb", cells, "X")
    Traceback (most recent call last):
    ...
    ValueError: Modality 'rna' (X) has 1 non-integer values, e.g. in cells ['a']; the 'nb' likelihood needs non-negative integer counts: pass raw counts (layer='counts' if they are in a layer), or choose a likelihood that accepts them.
    """
    values = matrix.data
    if values.size == 0:
        return
    finite = np.isfinite(values)
    problems = []
    if not finite.all():
        problems.append(("NaN or infinite values", ~finite))
    elif (values < 0).any():
        problems.append(("negative values", values < 0))
    elif REQUIRES_INTEGER_COUNTS[likelihood] and not np.array_equal(values, np.round(values)):
        problems.append(("non-integer values", values != np.round(values)))
    for what, bad in problems:
        rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))[bad]
        cells = obs_names[np.unique(rows)[:3]].tolist()
        features = ("" if var_names is None else
                    f" and features {var_names[np.unique(matrix.indices[bad])[:3]].tolist()}")
        fix = (
            "pass raw counts (layer='counts' if they are in a layer), or choose a likelihood "
            "that accepts them"
            if what == "non-integer values"
            else "remove or fix those cells/values before training"
        )
        raise ValueError(
            f"Modality {name!r} ({where}) has {int(bad.sum())} {what}, e.g. in cells {cells}"
            f"{features}; "
            f"the {likelihood!r} likelihood needs non-negative"
            f"{' integer' if REQUIRES_INTEGER_COUNTS[likelihood] else ''} counts: {fix}."
        )


def training_features(adata: ad.AnnData, ref: list[str], name: str) -> ad.AnnData:
    """``adata`` with the training features in training order; an error if the set differs.

    Parameters
    ----------
    adata
        The modality ``name`` of new cells.
    ref
        The feature names the model was trained on, in training order.
    name
        The modality's name, for the error message.

    Returns
    -------
    A view of ``adata`` with its features reordered as ``ref`` (when the sets match).

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> adata = ad.AnnData(np.eye(2), var=pd.DataFrame(index=["g2", "g1"]))
    >>> list(training_features(adata, ["g1", "g2"], "rna").var_names)
    ['g1', 'g2']
    >>> training_features(adata, ["g1", "g3"], "rna")
    Traceback (most recent call last):
    ...
    ValueError: Modality 'rna' has 2 features but the model was trained on 2: 1 missing ...
    """
    have = set(adata.var_names)
    if have == set(ref):
        return adata[:, ref]  # the same features in another order: reorder them
    missing, extra = [v for v in ref if v not in have], sorted(have - set(ref))
    raise ValueError(
        f"Modality {name!r} has {adata.n_vars} features but the model was trained on "
        f"{len(ref)}: {len(missing)} missing (e.g. {missing[:5]}), {len(extra)} not in the model "
        f"(e.g. {extra[:5]}). Subset and order them as in training, "
        f"mdata.mod[{name!r}] = mdata.mod[{name!r}][:, model.var_names[{name!r}]], after "
        "adding any missing features (as zero counts if they were not measured)."
    )


def warn_if_no_counts(name: str, total: float, n_cells: int, where: str) -> None:
    """Warn when modality ``name`` holds no counts at all: the model can learn nothing from
    it, which usually means the wrong layer or an empty export.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_if_no_counts("adt", 0.0, 5, "X")
    >>> str(caught[0].message).split(":")[0]
    "Modality 'adt' (X) has no counts at all"
    """
    if total == 0 and n_cells > 0:
        warnings.warn(
            f"Modality {name!r} ({where}) has no counts at all: every value of its {n_cells} "
            "cells is 0, so the model learns nothing from it. Check that the raw counts are "
            "there (layer='counts' if they are in a layer), or leave the modality out with "
            "modalities=[...].", UserWarning, stacklevel=4)
