"""Datasets: checksummed loaders for real public subsets, and the simulator
(:mod:`omnivae.datasets.simulation`, re-exported here as :func:`simulate`).

Mosaic convention: a cell that lacks a modality is absent from that modality's AnnData
(MuData membership); it is never represented by an all-zero row.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import tempfile
import urllib.request
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import mudata as md
import numpy as np
import pandas as pd

from omnivae.data.files import mudata_defaults
from omnivae.datasets.simulation import simulate

__all__ = ["ChecksumError", "UnknownDatasetError", "available", "load", "locate", "simulate"]


class UnknownDatasetError(KeyError, ValueError):
    """Raised for a dataset name that is not in the registry (a ``KeyError`` and ``ValueError``)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ChecksumError(ValueError):
    """Raised when a data file's SHA-256 differs from the registered one."""


_HASH_CACHE: dict[tuple[str, int, int], str] = {}


@lru_cache(maxsize=1)
def _registry() -> dict[str, dict[str, Any]]:
    text = Path(__file__).with_name("registry.json").read_text(encoding="utf-8")
    return dict(json.loads(text)["datasets"])


def _entry(name: str) -> dict[str, Any]:
    reg = _registry()
    key = name[:-5] if name.endswith(".h5mu") else name
    if key not in reg:
        close = difflib.get_close_matches(key, list(reg), n=1, cutoff=0.4)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownDatasetError(f"Unknown dataset {name!r}.{hint} Available: {', '.join(sorted(reg))}")
    return reg[key]


