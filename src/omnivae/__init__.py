"""omnivae: multimodal variational autoencoders for single-cell multi-omics on MuData.

Public API
----------
- :class:`omnivae.Model` — train, embed, predict missing modalities, save/load.
- :mod:`omnivae.tl` — scanpy-style ``integrate``, ``predict``/``impute``,
  ``differential_expression``, ``cluster`` (CMVAE), ``map_query``, writing into MuData.
- :mod:`omnivae.pl` — plots: training history, latent UMAP, predicted vs observed.
- :mod:`omnivae.data` — ``read_input``/``as_mudata``: AnnData, 10x ``.h5``, ``.h5ad`` to MuData.
- :mod:`omnivae.datasets` — ``simulate`` multi-omics counts; ``load`` real public datasets.
- :mod:`omnivae.metrics` — clustering agreement, prediction scores, baselines.
- :class:`omnivae.TrainingInterrupted` / :class:`omnivae.TrainingTerminated` — what
  ``Model.train`` raises after Ctrl-C / SIGTERM (the model keeps the best weights so far).
- :mod:`omnivae.models` — the multimodal VAE family (``Model(mdata, model=name)``), an alias
  of :mod:`omnivae.module.models`.

Layers, each a package that imports only the ones below it: :mod:`omnivae.module` (pure
torch) < :mod:`omnivae.data` (MuData to arrays) < :mod:`omnivae.train` (Lightning) <
:mod:`omnivae.model` (the user-facing Model) < :mod:`omnivae.tl` / :mod:`omnivae.pl` <
``omnivae.cli``. Submodules load lazily, so the pure-torch layer can be imported without
AnnData, MuData or Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from omnivae import _compat

__version__ = "0.1.0"
__all__ = ["Model", "TrainingInterrupted", "TrainingTerminated", "data", "datasets", "metrics",
           "models", "pl", "tl"]

_LAZY = {"Model": ("omnivae.model", "Model"), "datasets": ("omnivae.datasets", None),
         "data": ("omnivae.data", None),
         "metrics": ("omnivae.metrics", None), "tl": ("omnivae.tl", None),
         "models": ("omnivae.module.models", None), "pl": ("omnivae.pl", None),
         "TrainingInterrupted": ("omnivae.train.interrupts", "TrainingInterrupted"),
         "TrainingTerminated": ("omnivae.train.interrupts", "TrainingTerminated")}

_compat.install()

if TYPE_CHECKING:
    from omnivae import data, datasets, metrics, pl, tl
    from omnivae.model import Model
    from omnivae.module import models
    from omnivae.train.interrupts import TrainingInterrupted, TrainingTerminated


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module_name, attribute = _LAZY[name]
        module = importlib.import_module(module_name)
        value = getattr(module, attribute) if attribute else module
    elif name in _compat.MOVED:  # omnivae.<old module name> after a plain `import omnivae`
        value = importlib.import_module(f"omnivae.{name}")
    else:
        raise AttributeError(f"module 'omnivae' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
