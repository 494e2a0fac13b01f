"""Outputs written chunk by chunk: embeddings and predicted modalities for data larger than
memory, and count stores written without holding them.

:func:`write_results` computes a model's embedding (and predicted modalities) a chunk of cells
at a time and appends each chunk to HDF5 datasets of a new file; the file is written under a
temporary name and renamed at the end, so a crash never leaves a partial output under the
requested name nor touches an existing one. :func:`write_counts_store` writes a backed-ready
``.h5mu`` from an iterator of count chunks (for simulations and benchmarks).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anndata as ad
import h5py
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from omnivae.data.files import check_output_file, mudata_defaults
from omnivae.module.arguments import check_int
from omnivae.train.threads import pinned_threads

if TYPE_CHECKING:
    from omnivae.model.core import ModelCore as Model

NORMALIZATION = "proportions summing to 1 per cell"


def _array_dataset(group: h5py.Group, name: str, shape: tuple[int, int]) -> h5py.Dataset:
    """A float32 dataset anndata reads as a dense array, chunked in ~1 MB row blocks."""
    rows = max(1, min(shape[0], (1 << 20) // (4 * max(shape[1], 1))))
    if name in group:
        del group[name]
    dataset = group.create_dataset(name, shape=shape, dtype="float32",
                                   chunks=(rows, max(shape[1], 1)) if shape[0] else None)
    dataset.attrs["encoding-type"] = "array"
    dataset.attrs["encoding-version"] = "0.2.0"
    return dataset


def _temporary_sibling(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    return Path(tmp)


@torch.no_grad()
def write_results(
    model: Model,
    output: str | Path,
    *,
    mdata: md.MuData | None = None,
    targets: Sequence[str] = (),
    embedding_key: str = "X_omnivae",
    chunk_size: int = 4096,
    overwrite: bool = False,
    uns: Mapping[str, Any] | None = None,
) -> Path:
    """Write the embedding (and predicted modalities) of every cell into a new file, one chunk
    of cells at a time: memory does not grow with the number of cells.

    Parameters
    ----------
    model
        A trained :class:`omnivae.Model` (on data in memory or backed).
    output
        ``.h5mu``: a MuData with ``obsm[embedding_key]`` and one modality ``<target>_imputed``
        per target (normalised expression, as :func:`omnivae.tl.impute` writes it, with
        ``obs["observed"]``); ``.h5ad``: an AnnData with ``obsm[embedding_key]`` only (no
        targets). The cell table (``obs``) of the data is copied.
    mdata
        Cells to embed (default: the model's data); may be backed.
    targets
        Modalities to predict for every cell (``.h5mu`` output only).
    embedding_key
        Name of the embedding in ``obsm``.
    chunk_size
        Cells per forward pass and write; memory is about ``chunk_size`` x the largest
        target's features (float32).
    overwrite
        Replace an existing ``output`` (never the file the cells are read from).
    uns
        Entries for the output's ``uns`` (e.g. a record that training was interrupted).

    Returns
    -------
    The path written.

    Examples
    --------
    >>> import omnivae, tempfile, os, mudata as md
    >>> sim = omnivae.datasets.simulate(60, modalities=("rna", "adt"), seed=0)
    >>> model = omnivae.Model(sim, n_latent=4)
    >>> out = os.path.join(tempfile.mkdtemp(), "out.h5mu")
    >>> _ = write_results(model, out, targets=["adt"], chunk_size=25)
    >>> result = md.read_h5mu(out)
    >>> result.obsm["X_omnivae"].shape, result["adt_imputed"].shape
    ((60, 4), (60, 30))
    >>> os.remove(out)
    """
    source = mdata if mdata is not None else model.mdata
    read_from = getattr(source, "filename", None)  # a backed file the results must not replace
    output = check_output_file(output, overwrite=overwrite,
                               inputs=() if read_from is None else (read_from,))
    check_int("chunk_size", chunk_size)
    unknown = [t for t in targets if t not in model.setup.modalities]
    if unknown:
        raise KeyError(f"Unknown targets {unknown}; the model was trained on modalities "
                       f"{list(model.setup.modalities)}.")
    as_anndata = output.suffix == ".h5ad"
    if as_anndata and targets:
        raise ValueError(f"{output.name} is an AnnData file, which holds the embedding only; "
                         "write predicted modalities to an .h5mu file.")
    if not as_anndata and not targets:
        raise ValueError(f"{output.name}: an .h5mu output holds predicted modalities; name "
                         "targets=[...], or write the embedding alone to an .h5ad file.")
    data = model.cell_data(mdata)
    obs = source.obs.copy()
    tmp = _temporary_sibling(output)
    try:
        _write_skeleton(tmp, model, obs, data.mask, targets, as_anndata, dict(uns or {}))
        with h5py.File(tmp, "r+") as handle:
            _stream_into(handle, model, data, targets, embedding_key, chunk_size, as_anndata)
        os.replace(tmp, output)
    finally:
        if tmp.exists():
            tmp.unlink()
    return output


def _write_skeleton(path: Path, model: Model, obs: pd.DataFrame, mask: np.ndarray,
                    targets: Sequence[str], as_anndata: bool, uns: dict[str, Any]) -> None:
    """The output file without its large arrays: cell table, feature tables, parameters."""
    if as_anndata:
        ad.AnnData(obs=obs, uns=uns).write_h5ad(path)
        return
    mods = {}
    for target in targets:
        t = model.setup.modalities.index(target)
        mods[f"{target}_imputed"] = ad.AnnData(
            obs=pd.DataFrame({"observed": mask[:, t]}, index=obs.index.copy()),
            var=pd.DataFrame(index=pd.Index(model.setup.var_names[target])))
    with mudata_defaults():  # as write_h5mu_atomic: no pulled columns, no mudata notices
        result = md.MuData(mods)
        result.obs = obs.reindex(result.obs_names)
        for target in targets:
            result.uns[f"{target}_imputed"] = {"params": {
                "target": target, "n_samples": 0, "seed": 0, "normalization": NORMALIZATION}}
        result.uns.update(uns)
        result.write_h5mu(path)


def _stream_into(handle: h5py.File, model: Model, data: Any, targets: Sequence[str],
                 key: str, chunk_size: int, as_anndata: bool) -> None:
    n, n_latent = data.n_cells, model.config.n_latent
    embedding = _array_dataset(handle.require_group("obsm"), key, (n, n_latent))
    predicted = {t: _array_dataset(handle["mod"][f"{t}_imputed"], "X",
                                   (n, len(model.setup.var_names[t]))) for t in targets}
    module, device = model.module.eval(), model.device
    with pinned_threads(model.num_threads):
        for start in range(0, n, chunk_size):
            stop = min(start + chunk_size, n)
            batch = data.batch(np.arange(start, stop)).to(device)
            embedding[start:stop] = module.posterior(batch).mean.cpu().numpy()
            for target, dataset in predicted.items():
                pred = module.predict_normalized(batch, target, 0)[0].cpu().numpy()
                shrinkage = model.shrinkage.get(target)
                if shrinkage is not None:
                    pred, _ = shrinkage.apply_cross_modal(
                        pred, batch.mask.cpu().numpy(), model.setup.modalities.index(target))
                dataset[start:stop] = pred


def write_counts_store(
    path: str | Path,
    obs: pd.DataFrame,
    var: Mapping[str, pd.DataFrame],
    chunks: Iterable[Mapping[str, sp.csr_matrix]],
) -> Path:
    """Write an ``.h5mu`` of CSR counts from an iterator of row chunks (every modality has
    every cell of ``obs``, in that order), holding one chunk in memory at a time.

    Parameters
    ----------
    path
        The file to write (atomically: a temporary file renamed at the end).
    obs
        The cell table; its index names the cells.
    var
        Per modality, its feature table.
    chunks
        Per chunk, a CSR matrix per modality with the next rows; the rows of all chunks
        must add up to ``len(obs)``.

    Examples
    --------
    >>> import tempfile, os, numpy as np, pandas as pd, scipy.sparse as sp
    >>> path = os.path.join(tempfile.mkdtemp(), "store.h5mu")
    >>> obs = pd.DataFrame(index=[f"cell{i}" for i in range(4)])
    >>> var = {"rna": pd.DataFrame(index=["g1", "g2", "g3"])}
    >>> chunk = {"rna": sp.csr_matrix(np.ones((2, 3), "float32"))}
    >>> _ = write_counts_store(path, obs, var, [chunk, chunk])
    >>> import mudata as md; md.read_h5mu(path)["rna"].X.sum()
    np.float32(12.0)
    >>> os.remove(path)
    """
    path = Path(path)
    tmp = _temporary_sibling(path)
    try:
        mods = {m: ad.AnnData(obs=pd.DataFrame(index=obs.index.copy()), var=v)
                for m, v in var.items()}
        skeleton = md.MuData(mods)
        skeleton.obs = obs.reindex(skeleton.obs_names)
        skeleton.write_h5mu(tmp)
        with h5py.File(tmp, "r+") as handle:
            written = _append_chunks(handle, var, chunks)
        if written != len(obs):
            raise ValueError(f"The chunks hold {written} rows but obs has {len(obs)} cells.")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _append_chunks(handle: h5py.File, var: Mapping[str, pd.DataFrame],
                   chunks: Iterable[Mapping[str, sp.csr_matrix]]) -> int:
    groups = {}
    for m in var:
        group = handle["mod"][m]
        del group["X"]
        x = group.create_group("X")
        x.attrs["encoding-type"], x.attrs["encoding-version"] = "csr_matrix", "0.1.0"
        for name, dtype in (("data", "float32"), ("indices", "int32")):
            x.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(1 << 16,))
        x.create_dataset("indptr", data=np.zeros(1, np.int64), maxshape=(None,), chunks=(1 << 14,))
        groups[m] = x
    rows = 0
    for chunk in chunks:
        sizes = {chunk[m].shape[0] for m in var}
        if len(sizes) != 1:
            raise ValueError(f"A chunk's modalities have different numbers of rows: {sizes}.")
        for m, x in groups.items():
            block = sp.csr_matrix(chunk[m], dtype=np.float32)
            start = int(x["indptr"][-1])
            for name, values in (("data", block.data), ("indices", block.indices)):
                x[name].resize((start + len(values),))
                x[name][start:] = values
            n_rows = x["indptr"].shape[0]
            x["indptr"].resize((n_rows + block.shape[0],))
            x["indptr"][n_rows:] = start + block.indptr[1:].astype(np.int64)
        rows += sizes.pop()
    for m, x in groups.items():
        x.attrs["shape"] = np.array([rows, var[m].shape[0]], dtype=np.int64)
    return rows
