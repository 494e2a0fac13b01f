"""Reference mapping (after scArches): query cells onto a trained model without retraining it.

- :mod:`~omnivae.model.mapping.data` — query MuData: any subset of modalities and features.
- :mod:`~omnivae.model.mapping.surgery` — new batch parameters, reference weights frozen.
- :mod:`~omnivae.model.mapping.fill` — features a query did not measure (smaller panels).
- :mod:`~omnivae.model.mapping.query` — ``load_query``/``map_query`` and :class:`QueryModel`.
"""
