"""Old import paths of omnivae 0.1 (flat modules) that keep working after the move into layer
packages: ``import omnivae.penalties`` gives :mod:`omnivae.module.penalties` itself (the same
module object, not a copy), with a :class:`DeprecationWarning`. CHANGELOG.md lists the moves.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

#: old module (under ``omnivae.``) -> where it lives now
MOVED: dict[str, str] = {
    "_io": "data.files",
    "_types": "module.records",
    "backed": "data.backed",
    "block_loader": "train.blocks",
    "calibration": "model.prediction.calibration",
    "cell_data": "data.cells",
    "checkpoints": "train.checkpoints",
    "clustering": "tl.clustering",
    "collapse": "module.collapse",
    "confidence": "module.confidence",
    "count_math": "module.count_math",
    "data_checks": "data.checks",
    "de": "tl.de",
    "defaults": "model.choices",
    "diagnostics": "model.diagnostics",
    "distributed": "train.distributed",
    "epoch_sums": "train.epoch_sums",
    "fitting": "train.fitting",
    "fusion": "module.fusion",
    "imputation": "tl.imputation",
    "inference": "model.inference",
    "likelihood_sums": "module.likelihood_sums",
    "likelihoods": "module.likelihoods",
    "loggers": "train.loggers",
    "model_setup": "model.setup",
    "model_training": "model.training",
    "models": "module.models",
    "nn": "module.nn",
    "penalties": "module.penalties",
    "persistence": "model.persistence",
    "predictive": "model.prediction.intervals",
    "priors": "module.priors",
    "probe": "train.probe",
    "query": "model.model",
    "query_data": "model.mapping.data",
    "query_fill": "model.mapping.fill",
    "sampling": "module.sampling",
    "shrinkage": "model.prediction.shrinkage",
    "simulation": "datasets.simulation",
    "splits": "data.splits",
    "store_reader": "data.store",
    "streaming": "model.streaming",
    "surgery": "model.mapping.surgery",
    "synthetic": "model.synthetic",
    "threads": "train.threads",
    "tools": "tl",
    "training": "train.plan",
    "training_callbacks": "train.callbacks",
    "training_data": "train.loaders",
}

#: old names that stay public (documented aliases): no deprecation warning
PUBLIC_ALIASES = frozenset({"models"})


def new_name(old: str) -> str | None:
    """Where ``omnivae.<old>`` lives now (``None``: it did not move). Submodules of a moved
    package follow it (``models.mmvae`` -> ``module.models.mmvae``)."""
    if old in MOVED:
        return MOVED[old]
    head, _, tail = old.partition(".")
    return f"{MOVED[head]}.{tail}" if tail and head in MOVED else None


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves ``omnivae.<old name>`` to the module it moved to."""

    def find_spec(self, fullname: str, path: object = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        old = fullname.removeprefix("omnivae.")
        if fullname.startswith("omnivae.") and new_name(old) is not None:
            return importlib.machinery.ModuleSpec(fullname, self)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        # the import system returns sys.modules[name] after this call: the moved module itself
        old = module.__name__.removeprefix("omnivae.")
        if old.split(".")[0] not in PUBLIC_ALIASES:
            warnings.warn(f"omnivae.{old} moved to omnivae.{new_name(old)}; the old path will be "
                          "removed in a later release (see CHANGELOG.md).",
                          DeprecationWarning, stacklevel=2)
        sys.modules[module.__name__] = importlib.import_module(f"omnivae.{new_name(old)}")


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())
