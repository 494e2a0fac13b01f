"""Atomic, code-free files: model folders (JSON + tensors) and ``.h5mu`` output."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import mudata as md
import torch

FORMAT_NAME = "omnivae-model"
FORMAT_VERSION = 1
_META = "omnivae.json"
_WEIGHTS = "weights.pt"


def save_model_folder(path: Path, meta: dict[str, Any], state: dict[str, torch.Tensor],
                      *, overwrite: bool) -> None:
    """Write ``meta`` as JSON and ``state`` as tensors into ``path``, atomically.

    Everything is written into a temporary sibling folder that replaces ``path`` in one rename,
    so a crash never leaves a half-written model behind.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        document = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                    "torch_version": torch.__version__, **meta}
        (tmp / _META).write_text(json.dumps(document, indent=2, default=str))
        torch.save({k: v.detach().cpu() for k, v in state.items()}, tmp / _WEIGHTS)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_model_folder(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a folder written by :func:`save_model_folder` (tensors only, no pickled code)."""
    path = Path(path)
    meta_file = path / _META
    if not meta_file.is_file():
        raise FileNotFoundError(f"{path} is not an omnivae model folder (no {_META}).")
    meta = json.loads(meta_file.read_text())
    if meta.get("format") != FORMAT_NAME:
        raise ValueError(f"{meta_file} is not an omnivae model description.")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path} was saved in format version {version}; this omnivae reads version "
            f"{FORMAT_VERSION}. Use the omnivae release that wrote it."
        )
    state = torch.load(path / _WEIGHTS, map_location="cpu", weights_only=True)
    return meta, state


def write_h5mu_atomic(mdata: md.MuData, path: str | Path) -> None:
    """Write ``mdata`` to ``path`` via a temporary file and one rename.

    Examples
    --------
    >>> import omnivae, tempfile, os
    >>> sim = omnivae.datasets.simulate(20, modalities=("rna",), seed=0)
    >>> out = os.path.join(tempfile.mkdtemp(), "out.h5mu")
    >>> write_h5mu_atomic(sim, out)
    >>> os.path.exists(out)
    True
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".h5mu", dir=path.parent)
    os.close(fd)
    try:
        mdata.write_h5mu(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
