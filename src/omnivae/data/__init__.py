"""Layer 2, data: MuData in, model-ready cell arrays out. No Lightning.

- :mod:`~omnivae.data.inputs` — what users hold (AnnData, 10x ``.h5``, ``.h5ad``) as MuData.
- :mod:`~omnivae.data.setup` — choose modalities and likelihoods, batch codes, ``SetupInfo``.
- :mod:`~omnivae.data.checks` — validation of counts, axes and features, with clear errors.
- :mod:`~omnivae.data.cells` — :class:`CellData`, the arrays the network trains on.
- :mod:`~omnivae.data.backed` and :mod:`~omnivae.data.store` — counts that stay on disk.
- :mod:`~omnivae.data.splits` — withhold a modality to measure prediction honestly.
- :mod:`~omnivae.data.files` — atomic, code-free files (model folders, ``.h5mu`` output).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["FEATURE_TYPE_MODALITIES", "QUERY_BATCH", "REFERENCE_BATCH", "UNSEEN_BATCH_FIX",
           "SetupInfo", "as_mudata", "batch_codes", "cell_columns", "default_likelihood",
           "obs_column", "read_10x", "read_input", "refresh", "setup_info", "setup_mudata"]
_INPUTS = ("FEATURE_TYPE_MODALITIES", "as_mudata", "read_10x", "read_input")

if TYPE_CHECKING:
    from omnivae.data.inputs import FEATURE_TYPE_MODALITIES, as_mudata, read_10x, read_input
    from omnivae.data.setup import (
        QUERY_BATCH,
        REFERENCE_BATCH,
        UNSEEN_BATCH_FIX,
        SetupInfo,
        batch_codes,
        cell_columns,
        default_likelihood,
        obs_column,
        refresh,
        setup_info,
        setup_mudata,
    )


def __getattr__(name: str) -> Any:
    # lazily, so that omnivae.data.cells (no AnnData) can be imported without AnnData/MuData
    if name in __all__:
        module = "omnivae.data.inputs" if name in _INPUTS else "omnivae.data.setup"
        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module 'omnivae.data' has no attribute {name!r}")
