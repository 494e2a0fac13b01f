"""What :meth:`omnivae.Model.save` puts in a model folder and how :meth:`omnivae.Model.load`
rebuilds a model from it: the data setup, the network configuration, the weights, whether it
was trained, its history and its cross-modal shrinkage. The files themselves (atomic writes,
format version, checksums) are :mod:`omnivae.data.files`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import mudata as md
import pandas as pd
import torch

from omnivae.data import files as _io
from omnivae.data.setup import SetupInfo
from omnivae.model.prediction.shrinkage import Shrinkage
from omnivae.module.vae import ModuleConfig

if TYPE_CHECKING:
    from omnivae.model.model import Model


@dataclass(frozen=True)
class SavedModel:
    """The contents of a model folder (see :func:`read_model`)."""

    setup: SetupInfo
    config: ModuleConfig
    state: dict[str, torch.Tensor]
    is_trained: bool
    history: pd.DataFrame
    shrinkage: dict[str, Shrinkage]


def save_model(model: Model, path: str | Path, *, overwrite: bool = False) -> None:
    """Write ``model`` into the folder ``path`` (atomically; see :meth:`omnivae.Model.save`).

    Examples
    --------
    >>> import omnivae, tempfile, os
    >>> model = omnivae.Model(omnivae.datasets.simulate(60, modalities=("rna",)), n_latent=3)
    >>> path = os.path.join(tempfile.mkdtemp(), "model")
    >>> save_model(model, path)
    >>> read_model(path).config.n_latent
    3
    """
    meta = {"module": model.config.to_dict(), "setup": model.setup.to_dict(),
            "is_trained": model.is_trained,
            "history": model.history.reset_index().to_dict(orient="list"),
            "shrinkage": {t: v.to_dict() for t, v in model.shrinkage.items()}}
    _io.save_model_folder(Path(path), meta, model.module.state_dict(), overwrite=overwrite)


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
    history = pd.DataFrame(meta.get("history") or {})
    return SavedModel(
        setup=SetupInfo.from_dict(meta["setup"]), config=ModuleConfig.from_dict(meta["module"]),
        state=state, is_trained=bool(meta.get("is_trained", False)),
        history=history.set_index("epoch") if "epoch" in history else history,
        shrinkage={t: Shrinkage.from_dict(v) for t, v in (meta.get("shrinkage") or {}).items()},
    )


def load_model(cls: type[Model], path: str | Path, mdata: md.MuData) -> Model:
    """The model saved in ``path``, attached to ``mdata`` (see :meth:`omnivae.Model.load`): an
    instance of ``cls``, or a :class:`~omnivae.model.mapping.query.QueryModel` for a saved query model.

    Examples
    --------
    >>> import omnivae, tempfile, os
    >>> sim = omnivae.datasets.simulate(60, modalities=("rna",))
    >>> path = os.path.join(tempfile.mkdtemp(), "model")
    >>> omnivae.Model(sim, n_latent=3).save(path)
    >>> loaded = load_model(omnivae.Model, path, sim)
    >>> type(loaded).__name__, loaded.config.n_latent
    ('Model', 3)
    """
    saved = read_model(path)
    if saved.config.extra.get("n_reference_batches") is not None:  # a reference-mapped query
        from omnivae.model.mapping.query import restore_query_model

        model: Model = restore_query_model(mdata, saved.setup, saved.config, saved.state,
                                           Path(path))
    else:
        model = cls(mdata, _setup=saved.setup, _config=saved.config)
        _io.check_state_matches(model.module, saved.state, Path(path))
        model.module.load_state_dict(saved.state)
    model.module.eval()
    model.is_trained = saved.is_trained
    model.shrinkage = saved.shrinkage
    model.history = saved.history
    return model
