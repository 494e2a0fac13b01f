"""The one-question benchmarks are named studies of ``benchmarks/run.py``: every file in
``benchmarks/studies/`` is listed (with its question) and answers ``--study NAME --help``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "benchmarks" / "run.py"
STUDIES = sorted(p.stem for p in (ROOT / "benchmarks" / "studies").glob("*.py")
                 if not p.name.startswith("_"))


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RUN), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, check=False)


def test_list_studies_names_every_study_with_its_question():
    done = _run("--list-studies")
    assert done.returncode == 0, done.stderr
    listed = {line.split()[0]: line for line in done.stdout.splitlines() if line.strip()}
    assert sorted(listed) == STUDIES
    assert not [name for name, line in listed.items() if "not described" in line]


@pytest.mark.parametrize("name", STUDIES)
def test_every_study_answers_help(name):
    done = _run("--study", name, "--help")
    assert done.returncode == 0, done.stderr
    assert f"--study {name}" in done.stdout  # its usage line names the command that runs it


def test_an_unknown_study_is_refused_with_the_list():
    done = _run("--study", "no_such_study")
    assert done.returncode != 0
    assert "calibration" in done.stderr
