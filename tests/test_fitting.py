"""The training layer's run (omnivae.train.fitting) behind Model.train: layering and agreement."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys

import pytest

import omnivae
from omnivae.model import choices, model
from omnivae.train import fitting
from omnivae.train.config import TrainConfig

TRAINING_LAYER = ["omnivae.train.fitting", "omnivae.train.plan", "omnivae.train.loaders",
                  "omnivae.train.callbacks", "omnivae.train.threads"]


@pytest.mark.parametrize("name", TRAINING_LAYER)
def test_training_layer_imports_no_anndata_or_mudata(name):
    code = (f"import sys, {name}; "
            "bad = [m for m in ('anndata', 'mudata', 'scanpy') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_training_settings_are_written_once_in_train_config():
    # Model.train and fit take a TrainConfig (or its fields as options), never a copy of them
    train = inspect.signature(omnivae.Model.train).parameters
    fit = inspect.signature(fitting.fit).parameters
    assert list(train) == ["self", "max_epochs", "config", "options"]
    assert fit["config"].annotation in (TrainConfig, "TrainConfig | None")
    assert not {f.name for f in dataclasses.fields(TrainConfig)} & (set(fit) - {"config"})


def test_model_train_names_every_training_setting():
    doc = omnivae.Model.train.__doc__ or ""
    missing = [f.name for f in dataclasses.fields(TrainConfig)
               if f.name not in ("max_epochs", "trainer_kwargs") and f"``{f.name}``" not in doc]
    assert missing == []


def test_train_options_set_fields_and_pass_the_rest_to_lightning():
    base = TrainConfig(lr=1e-3, trainer_kwargs={"limit_val_batches": 2})
    config = TrainConfig.from_options(base, batch_size=32, detect_anomaly=True)
    assert (config.lr, config.batch_size) == (1e-3, 32)
    assert dict(config.trainer_kwargs) == {"limit_val_batches": 2, "detect_anomaly": True}
    assert TrainConfig().trainer_devices == 1 and TrainConfig(devices=2).trainer_devices == 2
    with pytest.raises(ValueError, match="use_distributed_sampler"):
        TrainConfig.from_options(use_distributed_sampler=True)
    with pytest.raises(ValueError, match="num_threads"):
        TrainConfig(num_threads=0)


def test_model_train_takes_a_config_and_options_over_it():
    sim = omnivae.datasets.simulate(80, modalities=("rna",), seed=0)
    model = omnivae.Model(sim, n_latent=2)
    model.train(config=TrainConfig(max_epochs=5, progress_bar=False), max_epochs=2)
    assert len(model.history) == 2


def test_batch_penalty_defaults_still_importable_from_model():
    assert model.DEFAULT_BATCH_PENALTY is choices.DEFAULT_BATCH_PENALTY
    assert model.DEFAULT_PENALTY_WEIGHTS is choices.DEFAULT_PENALTY_WEIGHTS
