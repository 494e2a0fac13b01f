"""What users hold, as the MuData omnivae trains on: an AnnData of RNA alone, a 10x
multi-feature AnnData (``var["feature_types"]``), protein counts in an ``obsm`` key (scvi-tools'
totalVI convention), or the files ``.h5ad``, 10x ``.h5`` and ``.h5mu``.

The conversion keeps every cell, its ``obs_names`` and its ``obs`` columns (batches, labels:
they go to the MuData's ``obs``), and the AnnData's ``obsm`` and ``uns``. Each modality it
makes holds every cell: a 10x matrix, or a protein matrix in ``obsm``, measures every modality
for every cell (to say that some cells lack a modality, build a MuData whose modality leaves
them out; cells with no counts at all in one of several modalities are warned about).

Which 10x feature type becomes which modality is the table :data:`FEATURE_TYPE_MODALITIES`
(case-insensitive): ``Gene Expression`` -> ``rna``, ``Antibody Capture`` -> ``adt``,
``Peaks`` -> ``atac`` (and the short names ``GEX``, ``ADT``, ``ATAC``). Any other type
(e.g. ``CRISPR Guide Capture``) is an error naming it, unless ``feature_types={"CRISPR
Guide Capture": "crispr"}`` names its modality, or the features are dropped first.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp

from omnivae.data.files import mudata_defaults, read_h5mu, unreadable_file

# 10x ``var["feature_types"]`` (lower case) -> modality name; the modality's name then picks
# its default likelihood (omnivae.data.setup.default_likelihood).
FEATURE_TYPE_MODALITIES: dict[str, str] = {
    "gene expression": "rna", "gex": "rna",
    "antibody capture": "adt", "adt": "adt",
    "peaks": "atac", "atac": "atac",
}
# the modality of an AnnData's X when it is not split by feature type
DEFAULT_MODALITY = "rna"
# the modality of protein counts read from ``obsm[protein_key]``
PROTEIN_MODALITY = "adt"
# file suffixes read_input reads, and how
INPUT_SUFFIXES = {".h5ad": "AnnData (anndata.read_h5ad)",
                  ".h5": "10x Genomics feature-barcode matrix (scanpy.read_10x_h5)",
                  ".h5mu": "MuData (mudata.read_h5mu)"}


@dataclass(frozen=True)
class InputOptions:
    """How an AnnData becomes a MuData (the keywords of :func:`as_mudata`); a model keeps
    them to read new cells of the same layout."""

    protein_key: str | None = None
    protein_names: Sequence[str] | None = None
    feature_types: bool | Mapping[str, str] | None = None

    @property
    def given(self) -> bool:
        """Whether any option differs from its default."""
        return (self.protein_key is not None or self.protein_names is not None
                or self.feature_types is not None)


def as_mudata(
    data: ad.AnnData | md.MuData | str | Path,
    *,
    protein_key: str | None = None,
    protein_names: Sequence[str] | None = None,
    feature_types: bool | Mapping[str, str] | None = None,
) -> md.MuData:
    """The MuData omnivae trains on, from an AnnData, a MuData (returned as it is) or a file.

    Parameters
    ----------
    data
        An AnnData with raw counts in ``X`` (and any ``layers``), a MuData, or a path read by
        :func:`read_input` (``.h5ad``, 10x ``.h5``, ``.h5mu``).
    protein_key
        ``obsm`` key of protein (antibody) counts, e.g. ``"protein_expression"`` (totalVI's
        convention): they become modality ``"adt"``. Raw non-negative integer counts.
    protein_names
        Protein names when ``obsm[protein_key]`` is an array (a DataFrame's columns are its
        names). Default: ``uns[f"{protein_key}_names"]`` if present, else ``protein_0``, ...
    feature_types
        How ``X`` is split into modalities by ``var["feature_types"]`` (see
        :data:`FEATURE_TYPE_MODALITIES`). ``None`` (default): split when the column exists,
        else ``X`` is modality ``"rna"``; ``True``: split (an error without the column);
        ``False``: never split (``X`` is ``"rna"``); a mapping: split, with these feature types
        (e.g. ``{"CRISPR Guide Capture": "crispr"}``) naming further modalities.

    Returns
    -------
    A new MuData (the AnnData is not changed) with the AnnData's cells in order, its ``obs``
    columns, ``obsm`` (less ``protein_key``) and ``uns``; every modality holds every cell.

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> adata = ad.AnnData(np.ones((3, 4), np.float32),
    ...                    obs=pd.DataFrame({"batch": ["a", "a", "b"]}, index=["c1", "c2", "c3"]))
    >>> adata.obsm["protein_expression"] = pd.DataFrame(
    ...     np.ones((3, 2), int), index=adata.obs_names, columns=["CD3", "CD4"])
    >>> mdata = as_mudata(adata, protein_key="protein_expression")
    >>> list(mdata.mod), mdata["adt"].var_names.tolist(), mdata.obs["batch"].tolist()
    (['rna', 'adt'], ['CD3', 'CD4'], ['a', 'a', 'b'])
    """
    options = InputOptions(protein_key, protein_names, feature_types)
    if isinstance(data, (str, Path)):
        return read_input(data, protein_key=protein_key, protein_names=protein_names,
                          feature_types=feature_types)
    if isinstance(data, md.MuData):
        if options.given:
            raise ValueError(
                "protein_key, protein_names and feature_types describe an AnnData; a MuData "
                "already holds its modalities (proteins as a modality, e.g. mdata.mod['adt']). "
                "Leave these options out.")
        return data
    if not isinstance(data, ad.AnnData):
        raise TypeError(f"Expected an AnnData, a MuData or a file path; got {type(data).__name__}.")
    return _from_anndata(data, options)


def read_input(
    path: str | Path,
    *,
    protein_key: str | None = None,
    protein_names: Sequence[str] | None = None,
    feature_types: bool | Mapping[str, str] | None = None,
) -> md.MuData:
    """Read a file into the MuData omnivae trains on, by its suffix: ``.h5ad``
    (:func:`anndata.read_h5ad`, then :func:`as_mudata`), 10x ``.h5``
    (:func:`scanpy.read_10x_h5` with ``gex_only=False``, feature names made unique, split by
    feature type) or ``.h5mu`` (:func:`mudata.read_h5mu`).

    Parameters
    ----------
    path
        The file.
    protein_key, protein_names, feature_types
        As in :func:`as_mudata` (not for ``.h5mu`` files, whose modalities are given).

    Examples
    --------
    >>> import tempfile, anndata as ad, numpy as np
    >>> path = Path(tempfile.mkdtemp()) / "cells.h5ad"
    >>> ad.AnnData(np.ones((5, 3), np.float32)).write_h5ad(path)
    >>> read_input(path)["rna"].shape
    (5, 3)
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in INPUT_SUFFIXES:
        known = "; ".join(f"{s}: {what}" for s, what in INPUT_SUFFIXES.items())
        raise ValueError(f"Cannot read {path.name}: unknown suffix {path.suffix!r}. omnivae reads "
                         f"{known}. Convert the file to one of these (e.g. build an AnnData and "
                         "write it with adata.write_h5ad('cells.h5ad')).")
    if not path.is_file():
        raise FileNotFoundError(f"Input file {path} does not exist.")
    try:
        data: md.MuData | ad.AnnData = (read_h5mu(path) if suffix == ".h5mu" else
                                        ad.read_h5ad(path) if suffix == ".h5ad" else
                                        read_10x(path))
    except (OSError, ValueError, KeyError) as err:  # truncated, not HDF5, another layout
        raise unreadable_file(path, f"a {suffix} file, {INPUT_SUFFIXES[suffix]}", err) from None
    return as_mudata(data, protein_key=protein_key, protein_names=protein_names,
                     feature_types=feature_types)


