"""Layer 2, data: MuData in, model-ready cell arrays out. No Lightning.

- :mod:`~omnivae.data.setup` — choose modalities and likelihoods, batch codes, ``SetupInfo``.
- :mod:`~omnivae.data.checks` — validation of counts, axes and features, with clear errors.
- :mod:`~omnivae.data.cells` — :class:`CellData`, the arrays the network trains on.
- :mod:`~omnivae.data.backed` and :mod:`~omnivae.data.store` — counts that stay on disk.
- :mod:`~omnivae.data.splits` — withhold a modality to measure prediction honestly.
- :mod:`~omnivae.data.files` — atomic, code-free files (model folders, ``.h5mu`` output).
"""

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

__all__ = ["QUERY_BATCH", "REFERENCE_BATCH", "UNSEEN_BATCH_FIX", "SetupInfo", "batch_codes",
           "cell_columns", "default_likelihood", "obs_column", "refresh", "setup_info",
           "setup_mudata"]
