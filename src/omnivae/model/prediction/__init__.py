"""Cross-modal predictions one can trust: shrinkage toward the population profile
(:mod:`~omnivae.model.prediction.shrinkage`), conformal calibration
(:mod:`~omnivae.model.prediction.calibration`) and count intervals on cells
(:mod:`~omnivae.model.prediction.intervals`)."""
