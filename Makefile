# omnivae: set up, run the demo, run the tests. Everything installs into ./.venv.
# TORCH_SPEC pins torch so that a CPU-only machine never pulls the CUDA build from the registry;
# on a GPU machine, set TORCH_SPEC to the torch build you want (e.g. TORCH_SPEC=torch).
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-all test-newest lint typecheck docs clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH_SPEC)"
	$(PIP) install --quiet "$(TORCH_SPEC)" -e ".[test,tensorboard,peers,docs]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/omnivae demo --out omnivae_demo

# Fast tests + real-data tests, lint and type check (what CI runs).
test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks tutorials docs
	$(VENV)/bin/mypy
	$(PY) -m pytest -m "not slow and not gpu" --doctest-modules src tests
	$(VENV)/bin/mkdocs build --strict

# Everything, including slow tests.
test-all: $(STAMP)
	$(PY) -m pytest -m "not gpu" --doctest-modules src tests

# The fast tests against the NEWEST release of every dependency, in a separate ./.venv-newest
# (torch stays at TORCH_SPEC, so a CPU-only machine never pulls the CUDA build). Prints the
# versions it tested. The newest anndata, mudata and scanpy need Python >= 3.12: NEWEST_PYTHON
# is the newest python3.1x found on the PATH (set it to choose, e.g. NEWEST_PYTHON=python3.13).
NEWEST := .venv-newest
NEWEST_PYTHON ?= $(shell for v in 3.14 3.13 3.12; do python$$v -c "" 2>/dev/null && { echo python$$v; exit 0; }; done; echo $(PYTHON))
test-newest:
	rm -rf $(NEWEST)
	$(NEWEST_PYTHON) -m venv $(NEWEST)
	$(NEWEST)/bin/python --version
	$(NEWEST)/bin/python -m pip install --quiet --upgrade pip
	$(NEWEST)/bin/python -m pip install --quiet "$(TORCH_SPEC)"
	$(NEWEST)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager \
		"$(TORCH_SPEC)" -e ".[test,tensorboard,docs]"
	$(NEWEST)/bin/python -m pip list 2>/dev/null | grep -iE \
		"^(torch|lightning|numpy|scipy|pandas|anndata|mudata|scanpy|scikit-learn|matplotlib|h5py|igraph|tensorboard) "
	$(NEWEST)/bin/python -m pytest -m "not slow and not gpu" --doctest-modules src tests $(PYTEST_ARGS)

# Documentation site into ./site (API reference from the docstrings, tutorials, benchmarks).
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks tutorials docs

typecheck: $(STAMP)
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) $(NEWEST) omnivae_demo site .pytest_cache .mypy_cache .ruff_cache
