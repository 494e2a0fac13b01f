"""Shared fixtures: small simulated data and the real shared datasets."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("OMNIVAE_DATA", ROOT.parent / "shared" / "data"))

warnings.filterwarnings("ignore", ".*does not have many workers.*")
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)


@pytest.fixture(autouse=True)
def _close_figures():
    """Some omnivae.pl calls leave figures open on purpose (``return_fig=True``, ``ax=``,
    ``show=False``, as in scanpy); the tests close them after each test, so figures do not
    pile up over the run."""
    yield
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close("all")


def benchmark_script(name: str):
    """Import the study ``benchmarks/studies/<name>.py`` as a module (with ``benchmarks/`` on
    the path, as when ``benchmarks/run.py --study <name>`` runs it)."""
    import importlib.util

    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(
        name, ROOT / "benchmarks" / "studies" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shared_file(name: str) -> Path:
    path = SHARED_DATA / f"{name}.h5mu"
    if not path.is_file():
        pytest.skip(f"shared dataset {path} not available")
    return path


@pytest.fixture(scope="session")
def small_sim():
    """300 cells, RNA + ATAC + protein, 2 batches, 10 % of cells missing one modality."""
    import omnivae

    return omnivae.datasets.simulate(300, modalities=("rna", "atac", "adt"), n_batches=2,
                                     n_cell_types=4, missing_fraction=0.1, seed=1)


@pytest.fixture(scope="session")
def source_server(tmp_path_factory):
    """The registered datasets' source files served on 127.0.0.1 (see tests/dataset_sources.py):
    the real public files where a snapshot of them exists, else files rebuilt from
    ../shared/data in each source format."""
    from tests.dataset_sources import Sources, serve

    root = tmp_path_factory.mktemp("served")
    with serve(root) as (url, requests):
        yield Sources(root, url, requests, SHARED_DATA)


@pytest.fixture
def offline_data(source_server, tmp_path, monkeypatch):
    """``offline_data(*names)``: this test runs as on a machine without ../shared/data:
    ``OMNIVAE_DATA`` is an empty folder and ``names`` download from the local server."""

    def use(*names: str) -> None:
        source_server.offline(monkeypatch, tmp_path / "user-data", list(names))

    return use
