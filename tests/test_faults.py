"""Faults in training: non-finite losses, gradient clipping, checkpoints and exact resume, Ctrl-C."""

from __future__ import annotations

import os
import signal
import warnings

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

import omnivae
from omnivae.train import checkpoints
from omnivae.train.callbacks import BestAfterWarmup, HistoryCallback
from omnivae.train.interrupts import TrainingInterrupted, TrainingTerminated

SETTINGS = {"max_epochs": 6, "kl_warmup_epochs": 2, "batch_size": 64, "progress_bar": False}


@pytest.fixture(scope="module")
def sim():
    return omnivae.datasets.simulate(200, modalities=("rna", "adt"), n_batches=2,
                                     missing_fraction=0.1, seed=1)


def _model(sim, seed=3, n_latent=4):
    return omnivae.Model(sim, batch_key="batch", n_latent=n_latent, n_hidden=16, seed=seed)


class StopAt(pl.Callback):
    """Raises ``error`` when epoch ``epoch`` starts (a crash or a Ctrl-C mid-training)."""

    def __init__(self, epoch: int, error: BaseException) -> None:
        self.epoch, self.error = epoch, error

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise self.error


class Peek(pl.Callback):
    """What a resumed run starts from: step counter, history and best-weights state."""

    def on_train_start(self, trainer, pl_module):
        best = next(cb for cb in trainer.callbacks if isinstance(cb, BestAfterWarmup))
        history = next(cb for cb in trainer.callbacks if isinstance(cb, HistoryCallback))
        self.seen = {"global_step": trainer.global_step, "history_rows": len(history.rows),
                     "best_epoch": best.best_epoch}


# --------------------------------------------------------------------------- non-finite loss


def test_non_finite_likelihood_names_step_and_modality(sim):
    model = _model(sim)
    with torch.no_grad():
        model.module.decoders["adt"].head.bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError) as err:
        model.train(max_epochs=1, progress_bar=False)
    text = str(err.value)
    assert "epoch 0, step 0" in text and "likelihood of modality ['adt']" in text
    assert "encoder" not in text.split("Hint")[0] and "Hint: lower lr" in text


def test_non_finite_encoder_is_named_as_the_cause(sim):
    model = _model(sim)
    with torch.no_grad():
        model.module.encoders["rna"].loc.weight[0, 0] = float("inf")
    with pytest.raises(FloatingPointError) as err:
        model.train(max_epochs=1, progress_bar=False)
    text = str(err.value)
    assert "the encoder of modality ['rna'] produced a non-finite latent" in text
    assert "weights of the networks of ['rna'] are non-finite" in text
    assert "likelihoods={'rna': 'poisson'}" in text


def test_non_finite_gradient_stops_before_the_weights_change(sim):
    model = _model(sim)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    model.module.decoders["adt"].head.weight.register_hook(lambda g: g * float("nan"))
    with pytest.raises(FloatingPointError, match=r"Non-finite gradient at epoch 0, step 0 in "
                                                 r"the networks of \['adt'\]"):
        model.train(max_epochs=1, progress_bar=False)
    for name, value in model.module.state_dict().items():
        assert torch.equal(value, before[name]), name


# --------------------------------------------------------------------------- gradient clipping


