"""The documentation site: generated pages and a strict build."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def _hooks():
    pytest.importorskip("mkdocs")
    spec = importlib.util.spec_from_file_location("omnivae_docs_hooks", ROOT / "docs" / "hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tutorial_page_has_text_code_and_figures(tmp_path):
    hooks = _hooks()
    script = tmp_path / "tutorials" / "09_demo.py"
    (tmp_path / "tutorials" / "figures").mkdir(parents=True)
    (tmp_path / "tutorials" / "figures" / "demo_umap.png").write_bytes(b"png")
    script.write_text('# %% [markdown]\n# # A demo\n# Some text.\n\n# %%\nx = 1\n'
                      'plot(path=FIGURES / "demo_umap.png")\nplot(path=FIGURES / "absent.png")\n')
    added = []
    page = hooks._tutorial(script, lambda path, content=None, source=None: added.append(path))
    assert page.startswith("# A demo\n")
    assert "Some text." in page and "```python\nx = 1\n" in page
    assert "![demo_umap.png](figures/demo_umap.png)" in page and "absent.png)" not in page
    assert added == ["tutorials/figures/demo_umap.png"]
    assert hooks._relink("[r](benchmarks/results/x_y.md)") == "[r](benchmarks.md)"
    assert hooks._relink("see [the API](docs/api/tl.md)") == "see [the API](api/tl.md)"
    assert hooks._relink("see [x](docs/not_written_yet.md)") == "see x"


@pytest.mark.skipif(shutil.which("mkdocs") is None and importlib.util.find_spec("mkdocs") is None,
                    reason="mkdocs not installed (pip install -e .[docs])")
def test_docs_build_strict(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    for page in ("index.html", "api/tl/index.html", "tutorials/03_mosaic_integration/index.html",
                 "benchmarks/index.html"):
        assert (tmp_path / page).is_file(), page
    assert "differential_expression" in (tmp_path / "api/tl/index.html").read_text()


def _table_cells(line: str) -> int:
    """Cells of a markdown table row (a ``|`` inside backticks is text, not a separator)."""
    separators, in_code = 0, False
    for char in line.strip():
        if char == "`":
            in_code = not in_code
        separators += char == "|" and not in_code
    return separators - 1


def test_every_markdown_table_row_has_the_header_columns():
    """A row with more or fewer cells than its header renders shifted or truncated (a scripted
    edit once appended a column to the rows of docs/models.md but not to its header)."""
    pages = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"),
             *(ROOT / "benchmarks").rglob("*.md")]
    wrong = []
    for page in pages:
        header = None
        for number, line in enumerate(page.read_text().splitlines(), 1):
            if not line.startswith("|"):
                header = None
            elif header is None:
                header = _table_cells(line)
            elif _table_cells(line) != header:
                wrong.append(f"{page.relative_to(ROOT)}:{number}: {_table_cells(line)} cells, "
                             f"header {header}")
    assert len(pages) > 20 and not wrong, wrong
    assert _table_cells("| `a|b` | c |") == 2
