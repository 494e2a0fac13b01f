"""What :meth:`omnivae.Model.save` puts in a model folder and how :meth:`omnivae.Model.load`
rebuilds a model from it (:meth:`omnivae.Model.load` builds the model from what
:func:`read_model` returns): the data setup, the network configuration, the weights, whether it
was trained, its history and its cross-modal shrinkage. The files themselves (atomic writes,
format version, checksums) are :mod:`omnivae.data.files`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from omnivae.data import files as _io
from omnivae.data.setup import SetupInfo
from omnivae.model.prediction.shrinkage import Shrinkage
from omnivae.module.vae import ModuleConfig


@dataclass(frozen=True)
class SavedModel:
    """The contents of a model folder (what :func:`save_model` writes and :func:`read_model`
    reads)."""

    setup: SetupInfo
    config: ModuleConfig
    state: dict[str, torch.Tensor]
    is_trained: bool
    history: pd.DataFrame
    shrinkage: dict[str, Shrinkage]


def save_model(saved: SavedModel, path: str | Path, *, overwrite: bool = False) -> None:
    """Write ``saved`` into the folder ``path`` (atomically; see :meth:`omnivae.Model.save`).

    Examples
    --------
    >>> import omnivae, tempfile, os
    >>> model = omnivae.Model(omnivae.datasets.simulate(60, modalities=("rna",)), n_latent=3)
    >>> path = os.path.join(tempfile.mkdtemp(), "model")
    >>> save_model(SavedModel(model.setup, model.config, model.module.state_dict(), False,
    ...                       model.history, {}), path)
    >>> read_model(path).config.n_latent
    3
    """
    meta = {"module": saved.config.to_dict(), "setup": saved.setup.to_dict(),
            "is_trained": saved.is_trained,
            "history": saved.history.reset_index().to_dict(orient="list"),
            "shrinkage": {t: v.to_dict() for t, v in saved.shrinkage.items()}}
    _io.save_model_folder(Path(path), meta, saved.state, overwrite=overwrite)


def read_model(path: str | Path) -> SavedModel:
    """The contents of a folder :func:`save_model` wrote (no data needed). Models saved before
    the history or the shrinkage existed read with none.

    Examples
    --------
    >>> import omnivae, tempfile, os
    >>> model = omnivae.Model(omnivae.datasets.simulate(60, modalities=("rna",)), n_latent=3)
    >>> path = os.path.join(tempfile.mkdtemp(), "model")
    >>> model.save(path)
    >>> saved = read_model(path)
    >>> saved.is_trained, saved.shrinkage, list(saved.setup.modalities)
    (False, {}, ['rna'])
    """
    meta, state = _io.load_model_folder(Path(path))
    try:
        history = pd.DataFrame(meta.get("history") or {})
        return SavedModel(
            setup=SetupInfo.from_dict(meta["setup"]),
            config=ModuleConfig.from_dict(meta["module"]),
            state=state, is_trained=bool(meta.get("is_trained", False)),
            history=history.set_index("epoch") if "epoch" in history else history,
            shrinkage={t: Shrinkage.from_dict(v)
                       for t, v in (meta.get("shrinkage") or {}).items()},
        )
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        what = f"lacks the entry {err.args[0]!r}" if isinstance(err, KeyError) else (
            f"holds a value of the wrong kind ({type(err).__name__}: {str(err)[:160]})")
        raise ValueError(
            f"{Path(path) / 'omnivae.json'} {what}: it was edited or written by another "
            "program. Restore it from a backup or save the model again.") from None
