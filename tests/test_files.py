"""Safe files: atomic model folders and .h5mu output, no pickled code, checked format version."""

from __future__ import annotations

import hashlib
import json
import os

import mudata as md
import numpy as np
import pytest
import torch

import omnivae
from omnivae.data import files as _io


@pytest.fixture(scope="module")
def sim():
    return omnivae.datasets.simulate(80, modalities=("rna", "adt"), n_batches=2, seed=2)


@pytest.fixture()
def saved(sim, tmp_path):
    model = omnivae.Model(sim, batch_key="batch", n_latent=3, n_hidden=8)
    model.save(tmp_path / "m")
    return model, tmp_path / "m"


def _rehash(folder):
    """Make omnivae.json's checksum agree with weights.pt (to reach the checks behind it)."""
    meta = json.loads((folder / "omnivae.json").read_text())
    meta["weights_sha256"] = hashlib.sha256((folder / "weights.pt").read_bytes()).hexdigest()
    (folder / "omnivae.json").write_text(json.dumps(meta))


def test_saved_model_is_json_plus_plain_tensors(saved):
    _, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == ["omnivae.json", "weights.pt"]
    meta = json.loads((folder / "omnivae.json").read_text())
    assert meta["format"] == "omnivae-model" and meta["format_version"] == _io.FORMAT_VERSION
    state = torch.load(folder / "weights.pt", weights_only=True)  # refuses any pickled code
    assert all(isinstance(v, torch.Tensor) for v in state.values())


@pytest.mark.parametrize("stage", ["weights", "json"])
def test_crash_while_saving_keeps_the_previous_model(sim, saved, monkeypatch, stage):
    model, folder = saved
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    if stage == "weights":
        def torn(obj, path, *args, **kwargs):
            with open(path, "wb") as handle:
                handle.write(b"half")
            raise OSError("disk full")
        monkeypatch.setattr(_io.torch, "save", torn)
    else:
        monkeypatch.setattr(_io.json, "dumps", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with torch.no_grad():
        model.module.encoders["rna"].loc.bias.add_(1.0)  # a different model to save
    with pytest.raises(OSError, match="disk full"):
        model.save(folder, overwrite=True)
    monkeypatch.undo()
    assert sorted(p.name for p in folder.parent.iterdir()) == ["m"]  # no temporary folders
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    omnivae.Model.load(folder, sim)  # still loads


def test_crash_while_writing_h5mu_keeps_the_previous_file(sim, tmp_path, monkeypatch):
    out = tmp_path / "out.h5mu"
    _io.write_h5mu_atomic(sim, out)
    before = out.read_bytes()

    def torn(self, filename, *args, **kwargs):
        with open(filename, "wb") as handle:
            handle.write(before[: len(before) // 3])
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of the write

    monkeypatch.setattr(md.MuData, "write_h5mu", torn)
    with pytest.raises(KeyboardInterrupt):
        _io.write_h5mu_atomic(sim, out)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["out.h5mu"] and out.read_bytes() == before
    assert md.read_h5mu(out).n_obs == sim.n_obs


def test_newer_format_version_is_refused(sim, saved):
    _, folder = saved
    meta = json.loads((folder / "omnivae.json").read_text())
    meta["format_version"] = _io.FORMAT_VERSION + 1
    (folder / "omnivae.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"newer omnivae.*Upgrade omnivae"):
        omnivae.Model.load(folder, sim)


def test_missing_files(sim, saved, tmp_path):
    _, folder = saved
    with pytest.raises(FileNotFoundError, match="not an omnivae model folder"):
        omnivae.Model.load(tmp_path / "nowhere", sim)
    (folder / "weights.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"no weights.pt; the model folder is incomplete"):
        omnivae.Model.load(folder, sim)


def test_corrupted_files(sim, saved):
    _, folder = saved
    weights = folder / "weights.pt"
    weights.write_bytes(weights.read_bytes()[:-100])  # truncated
    with pytest.raises(ValueError, match=r"weights.pt is corrupted.*SHA-256"):
        omnivae.Model.load(folder, sim)
    _rehash(folder)  # even without the checksum, a torn file is reported, not a raw traceback
    with pytest.raises(ValueError, match="cannot be read as plain tensors"):
        omnivae.Model.load(folder, sim)
    (folder / "omnivae.json").write_text("{ not json")
    with pytest.raises(ValueError, match=r"omnivae.json is corrupted"):
        omnivae.Model.load(folder, sim)


class Payload:
    def __reduce__(self):
        return (os.getcwd, ())  # any callable: weights_only refuses to call it


def test_pickled_code_in_the_weights_is_refused(sim, saved):
    _, folder = saved
    state = torch.load(folder / "weights.pt", weights_only=True)
    torch.save({**state, "extra": Payload()}, folder / "weights.pt")
    _rehash(folder)
    with pytest.raises(ValueError, match="cannot be read as plain tensors"):
        omnivae.Model.load(folder, sim)


def test_weights_that_do_not_fit_the_description(sim, saved):
    _, folder = saved
    state = torch.load(folder / "weights.pt", weights_only=True)
    key = next(k for k in state if k.endswith("loc.weight"))
    state[key] = torch.zeros(7, 7)
    torch.save(state, folder / "weights.pt")
    _rehash(folder)
    with pytest.raises(ValueError, match=rf"do not match the model.*other shapes \['{key}'\]"):
        omnivae.Model.load(folder, sim)


def test_loading_checks_the_data(sim, saved):
    model, folder = saved
    other = sim.copy()
    other.obs["batch"] = "site9"
    with pytest.raises(ValueError, match=r"Labels \['site9'\] in column 'batch'"):
        omnivae.Model.load(folder, other)
    loaded = omnivae.Model.load(folder, sim)
    np.testing.assert_array_equal(loaded.get_latent_representation(),
                                  model.get_latent_representation())


def test_a_save_interrupted_between_the_two_renames_points_to_the_previous_model(sim, saved):
    _, folder = saved
    os.replace(folder, folder.with_name(".m.old"))  # the one moment the folder is absent
    with pytest.raises(FileNotFoundError, match=r"previous model is in .*\.m\.old; rename it"):
        omnivae.Model.load(folder, sim)