def read_10x(path: str | Path) -> ad.AnnData:
    """A 10x Genomics feature-barcode matrix (``.h5``) with every feature type
    (:func:`scanpy.read_10x_h5`, ``gex_only=False``) and unique feature names (duplicate gene
    symbols get ``-1``, ``-2``, ... as :meth:`anndata.AnnData.var_names_make_unique` does).

    Examples
    --------
    >>> read_10x("missing.h5")
    Traceback (most recent call last):
    ...
    FileNotFoundError: 10x file missing.h5 does not exist.
    """
    import scanpy as sc

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"10x file {path} does not exist.")
    try:
        with warnings.catch_warnings():  # duplicate gene symbols: made unique just below
            warnings.filterwarnings("ignore", ".*not unique.*")
            adata = sc.read_10x_h5(path, gex_only=False)
    except (KeyError, OSError, ValueError) as err:
        raise ValueError(
            f"{path} is not a 10x Genomics feature-barcode matrix (.h5 with a 'matrix' group, "
            f"as Cell Ranger writes): {err}. An AnnData file should end in .h5ad.") from err
    adata.var_names_make_unique()
    return adata


def _from_anndata(adata: ad.AnnData, options: InputOptions) -> md.MuData:
    """:func:`as_mudata` of an AnnData."""
    if adata.isbacked:
        raise ValueError("A backed AnnData (read with backed='r') is not read here: load it into "
                         "memory with adata.to_memory(), or convert it to .h5mu for backed "
                         "training (see docs/large_data.md).")
    if not adata.obs_names.is_unique:
        dup = adata.obs_names[adata.obs_names.duplicated()][:3].tolist()
        raise ValueError(f"Cell names are not unique (e.g. {dup}); call "
                         "adata.obs_names_make_unique().")
    modalities = split_feature_types(adata, options.feature_types)
    if options.protein_key is not None:
        if PROTEIN_MODALITY in modalities:
            raise ValueError(
                f"Both var['feature_types'] and obsm[{options.protein_key!r}] give protein "
                f"counts (modality {PROTEIN_MODALITY!r}); keep one: drop the antibody features "
                "from X, or leave protein_key out.")
        modalities[PROTEIN_MODALITY] = protein_modality(adata, options.protein_key,
                                                        options.protein_names)
    elif options.protein_names is not None:
        raise ValueError("protein_names needs protein_key (the obsm key of the protein counts).")
    if len(modalities) > 1:
        for name, part in modalities.items():
            _warn_empty_cells(part, name)
    obsm = {k: v for k, v in adata.obsm.items() if k != options.protein_key}
    # cells in order; a gene and a protein may share a name (CD4): mudata_defaults silences that
    with mudata_defaults():
        mdata = md.MuData(modalities, obs=adata.obs.copy())
    for key, value in obsm.items():
        mdata.obsm[key] = value
    mdata.uns.update(dict(adata.uns))
    assert mdata.obs_names.equals(adata.obs_names)
    return mdata


