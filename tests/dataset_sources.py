"""Test helpers for the dataset downloads: the real public source files (a snapshot kept outside
the repository), source files rebuilt from the prepared ``.h5mu`` in ``../shared/data`` (in each
source format, so CI can run the whole download without the internet), a local HTTP server, and
a field-by-field comparison of two MuData."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp

from omnivae.data.files import mudata_defaults

ROOT = Path(__file__).resolve().parents[1]
RAW = "https://raw.githubusercontent.com/"
# The public source files as fetched from GitHub, laid out as <owner>/<repo>/<commit>/<path>
# (the raw URL's path); outside the repository, absent in CI.
REAL_SOURCES = Path(os.environ.get("OMNIVAE_SOURCES_DIR", ROOT.parent / ".cache" / "datasets-sources"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def relpath(url: str) -> str:
    """Path of a source URL below the mirror root."""
    assert url.startswith(RAW), url
    return url[len(RAW):]


def real_sources_present(entry: dict[str, Any]) -> bool:
    return all((REAL_SOURCES / relpath(s["url"])).is_file() for s in entry["sources"])


# ----------------------------------------------------------------------------- rebuilt sources
def _read(prepared: Path) -> md.MuData:
    with mudata_defaults():
        return md.read_h5mu(prepared)


def _write_openproblems(mdata: md.MuData, out: dict[str, Path]) -> None:
    for mod, adata in mdata.mod.items():
        counts = sp.csc_matrix(adata.X, dtype=np.float64)
        normalised = counts.multiply(1.0 / np.maximum(counts.sum(axis=1), 1)).tocsc()
        source = ad.AnnData(normalised, obs=adata.obs.copy(), var=adata.var.copy(),
                            layers={"counts": counts},
                            uns={"dataset_id": "rebuilt", "organism": "unknown"})
        source.write_h5ad(out[mod])


def _write_scmomat(mdata: md.MuData, out: dict[str, Path]) -> None:
    obs = mdata["rna"].obs
    meta = pd.DataFrame({"Batch": obs["batch"].astype(str), "Barcode": obs["Barcode"].astype(str),
                         "Ident": obs["cell_type_fine"].astype(str),
                         "cluster (remapped)": obs["cell_type"].astype(str)}, index=obs.index)
    meta.to_csv(out["meta"])
    for mod, names in (("rna", "genes"), ("atac", "regions")):
        sp.save_npz(out[mod], sp.csr_matrix(mdata[mod].X.T, dtype=np.int64))
        out[names].write_text("\n".join(mdata[mod].var_names) + "\n", encoding="utf-8")


def _write_totalvi(mdata: md.MuData, out: dict[str, Path]) -> None:
    for mod in ("rna", "adt"):
        adata = mdata[mod]
        table = pd.DataFrame(np.asarray(adata.X.todense(), dtype=np.float64).T,
                             index=adata.var_names, columns=adata.obs_names)
        with gzip.open(out[mod], "wt", compresslevel=1) as fh:
            table.to_csv(fh, float_format="%.1f")


def rebuild_sources(entry: dict[str, Any], prepared: Path, root: Path) -> dict[str, Any]:
    """Write source files of ``entry``'s format from its prepared ``.h5mu`` under ``root`` (at
    the paths of the registered URLs) and return a copy of ``entry`` whose sources carry the
    rebuilt files' sha256 (the registered content fingerprint is kept: it must still match)."""
    out = {s["role"]: root / relpath(s["url"]) for s in entry["sources"]}
    for path in out.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    fmt = entry["format"]
    if fmt == "prepared_h5mu":
        out["mudata"].write_bytes(prepared.read_bytes())
    else:
        writer = {"openproblems_h5ad": _write_openproblems, "scmomat_npz": _write_scmomat,
                  "totalvi_csv": _write_totalvi}[fmt]
        writer(_read(prepared), out)
    sources = [{**s, "sha256": sha256(out[s["role"]]),
                "size_bytes": out[s["role"]].stat().st_size} for s in entry["sources"]]
    return {**entry, "sources": sources}


# ----------------------------------------------------------------------------- local server
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, format: str, *args: Any) -> None:  # the stdlib signature
        pass

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        super().do_GET()


@contextmanager
def serve(root: Path) -> Iterator[tuple[str, list[str]]]:
    """Serve ``root`` over HTTP on 127.0.0.1; yield the base URL and the list of requested paths."""
    handler = type("Handler", (_QuietHandler,), {"requests": []})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", handler.requests
    finally:
        server.shutdown()
        server.server_close()


