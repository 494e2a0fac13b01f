"""Reference mapping: put new query cells into a trained model's latent space.

The reference model is not retrained. :func:`load_query` builds a query model from it
(architecture surgery after scArches, :mod:`omnivae.model.mapping.surgery`): every reference weight is
copied and frozen; each batch the reference never saw gets new, trainable decoder batch
columns (and protein background rows) and a per-feature encoder input offset, all starting at
zero. :meth:`QueryModel.train` fits only those new entries on the query cells (the ELBO, no
KL warm-up, no weight decay), so reference cells embed exactly as before and the query lands
in the same space.

What a query may lack, and how it is handled:

* **whole modalities** (e.g. RNA only): those cells simply lack them (a mask, as in mosaic
  training); the model predicts them.
* **features of a modality** (e.g. a smaller antibody panel): the unmeasured features are
  filled with the model's expectation for the cell and the cell's library is renormalised to
  the full panel (:mod:`omnivae.model.mapping.fill`): decoded from the latent that best explains the
  features the cell measured (a MAP estimate), before and again after training. Zero-filling
  instead would tell the encoder "not expressed" for every unmeasured protein.

Measured label transfer of mapped queries: ``docs/reference_mapping.md``.

**Cross-modal shrinkage** (:mod:`omnivae.model.prediction.shrinkage`): the query model keeps the reference's
``shrinkage`` for every target, the weight ``w`` and the population profile ``p`` of the
reference's training cells, and never re-fits it on the query: the reference's decoders are the
ones that predict, and a typical query (RNA only) has no cell with the target to fit a weight on
(re-fitting there left the query's prediction of the target unshrunk). The measurements behind
this choice are in ``docs/reference_mapping.md``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from omnivae.data.setup import SetupInfo
from omnivae.module.vae import ModuleConfig, MultimodalVAE


def is_query_config(config: ModuleConfig) -> bool:
    """Whether ``config`` is a reference-mapped query model's (saved query models load as one)."""
    return config.n_reference_batches is not None


def query_config(reference: ModuleConfig, query_setup: SetupInfo, fill_steps: int) -> ModuleConfig:
    """The query model's configuration: the reference's, with room for the query's new batches.

    Examples
    --------
    >>> from omnivae.module import ModalitySpec, ModuleConfig
    >>> from omnivae.data import SetupInfo
    >>> ref = ModuleConfig((ModalitySpec("rna", 5, "nb"),), n_batches=2)
    >>> setup = SetupInfo(modalities=("rna",), likelihoods={"rna": "nb"}, layers={"rna": None},
    ...                   batch_key="batch", batch_categories=("b0", "b1", "new"),
    ...                   var_names={"rna": list("abcde")}, library_scale={"rna": 1.0})
    >>> cfg = query_config(ref, setup, fill_steps=10)
    >>> cfg.n_batches, cfg.n_reference_batches, is_query_config(cfg)
    (3, 2, True)
    """
    n_batches = max(reference.n_batches, len(query_setup.batch_categories))
    return replace(reference, n_batches=n_batches, n_reference_batches=reference.n_batches,
                   fill_steps=fill_steps)


def reference_state(config: ModuleConfig, state: dict[str, torch.Tensor]
                    ) -> dict[str, torch.Tensor]:
    """The reference's weights inside a saved query model's ``state``: every entry cut to the
    reference's shape (its batches only), so that they can be frozen again on loading."""
    if config.n_reference_batches is None:
        raise ValueError("reference_state needs a query model's configuration "
                         "(n_reference_batches set).")
    reference = replace(config, n_batches=config.n_reference_batches, n_reference_batches=None)
    shapes = MultimodalVAE(reference).state_dict()
    return {k: state[k][tuple(slice(0, s) for s in v.shape)]
            for k, v in shapes.items() if k in state}


def check_query_batches(reference: SetupInfo, query: SetupInfo, path: Path) -> None:
    """A saved query model loads only onto cells of batches it knows."""
    if len(query.batch_categories) > len(reference.batch_categories):
        new = query.batch_categories[len(reference.batch_categories):]
        raise ValueError(f"{path} is a query model for batches "
                         f"{list(reference.batch_categories)}; these cells have batches it never "
                         f"saw {list(new)[:5]}: map them with "
                         "omnivae.Model.load_query(reference, mdata).")