def _warn_empty_cells(part: ad.AnnData, name: str) -> None:
    """Warn about cells with no counts at all in one of several modalities: they count as
    measured zeros, which is wrong when the modality was not measured for them (a batch
    without protein, which totalVI's layout stores as zeros)."""
    x = part.X
    empty = (x.getnnz(axis=1) == 0) if sp.issparse(x) else ~np.any(np.asarray(x) != 0, axis=1)
    if empty.any():
        warnings.warn(
            f"{int(empty.sum())} of {part.n_obs} cells have no {name!r} counts at all (e.g. "
            f"{part.obs_names[empty][:3].tolist()}); omnivae takes them as measured zeros. If "
            f"{name!r} was not measured for them, make a MuData with as_mudata(adata, ...) and "
            f"leave them out of that modality: mdata.mod[{name!r}] = mdata[{name!r}][has].copy(), "
            "then omnivae.data.refresh(mdata).", UserWarning, stacklevel=4)


def split_feature_types(
    adata: ad.AnnData, feature_types: bool | Mapping[str, str] | None = None,
) -> dict[str, ad.AnnData]:
    """The modalities of ``adata``'s ``X``: split by ``var["feature_types"]`` (see
    :func:`as_mudata` for ``feature_types``), each with the features' ``var`` and ``layers``,
    every cell, and no ``obs`` columns (they go to the MuData).

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> var = pd.DataFrame({"feature_types": ["Gene Expression", "Peaks", "Gene Expression"]},
    ...                    index=["g1", "chr1:1-9", "g2"])
    >>> parts = split_feature_types(ad.AnnData(np.ones((2, 3), np.float32), var=var))
    >>> {name: part.var_names.tolist() for name, part in parts.items()}
    {'rna': ['g1', 'g2'], 'atac': ['chr1:1-9']}
    """
    has_column = "feature_types" in adata.var
    if feature_types is False or (feature_types is None and not has_column):
        return {DEFAULT_MODALITY: _modality(adata, None, DEFAULT_MODALITY)}
    if not has_column:
        raise ValueError(
            "Asked to split X by feature type, but adata.var has no 'feature_types' column "
            f"(columns: {list(adata.var.columns) or 'none'}). Add it (10x names: "
            f"{', '.join(sorted(FEATURE_TYPE_MODALITIES))}), or pass feature_types=False to "
            f"use X as one modality ({DEFAULT_MODALITY!r}).")
    table = dict(FEATURE_TYPE_MODALITIES)
    if isinstance(feature_types, Mapping):
        table.update({str(k).strip().lower(): v for k, v in feature_types.items()})
    types = adata.var["feature_types"].astype(str).str.strip()
    unknown = sorted(set(types[~types.str.lower().isin(table)]))
    if unknown:
        raise ValueError(
            f"Unknown feature types {unknown} in adata.var['feature_types']; omnivae knows "
            f"{sorted(set(FEATURE_TYPE_MODALITIES))} (case-insensitive). Name a modality for "
            f"each, e.g. feature_types={{{unknown[0]!r}: 'custom'}}, or drop those features: "
            f"adata = adata[:, ~adata.var['feature_types'].isin({unknown})].copy().")
    names = types.str.lower().map(table).to_numpy()
    order = list(dict.fromkeys(names))  # in the order of X's first feature of each
    return {name: _modality(adata, names == name, name) for name in order}