# ----------------------------------------------------------------------------- test fixture
class Sources:
    """Source files of the registered datasets, served over HTTP on 127.0.0.1 from ``root``.

    Two trees: ``rebuilt/`` always holds files rebuilt from ``../shared/data`` (what CI can
    run); ``auto/`` holds the real public files when the snapshot :data:`REAL_SOURCES` has them,
    else rebuilt ones. Each dataset is laid out on first use; :meth:`entry` returns the registry
    entry to use with it (the real one, or one whose sources carry the rebuilt files' sha256).
    """

    def __init__(self, root: Path, base_url: str, requests: list[str], shared: Path) -> None:
        from omnivae import datasets

        self.root, self.base_url, self.requests, self.shared = root, base_url, requests, shared
        self.registry = dict(datasets._registry())
        self._entries: dict[tuple[str, str], dict[str, Any]] = {}

    def mirror(self, tree: str) -> str:
        return f"{self.base_url}{tree}/"

    def kind(self, name: str, tree: str) -> str:
        """``"real"`` or ``"rebuilt"``: what ``tree`` serves for ``name``."""
        return "real" if tree == "auto" and real_sources_present(self.registry[name]) else "rebuilt"

    def entry(self, name: str, tree: str = "auto") -> dict[str, Any]:
        """Lay out ``name``'s sources in ``tree`` (once) and return its registry entry; skip the
        test when neither the real sources nor the prepared file are available."""
        import pytest

        key = (name, tree)
        if key not in self._entries:
            entry = self.registry[name]
            if self.kind(name, tree) == "real":
                for src in entry["sources"]:
                    target = self.root / tree / relpath(src["url"])
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.symlink_to(REAL_SOURCES / relpath(src["url"]))
            else:
                prepared = self.shared / entry["filename"]
                if not prepared.is_file():
                    pytest.skip(f"cannot serve the sources of {name!r}: neither the public source "
                                f"files under {REAL_SOURCES} nor the prepared {prepared} exist")
                entry = rebuild_sources(entry, prepared, self.root / tree)
            self._entries[key] = entry
        return self._entries[key]

    def offline(self, monkeypatch: Any, folder: Path, names: list[str], tree: str = "auto") -> None:
        """Simulate a machine without ``../shared/data`` whose downloads of ``names`` come from
        this server: ``OMNIVAE_DATA`` an empty ``folder``, an empty cache, the mirror set and
        the registry holding the entries of the served files."""
        from omnivae import datasets

        entries = {name: self.entry(name, tree) for name in names}
        folder.mkdir(parents=True, exist_ok=True)
        (folder.parent / "cache").mkdir(exist_ok=True)
        monkeypatch.setenv("OMNIVAE_DATA", str(folder))
        monkeypatch.setenv("XDG_CACHE_HOME", str(folder.parent / "cache"))
        monkeypatch.setenv("OMNIVAE_DATA_MIRROR", self.mirror(tree))
        monkeypatch.setattr(datasets, "_registry", lambda: {**self.registry, **entries})


# ----------------------------------------------------------------------------- comparison
def _frame_differences(tag: str, a: pd.DataFrame, b: pd.DataFrame) -> list[str]:
    out = []
    if not a.index.equals(b.index):
        out.append(f"{tag}: index differs")
    if list(a.columns) != list(b.columns):
        return [*out, f"{tag}: columns {list(a.columns)} != {list(b.columns)}"]
    for col in a.columns:
        x, y = a[col], b[col]
        if x.dtype != y.dtype:
            out.append(f"{tag}[{col}]: dtype {x.dtype} != {y.dtype}")
        elif not x.reset_index(drop=True).equals(y.reset_index(drop=True)):
            out.append(f"{tag}[{col}]: values differ")
    return out


def differences(got: md.MuData, want: md.MuData) -> list[str]:
    """Every way ``got`` differs from ``want``: cells and their order, modalities, features,
    counts (exactly, and as float32 CSR), obs and var columns with dtypes and values."""
    out = []
    if not got.obs_names.equals(want.obs_names):
        out.append("obs_names differ")
    if list(got.mod) != list(want.mod):
        return [*out, f"modalities {list(got.mod)} != {list(want.mod)}"]
    out += _frame_differences("obs", got.obs, want.obs)
    for mod in want.mod:
        a, b = got[mod], want[mod]
        if a.shape != b.shape:
            out.append(f"{mod}: shape {a.shape} != {b.shape}")
            continue
        if not (sp.isspmatrix_csr(a.X) and a.X.dtype == np.float32):
            out.append(f"{mod}: X is {type(a.X).__name__} {a.X.dtype}, not float32 CSR")
        if (sp.csr_matrix(a.X) != sp.csr_matrix(b.X)).nnz:
            out.append(f"{mod}: counts differ")
        out += _frame_differences(f"{mod}.obs", a.obs, b.obs)
        out += _frame_differences(f"{mod}.var", a.var, b.var)
        for attr in ("layers", "obsm", "varm", "obsp", "uns"):
            if set(getattr(a, attr).keys()) != set(getattr(b, attr).keys()):
                out.append(f"{mod}.{attr}: keys differ")
    return out
