"""Datasets: a generative multi-omics simulator and checksummed loaders for real public subsets.

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
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, overload

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["ChecksumError", "UnknownDatasetError", "available", "load", "locate", "simulate"]

# kind -> (default n_features, var-name prefix, min digits, 10x feature_types)
_KINDS = {"rna": (1000, "gene", 4, "Gene Expression"), "atac": (2000, "peak", 4, "Peaks"),
          "adt": (30, "protein", 2, "Antibody Capture"), "other": (200, "feature", 4, "Custom")}
_ALIASES = {"rna": "rna", "gex": "rna", "atac": "atac", "peaks": "atac", "adt": "adt", "protein": "adt"}
# kind -> (sd base log-abundance, log mean library, sd log library, marker fraction, marker lfc,
#          map scale, activity offset, activity slope, NB inverse dispersion (0: Poisson));
# adt: base is the log background, lfc/offset act on the logit of the foreground probability
_PARAMS: dict[str, tuple[float, ...]] = {
    "rna": (1.0, np.log(3000.0), 0.35, 0.02, 1.0, 1.0, -1.8, 8.0, 2.0),
    "atac": (0.5, np.log(110.0), 0.45, 0.05, 2.0, 1.0, -1.0, 4.0, 0.0),
    "other": (1.0, np.log(1000.0), 0.35, 0.05, 2.0, 1.0, -1.0, 4.0, 2.0),
    "adt": (0.6, np.log(25.0), 0.3, 0.25, 3.0, 2.0, -1.5, 1.0, 10.0),
}
_LATENT_DIM, _CHUNK = 10, 8192
_CENTRE_SCALE, _WITHIN_SD, _BATCH_LATENT = 1.2, 1.0, 1.0


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _nb(rng: np.random.Generator, mu: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Negative-binomial draws (mean ``mu``, inverse dispersion ``theta``) as a gamma-Poisson."""
    return rng.poisson(rng.gamma(theta, mu / theta))


class _Map:
    """Random 2-layer softplus map latent -> per-feature scores (standardised on ``z_ref``,
    times ``scale``) plus a type-specific marker boost on a random subset of features."""

    def __init__(self, rng: np.random.Generator, z_ref: np.ndarray, n_out: int, n_types: int,
                 scale: float, marker_frac: float, marker_lfc: float, hidden: int = 32) -> None:
        self.w1 = rng.normal(0.0, 1.0 / np.sqrt(_LATENT_DIM), (_LATENT_DIM, hidden))
        self.b1 = rng.normal(0.0, 0.5, hidden)
        self.w2 = rng.normal(0.0, 1.0 / np.sqrt(hidden), (hidden, n_out))
        ref = _softplus(z_ref @ self.w1 + self.b1) @ self.w2
        self.mu, self.sd = ref.mean(axis=0), ref.std(axis=0) / scale + 1e-8
        n_mark = max(1, round(marker_frac * n_out))
        self.markers = np.zeros((n_types, n_out))
        for t in range(n_types):
            idx = rng.choice(n_out, n_mark, replace=False)
            self.markers[t, idx] = rng.normal(marker_lfc, 0.3 * marker_lfc, n_mark)

    def __call__(self, z: np.ndarray, types: np.ndarray) -> np.ndarray:
        return (_softplus(z @ self.w1 + self.b1) @ self.w2 - self.mu) / self.sd + self.markers[types]


