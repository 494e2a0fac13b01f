"""Atomic, code-free files: model folders (JSON + tensors) and ``.h5mu`` output."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
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
    check_model_destination(path, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        torch.save({k: v.detach().cpu() for k, v in state.items()}, tmp / _WEIGHTS)
        document = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                    "torch_version": torch.__version__,
                    "weights_sha256": _sha256(tmp / _WEIGHTS), **meta}
        document = json.loads(json.dumps(document, default=str))  # as it will read back
        document["description_sha256"] = _description_sha256(document)
        (tmp / _META).write_text(json.dumps(document, indent=2))
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


def check_model_destination(path: str | Path, *, overwrite: bool) -> None:
    """Raise unless a model folder may be written at ``path``: nothing there, an empty folder,
    or, with ``overwrite``, a model folder omnivae wrote (``omnivae.json`` and ``weights.pt``
    and nothing else). A file, or a folder holding anything else, is never replaced: a
    replace would delete what omnivae did not write.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> check_model_destination(folder / "new", overwrite=False)  # nothing there
    >>> (folder / "notes.txt").write_text("mine")
    4
    >>> check_model_destination(folder, overwrite=True)
    Traceback (most recent call last):
    ...
    FileExistsError: ... is a folder that omnivae did not write (it holds notes.txt); ...
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir():
        raise FileExistsError(
            f"{path} is a file, not a model folder; omnivae never replaces a file with a model. "
            "Name a new folder for the model.")
    content = sorted(os.listdir(path))
    if not content:
        return
    foreign = [name for name in content if name not in (_META, _WEIGHTS)]
    if foreign or not _is_model_description(path / _META):
        shown = ", ".join(foreign[:3] or content[:3]) + (", ..." if len(foreign) > 3 else "")
        raise FileExistsError(
            f"{path} is a folder that omnivae did not write (it holds {shown}); omnivae "
            f"replaces only a model folder it wrote ({_META} and {_WEIGHTS}, nothing else), "
            "so nothing of yours is deleted. Name a new or empty folder for the model.")
    if not overwrite:
        raise FileExistsError(f"{path} holds a saved omnivae model; pass overwrite=True (on "
                              "the command line: --overwrite) to replace it.")


def _is_model_description(meta_file: Path) -> bool:
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT_NAME


def check_output_file(path: str | Path, *, overwrite: bool,
                      inputs: tuple[str | Path, ...] = ()) -> Path:
    """Raise unless a results file may be written at ``path``: not a folder, not one of
    ``inputs`` (files the run reads), and absent unless ``overwrite``. Checked before any
    work starts, so a long training never ends in a refused write.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> check_output_file(folder / "out.h5mu", overwrite=False).name
    'out.h5mu'
    >>> check_output_file(folder, overwrite=True)
    Traceback (most recent call last):
    ...
    IsADirectoryError: The output ... is a folder; name a file in it, e.g. .../results.h5mu.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"The output {path} is a folder; name a file in it, e.g. "
                                f"{path / 'results.h5mu'}.")
    for source in inputs:
        if path.exists() and Path(source).exists() and os.path.samefile(path, source):
            raise FileExistsError(
                f"The output {path} is the input file {source}; write the results to another "
                "file (omnivae never replaces the data it reads).")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (on the command line: "
                              "--overwrite) to replace it, or name another file.")
    if path.parent.exists() and not path.parent.is_dir():
        raise NotADirectoryError(f"Cannot write {path}: {path.parent} is a file, not a folder.")
    return path


def _description_sha256(document: dict[str, Any]) -> str:
    """SHA-256 of a model description without its own checksum (key order does not count)."""
    content = {k: v for k, v in document.items() if k != "description_sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def unreadable_file(path: str | Path, kind: str, err: BaseException) -> ValueError:
    """The error for a file that exists but cannot be read as ``kind`` (truncated by an
    interrupted copy, not HDF5, another layout), naming the file and the cause.

    Examples
    --------
    >>> print(unreadable_file("cells.h5mu", "MuData (.h5mu)", OSError("truncated file")))
    cells.h5mu cannot be read as MuData (.h5mu) (OSError: truncated file); is it complete (not truncated by an interrupted copy) and of that kind?
    """
    return ValueError(f"{path} cannot be read as {kind} ({type(err).__name__}: "
                      f"{str(err)[:160]}); is it complete (not truncated by an interrupted "
                      "copy) and of that kind?")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_model_folder(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a folder written by :func:`save_model_folder` (tensors only, no pickled code).

    The format version, the weights' SHA-256 and the description's own SHA-256 (feature names,
    batches, settings) are checked: a model from a newer omnivae, a missing, truncated or
    edited file each give an error saying which file and what to do.
    """
    path = Path(path)
    meta_file, weights_file = path / _META, path / _WEIGHTS
    if not meta_file.is_file():
        old = path.with_name(f".{path.name}.old")
        hint = (f" A save was interrupted while swapping folders: the previous model is in "
                f"{old}; rename it to {path.name}." if (old / _META).is_file() else "")
        raise FileNotFoundError(f"{path} is not an omnivae model folder (no {_META}); pass "
                                f"the folder Model.save wrote.{hint}")
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{meta_file} is corrupted (not valid JSON: {err}); save the model "
                         "again or restore the folder from a backup.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise ValueError(f"{meta_file} is not an omnivae model description.")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{path} was saved in model format version {version} by a newer omnivae; this "
            f"omnivae reads versions up to {FORMAT_VERSION}. Upgrade omnivae to load it."
        )
    saved_sum = meta.get("description_sha256")  # absent in files of omnivae <= 0.1
    if saved_sum is not None and saved_sum != _description_sha256(meta):
        raise ValueError(
            f"{meta_file} was changed after the model was saved (its contents differ from the "
            "checksum saved with it): the feature names, batches and settings in it are what "
            "the weights were trained with, and an edited copy would load a different model "
            "silently. Restore the file from a backup or save the model again.")
    if not weights_file.is_file():
        raise FileNotFoundError(f"{path} has no {_WEIGHTS}; the model folder is incomplete. "
                                "Save the model again or restore the folder from a backup.")
    expected = meta.get("weights_sha256")
    if expected is not None and _sha256(weights_file) != expected:
        raise ValueError(f"{weights_file} is corrupted (its SHA-256 differs from the one saved "
                         f"in {_META}); save the model again or restore it from a backup.")
    try:
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, unpickling refused (code in the file), ...
        raise ValueError(f"{weights_file} cannot be read as plain tensors ({type(err).__name__}: "
                         f"{str(err)[:200]}); it is corrupted or not written by omnivae.") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{weights_file} does not hold a mapping of names to tensors.")
    return meta, state


