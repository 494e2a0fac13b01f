"""Per-task result files: ``<out>/<task>.md`` tables, PNG plots and the raw rows as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .report import atomic_write, bar_grid, mean_spread, scatter_bio_batch, table


def _raw(out: Path, task: str, rows: list[dict], note: str = "", settings: str = "") -> None:
    atomic_write(out / "raw" / f"{task}.json", json.dumps(
        {"note": note, "settings": settings, "rows": rows}, indent=1, default=float))


def read_raw(folder: Path, task: str) -> tuple[list[dict], str, str]:
    """Rows, machine note and settings of ``folder/raw/<task>.json`` (empty if absent)."""
    path = folder / "raw" / f"{task}.json"
    if not path.is_file():
        return [], "", ""
    data = json.loads(path.read_text())
    if isinstance(data, list):  # older format: the note and settings are only in the markdown
        lines = (folder / f"{task}.md").read_text().splitlines() if (
            folder / f"{task}.md").is_file() else []
        note = next((x for x in lines if x.startswith("Measured")), "")
        settings = next((x for x in lines if x.startswith(("Mode:", "Shaped like"))
                         or " epochs per run" in x), "")
        return data, note, settings
    return data["rows"], data.get("note", ""), data.get("settings", "")


def _doc(title: str, note: str, settings: str, body: list[str]) -> str:
    return "\n".join([f"# {title}", "", note, "", settings, "", *body, ""])


def _title(default: str, preamble: str) -> str:
    """``default`` with ``preamble`` under it, or the preamble's own ``# title`` if it has one."""
    if preamble.startswith("# "):
        return preamble.strip()[2:]
    return default + (f"\n\n{preamble.strip()}" if preamble else "")


def _cost_columns(frame: pd.DataFrame) -> list[str]:
    """``fit seconds``, and ``epochs`` (trained, per neural network) where the rows have them:
    rows from runs before the suite recorded epochs have none."""
    has_epochs = "epochs" in frame and bool(frame["epochs"].notna().any())
    return ["fit seconds", "epochs"] if has_epochs else ["fit seconds"]


def write_embedding(out: Path, rows: list[dict], order: list[str], note: str, settings: str,
                    name: str = "embedding", preamble: str = "") -> None:
    """``out/<name>.md`` (tables), ``<name>.png``, ``<name>_bio_batch.png`` and
    ``raw/<name>.json``; ``preamble`` (markdown) goes right under the title."""
    frame = pd.DataFrame(rows)
    body = ["Unscaled scib-metrics (`Benchmarker`, `get_results(min_max_scale=False)`): bio "
            "conservation, batch correction and total = 0.6 bio + 0.4 batch; mean ± sd over "
            "seeds. Scored on the cells every system embeds (`cells scored`).", ""]
    columns = ["bio conservation", "batch correction", "total", *_cost_columns(frame)]
    for dataset, group in frame.groupby("dataset", sort=False):
        body += [f"## {dataset}", "",
                 table(group, ["system"], columns, order),
                 "", f"Cells scored: {int(group['cells scored'].iloc[0])}.", ""]
    body += [f"![scib total per dataset]({name}.png)", "",
             f"![batch correction vs bio conservation]({name}_bio_batch.png)"]
    atomic_write(out / f"{name}.md", _doc(_title("Joint embedding", preamble), note, settings, body))
    value = "total" if frame.get("total") is not None and frame["total"].notna().any() else "bio conservation"
    bar_grid(frame, ["dataset"], value, f"scib {value} (mean ± sd over seeds)",
             out / f"{name}.png", order)
    scatter_bio_batch(frame, "scib batch correction vs bio conservation (mean over seeds)",
                      out / f"{name}_bio_batch.png", order)
    _raw(out, name, rows, note, settings)


def write_prediction(out: Path, rows: list[dict], order: list[str], note: str, settings: str,
                     name: str = "prediction", preamble: str = "") -> None:
    """``out/<name>.md`` (tables), ``<name>.png`` and ``raw/<name>.json``; ``preamble``
    (markdown) goes right under the title."""
    frame = pd.DataFrame(rows)
    body = ["A seeded random 25 % of the cells that have both modalities have the target withheld "
            "during training (they train with the source only); the target is predicted for "
            "them from the source. `pearson`: Pearson r per feature over the withheld cells "
            "between log1p(1e4 * normalised prediction) and log1p(1e4 * x / x.sum) of the "
            "observed counts, averaged over features. `auroc`: over all withheld (cell, feature) "
            "pairs against observed > 0. The per-feature mean predicts the same profile for every "
            "cell, so it has no Pearson r over cells and is scored by AUROC only.", ""]
    columns = ["score", *_cost_columns(frame)]
    for (dataset, task, metric), group in frame.groupby(["dataset", "task", "metric"], sort=False):
        body += [f"## {dataset}: {task} ({metric})", "",
                 table(group, ["system"], columns, order), "",
                 f"Withheld cells: {int(group['withheld cells'].iloc[0])}.", ""]
    body += [f"![prediction scores]({name}.png)"]
    atomic_write(out / f"{name}.md",
                 _doc(_title("Cross-modal prediction", preamble), note, settings, body))
    frame["panel"] = frame["task"] + " (" + frame["metric"] + ")"
    bar_grid(frame, ["dataset", "panel"], "score", "Cross-modal prediction (mean ± sd over seeds)",
             out / f"{name}.png", order)
    _raw(out, name, rows, note, settings)


def _ratio(values: pd.DataFrame, column: str, peer: str, ours_name: str = "omnivae") -> str:
    ours = values.loc[values["system"] == ours_name, column].median()
    theirs = values.loc[values["system"] == peer, column].median()
    return f"{ours / theirs:.2f}" if np.isfinite(ours / theirs) else "n/a"


