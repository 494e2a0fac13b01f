"""Named studies: benchmarks that each answer one question, beside the main suite.

Run one with ``python benchmarks/run.py --study NAME [ARGS ...]`` (every argument other than
``--study NAME`` goes to the study; ``--study NAME --help`` lists its options) and list them
with ``python benchmarks/run.py --list-studies``. Each module here has a ``main(argv)``, can
also be run as ``python benchmarks/studies/NAME.py``, and uses the suite's own helpers
(:mod:`suite`: datasets, systems, tasks, tables and plots). Results go to
``benchmarks/results/`` as before.

* ``backed_scaling``: how do memory and seconds per epoch grow with the cells when training
  from a backed store instead of in memory?
* ``batch_penalty_cost``: how much slower is an epoch with each batch mutual-information
  penalty than without one?
* ``batch_penalty_curve``: how much batch correction does each penalty buy at each weight, and
  at what cost in bio conservation (the rule that chose the default)?
* ``calibration``: do the calibrated cross-modal prediction intervals cover as often as they
  claim?
* ``cmvae_clusters``: how well do CMVAE's mixture clusters match the cell types, next to
  Leiden?
* ``collapse_diagnostics``: does the default model show posterior collapse (KL, active units,
  precision shares, decoder use of z)?
* ``distributed_scaling``: how does training speed scale from 1 to 2 DDP processes on the CPU?
* ``mixture_sampling``: is stratified MoPoE training worth its cost against one-component
  sampling (speed and scores)?
* ``partial_epoch``: what do memory and seconds per step look like at sizes too large to time a
  full epoch?
* ``priors``: what do the normal, mixture-of-Gaussians and VampPrior priors cost in KL and give
  in cell-type structure?
* ``same_results``: does a code change leave the embeddings and predictions of seeded models
  bit for bit the same?
* ``step_time``: does the time of one training step depend on the number of cells (is an
  epoch linear)?
* ``synthetic_cells``: can a classifier tell omnivae's synthetic cells from real ones?
* ``tune_defaults``: which candidate defaults score best on the tuning datasets?
"""
