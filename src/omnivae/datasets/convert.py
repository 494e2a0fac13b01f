"""Converters from the public source files of each registered dataset to its prepared MuData,
and the content fingerprint that proves a conversion reproduces the prepared file exactly.

One converter per source format (the registry's ``format`` field); each takes the downloaded
files by role (the registry's ``sources[i]["role"]``) and returns the MuData that
:func:`omnivae.datasets.load` would read from the prepared ``.h5mu``: the same cells in the same
order, the same features, labels and raw integer counts (float32 CSR in each ``X``).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import OldFormatWarning

from omnivae.data.files import mudata_defaults

__all__ = ["CONVERTERS", "ConversionError", "content_sha256", "convert", "label_keys"]


class ConversionError(ValueError):
    """Raised when source files cannot be converted, or convert to other content than registered."""


def _counts(matrix: Any) -> sp.csr_matrix:
    """Raw counts as float32 CSR with sorted indices and no duplicate entries."""
    out = sp.csr_matrix(matrix, dtype=np.float32)
    out.sum_duplicates()
    out.sort_indices()
    return out


def _global_obs(mods: Mapping[str, ad.AnnData], keys: Sequence[str]) -> pd.DataFrame:
    """MuData-level obs holding ``keys`` (copied from the first modality that has each)."""
    first = next(iter(mods.values()))
    obs = pd.DataFrame(index=first.obs_names.copy())
    for key in keys:
        for adata in mods.values():
            if key in adata.obs:
                obs[key] = adata.obs[key].reindex(obs.index)
                break
    return obs


def _mudata(mods: dict[str, ad.AnnData], keys: Sequence[str]) -> md.MuData:
    with mudata_defaults():
        mdata = md.MuData(mods)
    mdata.obs = _global_obs(mods, keys)
    return mdata


def label_keys(entry: Mapping[str, Any]) -> list[str]:
    """The batch and label columns a registry entry names (those the fingerprint reads)."""
    return [k for k in (entry.get("batch_key"), entry.get("label_key"),
                        *entry.get("extra_label_keys", [])) if k]


def _openproblems_h5ad(files: Mapping[str, Path], entry: Mapping[str, Any]) -> md.MuData:
    """Open Problems (NeurIPS 2021) AnnData pairs: one ``.h5ad`` per modality, raw counts in
    ``layers["counts"]`` (then ``X``, normalised, is dropped) or, in the older layout without
    that layer, in ``X``; ``obs``/``var`` kept, ``uns`` dropped. Roles: the modality names
    (``rna`` and ``adt`` or ``atac``)."""
    mods: dict[str, ad.AnnData] = {}
    for mod in entry["modalities"]:
        with warnings.catch_warnings():  # files written by anndata < 0.7: read as intended
            warnings.filterwarnings("ignore", category=OldFormatWarning)
            source = ad.read_h5ad(files[mod])
        counts = _counts(source.layers["counts"] if "counts" in source.layers else source.X)
        if not np.array_equal(counts.data, np.round(counts.data)) or (counts.data < 0).any():
            raise ConversionError(f"{files[mod]} has no layers['counts'] and its X does not hold "
                                  "raw non-negative integer counts; it is not the registered file")
        mods[mod] = ad.AnnData(counts, obs=source.obs.copy(), var=source.var.copy())
    return _mudata(mods, ["batch", "cell_type"])


def _scmomat_npz(files: Mapping[str, Path], entry: Mapping[str, Any]) -> md.MuData:
    """scMoMaT's MOp files: ``GxC1.npz`` (genes x cells) and ``RxC1.npz`` (regions x cells) as
    scipy sparse ``.npz``, ``meta_c1.csv`` (cells: Batch, Barcode, Ident, cluster (remapped)),
    ``genes.txt`` and ``regions.txt`` (one feature name a line). Roles: rna, atac, meta, genes,
    regions. ``Batch`` becomes ``batch``, ``cluster (remapped)`` ``cell_type`` and ``Ident``
    ``cell_type_fine``."""
    meta = pd.read_csv(files["meta"], index_col=0, dtype=str, keep_default_na=False)
    meta.index.name = None
    needed = ["Batch", "Barcode", "Ident", "cluster (remapped)"]
    if missing := [c for c in needed if c not in meta]:
        raise ConversionError(f"{files['meta']} lacks the columns {missing}")
    obs = pd.DataFrame({"batch": meta["Batch"], "Barcode": meta["Barcode"],
                        "cell_type_fine": meta["Ident"], "cell_type": meta["cluster (remapped)"]},
                       index=meta.index).astype("category")
    mods: dict[str, ad.AnnData] = {}
    for mod, names in (("rna", "genes"), ("atac", "regions")):
        features = Path(files[names]).read_text(encoding="utf-8").split()
        counts = sp.load_npz(files[mod]).T
        if counts.shape != (len(obs), len(features)):
            raise ConversionError(f"{files[mod]} holds {counts.shape[1]} cells x "
                                  f"{counts.shape[0]} features; expected {len(obs)} cells "
                                  f"(from {files['meta']}) x {len(features)} (from {files[names]})")
        mods[mod] = ad.AnnData(_counts(counts), obs=obs.copy(),
                               var=pd.DataFrame(index=pd.Index(features)))
    return _mudata(mods, ["batch", "cell_type", "cell_type_fine"])


def _totalvi_csv(files: Mapping[str, Path], entry: Mapping[str, Any]) -> md.MuData:
    """totalVI reproducibility tables: gzipped CSVs, features x cells (first column the feature
    names, header the cell barcodes). Roles: rna, adt."""
    mods: dict[str, ad.AnnData] = {}
    for mod in ("rna", "adt"):
        table = pd.read_csv(files[mod], index_col=0, dtype={0: str}, engine="c")
        values = table.to_numpy(dtype=np.float64).T
        if not np.array_equal(values, np.round(values)) or (values < 0).any():
            raise ConversionError(f"{files[mod]} does not hold raw non-negative integer counts")
        mods[mod] = ad.AnnData(_counts(values),
                               obs=pd.DataFrame(index=pd.Index(table.columns.astype(str))),
                               var=pd.DataFrame(index=pd.Index(table.index.astype(str))))
    names = [a.obs_names for a in mods.values()]
    if not all(n.equals(names[0]) for n in names):
        raise ConversionError(f"{files['rna']} and {files['adt']} list different cells")
    return _mudata(mods, [])


def _prepared_h5mu(files: Mapping[str, Path], entry: Mapping[str, Any]) -> md.MuData:
    """A source that is already the prepared MuData (role: mudata)."""
    with mudata_defaults():
        return md.read_h5mu(files["mudata"])


CONVERTERS: dict[str, Callable[[Mapping[str, Path], Mapping[str, Any]], md.MuData]] = {
    "openproblems_h5ad": _openproblems_h5ad,
    "scmomat_npz": _scmomat_npz,
    "totalvi_csv": _totalvi_csv,
    "prepared_h5mu": _prepared_h5mu,
}


def convert(files: Mapping[str, Path], entry: Mapping[str, Any]) -> md.MuData:
    """Convert a dataset's downloaded source files (by role) with the converter its registry
    entry names, and check that the result has the registered content.

    Raises
    ------
    ConversionError
        If the format is unknown, a file is not in the expected shape, or the converted
        content's fingerprint (:func:`content_sha256`) differs from the registered one.
    """
    fmt = entry.get("format")
    if fmt not in CONVERTERS:
        raise ConversionError(f"Dataset {entry['name']!r} has source format {fmt!r}; known "
                              f"formats: {', '.join(sorted(CONVERTERS))}")
    mdata = CONVERTERS[fmt](files, entry)
    expected = entry.get("content_sha256")
    if expected is not None:
        found = content_sha256(mdata, label_keys(entry))
        if found != expected:
            raise ConversionError(
                f"The source files of {entry['name']!r} converted to other content than "
                f"registered (content fingerprint expected {expected}, got {found}): the "
                f"converter or the registry is wrong; please report it.")
    return mdata


def content_sha256(mdata: md.MuData, label_keys: Sequence[str] = ()) -> str:
    """Fingerprint of what a dataset is: cells (in order), each modality's cells and features
    (in order) and counts, the given label columns of each modality's ``obs`` (as text) and
    every ``obs``/``var`` column of each modality (names, order and values).

    Independent of how the file was written (HDF5 layout, compression, library versions), so a
    file converted from the public sources is recognised as the prepared dataset.

    Examples
    --------
    >>> from omnivae.datasets import simulate
    >>> a, b = simulate(30, seed=0), simulate(30, seed=0)
    >>> content_sha256(a, ["batch"]) == content_sha256(b, ["batch"])
    True
    >>> b["rna"].X[0, 0] += 1
    >>> content_sha256(a, ["batch"]) == content_sha256(b, ["batch"])
    False
    """
    h = hashlib.sha256()

    def add(tag: str, data: bytes) -> None:
        h.update(f"{tag}:{len(data)}:".encode())
        h.update(data)

    def add_names(tag: str, names: Any) -> None:
        add(tag, "\n".join(str(n) for n in names).encode("utf-8"))

    add_names("obs_names", mdata.obs_names)
    for mod, adata in mdata.mod.items():
        add("mod", mod.encode())
        add_names("obs", adata.obs_names)
        add_names("var", adata.var_names)
        x = _counts(adata.X)
        x.eliminate_zeros()
        add("indptr", x.indptr.astype(np.int64).tobytes())
        add("indices", x.indices.astype(np.int64).tobytes())
        add("data", x.data.astype(np.float64).tobytes())
        for key in label_keys:
            if key in adata.obs:
                add_names(f"label {key}", adata.obs[key].astype(object).where(
                    adata.obs[key].notna(), "<NA>"))
        for tag, frame in (("obs", adata.obs), ("var", adata.var)):
            for col in frame.columns:  # every other column too, by value
                add_names(f"{tag} column {col}", [repr(v) for v in frame[col].tolist()])
    return h.hexdigest()