def check_state_matches(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Raise a ValueError when saved weights do not fit ``module`` (names or shapes differ).

    Examples
    --------
    >>> import torch
    >>> check_state_matches(torch.nn.Linear(2, 3), torch.nn.Linear(2, 3).state_dict(), Path("m"))
    """
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(
            f"The weights in {path} do not match the model described in its {_META} "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}, other shapes {sorted(shapes)[:3]}); "
            "the folder was edited or mixes two models. Save the model again."
        )


@contextlib.contextmanager
def mudata_defaults() -> Iterator[None]:
    """Run omnivae's own MuData calls (copy, write, ``update()``) with
    ``pull_on_update=False`` (mudata's default from 0.4 on): modality ``obs``/``var`` columns
    are not pulled into the global ones, and mudata 0.3 does not warn (``FutureWarning``)
    that its default changes.

    Also silences mudata's notes that feature names repeat across modalities (a gene and a
    protein both named ``CD4``): omnivae reads every modality on its own, so they are not a
    problem here.

    Examples
    --------
    >>> import omnivae, warnings
    >>> sim = omnivae.datasets.simulate(20, modalities=("rna", "adt"), seed=0)
    >>> with warnings.catch_warnings(record=True) as caught, mudata_defaults():
    ...     warnings.simplefilter("ignore")
    ...     for shown in (FutureWarning, UserWarning):  # what a user would see
    ...         warnings.simplefilter("always", shown)
    ...     copy = sim.copy()
    >>> copy.n_obs, [str(w.message) for w in caught]
    (20, [])
    """
    with _no_pull_on_update(), warnings.catch_warnings():
        for notice in _NOTICES:
            warnings.filterwarnings("ignore", notice)
        yield


def _no_pull_on_update() -> contextlib.AbstractContextManager[Any]:
    """``pull_on_update=False`` for the block: ``mudata.set_options`` up to mudata 0.3,
    ``mudata.settings.override`` from 0.4 on (where it is the default already)."""
    if hasattr(md, "set_options"):
        return md.set_options(pull_on_update=False)
    settings = getattr(md, "settings", None)
    if settings is not None and hasattr(settings, "override"):
        return settings.override(pull_on_update=False)
    return contextlib.nullcontext()


def copy_mudata(mdata: md.MuData) -> md.MuData:
    """``mdata.copy()`` under :func:`mudata_defaults` (no pulled columns, no warnings).

    Examples
    --------
    >>> import omnivae
    >>> sim = omnivae.datasets.simulate(20, modalities=("rna",), seed=0)
    >>> copy = copy_mudata(sim)
    >>> copy is not sim, list(copy.obs.columns) == list(sim.obs.columns)
    (True, True)
    """
    with mudata_defaults():
        return mdata.copy()


def read_h5mu(path: str | Path, *, backed: bool = False) -> md.MuData:
    """``mudata.read_h5mu`` without its notices.

    Unlike :func:`mudata_defaults`, reading keeps mudata's own ``pull_on_update`` setting:
    under mudata 0.3 it decides the order of the cells, which must be the order a user gets
    from ``mudata.read_h5mu(path)`` (embeddings of ``Model(path)`` are assigned to such a
    MuData by position). Only its notices are silenced: mudata 0.3's ``FutureWarning`` that
    the default changes in 0.4 (a decision for the user's own ``mudata.set_options``, not for
    omnivae) and the feature-name notes silenced by :func:`mudata_defaults`.

    Examples
    --------
    >>> import omnivae, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "cells.h5mu")
    >>> write_h5mu_atomic(omnivae.datasets.simulate(20, modalities=("rna",), seed=0), path)
    >>> read_h5mu(path).n_obs
    20
    """
    with warnings.catch_warnings():
        for notice in _NOTICES:
            warnings.filterwarnings("ignore", notice)
        warnings.filterwarnings("ignore", r"From 0\.4 \.update\(\) will not pull",
                                FutureWarning)
        return md.read_h5mu(path, backed=True) if backed else md.read_h5mu(path)


# mudata's notes that feature names repeat across modalities (see mudata_defaults)
_NOTICES = (".*var_names are intersecting.*", ".*var_names are not unique.*")


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
        with mudata_defaults():
            mdata.write_h5mu(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