def write_speed(out: Path, rows: list[dict], pairs: dict[str, str], note: str, settings: str) -> None:
    frame = pd.DataFrame(rows)
    body = ["Each training runs in its own Python process (peak RSS is that process's own: data "
            "loading, model and training), the systems alternated and the order rotated each "
            "repeat. Throughput = cells x epochs / training seconds (the epochs only: omnivae's "
            "one-off cross-modal shrinkage fit after them is not timed). Model FLOPs are counted from "
            "the Linear layer sizes (forward 2·in·out per cell, backward twice that, each layer "
            "once: a lower bound where a layer runs more than once per cell); `fraction of "
            "matmul` = model FLOP/s / the float32 2048x2048 matmul FLOP/s measured in the same "
            "process right after training.", ""]
    columns = ["cells x epochs / s", "seconds per epoch", "peak RSS MB", "peak GPU MB",
               "model GFLOP per cell", "model GFLOP/s", "matmul GFLOP/s", "fraction of matmul",
               "parameters"]
    for dataset, group in frame.groupby("dataset", sort=False):
        ok = group[group.get("error", pd.Series(index=group.index, dtype=object)).isna()] \
            if "error" in group else group
        peer = pairs.get(dataset) or next(
            (s for s in group["system"].unique() if s != "omnivae"), "peer")
        body += [f"## {dataset}: omnivae vs {peer}", ""]
        if len(ok):
            body += [table(ok.assign(seed=ok["repeat"]), ["system"], columns), "",
                     f"Ratios omnivae / {peer} (medians over repeats): throughput "
                     f"{_ratio(ok, 'cells x epochs / s', peer)}, peak RSS "
                     f"{_ratio(ok, 'peak RSS MB', peer)}.", ""]
            for variant in [s for s in ok["system"].unique() if str(s).startswith("omnivae (")]:
                body += [f"Ratios {variant} / {peer}: throughput "
                         f"{_ratio(ok, 'cells x epochs / s', peer, variant)}, peak RSS "
                         f"{_ratio(ok, 'peak RSS MB', peer, variant)}.", ""]
        for _, failed in group[group.get("error").notna()].iterrows() if "error" in group else []:
            body.append(f"- {failed['system']} repeat {failed['repeat']}: {failed['error']}")
    atomic_write(out / "speed.md", _doc("Speed and memory", note, settings, body))
    _raw(out, "speed", rows, note, settings)


def write_scaling(out: Path, rows: list[dict], note: str, settings: str) -> None:
    import matplotlib.pyplot as plt

    from .report import save_figure

    frame = pd.DataFrame(rows)
    lines = ["| cells | system | seconds per epoch | peak RSS MB | peak GPU MB | note |",
             "|---|---|---|---|---|---|"]
    for _, row in frame.iterrows():
        err = row.get("error") if isinstance(row.get("error"), str) else ""
        values = [f"{row[k]:.1f}" if not err and pd.notna(row.get(k)) else "n/a"
                  for k in ("seconds per epoch", "peak RSS MB", "peak GPU MB")]
        lines.append(f"| {row['n_cells']} | {row['system']} | {' | '.join(values)} | {err} |")
    body = ["Synthetic cells drawn from the real file's cells (same features; counts thinned "
            "binomially with p = 0.9, so library sizes ~90 % and sparsity close to the real "
            "ones); no batches. One process per (size, system).", "", *lines, "",
            "![scaling](scaling.png)"]
    atomic_write(out / "scaling.md", _doc("Scaling", note, settings, body))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ok = frame[frame["error"].isna()] if "error" in frame else frame
    for system, group in ok.groupby("system"):
        axes[0].plot(group["n_cells"], group["seconds per epoch"], "o-", label=system)
        axes[1].plot(group["n_cells"], group["peak RSS MB"], "o-", label=system)
    for ax, label in zip(axes, ["seconds per epoch", "peak RSS (MB)"], strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("cells")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    save_figure(fig, out / "scaling.png")
    _raw(out, "scaling", rows, note, settings)


__all__ = ["mean_spread", "write_embedding", "write_prediction", "write_scaling", "write_speed"]


def headline(out: Path, order: list[str]) -> str:
    """One table from whatever raw results exist in ``out``: scib total (bio conservation where
    there are no batches) per dataset and every prediction score, mean over seeds."""
    columns: dict[str, dict[str, str]] = {}
    short = {"neurips2021_bmmc_cite_starter": "CITE starter",
             "neurips2021_bmmc_multiome_starter": "Multiome starter",
             "totalvi_sln111_subset": "SLN111", "quickstart_pbmc_mosaic": "PBMC mosaic",
             "mop_snareseq_c1": "SNARE-seq", "pbmc10k_protein_v3_rna4000_adt14": "PBMC10k"}
    rows = read_raw(out, "embedding")[0]
    if rows:
        frame = pd.DataFrame(rows)
        for dataset, group in frame.groupby("dataset", sort=False):
            col = f"{short.get(dataset, dataset)} scib total"
            columns[col] = {s: f"{g['total'].mean():.3f}" for s, g in group.groupby("system")}
    rows = read_raw(out, "prediction")[0]
    if rows:
        frame = pd.DataFrame(rows)
        for (dataset, task, metric), group in frame.groupby(["dataset", "task", "metric"],
                                                             sort=False):
            col = f"{short.get(dataset, dataset)} {task} {metric}"
            columns[col] = {s: f"{g['score'].mean():.3f}" for s, g in group.groupby("system")}
    systems = [s for s in order if any(s in c for c in columns.values())]
    lines = ["| system | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for system in systems:
        cells = []
        for values in columns.values():
            best = max(values.values(), key=float)
            value = values.get(system, "")
            cells.append(f"**{value}**" if value and value == best else value)
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