def _modality(adata: ad.AnnData, columns: np.ndarray | None, name: str) -> ad.AnnData:
    """The features ``columns`` of ``adata`` (all: ``None``) as a modality; ``X`` and layers
    are shared with ``adata`` when all features are taken, copied otherwise."""
    part = adata if columns is None or columns.all() else adata[:, columns]
    if not part.var_names.is_unique:
        dup = part.var_names[part.var_names.duplicated()].unique()[:3].tolist()
        raise ValueError(f"Feature names of modality {name!r} are not unique (e.g. {dup}); "
                         "call adata.var_names_make_unique() first.")
    if part.X is None:
        raise ValueError("adata.X is empty; omnivae reads the counts from X (or a layer), so "
                         "X must hold a matrix of the cells' features.")
    return ad.AnnData(X=part.X, var=part.var.copy(), obs=pd.DataFrame(index=adata.obs_names),
                      layers={k: part.layers[k] for k in part.layers})


def protein_modality(adata: ad.AnnData, protein_key: str,
                     protein_names: Sequence[str] | None = None) -> ad.AnnData:
    """Protein counts kept in ``adata.obsm[protein_key]`` as a modality: names from a
    DataFrame's columns, else ``protein_names``, else ``uns[f"{protein_key}_names"]``, else
    ``protein_0``, ``protein_1``, ...; an error unless they are raw counts.

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> adata = ad.AnnData(np.ones((2, 3), np.float32))
    >>> adata.obsm["protein_expression"] = np.array([[1, 0], [4, 2]])
    >>> protein_modality(adata, "protein_expression").var_names.tolist()
    ['protein_0', 'protein_1']
    >>> adata.obsm["protein_expression"] = np.array([[0.3, -1.2], [1.1, 0.2]])  # CLR values
    >>> protein_modality(adata, "protein_expression")
    Traceback (most recent call last):
    ...
    ValueError: adata.obsm['protein_expression'] holds 1 negative values (e.g. in cell '0'); omnivae models raw antibody counts (non-negative integers): pass the raw counts, not normalised (CLR, log) values.
    """
    if protein_key not in adata.obsm:
        raise KeyError(f"protein_key={protein_key!r} is not in adata.obsm (keys: "
                       f"{list(adata.obsm) or 'none'}); name the obsm key holding the protein "
                       "counts, e.g. protein_key='protein_expression'.")
    value = adata.obsm[protein_key]
    where = f"adata.obsm[{protein_key!r}]"
    if isinstance(value, pd.DataFrame):
        if protein_names is not None:
            raise ValueError(f"{where} is a DataFrame, whose columns name the proteins; leave "
                             "protein_names out (or rename the columns).")
        names = [str(c) for c in value.columns]
        matrix = sp.csr_matrix(_numeric(value.to_numpy(), where))
    else:
        matrix = sp.csr_matrix(value) if sp.issparse(value) else sp.csr_matrix(
            _numeric(np.asarray(value), where))
        names = _protein_names(adata, protein_key, protein_names, matrix.shape[1])
    if matrix.ndim != 2 or matrix.shape[0] != adata.n_obs:
        raise ValueError(f"{where} must be a (cells, proteins) matrix; got shape {matrix.shape}.")
    _check_counts(matrix, where, adata.obs_names)
    if len(set(names)) != len(names):
        dup = pd.Index(names)[pd.Index(names).duplicated()][:3].tolist()
        raise ValueError(f"Protein names of {where} are not unique (e.g. {dup}).")
    return ad.AnnData(X=matrix.astype(np.float32), obs=pd.DataFrame(index=adata.obs_names),
                      var=pd.DataFrame(index=pd.Index(names)))


