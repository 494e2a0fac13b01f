"""Posterior draws of a modality's normalised expression (pure torch).

Used for prediction intervals (:func:`omnivae.tl.predict`) and the Bayesian differential
expression test (:func:`omnivae.tl.differential_expression`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from omnivae.module.records import BatchData
from omnivae.module.vae import MultimodalVAE


@torch.no_grad()
def sample_normalized(
    module: MultimodalVAE, batch: BatchData, target: str, n_samples: int, *,
    cross_modal: bool = True, predictive: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draws ``(n_samples, n_cells, n_features)`` of ``target``'s expression proportions.

    Each draw samples z from the cell's fused posterior and decodes it with the cell's batch.

    Parameters
    ----------
    module, batch
        The model and a minibatch.
    target
        Modality to decode.
    cross_modal
        ``True``: a cell that has ``target`` is encoded from its *other* modalities when it has
        any (a genuine prediction, as in :meth:`MultimodalVAE.predict_normalized`);
        ``False``: from all its modalities (the best estimate, for differential expression).
    predictive
        ``False``: the decoded proportions (posterior uncertainty of the expression level);
        ``True``: counts drawn from the likelihood at the modality's median depth, divided by
        that depth (posterior predictive: adds measurement noise).
    generator
        Seeded torch generator.

    Examples
    --------
    >>> import torch
    >>> from omnivae.module import ModalitySpec, ModuleConfig, MultimodalVAE
    >>> vae = MultimodalVAE(ModuleConfig((ModalitySpec("a", 5, "nb", 50.0),), n_latent=2))
    >>> x = torch.poisson(torch.full((3, 5), 10.0))
    >>> b = BatchData({"a": x}, torch.ones(3, 1, dtype=torch.bool), torch.zeros(3, dtype=torch.long),
    ...               {"a": x.sum(1, keepdim=True)})
    >>> draws = sample_normalized(vae.eval(), b, "a", 4)
    >>> draws.shape, bool(torch.allclose(draws.sum(-1), torch.ones(4, 3)))
    (torch.Size([4, 3, 5]), True)
    """
    mask = batch.mask
    if cross_modal:
        t = module.config.names.index(target)
        others = mask.clone()
        others[:, t] = False
        mask = torch.where(others.any(dim=1, keepdim=True), others, mask)
    fused = module.posterior(BatchData(batch.counts, mask, batch.batch_index, batch.library))
    decoder = module.decoder(target)
    draws = []
    for _ in range(n_samples):
        z = fused.sample(generator)
        if predictive:
            depth = decoder.library_scale.expand(z.shape[0], 1)
            counts = decoder(z, batch.batch_index, depth).sample(generator)
            draws.append(counts / depth)
        else:
            draws.append(decoder.normalized(z, batch.batch_index))
    return torch.stack(draws)
