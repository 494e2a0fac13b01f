"""omnivae's benchmark suite against scvi-tools and simple baselines (run ``benchmarks/run.py``)."""