def _numeric(values: np.ndarray, where: str) -> np.ndarray:
    if not np.issubdtype(values.dtype, np.number) and values.dtype != bool:
        raise ValueError(f"{where} is not numeric (dtype {values.dtype}); it must hold raw "
                         "antibody counts.")
    return values.astype(np.float64)


def _protein_names(adata: ad.AnnData, protein_key: str, given: Sequence[str] | None,
                   n: int) -> list[str]:
    uns_key = f"{protein_key}_names"
    if given is not None:
        names, source = [str(v) for v in given], "protein_names"
    elif uns_key in adata.uns:
        names, source = [str(v) for v in np.asarray(adata.uns[uns_key]).ravel()], \
            f"adata.uns[{uns_key!r}]"
    else:
        return [f"protein_{i}" for i in range(n)]
    if len(names) != n:
        raise ValueError(f"{source} has {len(names)} names but adata.obsm[{protein_key!r}] has "
                         f"{n} proteins; give one name per column.")
    return names


def _check_counts(matrix: sp.csr_matrix, where: str, obs_names: pd.Index) -> None:
    """Raw counts: finite, non-negative integers (the message names a cell)."""
    values = matrix.data
    for problem, bad in (("non-finite", ~np.isfinite(values)), ("negative", values < 0),
                         ("non-integer", values != np.round(values))):
        if bad.any():
            row = int(np.searchsorted(matrix.indptr, np.flatnonzero(bad)[0], side="right") - 1)
            raise ValueError(
                f"{where} holds {int(bad.sum())} {problem} values (e.g. in cell "
                f"{str(obs_names[row])!r}); omnivae models raw antibody counts (non-negative "
                "integers): pass the raw counts, not normalised (CLR, log) values.")


def input_layers(layer: str | Mapping[str, str | None] | None, mdata: md.MuData,
                 options: InputOptions) -> str | Mapping[str, str | None] | None:
    """The ``layer`` option of a model of ``mdata`` made from an AnnData: one layer name
    applies to the modalities split from ``X`` (the AnnData's layers), not to proteins read
    from ``obsm`` (whose counts are their ``X``).

    Examples
    --------
    >>> import omnivae
    >>> sim = omnivae.datasets.simulate(20, modalities=("rna", "adt"), seed=0)
    >>> input_layers("counts", sim, InputOptions(protein_key="protein_expression"))
    {'rna': 'counts', 'adt': None}
    """
    if not isinstance(layer, str) or options.protein_key is None:
        return layer
    return {m: None if m == PROTEIN_MODALITY else layer for m in mdata.mod}

