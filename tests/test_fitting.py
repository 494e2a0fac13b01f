"""The training layer's run (omnivae.train.fitting) behind Model.train: layering and agreement."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys

import lightning.pytorch
import pytest
from lightning.pytorch.callbacks import ModelSummary

import omnivae
from omnivae.model import choices, model
from omnivae.train import fitting
from omnivae.train.callbacks import HistoryCallback
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


class TrainerSpy(lightning.pytorch.Callback):
    """Records the Trainer that training built, as it starts fitting."""

    def on_fit_start(self, trainer, pl_module):
        self.seen = {
            "progress_bar": trainer.progress_bar_callback is not None,
            "num_sanity_val_steps": trainer.num_sanity_val_steps,
            "log_every_n_steps": trainer.log_every_n_steps,
            "model_summary": any(isinstance(c, ModelSummary) for c in trainer.callbacks),
            "omnivae_callbacks": sum(isinstance(c, HistoryCallback) for c in trainer.callbacks),
        }


def test_trainer_options_are_omnivae_defaults_overridden_by_trainer_keywords():
    config = TrainConfig.from_options(num_sanity_val_steps=3, log_every_n_steps=9,
                                      enable_progress_bar=False, gradient_clip_val=None)
    options = fitting.trainer_options(config, 4, [])
    assert (options["num_sanity_val_steps"], options["log_every_n_steps"]) == (3, 9)
    assert options["enable_progress_bar"] is False and options["gradient_clip_val"] is None
    defaults = fitting.trainer_options(TrainConfig(), 4, [])
    assert (defaults["num_sanity_val_steps"], defaults["log_every_n_steps"]) == (0, 1)
    assert defaults["enable_progress_bar"] is True and defaults["enable_model_summary"] is False
    assert defaults["gradient_clip_val"] == TrainConfig().gradient_clip_val


def test_trainer_keywords_given_to_train_override_omnivae_defaults():
    # regression: enable_progress_bar / num_sanity_val_steps raised "got multiple values"
    sim = omnivae.datasets.simulate(80, modalities=("rna",), seed=0)
    default_spy, spy = TrainerSpy(), TrainerSpy()
    omnivae.Model(sim, n_latent=2).train(max_epochs=1, progress_bar=True,
                                          callbacks=[default_spy])
    assert default_spy.seen == {"progress_bar": True, "num_sanity_val_steps": 0,
                                "log_every_n_steps": 1, "model_summary": False,
                                "omnivae_callbacks": 1}
    model = omnivae.Model(sim, n_latent=2)
    model.train(max_epochs=2, callbacks=spy, enable_progress_bar=False, num_sanity_val_steps=1,
                log_every_n_steps=5, enable_model_summary=True)
    assert spy.seen == {"progress_bar": False, "num_sanity_val_steps": 1,
                        "log_every_n_steps": 5, "model_summary": True, "omnivae_callbacks": 1}
    assert len(model.history) == 2  # the sanity check's validation is not an epoch


def test_tensorboard_logger_without_tensorboard_says_how_to_install_it(monkeypatch, tmp_path):
    from omnivae.train.loggers import make_logger

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"omnivae\[tensorboard\]"):
        make_logger("tensorboard", tmp_path)
