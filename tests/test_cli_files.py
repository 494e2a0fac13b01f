"""The command line never changes or loses a file it was not asked to write, and its exit
status tells the truth (0 only with every promised output written; 2 for a refused or bad
argument; 130 after Ctrl-C, 143 after SIGTERM)."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import mudata as md
import pytest

import omnivae
from omnivae.cli import main
from omnivae.train.callbacks import HistoryCallback

FAST = ["--max-epochs", "2", "--n-latent", "2", "--no-progress"]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("src") / "cells.h5mu"
    omnivae.datasets.simulate(60, modalities=("rna", "adt"), n_batches=2, seed=0).write_h5mu(path)
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with its content's digest."""
    return {str(p.relative_to(folder)): _digest(p) for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.fixture
def cells(source, tmp_path) -> Path:
    path = tmp_path / "cells.h5mu"
    path.write_bytes(source.read_bytes())
    return path


@pytest.mark.parametrize("backed", [False, True], ids=["memory", "backed"])
@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
def test_output_onto_the_input_is_refused_and_the_counts_stay(cells, capsys, backed, overwrite):
    before = _digest(cells)
    args = ["fit", str(cells), "-o", str(cells), *FAST]
    assert main(args + ["--backed"] * backed + ["--overwrite"] * overwrite) == 2
    err = capsys.readouterr()
    assert "is the input file" in err.err and "omnivae.Model(" not in err.out  # before training
    assert _digest(cells) == before


def test_save_model_never_deletes_a_users_folder_or_file(cells, tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    (work / "analysis.ipynb").write_text("{}")
    other_file = tmp_path / "table.csv"
    other_file.write_text("a,b\n")
    before = _tree(tmp_path)
    for target, words in ((work, "did not write"), (cells, "is the input; give it a place"),
                          (other_file, "is a file, not a model folder")):
        for overwrite in (False, True):
            code = main(["fit", str(cells), "-o", str(tmp_path / "out.h5mu"), *FAST,
                         "--save-model", str(target)] + ["--overwrite"] * overwrite)
            assert code == 2 and words in capsys.readouterr().err
    assert _tree(tmp_path) == before  # nothing written, nothing deleted


def test_existing_output_needs_overwrite(cells, tmp_path, capsys):
    out = tmp_path / "out.h5mu"
    out.write_bytes(b"yesterday's results")
    assert main(["fit", str(cells), "-o", str(out), *FAST]) == 2
    assert "exists; pass overwrite=True (on the command line: --overwrite)" in capsys.readouterr().err
    assert out.read_bytes() == b"yesterday's results"
    assert main(["fit", str(cells), "-o", str(out), *FAST, "--overwrite"]) == 0
    assert "X_omnivae" in md.read_h5mu(out).obsm


def test_an_output_folder_is_refused_before_training(cells, tmp_path, capsys):
    assert main(["fit", str(cells), "-o", str(tmp_path), *FAST]) == 2
    captured = capsys.readouterr()
    assert "is a folder; name a file in it" in captured.err and "omnivae.Model(" not in captured.out


@pytest.mark.parametrize("content", ["truncated", "not hdf5", "wrong suffix"])
def test_an_unreadable_input_is_a_clear_error(cells, tmp_path, capsys, content):
    bad = tmp_path / ("bad.txt" if content == "wrong suffix" else "bad.h5mu")
    data = cells.read_bytes()
    bad.write_bytes(data[: len(data) // 2] if content == "truncated" else
                    b"gene,count\n" if content == "not hdf5" else data)
    assert main(["fit", str(bad), "-o", str(tmp_path / "out.h5mu"), *FAST]) == 2
    err = capsys.readouterr().err
    words = "unknown suffix '.txt'" if content == "wrong suffix" else "cannot be read as a .h5mu"
    assert words in err and bad.name in err and "Traceback" not in err


class SignalAtStart:
    """Patch: send ``signum`` to this process when training's first epoch starts."""

    def __init__(self, monkeypatch, signum: int) -> None:
        def on_train_epoch_start(callback, trainer, module):
            os.kill(os.getpid(), signum)

        monkeypatch.setattr(HistoryCallback, "on_train_epoch_start", on_train_epoch_start,
                            raising=False)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["ctrl_c", "sigterm"])
@pytest.mark.parametrize("save", [False, True], ids=["nothing", "save_on_interrupt"])
def test_an_interrupted_fit_exits_non_zero_and_writes_only_when_asked(
        cells, tmp_path, capsys, monkeypatch, signum, code, save):
    SignalAtStart(monkeypatch, signum)
    out, model_dir = tmp_path / "out.h5mu", tmp_path / "model"
    args = ["fit", str(cells), "-o", str(out), *FAST, "--save-model", str(model_dir)]
    assert main(args + ["--save-on-interrupt"] * save) == code
    err = capsys.readouterr().err
    name = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
    assert name in err
    if save:
        record = md.read_h5mu(out).uns["omnivae_interrupted"]
        assert record["signal"] == ("SIGTERM" if signum == signal.SIGTERM else "SIGINT")
        assert (model_dir / "omnivae.json").is_file()
    else:
        assert "Nothing was written" in err
        assert not out.exists() and not model_dir.exists()


def test_sigterm_from_outside_ends_the_process_with_143(cells, tmp_path):
    """What a scheduler sees: the real exit status of ``omnivae fit`` sent SIGTERM while it
    trains, and no output."""
    out = tmp_path / "out.h5mu"
    process = subprocess.Popen(
        [sys.executable, "-m", "omnivae.cli", "fit", str(cells), "-o", str(out),
         "--max-epochs", "100000", "--n-latent", "2", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()  # the model's summary, printed just before training
    assert line.startswith("omnivae.Model("), line
    time.sleep(2.0)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert "terminated (SIGTERM)" in err and "Nothing was written" in err
    assert sorted(os.listdir(tmp_path)) == ["cells.h5mu"]  # no output, no temporary file


# --- a property test of the file handling -------------------------------------------------

OUTPUTS = ["new", "existing file", "the input", "a folder"]
MODEL_DIRS = [None, "new", "empty folder", "saved model", "foreign folder", "the input",
              "the output"]
INTERRUPTS = [None, signal.SIGINT, signal.SIGTERM]


@dataclass(frozen=True)
class Case:
    output: str
    model_dir: str | None
    overwrite: bool
    backed: bool
    interrupt: int | None
    save_on_interrupt: bool

    def expected_code(self) -> int:
        """What the command must answer, from the rules in docs/reliability.md."""
        if self.output in ("the input", "a folder"):
            return 2
        if self.output == "existing file" and not self.overwrite:
            return 2
        if self.model_dir in ("foreign folder", "the input", "the output"):
            return 2
        if self.model_dir == "saved model" and not self.overwrite:
            return 2
        return {None: 0, signal.SIGINT: 130, signal.SIGTERM: 143}[self.interrupt]


def _cases(n: int, seed: int) -> list[Case]:
    """``n`` random combinations, weighted so that about half of them run."""
    rng = random.Random(seed)
    return [Case(rng.choices(OUTPUTS, weights=[4, 2, 1, 1])[0],
                 rng.choices(MODEL_DIRS, weights=[6, 4, 2, 3, 2, 1, 1])[0],
                 rng.random() < 0.6, rng.random() < 0.3, rng.choice(INTERRUPTS),
                 rng.random() < 0.5)
            for _ in range(n)]


def test_the_cases_cover_every_outcome():
    """The property test below sees refusals, successes and both signals, in memory and
    backed, with and without --save-on-interrupt."""
    cases = CASES
    assert {c.expected_code() for c in cases} == {0, 2, 130, 143}
    running = [c for c in cases if c.expected_code() != 2]
    assert any(c.backed for c in running) and any(not c.backed for c in running)
    stopped = [c for c in running if c.interrupt is not None]
    assert {c.save_on_interrupt for c in stopped} == {False, True}


CASES = _cases(24, seed=28)


@pytest.fixture(scope="module")
def saved_model(source, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model") / "saved"
    omnivae.Model(md.read_h5mu(source), n_latent=2).save(folder)
    return folder


@pytest.mark.parametrize("case", CASES, ids=lambda c: (
    f"{c.output}-{c.model_dir}-{'o' if c.overwrite else ''}{'b' if c.backed else ''}-"
    f"{c.interrupt or ''}{'s' if c.save_on_interrupt else ''}"))
def test_no_input_changes_and_no_exit_0_without_the_outputs(
        case, cells, saved_model, tmp_path, monkeypatch, capsys):
    out = {"new": tmp_path / "out.h5mu", "existing file": tmp_path / "old.h5mu",
           "the input": cells, "a folder": tmp_path / "results"}[case.output]
    (tmp_path / "old.h5mu").write_bytes(b"old results")
    (tmp_path / "results").mkdir()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    (tmp_path / "empty").mkdir()
    model_copy = tmp_path / "saved"
    model_copy.mkdir()
    for item in saved_model.iterdir():
        (model_copy / item.name).write_bytes(item.read_bytes())
    model_dir = {None: None, "new": tmp_path / "model", "empty folder": tmp_path / "empty",
                 "saved model": model_copy, "foreign folder": foreign, "the input": cells,
                 "the output": out}[case.model_dir]
    if case.interrupt is not None:
        SignalAtStart(monkeypatch, case.interrupt)
    before = _tree(tmp_path)
    args = ["fit", str(cells), "-o", str(out), *FAST]
    args += ["--save-model", str(model_dir)] if model_dir is not None else []
    args += ["--overwrite"] * case.overwrite + ["--backed"] * case.backed
    args += ["--save-on-interrupt"] * case.save_on_interrupt

    code = main(args)

    capsys.readouterr()
    assert code == case.expected_code()
    after = _tree(tmp_path)
    assert after["cells.h5mu"] == before["cells.h5mu"]  # the input never changes
    assert after["foreign/notes.txt"] == before["foreign/notes.txt"]
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")]  # no temp files
    wrote = code == 0 or (code in (130, 143) and case.save_on_interrupt)
    if wrote:  # every promised output is there and complete
        assert "X_omnivae" in md.read_h5mu(out).obsm
        if model_dir is not None:
            assert omnivae.Model.load(model_dir, md.read_h5mu(cells)).config.n_latent == 2
    else:  # nothing changed but what was refused
        assert after == before


@pytest.mark.parametrize(("command", "option", "value", "words"), [
    ("fit", "--max-epochs", "0", "max_epochs must be an integer >= 1"),
    ("fit", "--max-epochs", "-1", "max_epochs must be an integer >= 1"),
    ("fit", "--batch-size", "0", "batch_size must be an integer >= 1"),
    ("fit", "--n-latent", "0", "n_latent must be an integer >= 1"),
    ("demo", "--max-epochs", "0", "max_epochs must be an integer >= 1"),
])
def test_numbers_out_of_range_exit_2_with_the_range(cells, tmp_path, capsys, command, option,
                                                     value, words):
    args = (["fit", str(cells), "-o", str(tmp_path / "out.h5mu"), "--no-progress"]
            if command == "fit" else ["demo", "--quick", "--out", str(tmp_path / "demo"),
                                      "--no-progress"])
    assert main([*args, option, value]) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "out.h5mu").exists() and not (tmp_path / "demo" / "demo.h5mu").exists()


def test_a_truncated_backed_input_is_a_clear_error(cells, tmp_path):
    bad = tmp_path / "cut.h5mu"
    bad.write_bytes(cells.read_bytes()[:5000])
    with pytest.raises(ValueError, match=r"cut.h5mu cannot be read as an .h5mu file.*complete"):
        omnivae.Model(bad)