def _simulate_modality(rng: np.random.Generator, kind: str, n_feat: int, z: np.ndarray,
                       z_ref: np.ndarray, types: np.ndarray, batches: np.ndarray, n_types: int,
                       n_batches: int, batch_effect: float) -> sp.csr_matrix:
    """Draw one modality's counts for all cells (chunked over cells to bound memory)."""
    n = z.shape[0]
    base_sd, lib_mu, lib_sd, frac, lfc, scale, offset, slope, th = _PARAMS[kind]
    # per-batch log-shifts with sd ``batch_effect`` per feature: mostly low-rank (a coherent
    # shift, as in real batches) plus an independent per-feature part
    low_rank = rng.normal(0.0, 1.0, (n_batches, 2)) @ rng.normal(0.0, np.sqrt(0.5), (2, n_feat))
    noise = rng.normal(0.0, 1.0, (n_batches, n_feat))
    b_feat = batch_effect * (np.sqrt(0.75) * low_rank + 0.5 * noise)
    b_lib = rng.normal(0.0, 0.5 * batch_effect, n_batches)
    lib = np.exp(rng.normal(lib_mu if kind != "adt" else 0.0, lib_sd, n) + b_lib[batches])
    fmap = _Map(rng, z_ref, n_feat, n_types, scale, frac, lfc)
    base = rng.normal(lib_mu if kind == "adt" else 0.0, base_sd, n_feat)
    theta = rng.lognormal(np.log(max(th, 1e-3)), 0.3, n_feat)
    fold = rng.normal(2.0, 0.5, n_feat)  # adt: log foreground/background ratio
    blocks = []
    for s in range(0, n, _CHUNK):
        sl = slice(s, min(s + _CHUNK, n))
        eta = fmap(z[sl], types[sl])
        if kind == "adt":  # background/foreground NB mixture; per-batch background levels
            mu = np.exp(base + b_feat[batches[sl]]) * lib[sl, None]
            fg = rng.random(eta.shape) < 1.0 / (1.0 + np.exp(-(eta + offset)))
            counts = _nb(rng, np.where(fg, mu * np.exp(fold), mu), np.where(fg, theta / 2, theta))
        else:
            # saturating activity: "on" features share the library, "off" ones decay smoothly
            logit = base + b_feat[batches[sl]] - _softplus(-slope * (eta + offset))
            rho = np.exp(logit - logit.max(axis=1, keepdims=True))
            mu = rho * (lib[sl, None] / rho.sum(axis=1, keepdims=True))
            counts = rng.poisson(mu) if th == 0 else _nb(rng, mu, theta)
        blocks.append(sp.csr_matrix(counts.astype(np.float32)))
    return sp.vstack(blocks, format="csr", dtype=np.float32)


@overload
def simulate(n_cells: int = ..., *, modalities: Sequence[str] = ..., n_batches: int = ...,
             n_cell_types: int = ..., n_features: Mapping[str, int] | None = ...,
             missing_fraction: float = ..., batch_effect: float = ..., seed: int = ...,
             return_truth: Literal[False] = ...) -> md.MuData: ...
@overload
def simulate(n_cells: int = ..., *, modalities: Sequence[str] = ..., n_batches: int = ...,
             n_cell_types: int = ..., n_features: Mapping[str, int] | None = ...,
             missing_fraction: float = ..., batch_effect: float = ..., seed: int = ...,
             return_truth: Literal[True]) -> tuple[md.MuData, dict[str, ad.AnnData]]: ...
