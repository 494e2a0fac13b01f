"""The training layer's run (omnivae.train.fitting) behind Model.train: layering and agreement."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

import omnivae
from omnivae.model import defaults, model
from omnivae.train import fitting

TRAINING_LAYER = ["omnivae.train.fitting", "omnivae.train.plan", "omnivae.train.loaders",
                  "omnivae.train.callbacks", "omnivae.train.threads"]


@pytest.mark.parametrize("name", TRAINING_LAYER)
def test_training_layer_imports_no_anndata_or_mudata(name):
    code = (f"import sys, {name}; "
            "bad = [m for m in ('anndata', 'mudata', 'scanpy') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fit_defaults_are_those_of_model_train():
    train = inspect.signature(omnivae.Model.train).parameters
    fit = inspect.signature(fitting.fit).parameters
    shared = [name for name in train if name not in ("self", "trainer_kwargs")]
    assert {name: fit[name].default for name in shared} == {
        name: train[name].default for name in shared}


def test_batch_penalty_defaults_still_importable_from_model():
    assert model.DEFAULT_BATCH_PENALTY is defaults.DEFAULT_BATCH_PENALTY
    assert model.DEFAULT_PENALTY_WEIGHTS is defaults.DEFAULT_PENALTY_WEIGHTS
    assert model.resolve_batch_penalty is defaults.resolve_batch_penalty
