"""omnivae: multimodal variational autoencoders for single-cell multi-omics on MuData.

Public API
----------
- :class:`omnivae.Model` — train, embed, predict missing modalities, save/load.
- :mod:`omnivae.tl` — scanpy-style ``integrate``, ``predict``/``impute``,
  ``differential_expression``, ``cluster`` (CMVAE) writing into MuData.
- :mod:`omnivae.pl` — plots: training history, latent UMAP, predicted vs observed.
- :mod:`omnivae.query` — reference mapping (``Model.load_query``, ``model.map_query``).
- :mod:`omnivae.datasets` — ``simulate`` multi-omics counts; ``load`` real public datasets.
- :mod:`omnivae.metrics` — clustering agreement, prediction scores, baselines.
- :mod:`omnivae.models` — the multimodal VAE family (``Model(mdata, model=name)``).

Submodules load lazily, so the pure-torch layer (``omnivae.module`` and below) can be
imported without AnnData, MuData or Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Model", "datasets", "metrics", "models", "pl", "tl"]

_LAZY = {"Model": ("omnivae.model", "Model"), "datasets": ("omnivae.datasets", None),
         "metrics": ("omnivae.metrics", None), "tl": ("omnivae.tools", None),
         "models": ("omnivae.models", None), "pl": ("omnivae.pl", None)}

if TYPE_CHECKING:
    from omnivae import datasets, metrics, models, pl
    from omnivae import tools as tl
    from omnivae.model import Model


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'omnivae' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    value = getattr(module, attribute) if attribute else module
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
