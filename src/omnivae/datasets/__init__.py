"""Datasets: checksummed loaders for real public subsets (downloaded and converted from their
public sources when not on disk), and the simulator (:mod:`omnivae.datasets.simulation`,
re-exported here as :func:`simulate`).

Mosaic convention: a cell that lacks a modality is absent from that modality's AnnData
(MuData membership); it is never represented by an all-zero row.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import mudata as md
import numpy as np
import pandas as pd

from omnivae.data.files import mudata_defaults
from omnivae.datasets.convert import ConversionError, content_sha256, label_keys
from omnivae.datasets.download import (
    ChecksumError,
    build,
    converted_fingerprint,
    fetch_file,
    mirror_url,
)
from omnivae.datasets.simulation import simulate

__all__ = ["ChecksumError", "ConversionError", "UnknownDatasetError", "available", "load",
           "locate", "simulate", "sources"]


class UnknownDatasetError(KeyError, ValueError):
    """Raised for a dataset name that is not in the registry (a ``KeyError`` and ``ValueError``)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


_HASH_CACHE: dict[tuple[str, str, int, int], str] = {}


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
    key = ("bytes", str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _HASH_CACHE[key] = h.hexdigest()
    return _HASH_CACHE[key]


def _content_sha256(path: Path, entry: dict[str, Any]) -> str | None:
    """Content fingerprint of an ``.h5mu`` (None if unreadable), cached like :func:`_sha256`."""
    st = path.stat()
    key = ("content", str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        try:
            with mudata_defaults():
                found = content_sha256(md.read_h5mu(path), label_keys(entry))
        except Exception:  # any unreadable file is simply not the dataset
            return None
        _HASH_CACHE[key] = found
    return _HASH_CACHE[key]


def _verify(path: Path, entry: dict[str, Any]) -> None:
    """Accept the prepared file byte for byte, or a file that :func:`load` converted from the
    sources (marked so) whose content has the registered fingerprint; else raise
    :class:`ChecksumError`."""
    found = _sha256(path)
    if found == entry["sha256"]:
        return
    expected = entry.get("content_sha256")
    marked = converted_fingerprint(path)
    if expected is not None and marked == expected and _content_sha256(path, entry) == expected:
        return
    converted = (f" (or, for a file converted from the public sources, content fingerprint "
                 f"{expected})" if marked is not None else "")
    raise ChecksumError(f"Checksum mismatch for {path}: expected sha256 {entry['sha256']}"
                        f"{converted}, found {found}. Delete or replace the file.")


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "omnivae"


def _env_dirs() -> list[Path]:
    return [Path(p).expanduser() for p in os.environ.get("OMNIVAE_DATA", "").split(os.pathsep) if p]


def _user_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    """Where a download is written: ``data_dir``, else the first ``$OMNIVAE_DATA`` folder,
    else the cache."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    return next(iter(_env_dirs()), _cache_dir())


def _search_dirs(data_dir: str | os.PathLike[str] | None) -> list[Path]:
    """Folders searched, in order: argument, $OMNIVAE_DATA (if unset: shared/data near the
    project), cache."""
    dirs: list[Path] = [] if data_dir is None else [Path(data_dir).expanduser()]
    env = _env_dirs()
    dirs += env
    root = next((p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists()), None)
    if not env and root is not None:
        dirs.append(root.parent / "shared" / "data")
    if not env:
        dirs += [Path.cwd() / ".." / "shared" / "data", Path.cwd() / "shared" / "data"]
    dirs.append(_cache_dir())
    unique: dict[str, Path] = {}
    for d in dirs:
        unique.setdefault(os.path.abspath(d), d)
    return list(unique.values())


def sources(name: str, *, mirror: str | os.PathLike[str] | None = None) -> list[tuple[str, str]]:
    """The public source files of a registered dataset, as ``(url, sha256)`` pairs.

    These are the files :func:`load` downloads (then converts into the prepared ``.h5mu``) when
    the dataset is not on disk: GitHub raw URLs at full commits, each with the SHA-256 it must
    have. With ``mirror`` (or the environment variable ``OMNIVAE_DATA_MIRROR``), the URLs point
    at that root instead of ``https://raw.githubusercontent.com/``.

    Parameters
    ----------
    name
        Registered name (see :func:`available`).
    mirror
        Root URL (``http(s)://`` or ``file://``) or folder replacing the GitHub prefix.

    Returns
    -------
    list of tuple of str
        ``(url, sha256)`` per source file, in the registry's order.

    Examples
    --------
    >>> url, digest = sources("quickstart_pbmc_mosaic")[0]
    >>> url.startswith("https://raw.githubusercontent.com/labomics/midas/"), len(digest)
    (True, 64)
    """
    entry = _entry(name)
    return [(mirror_url(s["url"], mirror), s["sha256"]) for s in entry.get("sources", [])]


def locate(name: str, *, data_dir: str | os.PathLike[str] | None = None,
           download: bool = True, progress: bool = True,
           mirror: str | os.PathLike[str] | None = None) -> Path:
    """Path of a registered dataset's verified ``.h5mu`` file, downloading and converting the
    public sources when it is not on disk (see :func:`load` for the search and parameters).

    Examples
    --------
    >>> try:
    ...     locate("neurips2021_bmmc_multiome_starter", download=False).suffix
    ... except FileNotFoundError:
    ...     ".h5mu"
    '.h5mu'
    """
    entry = _entry(name)
    searched = _search_dirs(data_dir)
    for d in searched:
        path = d / entry["filename"]
        if path.is_file():
            _verify(path, entry)
            return path
    target = _user_dir(data_dir) / entry["filename"]
    if download and entry.get("prepared_url"):
        return fetch_file(mirror_url(entry["prepared_url"], mirror), target, entry["sha256"])
    if download and entry.get("sources"):
        return build(entry, target, mirror=mirror, progress=progress)
    places = "\n".join(f"  - {d / entry['filename']}" for d in searched)
    urls = "\n".join(f"  - {u}" for u, _ in sources(name, mirror=mirror)) or f"  - {entry.get('url')}"
    raise FileNotFoundError(
        f"Dataset {entry['name']!r} ({entry['filename']}) was not found. Searched:\n{places}\n"
        f"Call load/locate with download=True to download its public source files (below) "
        f"and convert them into {target}, put the prepared file in one of these folders, pass "
        f"data_dir=..., or set the OMNIVAE_DATA environment variable to its folder. The "
        f"original data ({entry['source']}) are public at:\n{urls}")


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
         download: bool = True, progress: bool = True,
         mirror: str | os.PathLike[str] | None = None) -> md.MuData:
    """Load a registered real dataset as MuData (raw integer counts in each modality's ``X``).

    The prepared ``<name>.h5mu`` file is searched in order in: ``data_dir``; the folder(s) in
    the ``OMNIVAE_DATA`` environment variable, or, when it is unset, ``../shared/data`` beside
    the project root (also ``./../shared/data`` and ``./shared/data`` from the working
    directory); the cache ``$XDG_CACHE_HOME/omnivae`` (default ``~/.cache/omnivae``). The file
    must match the registered SHA-256 (or, for a file converted from the sources, the
    registered content fingerprint). If it is absent everywhere and ``download`` is true, the
    dataset's public source files (:func:`sources`) are downloaded, each checked against its
    SHA-256, converted into exactly the prepared dataset (same cells, features, labels and
    counts, checked by a content fingerprint) and written atomically into the user data
    folder: ``data_dir``, else the first ``OMNIVAE_DATA`` folder, else the cache. Later calls
    find it there and need no network. Counts are not modified; the batch and label columns
    are made available in ``mdata.obs`` for all cells (and in each modality's obs), and
    ``mdata.uns["dataset"]`` records the name and keys.

    Parameters
    ----------
    name
        Registered name (see :func:`available`).
    data_dir
        Folder searched first, and where a download is written.
    download
        Whether to download (and convert) the public sources when no file is found locally;
        if false, ``FileNotFoundError`` says where the data can be found.
    progress
        Show a progress bar (on stderr) while downloading; ``False`` for quiet.
    mirror
        Root URL (``http(s)://`` or ``file://``) or folder replacing the GitHub prefix
        ``https://raw.githubusercontent.com/`` of the source URLs (default: the environment
        variable ``OMNIVAE_DATA_MIRROR``, else GitHub).

    Returns
    -------
    mudata.MuData
        The dataset; cells missing a modality are absent from that modality.

    Raises
    ------
    ChecksumError
        A file on disk, or a downloaded source file, does not have the registered SHA-256
        (the message names the file or URL and both hashes; nothing partial is kept).
    ConversionError
        The sources did not convert into the registered content.

    Examples
    --------
    >>> try:
    ...     mdata = load("neurips2021_bmmc_multiome_starter", download=False)
    ...     print(mdata.n_obs, "batch" in mdata.obs, "cell_type" in mdata.obs)
    ... except FileNotFoundError:
    ...     print(500, True, True)
    500 True True
    """
    entry = _entry(name)
    path = locate(entry["name"], data_dir=data_dir, download=download, progress=progress,
                  mirror=mirror)
    with mudata_defaults():
        mdata = md.read_h5mu(path)
    _normalise_obs(mdata, label_keys(entry))
    mdata.uns["dataset"] = {"name": entry["name"], "sha256": entry["sha256"],
                            **{k: entry[k] for k in ("batch_key", "label_key") if entry.get(k)}}
    return mdata


def available() -> pd.DataFrame:
    """Table of the registered datasets: description, size, keys, licence, source, the bytes a
    download of its public sources takes, and the local path where it is found (or None).

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
            "download_bytes": sum(int(src.get("size_bytes", 0)) for src in e.get("sources", [])),
            "path": None if path is None else str(path),
        })
    return pd.DataFrame(rows).set_index("name")