class GradNorms(pl.Callback):
    """Total gradient norm as applied by the optimizer (after Lightning's clipping)."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        grads = [p.grad.flatten() for p in pl_module.parameters() if p.grad is not None]
        self.norms.append(float(torch.cat(grads).norm()))


@pytest.mark.parametrize("clip", [1.0, None])
def test_gradient_clipping_is_configurable(sim, clip):
    norms = GradNorms()
    _model(sim).train(max_epochs=1, progress_bar=False, gradient_clip_val=clip, callbacks=[norms])
    assert norms.norms
    if clip is None:
        assert min(norms.norms) > 1.0  # the unclipped norms are large (the loss sums features)
    else:
        assert max(norms.norms) <= clip * 1.0001


# --------------------------------------------------------------------------- checkpoints and resume


@pytest.mark.parametrize("fault", [KeyboardInterrupt(), RuntimeError("power cut")],
                         ids=["ctrl_c", "crash"])
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(sim, tmp_path, fault):
    straight = _model(sim)
    straight.train(checkpoint_dir=tmp_path / "a", **SETTINGS)

    interrupted = _model(sim)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = TrainingInterrupted if isinstance(fault, KeyboardInterrupt) else RuntimeError
        with pytest.raises(expected):
            interrupted.train(checkpoint_dir=tmp_path / "b", callbacks=[StopAt(4, fault)],
                              **SETTINGS)
    saved = torch.load(tmp_path / "b" / "last.ckpt", weights_only=True)  # no pickled code
    assert saved["epoch"] == 3 and saved["callbacks"]  # epochs 0-3 done, callback state inside

    resumed, peek = _model(sim), Peek()  # a fresh object, as after a restart
    resumed.train(checkpoint_dir=tmp_path / "b", resume=True, callbacks=[peek], **SETTINGS)
    assert peek.seen["global_step"] == 4 * 3  # 4 epochs of 3 minibatches: KL warm-up resumes
    assert peek.seen["history_rows"] == 4 and peek.seen["best_epoch"] in (2, 3)  # after warm-up
    np.testing.assert_array_equal(resumed.get_latent_representation(),
                                  straight.get_latent_representation())
    for (name, a), b in zip(straight.module.state_dict().items(),
                            resumed.module.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert resumed.history.index.tolist() == list(range(6))  # the history survives too
    np.testing.assert_array_equal(resumed.history["validation_elbo"],
                                  straight.history["validation_elbo"])
    np.testing.assert_array_equal(resumed.history["kl_weight"], straight.history["kl_weight"])


def test_a_run_that_stopped_early_stays_stopped_on_resume(sim, tmp_path):
    settings = {**SETTINGS, "patience": 0}  # stop at the first epoch after the warm-up
    first = _model(sim)
    first.train(checkpoint_dir=tmp_path, **settings)
    assert len(first.history) == 3
    again = _model(sim)
    again.train(checkpoint_dir=tmp_path, resume=True, **settings)
    assert len(again.history) == 3
    np.testing.assert_array_equal(again.get_latent_representation(),
                                  first.get_latent_representation())


def test_resume_without_the_rng_state_would_differ(sim, tmp_path, monkeypatch):
    """The test above can fail: skipping the random-generator restore changes the result."""
    straight = _model(sim)
    straight.train(**SETTINGS)
    with pytest.raises(TrainingInterrupted):
        _model(sim).train(checkpoint_dir=tmp_path, callbacks=[StopAt(4, KeyboardInterrupt())],
                          **SETTINGS)
    monkeypatch.setattr(checkpoints, "set_rng_state", lambda state: None)
    resumed = _model(sim)
    resumed.train(checkpoint_dir=tmp_path, resume=True, **SETTINGS)
    assert not np.array_equal(resumed.get_latent_representation(),
                              straight.get_latent_representation())


def test_resume_refuses_other_settings_and_starts_fresh_without_checkpoint(sim, tmp_path):
    _model(sim).train(checkpoint_dir=tmp_path, **{**SETTINGS, "max_epochs": 2})
    with pytest.raises(ValueError, match=r"different training run \(batch_size: checkpoint 64 "
                                         r"vs now 32.*resume=False"):
        _model(sim).train(checkpoint_dir=tmp_path, resume=True, **{**SETTINGS, "batch_size": 32})
    with pytest.raises(ValueError, match=r"different training run \(module.n_latent: "
                                         r"checkpoint 4 vs now 5\)"):
        _model(sim, n_latent=5).train(checkpoint_dir=tmp_path, resume=True,
                                      **{**SETTINGS, "max_epochs": 2})
    fresh, plain = _model(sim), _model(sim)
    fresh.train(checkpoint_dir=tmp_path / "empty", resume=True, **{**SETTINGS, "max_epochs": 2})
    plain.train(**{**SETTINGS, "max_epochs": 2})
    np.testing.assert_array_equal(fresh.get_latent_representation(),
                                  plain.get_latent_representation())


def test_a_truncated_checkpoint_is_named_before_resuming(sim, tmp_path):
    _model(sim).train(checkpoint_dir=tmp_path, **{**SETTINGS, "max_epochs": 2})
    last = tmp_path / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a copy cut short
    with pytest.raises(ValueError, match=rf"Checkpoint {last} is damaged \(truncated.*"
                                         r"resume=False\) to start afresh"):
        _model(sim).train(checkpoint_dir=tmp_path, resume=True, **SETTINGS)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    io = checkpoints.AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, target)

    def torn_write(obj, path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn_write)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, target)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left
    assert torch.load(target, weights_only=True)["epoch"] == 1  # the previous one, intact


# --------------------------------------------------------------------------- Ctrl-C


class Snapshots(pl.Callback):
    """Weights and validation ELBO after each epoch's validation."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, float, dict[str, torch.Tensor]]] = []

    def on_validation_epoch_end(self, trainer, pl_module):
        value = float(trainer.callback_metrics["validation_elbo"])
        state = {k: v.detach().clone() for k, v in pl_module.module.state_dict().items()}
        self.rows.append((trainer.current_epoch, value, state))


