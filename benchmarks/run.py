"""omnivae side by side with scvi-tools TOTALVI/MULTIVI and simple baselines, on real data.

Usage::

    python benchmarks/run.py [--quick] [--datasets NAME ...] [--seeds 0 1 2] \\
        [--tasks embedding prediction speed scaling] [--accelerator cpu|gpu] \\
        [--systems NAME ...] [--out benchmarks/results]

Full mode (default): the four small datasets, seeds 0 1 2, every system at its defaults;
speed on pbmc10k_protein_v3_rna4000_adt14 (vs TOTALVI) and mop_snareseq_c1 (vs MULTIVI);
scaling on synthetic data shaped like pbmc10k at 10k, 100k and 1M cells. ``--quick`` (a few
minutes on 2 cores, run in CI): two small datasets (one per peer), one seed, few epochs for every neural
network (3), one speed pair (multiome starter vs MULTIVI, 1 epoch) and one
scaling size (300 cells), written to ``benchmarks/results/quick``.
Each task writes ``<out>/<task>.md`` (tables), PNG plots and ``<out>/raw/<task>.json``.

Studies (one question each, ``benchmarks/studies/``)::

    python benchmarks/run.py --list-studies
    python benchmarks/run.py --study NAME [ARGS ...]    # --study NAME --help: its options

runs ``benchmarks/studies/NAME.py``'s ``main`` with every argument other than ``--study NAME``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from suite.catalog import all_systems
from suite.config import DATASETS, QUICK_DATASETS, SMALL_DATASETS, SPEED_PAIRS
from suite.outputs import (
    headline,
    read_raw,
    write_embedding,
    write_prediction,
    write_scaling,
    write_speed,
)
from suite.report import atomic_write, combine_notes, combine_settings, machine_note
from suite.speed import scaling_rows, speed_rows
from suite.tasks import embedding_rows, prediction_rows

TASKS = ("embedding", "prediction", "speed", "scaling")
RESULTS = Path(__file__).resolve().parent / "results"
STUDIES = Path(__file__).resolve().parent / "studies"


def study_names() -> list[str]:
    """The studies in ``benchmarks/studies/`` (one module each)."""
    return sorted(p.stem for p in STUDIES.glob("*.py") if not p.name.startswith("_"))


def split_study(argv: list[str]) -> tuple[str | None, list[str]]:
    """The study named by ``--study NAME`` (or ``--study=NAME``) and the other arguments, which
    go to the study; ``(None, argv)`` when there is no ``--study``.

    >>> split_study(["--study", "priors", "--seeds", "0", "1"])
    ('priors', ['--seeds', '0', '1'])
    >>> split_study(["--study=calibration", "--help"])
    ('calibration', ['--help'])
    >>> split_study(["--quick"])
    (None, ['--quick'])
    """
    for i, arg in enumerate(argv):
        if arg == "--study":
            if i + 1 >= len(argv):
                raise SystemExit("--study needs a NAME (python benchmarks/run.py --list-studies)")
            return argv[i + 1], argv[:i] + argv[i + 2:]
        if arg.startswith("--study="):
            return arg.split("=", 1)[1], argv[:i] + argv[i + 1:]
    return None, argv


def run_study(name: str, argv: list[str]) -> int | None:
    """Run ``studies/<name>.py``'s ``main(argv)``; its usage line reads
    ``run.py --study <name>``."""
    import importlib

    if name not in study_names():
        raise SystemExit(f"--study {name}: no such study; one of {', '.join(study_names())}")
    module = importlib.import_module(f"studies.{name}")
    program = sys.argv[0]
    sys.argv[0] = f"{program} --study {name}"  # argparse's prog in the study's usage and --help
    try:
        result = module.main(argv)
    finally:
        sys.argv[0] = program
    return result if isinstance(result, int) else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny CI run (a few minutes)")
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS),
                        help="datasets for embedding/prediction (default: the four small ones)")
    parser.add_argument("--seeds", nargs="+", type=int, help="default: 0 1 2 (quick: 0)")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--systems", nargs="+", help="system names (default: all)")
    parser.add_argument("--accelerator", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--max-epochs", type=int,
                        help="cap every neural network's epochs (default: each system's own; quick: 5)")
    parser.add_argument("--speed-epochs", type=int, help="epochs per timed run (default 5; quick 1)")
    parser.add_argument("--speed-repeats", type=int, help="alternated repeats (default 3; quick 1)")
    parser.add_argument("--speed-datasets", nargs="+", choices=sorted(SPEED_PAIRS))
    parser.add_argument("--speed-variants", nargs="+", default=[], metavar="ARG=VALUE",
                        help="also time omnivae with this Model argument (each one a further "
                             "system in the rotation), e.g. mixture_sampling=stratified")
    parser.add_argument("--scaling-sizes", nargs="+", type=int,
                        help="cells (default 10000 100000 1000000; quick 300)")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds before a speed/scaling run is given up (and reported so)")
    parser.add_argument("--from-raw", nargs="+", type=Path, metavar="DIR",
                        help="run nothing: merge DIR/raw/<task>.json of earlier runs into --out. "
                        "A DIR may be a merged results folder itself (new runs merge into it); "
                        "a run merged into it already is counted again in the machine note's "
                        "number of runs (its rows are not: one per dataset, task, seed and "
                        "system)")
    parser.add_argument("--report-name", metavar="NAME",
                        help="with --from-raw: write the merged embedding and prediction rows as "
                             "NAME_embedding.md and NAME_prediction.md (with their plots and "
                             "raw/NAME_<task>.json) instead of embedding.md/prediction.md, and "
                             "no summary (e.g. family for the model-family rows)")
    parser.add_argument("--preamble", type=Path, nargs="+", default=[], metavar="FILE",
                        help="with --report-name: markdown put under a report's title; a file "
                             "named *_embedding.md goes to the embedding report, "
                             "*_prediction.md to the prediction report")
    parser.add_argument("--out", type=Path, help="default benchmarks/results (quick: .../quick)")
    parser.add_argument("--study", metavar="NAME",
                        help="run benchmarks/studies/NAME.py instead of the suite; every other "
                             "argument goes to it (--study NAME --help lists its options)")
    parser.add_argument("--list-studies", action="store_true",
                        help="list the studies and the question each answers, then stop")
    args = parser.parse_args(argv)
    quick = args.quick
    args.datasets = args.datasets or list(QUICK_DATASETS if quick else SMALL_DATASETS)
    args.seeds = args.seeds if args.seeds is not None else ([0] if quick else [0, 1, 2])
    args.max_epochs = args.max_epochs or (5 if quick else None)
    args.speed_epochs = args.speed_epochs or (1 if quick else 5)
    args.speed_repeats = args.speed_repeats or (1 if quick else 3)
    args.speed_datasets = args.speed_datasets or (
        {"neurips2021_bmmc_multiome_starter": "multivi"} if quick else list(SPEED_PAIRS))
    args.scaling_sizes = args.scaling_sizes or ([300] if quick else [10_000, 100_000, 1_000_000])
    args.out = args.out or (RESULTS / "quick" if quick else RESULTS)
    return args


def _settings(parts: list[tuple[list[dict], str, str]]) -> str:
    """The settings lines of raw parts combined, each naming the datasets it applies to."""
    return combine_settings([p[2] for p in parts],
                            [[d for d in dict.fromkeys(r.get("dataset") for r in p[0]) if d]
                             for p in parts])  # scaling rows have no dataset


def _merged(parts: list[tuple[list[dict], str, str]], task: str) -> tuple[list[dict], str, str]:
    """The raw rows of ``task`` from every run's ``parts`` (:func:`read_raw`), with their
    machine notes and settings combined."""
    rows = [row for part in parts for row in part[0]]
    if task in ("embedding", "prediction"):  # speed/scaling rows are repeats, kept as they are
        rows = _unique_rows(rows)
    return rows, combine_notes([p[1] for p in parts]), _settings(parts)


def _unique_rows(rows: list[dict]) -> list[dict]:
    """One row per dataset, task, seed and system (the last one read): a baseline scored again
    in several runs (e.g. ``PCA (RNA)`` in every mosaic run) must count once, not as extra seeds.

    >>> rows = [{"dataset": "d", "seed": 0, "system": "PCA", "total": 0.5},
    ...         {"dataset": "d", "seed": 0, "system": "PCA", "total": 0.5},
    ...         {"dataset": "d", "seed": 1, "system": "PCA", "total": 0.6}]
    >>> [r["seed"] for r in _unique_rows(rows)]
    [0, 1]
    """
    keys = ("dataset", "task", "seed", "system")
    unique = {tuple(str(row.get(k)) for k in keys): row for row in rows}
    return list(unique.values())


def check_raw_folders(folders: list[Path]) -> None:
    """Stop with the folders that hold no ``raw/*.json`` (a mistyped or relative path would
    otherwise merge as an empty run and its rows would be silently missing).

    >>> check_raw_folders([Path("no/such/run")])
    Traceback (most recent call last):
    ...
    SystemExit: --from-raw: no raw/<task>.json in no/such/run (does not exist). Give the folder a run wrote with --out (it holds raw/embedding.json, ...), as a path from the current directory.
    """
    missing = [f"{folder} ({'does not exist' if not folder.exists() else 'no raw/*.json'})"
               for folder in folders if not any((folder / "raw").glob("*.json"))]
    if missing:
        raise SystemExit(f"--from-raw: no raw/<task>.json in {', '.join(missing)}. Give the "
                         "folder a run wrote with --out (it holds raw/embedding.json, ...), as a "
                         "path from the current directory.")


def merge(folders: list[Path], out: Path, order: list[str], report_name: str | None = None,
          preambles: dict[str, str] | None = None) -> None:
    """Rebuild every table and plot in ``out`` from the raw rows of earlier runs; with
    ``report_name``, only the embedding and prediction rows, as ``out/<report_name>_<task>.md``
    (``preambles[task]`` under each title) and no summary."""
    writers = {"embedding": write_embedding, "prediction": write_prediction}
    tasks = list(writers) if report_name else TASKS
    check_raw_folders(folders)
    raw = {task: [read_raw(folder, task) for folder in folders] for task in tasks}
    merged = {task: _merged(raw[task], task) for task in tasks}
    merged = {task: parts for task, parts in merged.items() if parts[0]}
    if report_name and not merged:
        raise SystemExit(f"No embedding or prediction rows in {[str(f) for f in folders]}.")
    for task, (rows, note, settings) in merged.items():
        if report_name:
            writers[task](out, rows, order, note, settings, name=f"{report_name}_{task}",
                          preamble=(preambles or {}).get(task, ""))
        elif task in writers:
            writers[task](out, rows, order, note, settings)
        elif task == "speed":
            write_speed(out, rows, SPEED_PAIRS, note, settings)
        else:
            write_scaling(out, rows, note, settings)
    if not report_name:
        budgets = _settings(raw["embedding"] + raw["prediction"])
        atomic_write(out / "summary.md", "# Headline\n\nMean over seeds; best per column in "
                     "bold. Details: embedding.md, prediction.md, speed.md, scaling.md.\n\n"
                     + (f"Training budgets: {budgets}\n\n" if budgets else "")
                     + headline(out, order) + "\n")


def preambles_by_task(files: list[Path]) -> dict[str, str]:
    """The text of each ``*_embedding.md`` / ``*_prediction.md`` file, keyed by its task."""
    found = {}
    for path in files:
        task = next((t for t in ("embedding", "prediction") if path.stem.endswith(f"_{t}")), None)
        if task is None:
            raise SystemExit(f"--preamble {path}: the file name must end in _embedding.md or "
                             "_prediction.md to say which report it heads.")
        found[task] = path.read_text()
    return found


def list_studies() -> str:
    """One line per study: its name and the question it answers (from the list in
    ``studies/__init__.py``'s docstring)."""
    import ast
    import re

    doc = ast.get_docstring(ast.parse((STUDIES / "__init__.py").read_text())) or ""
    questions = {m[1]: " ".join(m[2].split())
                 for m in re.finditer(r"^\* ``(\w+)``: (.*?)(?=^\* |\Z)", doc, re.M | re.S)}
    return "\n".join(f"{name:<22} {questions.get(name, '(not described in studies/__init__.py)')}"
                     for name in study_names())


def main(argv: list[str] | None = None) -> int | None:
    argv = sys.argv[1:] if argv is None else list(argv)
    study, rest = split_study(argv)
    if study is not None:
        return run_study(study, rest)
    if "--list-studies" in argv:
        print(list_studies())
        return None
    args = parse_args(argv)
    if args.from_raw:
        merge(args.from_raw, args.out, [s.name for s in all_systems(args.systems)],
              args.report_name, preambles_by_task(args.preamble))
        print(f"merged into {args.out}")
        return
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    import omnivae

    note = machine_note(args.accelerator)
    systems = all_systems(args.systems)
    order = [s.name for s in systems]
    epochs = ("each system's default epochs and early stopping" if args.max_epochs is None
              else f"at most {args.max_epochs} epochs per neural network"
              + (" (quick mode)" if args.quick else ""))
    settings = (f"Mode: {'quick' if args.quick else 'full'}; seeds {args.seeds}; {epochs}.")
    embedding, prediction = [], []
    data = {name: omnivae.datasets.load(name) for name in args.datasets
            if {"embedding", "prediction"} & set(args.tasks)}
    for seed in args.seeds:  # seed outermost: a cut-short run still covers every dataset
        for name, mdata in data.items():
            spec = DATASETS[name]
            common = {"seed": seed, "max_epochs": args.max_epochs, "accelerator": args.accelerator}
            if "embedding" in args.tasks:
                embedding += embedding_rows(mdata, spec, systems, **common)
                write_embedding(args.out, embedding, order, note, settings)
            if "prediction" in args.tasks:
                prediction += prediction_rows(mdata, spec, systems, **common)
                write_prediction(args.out, prediction, order, note, settings)
    if "speed" in args.tasks:
        pairs = (args.speed_datasets if isinstance(args.speed_datasets, dict)
                 else {d: SPEED_PAIRS[d] for d in args.speed_datasets})
        rows: list[dict] = []
        for dataset, peer in pairs.items():
            rows += speed_rows(dataset, peer, epochs=args.speed_epochs,
                               repeats=args.speed_repeats, accelerator=args.accelerator,
                               timeout=args.timeout, batch_key=DATASETS[dataset].batch_key,
                               variants={f"omnivae ({v})": dict([v.split("=", 1)])
                                         for v in args.speed_variants})
            write_speed(args.out, rows, pairs, note,
                        f"{args.speed_epochs} epochs per run, {args.speed_repeats} repeats, batch "
                        "size 256, 128 hidden units, 20 latent dimensions for both systems "
                        "(each keeps its own number of layers), 10 % validation cells, no early "
                        "stopping.")
    if "scaling" in args.tasks:
        rows = []
        for n_cells in args.scaling_sizes:
            rows += scaling_rows("pbmc10k_protein_v3_rna4000_adt14", [n_cells],
                                 ["omnivae", "totalvi"], epochs=1, accelerator=args.accelerator,
                                 timeout=args.timeout)
            write_scaling(args.out, rows, note,
                          "Shaped like pbmc10k_protein_v3_rna4000_adt14 (RNA 4000, ADT 14); 1 "
                          f"epoch per run; runs not finished within {args.timeout:.0f} s are "
                          "reported as such.")
    merge([args.out], args.out, order)
    print(f"results in {args.out}")


if __name__ == "__main__":
    sys.exit(main())
