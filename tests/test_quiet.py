"""A normal run is quiet: no library warnings, no Lightning info lines, only the progress bar;
``verbose=True`` shows Lightning's messages.

The runs happen in a fresh Python process, so that neither pytest's warning filters
(``filterwarnings`` in pyproject.toml ignores Deprecation- and FutureWarnings) nor
conftest.py's quieter Lightning logger hide what a user would see. That process shows every
warning each time it is raised, except DeprecationWarnings raised inside other libraries,
which Python and IPython hide from users too (DeprecationWarnings that omnivae's or the
user's own code raise are shown).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import omnivae

SRC = Path(omnivae.__file__).resolve().parents[1]

# what Lightning or Python print when they have something to say
NOISE = re.compile(
    r"Warning|warn\(|GPU available|TPU available|HPU available|LOCAL_RANK|Seed set|"
    r"Trainer\.fit. stopped|Trainable params|\| Name|💡|deprecated", re.IGNORECASE)

# a user's view of warnings, but every time and also those omnivae's own code raises
SHOW_WARNINGS = """
import warnings
warnings.simplefilter("always")
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("always", category=DeprecationWarning, module=r"(__main__|omnivae)(\\..*)?$")
"""

API_SCRIPT = """
import os, tempfile
import omnivae
from omnivae.data.files import read_h5mu, write_h5mu_atomic
from omnivae.data.splits import withhold_modality

out = tempfile.mkdtemp()
sim = omnivae.datasets.simulate(120, modalities=("rna", "adt"), n_batches=2, seed=0)
masked, truth = withhold_modality(sim, "adt", fraction=0.25, seed=0)  # as the demo does
model = omnivae.Model(masked, batch_key="batch", n_latent=3)
model.train(max_epochs=2)
model.get_latent_representation()
model.predict("adt", n_samples=2)
model.save(os.path.join(out, "model"))
omnivae.Model.load(os.path.join(out, "model"), masked)
omnivae.tl.integrate(masked, batch_key="batch", n_latent=3, max_epochs=2)
omnivae.tl.predict(masked, model, target="adt")
write_h5mu_atomic(masked, os.path.join(out, "cells.h5mu"))
omnivae.Model(os.path.join(out, "cells.h5mu"), n_latent=3)
print("=== verbose", flush=True)
omnivae.Model(sim, n_latent=3).train(max_epochs=1, progress_bar=False, verbose=True)
"""

DEMO_SCRIPT = """
import tempfile
from omnivae.cli import main

assert main(["demo", "--quick", "--out", tempfile.mkdtemp()]) == 0
"""


def run_as_user(script: str) -> str:
    """stdout and stderr (interleaved) of ``script`` in a fresh Python that shows warnings as
    :data:`SHOW_WARNINGS` says, with this checkout's omnivae first on the path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("PYTHONWARNINGS", None)
    code = SHOW_WARNINGS + textwrap.dedent(script)
    result = subprocess.run([sys.executable, "-c", code],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:]
    return result.stdout


def noise(output: str) -> list[str]:
    """The lines of ``output`` that are warnings or Lightning's messages."""
    return [line for line in output.splitlines() if NOISE.search(line)]


def test_training_prediction_and_files_print_nothing_but_the_progress_bar():
    quiet, verbose = run_as_user(API_SCRIPT).split("=== verbose")
    assert noise(quiet) == [], quiet
    assert "Epoch" in quiet  # the progress bar is shown by default
    # verbose=True shows Lightning's info lines and the model summary
    assert "GPU available" in verbose and "Trainable params" in verbose, verbose


@pytest.mark.slow  # about a minute on a busy machine: UMAP and Leiden at several resolutions
def test_demo_prints_its_report_and_no_warnings():
    output = run_as_user(DEMO_SCRIPT)
    assert noise(output) == [], output
    assert "# omnivae demo report" in output and "Epoch" in output


def test_verbose_or_not_training_restores_the_lightning_loggers():
    import lightning.pytorch  # noqa: F401  (its import sets the logger's level)

    sim = omnivae.datasets.simulate(60, modalities=("rna",), seed=0)
    lightning_log = logging.getLogger("lightning.pytorch")
    before = lightning_log.level
    try:
        lightning_log.setLevel(logging.DEBUG)
        for verbose in (False, True):
            omnivae.Model(sim, n_latent=2).train(max_epochs=1, progress_bar=False,
                                                 verbose=verbose)
            assert lightning_log.level == logging.DEBUG
    finally:
        lightning_log.setLevel(before)