class SignalAt(pl.Callback):
    """Sends this process ``signum`` when epoch ``epoch`` starts (what a scheduler or a
    Ctrl-C does from outside)."""

    def __init__(self, epoch: int, signum: int) -> None:
        self.epoch, self.signum = epoch, signum

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize(("stop", "error", "words"), [
    (StopAt(5, KeyboardInterrupt()), TrainingInterrupted, r"interrupted \(Ctrl-C\)"),
    (SignalAt(5, signal.SIGINT), TrainingInterrupted, r"interrupted \(Ctrl-C\)"),
    (SignalAt(5, signal.SIGTERM), TrainingTerminated, r"terminated \(SIGTERM\)"),
], ids=["ctrl_c", "sigint", "sigterm"])
def test_ctrl_c_keeps_the_best_weights_and_the_session(sim, stop, error, words):
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    snaps = Snapshots()
    model = _model(sim)
    with pytest.raises(error, match=words + r" in epoch 5 of 8.*best weights") as raised:
        model.train(callbacks=[snaps, stop], **{**SETTINGS, "max_epochs": 8})
    assert raised.value.exit_code == (143 if error is TrainingTerminated else 130)
    assert model.interruption == str(raised.value).split(" Continue")[0]
    # after the warm-up (2 epochs) the best validation ELBO's weights are kept
    _, _, best = min((r for r in snaps.rows if r[0] >= 2), key=lambda r: r[1])
    for name, value in model.module.state_dict().items():
        assert torch.equal(value, best[name]), name
    assert model.is_trained and len(model.history) == 5
    # Lightning's SIG_IGN and SIGTERM notifier are undone
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    assert np.isfinite(model.get_latent_representation()).all()


def test_cli_passes_checkpoint_dir_and_resume(sim, tmp_path, capsys, monkeypatch):
    from omnivae.cli import main

    src = tmp_path / "in.h5mu"
    sim.write_h5mu(src)
    args = ["fit", str(src), "-o", str(tmp_path / "out.h5mu"), "--no-progress"]
    assert main([*args, "--resume"]) == 2
    assert "resume=True needs checkpoint_dir" in capsys.readouterr().err
    seen = {}

    def train(self, *a, **kwargs):
        seen.update(kwargs)
        raise ValueError("stop here: only the options are checked")

    monkeypatch.setattr(omnivae.Model, "train", train)
    assert main([*args, "--checkpoint-dir", str(tmp_path / "ckpt"), "--resume"]) == 2
    assert seen["checkpoint_dir"] == tmp_path / "ckpt" and seen["resume"] is True
