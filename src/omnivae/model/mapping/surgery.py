"""Architecture surgery for reference mapping (pure torch, after scArches).

A query model is a :class:`~omnivae.module.MultimodalVAE` built with more batches than its
reference (``config.n_batches = n_reference + n_new``) and per-batch encoder input offsets
(``config.n_reference_batches``). :func:`load_reference_weights` copies every
reference weight into it and freezes them; only the entries that belong to the new batches
stay trainable:

* the one-hot batch columns of every decoder layer (MLP layers and heads) for the new batches,
* the new batches' rows of a protein decoder's background ``log_background``,
* the new batches' rows of each encoder's input offset ``batch_shift`` (the reference
  batches' rows stay zero, so reference cells embed exactly as before).

A tensor that is entirely old gets ``requires_grad=False``; a tensor that mixes old and new
entries gets a gradient hook that zeroes the gradient of the old ones. With Adam(W) and no
weight decay a zero gradient means a zero update, so the old entries stay bit-identical.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from omnivae.module.vae import MultimodalVAE


def frozen_entries(name: str, new: Tensor, old: Tensor | None, n_reference_batches: int) -> Tensor:
    """Boolean mask of the entries of parameter ``name`` that come from the reference.

    ``old`` is the reference tensor (``None`` if the reference has no such parameter). Batch
    covariates are appended as the last input columns of a layer, so a grown ``Linear``
    weight keeps its old columns first; grown per-batch tables keep their old rows first.

    Examples
    --------
    >>> import torch
    >>> frozen_entries("w", torch.zeros(2, 5), torch.zeros(2, 3), 1).sum(dim=1).tolist()
    [3, 3]
    """
    mask = torch.zeros(new.shape, dtype=torch.bool)
    if old is None:  # encoder input offsets: the reference batches' rows are frozen at zero
        if name.endswith("batch_shift"):
            mask[:n_reference_batches] = True
        return mask
    if old.shape == new.shape:
        return torch.ones(new.shape, dtype=torch.bool)
    if old.dim() != new.dim() or any(o > n for o, n in zip(old.shape, new.shape, strict=True)):
        raise ValueError(f"Parameter {name!r}: reference shape {tuple(old.shape)} cannot grow "
                         f"into {tuple(new.shape)}.")
    mask[tuple(slice(0, s) for s in old.shape)] = True
    return mask


def load_reference_weights(
    query: MultimodalVAE, reference_state: Mapping[str, Tensor], n_reference_batches: int
) -> dict[str, Tensor]:
    """Copy the reference weights into ``query`` and freeze them (see the module docstring).

    Returns the frozen-entry mask of every parameter (``True`` = reference, not trained).

    Examples
    --------
    >>> from omnivae.module import ModalitySpec, ModuleConfig, MultimodalVAE
    >>> spec = (ModalitySpec("rna", 8, "nb"),)
    >>> ref = MultimodalVAE(ModuleConfig(spec, n_batches=2, n_latent=3))
    >>> qry = MultimodalVAE(ModuleConfig(spec, n_batches=3, n_latent=3,
    ...                                  n_reference_batches=2))
    >>> masks = load_reference_weights(qry, ref.state_dict(), 2)
    >>> n_new = sum(int((~m).sum()) for m in masks.values())
    >>> n_new == sum(p.numel() for p in qry.parameters() if p.requires_grad) - sum(
    ...     int(m.sum()) for n, m in masks.items() if (~m).any())
    True
    """
    masks: dict[str, Tensor] = {}
    unknown = set(reference_state)
    with torch.no_grad():
        for name, tensor in query.state_dict().items():
            old = reference_state.get(name)
            unknown.discard(name)
            if old is not None:
                tensor[tuple(slice(0, s) for s in old.shape)] = old.to(tensor.dtype)
        for name, param in query.named_parameters():
            mask = frozen_entries(name, param, reference_state.get(name), n_reference_batches)
            masks[name] = mask
            _freeze(param, mask)
    if unknown:
        raise ValueError(f"The reference has weights the query model lacks: {sorted(unknown)[:5]}.")
    return masks


def _freeze(param: nn.Parameter, frozen: Tensor) -> None:
    if bool(frozen.all()):
        param.requires_grad_(False)
        return
    param.requires_grad_(True)
    if bool(frozen.any()):
        param.register_hook(lambda grad: grad.masked_fill(frozen.to(grad.device), 0.0))


def count_trainable(masks: Mapping[str, Tensor]) -> int:
    """Number of parameter entries a query model trains (the new batches' ones).

    Examples
    --------
    >>> import torch
    >>> count_trainable({"w": torch.tensor([True, False, False])})
    2
    """
    return int(sum(int((~mask).sum()) for mask in masks.values()))
