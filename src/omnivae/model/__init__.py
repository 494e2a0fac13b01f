"""Layer 4, the user-facing model: MuData in, embedding and predictions out, save/load.

- :mod:`~omnivae.model.model` — :class:`Model` (a thin facade) and :class:`QueryModel`.
- :mod:`~omnivae.model.choices` — the user's choices (model, fusion, batch penalty, sizes,
  objective options), resolved and validated once; :mod:`~omnivae.model.setup` — the data.
- :mod:`~omnivae.model.training` — what ``Model.train`` runs.
- :mod:`~omnivae.model.inference` — minibatch loops: latent, predictions, per-modality means.
- :mod:`~omnivae.model.prediction` — cross-modal shrinkage, calibration and intervals.
- :mod:`~omnivae.model.mapping` — reference mapping (query data, surgery, filling panels).
- :mod:`~omnivae.model.persistence` — save/load; :mod:`~omnivae.model.streaming` — outputs
  written chunk by chunk; :mod:`~omnivae.model.diagnostics`, :mod:`~omnivae.model.synthetic`.
"""

from omnivae.model.model import Model

__all__ = ["Model"]
