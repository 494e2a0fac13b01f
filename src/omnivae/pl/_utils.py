"""Shared plotting helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def finish(fig: Any, path: str | Path | None, *, dpi: int = 120) -> Any:
    """Tight layout; save to ``path`` when given (folders created); return ``fig``."""
    fig.tight_layout()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    return fig