def simulate(n_cells: int = 2000, *, modalities: Sequence[str] = ("rna", "atac", "adt"),
             n_batches: int = 3, n_cell_types: int = 6, n_features: Mapping[str, int] | None = None,
             missing_fraction: float = 0.2, batch_effect: float = 0.5, seed: int = 0,
             return_truth: bool = False) -> md.MuData | tuple[md.MuData, dict[str, ad.AnnData]]:
    """Simulate mosaic single-cell multi-omics counts from a shared latent.

    Each cell has a 10-d latent (cell type centre plus within-type variation) and a batch
    (balanced, random). A random 2-layer softplus map with type markers turns the latent into
    per-feature rates for each modality, whose kind follows its name: ``"rna"``/``"gex"``:
    negative-binomial gene counts (log-normal library ~3000 UMI, ~88 % zeros);
    ``"atac"``/``"peaks"``: Poisson peak counts (~95 % zeros, mostly 0/1/2);
    ``"adt"``/``"protein"``: background/foreground negative-binomial mixture with per-batch
    background; any other name: negative-binomial counts. Batches shift each feature
    multiplicatively (log-normal, sd ``batch_effect``), the library size, and slightly the
    latent programme.

    Parameters
    ----------
    n_cells
        Number of cells (``>= 1``), named ``"cell-00000"``, ...
    modalities
        Unique modality names.
    n_batches, n_cell_types
        Numbers of batches (``"batch-0"``, ...) and cell types (``"type-0"``, ...).
    n_features
        Per-modality feature counts overriding the defaults (rna 1000, atac 2000, adt 30, 200).
    missing_fraction
        Fraction of cells (in ``[0, 1)``) that each lose one random modality, becoming absent
        from its AnnData. No cell loses all modalities: with one modality nothing is removed.
    batch_effect
        Scale of the batch effects (``>= 0``; 0 disables them).
    seed
        Random seed; the output is a deterministic function of all arguments.
    return_truth
        Also return the full counts before removal as ``{mod: AnnData}`` (all cells, in
        ``mdata.obs_names`` order).

    Returns
    -------
    mudata.MuData or tuple
        Integer counts as float32 CSR in each ``X``; var ``feature_types`` as in 10x;
        categorical ``obs["batch"]``, ``obs["cell_type"]`` in ``mdata.obs`` and each modality;
        ``uns["simulation"]`` holds the settings and the removed cells per modality.
        ``(mdata, truth)`` if ``return_truth``.

    Examples
    --------
    >>> mdata, truth = simulate(300, n_features={"atac": 500}, seed=1, return_truth=True)
    >>> mdata.n_obs, list(mdata.mod), truth["atac"].shape
    (300, ['rna', 'atac', 'adt'], (300, 500))
    >>> all(mdata[m].n_obs < 300 for m in mdata.mod)
    True
    """
    mods = list(modalities)
    if isinstance(modalities, str) or not mods:
        raise ValueError("modalities must be a non-empty sequence of names, e.g. ('rna', 'adt')")
    if len(set(mods)) != len(mods):
        raise ValueError(f"modalities must be unique, got {mods}")
    if int(n_cells) < 1 or int(n_batches) < 1 or int(n_cell_types) < 1:
        raise ValueError(f"n_cells, n_batches and n_cell_types must be >= 1, got "
                         f"{n_cells}, {n_batches}, {n_cell_types}")
    if not 0.0 <= missing_fraction < 1.0:
        raise ValueError(f"missing_fraction must be in [0, 1), got {missing_fraction}")
    if batch_effect < 0:
        raise ValueError(f"batch_effect must be >= 0, got {batch_effect}")
    n_features = dict(n_features or {})
    if set(n_features) - set(mods) or any(int(v) < 1 for v in n_features.values()):
        raise ValueError(f"n_features must map simulated modalities to counts >= 1, got {n_features}")
    rng = np.random.default_rng(seed)
    n, k_types, n_b = int(n_cells), int(n_cell_types), int(n_batches)
    centres = rng.normal(0.0, _CENTRE_SCALE, (k_types, _LATENT_DIM))
    types = rng.choice(k_types, n, p=rng.dirichlet(np.full(k_types, 4.0)))
    batches = rng.permutation(np.arange(n) % n_b)
    z = centres[types] + rng.normal(0.0, _WITHIN_SD, (n, _LATENT_DIM))
    z_ref = centres[rng.integers(0, k_types, 512)] + rng.normal(0.0, _WITHIN_SD, (512, _LATENT_DIM))
    z += _BATCH_LATENT * batch_effect * rng.normal(0.0, 1.0, (n_b, _LATENT_DIM))[batches]
    names = pd.Index([f"cell-{i:05d}" for i in range(n)])
    obs = pd.DataFrame({
        "batch": pd.Categorical.from_codes(batches, [f"batch-{b}" for b in range(n_b)]),
        "cell_type": pd.Categorical.from_codes(types, [f"type-{t}" for t in range(k_types)]),
    }, index=names)
    truth: dict[str, ad.AnnData] = {}
    prefixes: set[str] = set()
    for mod in mods:
        kind = _ALIASES.get(mod.lower(), "other")
        default, prefix, digits, ftype = _KINDS[kind]
        n_feat = int(n_features.get(mod, default))
        x = _simulate_modality(rng, kind, n_feat, z, z_ref, types, batches, k_types, n_b, batch_effect)
        prefix = f"{mod}-{prefix}" if prefix in prefixes else prefix  # unique across modalities
        prefixes.add(prefix)
        width = max(digits, len(str(n_feat)))
        var = pd.DataFrame({"feature_types": pd.Categorical([ftype] * n_feat)},
                           index=[f"{prefix}-{j + 1:0{width}d}" for j in range(n_feat)])
        truth[mod] = ad.AnnData(x, obs=obs.copy(), var=var)
    keep = np.ones((n, len(mods)), dtype=bool)
    if len(mods) > 1:  # each lost cell loses exactly one modality, so keeps at least one
        lost = rng.choice(n, round(missing_fraction * n), replace=False)
        keep[lost, rng.integers(0, len(mods), lost.size)] = False
    with md.set_options(pull_on_update=False):  # keeps obs_names in cell order
        mdata = md.MuData({m: truth[m][keep[:, i]].copy() for i, m in enumerate(mods)}, obs=obs)
    mdata.uns["simulation"] = {
        "seed": int(seed), "n_cell_types": k_types, "n_batches": n_b,
        "batch_effect": float(batch_effect), "missing_fraction": float(missing_fraction),
        "missing": {m: names[~keep[:, i]].tolist() for i, m in enumerate(mods)},
    }
    return (mdata, truth) if return_truth else mdata


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
    with md.set_options(pull_on_update=False):
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
