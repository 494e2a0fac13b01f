"""Layer 3, training with PyTorch Lightning. Nothing scanpy- or MuData-specific.

- :mod:`~omnivae.train.plan` — the ``LightningModule`` (:class:`TrainingPlan`): loss, KL
  warm-up, logging, non-finite checks; the epochs heuristic.
- :mod:`~omnivae.train.fitting` — one training run: the Trainer, callbacks, loaders.
- :mod:`~omnivae.train.loaders` and :mod:`~omnivae.train.blocks` — train/validation split and
  minibatch loaders (in memory; block-shuffled from disk).
- :mod:`~omnivae.train.callbacks` — per-epoch history, best weights after the warm-up.
- :mod:`~omnivae.train.checkpoints` — checkpoints, resume, interrupts.
- :mod:`~omnivae.train.distributed` and :mod:`~omnivae.train.epoch_sums` — DDP sharding and
  exact per-epoch sums across processes.
- :mod:`~omnivae.train.loggers`, :mod:`~omnivae.train.probe`, :mod:`~omnivae.train.threads` —
  loggers, the batch-information probe, CPU threads.
"""