def _sha256(path: Path) -> str:
    """SHA-256 of a file, cached in-process per (path, size, mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _HASH_CACHE[key] = h.hexdigest()
    return _HASH_CACHE[key]


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "omnivae"


def _search_dirs(data_dir: str | os.PathLike[str] | None) -> list[Path]:
    """Folders searched, in order: argument, $OMNIVAE_DATA, shared/data near the project, cache."""
    dirs: list[Path] = [] if data_dir is None else [Path(data_dir).expanduser()]
    dirs += [Path(p).expanduser() for p in os.environ.get("OMNIVAE_DATA", "").split(os.pathsep) if p]
    root = next((p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists()), None)
    if root is not None:
        dirs.append(root.parent / "shared" / "data")
    dirs += [Path.cwd() / ".." / "shared" / "data", Path.cwd() / "shared" / "data", _cache_dir()]
    unique: dict[str, Path] = {}
    for d in dirs:
        unique.setdefault(os.path.abspath(d), d)
    return list(unique.values())


def _download(url: str, dest: str | os.PathLike[str], sha256: str | None = None) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying the SHA-256 when given.

    The data go to a temporary file beside ``dest`` that replaces ``dest`` only once complete
    and verified; on any failure the temporary file is removed and ``dest`` is left untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            for block in iter(lambda: resp.read(1 << 20), b""):
                out.write(block)
                h.update(block)
            out.flush()
            os.fsync(out.fileno())
        if sha256 is not None and h.hexdigest() != sha256:
            raise ChecksumError(f"Checksum mismatch for download {url} -> {dest}: "
                                f"expected sha256 {sha256}, found {h.hexdigest()}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def locate(name: str, *, data_dir: str | os.PathLike[str] | None = None,
           download: bool = True) -> Path:
    """Path of a registered dataset's verified ``.h5mu`` file (see :func:`load` for the search).

    Examples
    --------
    >>> try:
    ...     locate("neurips2021_bmmc_multiome_starter").suffix
    ... except FileNotFoundError:
    ...     ".h5mu"
    '.h5mu'
    """
    entry = _entry(name)
    searched = _search_dirs(data_dir)
    for d in searched:
        path = d / entry["filename"]
        if path.is_file():
            found = _sha256(path)
            if found != entry["sha256"]:
                raise ChecksumError(f"Checksum mismatch for {path}: expected sha256 "
                                    f"{entry['sha256']}, found {found}. Delete or replace the file.")
            return path
    if download and entry.get("prepared_url"):
        return _download(entry["prepared_url"], _cache_dir() / entry["filename"], entry["sha256"])
    places = "\n".join(f"  - {d / entry['filename']}" for d in searched)
    urls = "\n".join(f"  - {u}" for u in entry.get("source_urls", [])) or f"  - {entry.get('url')}"
    hosted = (f"A prepared file is hosted at {entry['prepared_url']} (use download=True). "
              if entry.get("prepared_url") else "No prepared file is hosted yet. ")
    raise FileNotFoundError(
        f"Dataset {entry['name']!r} ({entry['filename']}) was not found. Searched:\n{places}\n"
        f"Put the prepared file in one of these folders, pass data_dir=..., or set the "
        f"OMNIVAE_DATA environment variable to its folder. {hosted}The original data "
        f"({entry['source']}) are public at:\n{urls}")


def _normalise_obs(mdata: md.MuData, keys: Sequence[str]) -> None:
    """Fill ``mdata.obs[key]`` for all cells from modality obs / ``mod:key`` columns, and back."""
    for key in keys:
        if key not in mdata.obs or mdata.obs[key].isna().any():
            col = mdata.obs[key].astype(object) if key in mdata.obs else pd.Series(
                np.full(mdata.n_obs, None, dtype=object), index=mdata.obs_names)
            for mod, adata in mdata.mod.items():
                for src in (adata.obs.get(key), mdata.obs.get(f"{mod}:{key}")):
                    if src is not None:
                        col = col.where(col.notna(), src.astype(object).reindex(mdata.obs_names))
            mdata.obs[key] = pd.Categorical(col)
        for adata in mdata.mod.values():
            if key not in adata.obs:
                adata.obs[key] = mdata.obs.loc[adata.obs_names, key].to_numpy()


def load(name: str, *, data_dir: str | os.PathLike[str] | None = None,
         download: bool = True) -> md.MuData:
    """Load a registered real dataset as MuData (raw integer counts in each modality's ``X``).

    The prepared ``<name>.h5mu`` file is searched in order in: ``data_dir``; the folder(s) in
    the ``OMNIVAE_DATA`` environment variable; ``../shared/data`` beside the project root
    (also ``./../shared/data`` and ``./shared/data`` from the working directory); the cache
    ``$XDG_CACHE_HOME/omnivae`` (default ``~/.cache/omnivae``). The file must match the
    registered SHA-256. If absent everywhere and ``download`` is true, a registered
    ``prepared_url`` is downloaded into the cache; otherwise ``FileNotFoundError`` explains
    where to get the data. Counts are not modified; the batch and label columns are made
    available in ``mdata.obs`` for all cells (and in each modality's obs), and
    ``mdata.uns["dataset"]`` records the name and keys.

    Parameters
    ----------
    name
        Registered name (see :func:`available`).
    data_dir
        Folder searched first.
    download
        Whether to download a hosted prepared file when none is found locally.

    Returns
    -------
    mudata.MuData
        The dataset; cells missing a modality are absent from that modality.

    Examples
    --------
    >>> try:
    ...     mdata = load("neurips2021_bmmc_multiome_starter")
    ...     print(mdata.n_obs, "batch" in mdata.obs, "cell_type" in mdata.obs)
    ... except FileNotFoundError:
    ...     print(500, True, True)
    500 True True
    """
    entry = _entry(name)
    path = locate(entry["name"], data_dir=data_dir, download=download)
    with mudata_defaults():
        mdata = md.read_h5mu(path)
    keys = [k for k in (entry.get("batch_key"), entry.get("label_key"),
                        *entry.get("extra_label_keys", [])) if k]
    _normalise_obs(mdata, keys)
    mdata.uns["dataset"] = {"name": entry["name"], "sha256": entry["sha256"],
                            **{k: entry[k] for k in ("batch_key", "label_key") if entry.get(k)}}
    return mdata


def available() -> pd.DataFrame:
    """Table of the registered datasets, with the local path where each is found (or None).

    Examples
    --------
    >>> table = available()
    >>> {"n_cells", "batch_key", "label_key", "licence", "path"} <= set(table.columns)
    True
    """
    rows = []
    for name, e in sorted(_registry().items()):
        path = next((d / e["filename"] for d in _search_dirs(None) if (d / e["filename"]).is_file()), None)
        rows.append({
            "name": name, "description": e["description"], "n_cells": e["n_cells"],
            "modalities": ", ".join(f"{m} {n}" for m, n in e["modalities"].items()),
            "batch_key": e.get("batch_key"), "label_key": e.get("label_key"),
            "licence": e["licence"], "source": e["source"], "url": e.get("url"),
            "path": None if path is None else str(path),
        })
    return pd.DataFrame(rows).set_index("name")
