"""Tables (markdown) and plots (PNG) of benchmark rows, written atomically."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def save_figure(fig, path: Path) -> None:
    """Save a matplotlib figure as PNG atomically and close it."""
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, buffer.getvalue())


# how every machine note ends (machine_note, combine_notes and their patterns)
_NOISY = "so absolute seconds are noisy; ratios come from alternated runs."


def machine_note(accelerator: str) -> str:
    """Where and when the numbers were measured (the machine is shared: load average shown)."""
    import scvi
    import torch

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=False).stdout.strip()
    except OSError:
        commit = "?"
    try:
        import scib_metrics
        scib_version = scib_metrics.__version__
    except ImportError:
        scib_version = "not installed"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.node()} "
            f"({platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads, accelerator {accelerator}); omnivae commit "
            f"{commit or '?'}, scvi-tools {scvi.__version__}, scib-metrics {scib_version}. "
            f"The machine is shared with other jobs (load average at start: {load}), {_NOISY}")


_NOTE = re.compile(
    r"Measured (?P<when>\d{4}-\d\d-\d\d \d\d:\d\d) UTC on (?P<machine>.+?); omnivae commit "
    r"(?P<commit>\S+), (?P<versions>.+?)\. The machine is shared with other jobs \(load average "
    r"at start: (?P<load>[\d., ]+)\), " + re.escape(_NOISY))
# what combine_notes writes, so that a merged report merges again with new runs
_COMBINED_NOTE = re.compile(
    r"Measured in (?P<runs>\d+) runs between (?P<first>\d{4}-\d\d-\d\d \d\d:\d\d) and "
    r"(?P<last>(?:\d{4}-\d\d-\d\d )?\d\d:\d\d) UTC on (?P<machine>.+?); omnivae commits "
    r"(?P<commits>(?:[0-9a-f?]+, )*[0-9a-f?]+), (?P<versions>.+?)\. The machine is shared with "
    r"other jobs \(load averages at the starts: (?P<low>[\d.]+) to (?P<high>[\d.]+)\), "
    + re.escape(_NOISY))


def _note_facts(note: str) -> dict | None:
    """Runs, times, machine, commits, versions and loads of one note in either form."""
    single = _NOTE.fullmatch(note)
    if single is not None:
        return {"runs": 1, "times": [single["when"]], "machine": single["machine"],
                "commits": [single["commit"]], "versions": single["versions"],
                "loads": [float(x) for x in single["load"].split(",")]}
    combined = _COMBINED_NOTE.fullmatch(note)
    if combined is None:
        return None
    last = combined["last"]
    if len(last) == 5:  # the same day as the first
        last = f"{combined['first'][:10]} {last}"
    return {"runs": int(combined["runs"]), "times": [combined["first"], last],
            "machine": combined["machine"], "commits": combined["commits"].split(", "),
            "versions": combined["versions"],
            "loads": [float(combined["low"]), float(combined["high"])]}


def combine_notes(notes: Sequence[str]) -> str:
    """One machine note for rows merged from several runs (``run.py --from-raw``).

    Notes in :func:`machine_note`'s form (also several run together, as older merges wrote
    them) and notes this function wrote (a merged report merged again with new runs) are
    summarised (runs, time span, machines, commits, load range); other notes are kept as they
    are.

    >>> a = ("Measured 2026-11-29 12:21 UTC on vm (x86_64, 2 cores); omnivae commit b53bea7, "
    ...      "scvi-tools 1.4.2. The machine is shared with other jobs (load average at start: "
    ...      "3.0, 3.6, 4.1), so absolute seconds are noisy; ratios come from alternated runs.")
    >>> two = combine_notes([a, a.replace("12:21", "13:19").replace("b53bea7", "8405874")
    ...                      .replace("3.0, 3.6, 4.1", "1.4, 2.2, 2.9")])
    >>> two[:117]
    'Measured in 2 runs between 2026-11-29 12:21 and 13:19 UTC on vm (x86_64, 2 cores); omnivae commits b53bea7, 8405874, '
    >>> three = combine_notes([two, a.replace("2026-11-29 12:21", "2026-11-30 06:05")])
    >>> three.startswith("Measured in 3 runs between 2026-11-29 12:21 and 2026-11-30 06:05 UTC")
    True
    >>> "commits b53bea7, 8405874, scvi" in three, "at the starts: 1.4 to 4.1)" in three
    (True, True)
    """
    pieces = [p.strip() for n in notes for p in re.split(r"(?=Measured (?:in \d+ runs|\d{4}-))", n)]
    notes = list(dict.fromkeys(p for p in pieces if p))
    parsed = [_note_facts(n) for n in notes]
    if len(notes) < 2 or not all(parsed):
        return " ".join(notes)
    found = [f for f in parsed if f is not None]
    times = sorted(t for f in found for t in f["times"])
    last = times[-1][11:] if times[-1][:10] == times[0][:10] else times[-1]
    loads = [x for f in found for x in f["loads"]]

    def distinct(key: str) -> str:
        return "; ".join(dict.fromkeys(f[key] for f in found))

    commits = ", ".join(dict.fromkeys(c for f in found for c in f["commits"]))
    return (f"Measured in {sum(f['runs'] for f in found)} runs between {times[0]} and {last} "
            f"UTC on {distinct('machine')}; omnivae commits {commits}, {distinct('versions')}. "
            f"The machine is shared with other jobs (load averages at the starts: "
            f"{min(loads):.1f} to {max(loads):.1f}), {_NOISY}")


_SETTINGS = re.compile(r"Mode: (?P<mode>[^;]+); seeds \[(?P<seeds>[\d, ]*)\]; (?P<rest>.+)")
# the datasets a combined settings line names at its end: "... network (mop, pbmc10k)."
_DATASETS = re.compile(r"(?P<rest>.+) \((?P<names>[\w.-]+(?:, [\w.-]+)*)\)\.")


def combine_settings(settings: Sequence[str],
                     datasets: Sequence[Sequence[str]] | None = None) -> str:
    """The settings lines of merged runs, with the seeds of otherwise equal settings joined;
    with ``datasets`` (the datasets of each run, parallel to ``settings``), each line also
    names the datasets it was measured on, so a reader sees which datasets ran at which budget
    and with which seeds (datasets of one budget run with different seeds get a line each).

    >>> combine_settings(["Mode: full; seeds [2]; default epochs.",
    ...                   "Mode: full; seeds [0, 1]; default epochs.", "Shaped like x."])
    'Mode: full; seeds [0, 1, 2]; default epochs. Shaped like x.'
    >>> combine_settings(["Mode: full; seeds [0]; default epochs.",
    ...                   "Mode: full; seeds [1]; default epochs.",
    ...                   "Mode: full; seeds [0]; default epochs.",
    ...                   "Mode: full; seeds [0]; at most 20 epochs per neural network."],
    ...                  [["cite"], ["cite"], ["sln"], ["mop"]])
    'Mode: full; seeds [0, 1]; default epochs (cite). Mode: full; seeds [0]; default epochs (sln). Mode: full; seeds [0]; at most 20 epochs per neural network (mop).'

    Lines that already name their datasets (a merge of merged runs) are combined the same way;
    a merged line of several budgets counts each budget for the datasets it names only:

    >>> combine_settings(["Mode: full; seeds [0]; default epochs (cite).",
    ...                   "Mode: full; seeds [0]; default epochs."], [["cite"], ["sln"]])
    'Mode: full; seeds [0]; default epochs (cite, sln).'
    >>> combine_settings(["Mode: full; seeds [0, 1]; default epochs (cite). "
    ...                   "Mode: full; seeds [0]; at most 20 epochs per neural network (mop).",
    ...                   "Mode: full; seeds [2]; at most 20 epochs per neural network."],
    ...                  [["cite", "mop"], ["mop"]])
    'Mode: full; seeds [0, 1]; default epochs (cite). Mode: full; seeds [0, 2]; at most 20 epochs per neural network (mop).'
    """
    parts = datasets if datasets is not None else [[] for _ in settings]
    # one sentence per budget: a merged report's line holds several
    sentences = [(sentence.strip(), names) for line, names in zip(settings, parts, strict=True)
                 for sentence in re.split(r"(?=Mode: )", line or "") if sentence.strip()]
    # (mode, budget) -> dataset (None: not named) -> its seeds
    budgets: dict[tuple[str, str], dict[str | None, set[int]]] = {}
    others: list[str] = []
    for line, names in sentences:
        found = _SETTINGS.fullmatch(line)
        if found is None:
            if line not in others:
                others.append(line)
            continue
        rest, named = found["rest"], list(names)
        listed = _DATASETS.fullmatch(rest)
        if listed is not None:  # it names its own datasets: the run's others ran other budgets
            rest = f"{listed['rest']}."
            named = listed["names"].split(", ")
        seeds = {int(x) for x in found["seeds"].split(",") if x.strip()}
        by_dataset = budgets.setdefault((found["mode"], rest), {})
        for name in named or [None]:
            by_dataset.setdefault(name, set()).update(seeds)
    lines = []
    for (mode, rest), by_dataset in budgets.items():
        same_seeds: dict[tuple[int, ...], list[str]] = {}
        for name, seeds in by_dataset.items():
            same_seeds.setdefault(tuple(sorted(seeds)), []).extend([name] if name else [])
        for seeds_run, where in same_seeds.items():
            text = f"{rest.removesuffix('.')} ({', '.join(where)})." if where else rest
            lines.append(f"Mode: {mode}; seeds {list(seeds_run)}; {text}")
    return " ".join(lines + others)


def mean_spread(values: pd.Series, digits: int = 3) -> str:
    """``mean ± sd`` of the finite values (sd over seeds; blank sd for one seed)."""
    v = values.dropna().to_numpy(dtype=float)
    if len(v) == 0:
        return "n/a"
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


# columns shown as whole numbers (mean ± sd over seeds)
WHOLE_NUMBER_COLUMNS = frozenset({"epochs"})


def _cell(group: pd.DataFrame, column: str) -> str:
    """``mean ± sd`` of one column over a group's rows (seeds), saying over how many when only
    some rows have it (e.g. epochs, recorded only by runs since 2026-11-30)."""
    if column not in group:
        return "n/a"
    text = mean_spread(group[column], 0 if column in WHOLE_NUMBER_COLUMNS else 3)
    known = int(group[column].notna().sum())
    return text if known in (0, len(group)) else f"{text} ({known} of {len(group)} seeds)"


def markdown_table(rows: Sequence[Mapping[str, object]], digits: int = 3) -> str:
    """A list of dicts as a GitHub markdown table.

    Examples
    --------
    >>> print(markdown_table([{"method": "a", "ari": 0.51234}]))
    | method | ari |
    |---|---|
    | a | 0.512 |
    """
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [f"{v:.{digits}f}" if isinstance(v, float) else str(v) for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table(frame: pd.DataFrame, index: Sequence[str], columns: Sequence[str],
          order: Sequence[str] | None = None) -> str:
    """Markdown table of ``mean ± sd`` of ``columns`` grouped by ``index``."""
    rows = []
    for key, group in frame.groupby(list(index), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(index, key, strict=True))
        row.update({c: _cell(group, c) for c in columns})
        row["seeds"] = str(group["seed"].nunique())
        rows.append(row)
    if order:
        rank = {name: i for i, name in enumerate(order)}
        rows.sort(key=lambda r: tuple(rank.get(str(r[k]), 99) if k == "system" else 0
                                      for k in index))
    header = [*index, *columns, "seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(r[h]) for h in header) + " |" for r in rows]
    return "\n".join(lines)


def bar_grid(frame: pd.DataFrame, panels: Sequence[str], value: str, title: str,
             path: Path, order: Sequence[str]) -> None:
    """One horizontal bar chart per panel (mean over seeds, error bar = sd), systems as bars."""
    import matplotlib.pyplot as plt

    groups = list(frame.groupby(list(panels), sort=False))
    if not groups:
        return
    names = [n for n in order if n in set(frame["system"])]  # one row per system, all panels
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 0.45 * len(names) + 1.5),
                             squeeze=False, sharey=True)
    colors = ["tab:blue" if n.startswith("omnivae") else
              "tab:orange" if "scvi" in n else "tab:gray" for n in names]
    for ax, (key, group) in zip(axes[0], groups, strict=True):
        stats = group.groupby("system")[value].agg(["mean", "std"]).reindex(names)
        ax.barh(range(len(names)), stats["mean"].fillna(0).to_numpy(),
                xerr=np.nan_to_num(stats["std"].to_numpy()), color=colors)
        for i, missing in enumerate(stats["mean"].isna()):
            if missing:
                ax.text(0.01, i, "n/a", va="center", fontsize=7, color="gray",
                        transform=ax.get_yaxis_transform())
        ax.set_title("\n".join(map(str, key if isinstance(key, tuple) else (key,))), fontsize=9)
        ax.set_xlabel(value)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(names)), names)
    axes[0][0].invert_yaxis()
    fig.suptitle(title, y=1.04)
    save_figure(fig, path)


def scatter_bio_batch(frame: pd.DataFrame, title: str, path: Path, order: Sequence[str]) -> None:
    """Batch correction vs bio conservation per dataset, one point per system (mean over seeds)."""
    import matplotlib.pyplot as plt

    frame = frame.dropna(subset=["batch correction"])
    datasets = list(dict.fromkeys(frame["dataset"]))
    if not datasets:
        return
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.5 * len(datasets), 4.2), squeeze=False)
    markers = "osD^v<>phX*"
    for ax, dataset in zip(axes[0], datasets, strict=True):
        stats = frame[frame["dataset"] == dataset].groupby("system")[
            ["bio conservation", "batch correction"]].mean()
        for i, name in enumerate(n for n in order if n in stats.index):
            ax.scatter(stats.loc[name, "bio conservation"], stats.loc[name, "batch correction"],
                       marker=markers[i % len(markers)], s=60, label=name)
        ax.set_xlabel("bio conservation")
        ax.set_ylabel("batch correction")
        ax.set_title(dataset, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle(title, y=1.04)
    save_figure(fig, path)
