"""The README's code blocks, for the tests that run them as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_block_after(heading: str) -> str:
    """The first ```python block of README.md after the text ``heading``."""
    readme = README.read_text()
    assert heading in readme, f"README has no {heading!r}"
    match = re.search(r"```python\n(.*?)```", readme[readme.index(heading):], flags=re.S)
    assert match is not None, f"README has no Python block after {heading!r}"
    return match.group(1)
