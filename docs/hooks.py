"""MkDocs hooks: pages generated from the repository's own files at build time.

- ``index.md`` from README.md, ``data.md`` from data/README.md,
- ``benchmarks.md`` from docs/benchmarks_overview.md (hand-written: how the suite runs, the
  headline tables, budgets and caveats; shown first, not as a page of its own) and
  benchmarks/results/*.md (and their figures),
- ``tutorials/<name>.md`` from tutorials/<name>.py (jupytext percent format: ``# %%`` code
  cells, ``# %% [markdown]`` text cells), with the figures each cell writes
  (tutorials/figures/, produced by running the tutorial) shown below it, and the printed
  output of a full run (tutorials/figures/<name>_output.txt) at the end,
- optional pages written by others (``models.md``, ``reliability.md``, ``guide.md``) join the
  navigation only when they exist.

Hand-written pages link results as ``../benchmarks/results/X.md`` and the overview as
``benchmarks_overview.md`` (right on GitHub); in the site both become the benchmark page.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL_PAGES = {"models.md": "Models", "reliability.md": "Reliability",
                  "guide.md": "User guide"}
OVERVIEW = "benchmarks_overview.md"  # part of benchmarks.md, not a page of its own
LINKS = {  # repository paths linked from README -> their page in the site
    r"benchmarks/results/[\w.-]+\.md": "benchmarks.md",
    rf"docs/{OVERVIEW}": "benchmarks.md",
    r"data/README\.md": "data.md",
}
FIGURE = re.compile(r"""FIGURES\s*/\s*["']([\w.-]+\.(?:png|svg|jpg))["']""")


def on_config(config: Any) -> Any:
    docs = Path(config["docs_dir"])
    for name, title in OPTIONAL_PAGES.items():
        if (docs / name).is_file() and not any(name in str(item) for item in config["nav"]):
            config["nav"].insert(-2, {title: name})
    return config


def on_files(files: Files, config: Any) -> Files:
    def add(path: str, content: str | None = None, source: Path | None = None) -> None:
        if content is not None:
            files.append(File.generated(config, path, content=content))
        elif source is not None:
            files.append(File.generated(config, path, abs_src_path=str(source)))

    add("index.md", _relink((ROOT / "README.md").read_text(encoding="utf-8")))
    add("data.md", (ROOT / "data" / "README.md").read_text(encoding="utf-8"))
    overview = files.get_file_from_path(OVERVIEW)
    if overview is not None:
        files.remove(overview)
    add("benchmarks.md", _benchmarks(add))
    for script in sorted((ROOT / "tutorials").glob("[0-9]*.py")):
        add(f"tutorials/{script.stem}.md", _tutorial(script, add))
    return files


def _relink(text: str) -> str:
    for pattern, page in LINKS.items():
        text = re.sub(rf"\]\({pattern}\)", f"]({page})", text)

    def docs_link(match: re.Match[str]) -> str:  # README's docs/X.md is the site's X.md
        label, page = match.group(1), match.group(2)
        return f"[{label}]({page})" if (ROOT / "docs" / page).is_file() else label

    return re.sub(r"\[([^\]]+)\]\(docs/([\w./-]+\.md)\)", docs_link, text)


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    """A hand-written page's links to results tables or the overview: the benchmark page."""
    up = "../" * page.file.src_uri.count("/")
    return re.sub(rf"\]\((?:\.\./benchmarks/results/[\w.-]+|{OVERVIEW[:-3]})\.md\)",
                  f"]({up}benchmarks.md)", markdown)


def _benchmarks(add: Any) -> str:
    results = ROOT / "benchmarks" / "results"
    parts = ["# Benchmark results\n",
             "Written by the scripts in `benchmarks/` (each file says how to rerun it).\n"]
    overview = ROOT / "docs" / OVERVIEW
    if overview.is_file():  # its links to results tables become plain labels on this page
        text = overview.read_text(encoding="utf-8")
        text = re.sub(r"(?<!!)\[([^\]]+)\]\(\.\./benchmarks/results/[\w.-]+\.md\)", r"\1", text)
        parts.append(re.sub(r"^(#+)", r"#\1", text, flags=re.MULTILINE))
    for table in sorted(results.glob("*.md")):
        text = table.read_text(encoding="utf-8")
        # results link each other and their figures relatively: on this one page, a link to
        # another results table becomes its plain label and figures live in benchmarks/
        text = re.sub(r"(?<!!)\[([^\]]+)\]\(([\w.-]+)\.md\)", r"\1", text)
        text = re.sub(r"\]\(([\w.-]+\.(?:png|svg))\)", r"](benchmarks/\1)", text)
        parts.append(re.sub(r"^(#+)", r"#\1", text, flags=re.MULTILINE))  # one level down
    for image in sorted(results.glob("*.png")):
        add(f"benchmarks/{image.name}", source=image)
    return "\n\n".join(parts)


def _tutorial(script: Path, add: Any) -> str:
    figures = script.parent / "figures"
    out = [f"*Source: `tutorials/{script.name}` — run it with "
           f"`python tutorials/{script.name}` (add `--quick` for a fast check).*\n"]
    for kind, lines in _cells(script.read_text(encoding="utf-8")):
        if kind == "markdown":
            out.append("\n".join(re.sub(r"^# ?", "", line) for line in lines))
            continue
        code = "\n".join(lines).strip()
        if not code:
            continue
        out.append(f"```python\n{code}\n```")
        for name in FIGURE.findall(code):
            if (figures / name).is_file():
                add(f"tutorials/figures/{name}", source=figures / name)
                out.append(f"![{name}](figures/{name})")
    output = figures / f"{script.stem}_output.txt"
    if output.is_file():  # the printed output of a full run, saved beside the figures
        out.append("## Output of a full run\n\n```text\n"
                   + output.read_text(encoding="utf-8").strip() + "\n```")
    body = "\n\n".join(out)
    title = next((line for line in body.splitlines() if line.startswith("# ")), None)
    if title:  # the tutorial's own title first, then the source line
        body = title + "\n\n" + body.replace(title + "\n", "", 1)
    return body + "\n"


def _cells(text: str) -> list[tuple[str, list[str]]]:
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("# %%"):
            cells.append(("markdown" if "[markdown]" in line else "code", []))
        elif cells:
            cells[-1][1].append(line)
    return cells
