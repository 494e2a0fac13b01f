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
    meta["description_sha256"] = _io._description_sha256(meta)
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


def test_an_edited_description_is_refused(sim, saved):
    """Swapping two feature names would load a different model silently: the description
    is covered by its own checksum."""
    _, folder = saved
    meta = json.loads((folder / "omnivae.json").read_text())
    names = meta["setup"]["var_names"]["rna"]
    names[0], names[1] = names[1], names[0]
    (folder / "omnivae.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"omnivae.json was changed after the model was saved"):
        omnivae.Model.load(folder, sim)
    with pytest.raises(ValueError, match=r"omnivae.json was changed after the model was saved"):
        omnivae.Model.load_query(folder, sim)  # mapping runs the same checks


@pytest.mark.parametrize("edit", ["missing key", "wrong type"])
def test_a_broken_description_names_the_file_and_entry(sim, saved, edit):
    _, folder = saved
    meta = json.loads((folder / "omnivae.json").read_text())
    if edit == "missing key":
        del meta["module"]["modalities"]
    else:
        meta["module"]["n_latent"] = "twenty"
    meta["description_sha256"] = _io._description_sha256(meta)  # edited by a program
    (folder / "omnivae.json").write_text(json.dumps(meta))
    words = (r"lacks the entry 'modalities'" if edit == "missing key" else
             r"holds a value of the wrong kind \(ValueError: n_latent must be an integer")
    with pytest.raises(ValueError, match=rf"omnivae.json {words}.*save the model again"):
        omnivae.Model.load(folder, sim)


def test_weights_edited_to_fit_are_checked_when_mapping(sim, saved):
    """load_reference (omnivae map) runs the state check Model.load runs: a clear error,
    not a failure inside load_state_dict."""
    from omnivae.model.model import load_reference

    _, folder = saved
    state = torch.load(folder / "weights.pt", weights_only=True)
    state.pop(next(iter(state)))
    torch.save(state, folder / "weights.pt")
    _rehash(folder)
    with pytest.raises(ValueError, match=r"do not match the model described"):
        load_reference(folder)


def test_mapping_onto_a_never_trained_reference_warns(sim, tmp_path):
    model = omnivae.Model(sim, n_latent=3)
    with pytest.warns(UserWarning, match=r"reference model was never trained"):
        omnivae.Model.load_query(model, sim)
    model.save(tmp_path / "m")
    with pytest.warns(UserWarning, match=r"reference model was never trained"):
        omnivae.Model.load_query(tmp_path / "m", sim)


def test_save_never_deletes_what_omnivae_did_not_write(sim, tmp_path):
    model = omnivae.Model(sim, n_latent=3)
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "notebook.ipynb").write_text("{}")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match=r"folder that omnivae did not write.*notebook"):
            model.save(folder, overwrite=overwrite)
    assert (folder / "notebook.ipynb").read_text() == "{}"
    data = tmp_path / "cells.h5mu"
    data.write_bytes(b"counts")
    with pytest.raises(FileExistsError, match=r"is a file, not a model folder"):
        model.save(data, overwrite=True)
    assert data.read_bytes() == b"counts"
    empty = tmp_path / "empty"
    empty.mkdir()
    model.save(empty)  # an empty folder is fine
    with pytest.raises(FileExistsError, match=r"holds a saved omnivae model; pass overwrite"):
        model.save(empty)
    model.save(empty, overwrite=True)  # a model folder omnivae wrote is replaced
    (empty / "mine.txt").write_text("x")  # ... unless something else was put in it
    with pytest.raises(FileExistsError, match=r"did not write.*mine.txt"):
        model.save(empty, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["cells.h5mu", "empty", "work"]  # no leftovers
