"""What every plot shares: where it draws (``ax=``), and what happens after (``save=``,
``show=``, ``return_fig=``), as in scanpy.

After drawing, :func:`finish` applies one rule to every plot:

- ``save=path`` writes the whole figure there, atomically (a temporary file in the same folder,
  renamed into place), in the format of the suffix (``.png``, ``.pdf``, ``.svg``...).
- ``return_fig=True`` returns the :class:`~matplotlib.figure.Figure`, open and not shown.
- ``ax=`` given: the figure is the caller's; it is neither shown (unless ``show=True``) nor
  closed, and the Axes are returned.
- ``show=False``: the Axes are returned (one Axes for a one-panel plot, else a list), the
  figure left open for the caller to edit, as scanpy does; with ``save=`` too it is closed
  after saving (again as scanpy).
- otherwise the figure is shown when ``show=True``, or with ``show=None`` when matplotlib is
  interactive (Jupyter, IPython with ``%matplotlib``, ``plt.ion()``); then closed, unless it
  lives on in a window of an interactive session. ``None`` is returned.

So a notebook shows each plot once, and a script opens no figure that stays open. No function
switches matplotlib's backend: saving works on any backend.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

AxesArg = Any  # a matplotlib Axes, or a sequence (or array) of Axes for a multi-panel plot


def panels(
    ax: AxesArg | None, n: int, *, what: str, nrows: int = 1, ncols: int | None = None,
    figsize: tuple[float, float], **subplots: Any,
) -> tuple[Any, list[Any], bool]:
    """The figure and ``n`` Axes to draw into: a new ``nrows`` x ``ncols`` grid (the Axes beyond
    ``n`` removed) when ``ax`` is None, else the caller's Axes (one, or exactly ``n``).

    Returns ``(figure, axes, owned)``; ``owned`` is False for the caller's Axes.

    Examples
    --------
    >>> import matplotlib.pyplot as plt
    >>> fig, axes, owned = panels(None, 3, what="demo", ncols=2, nrows=2, figsize=(4, 4))
    >>> len(axes), len(fig.axes), owned
    (3, 3, True)
    >>> panels(axes[0], 2, what="demo", figsize=(4, 4))
    Traceback (most recent call last):
    ...
    ValueError: demo draws 2 panels, so ax= must be a list of 2 Axes (got 1); or leave ax=None for a new figure.
    >>> plt.close(fig)
    """
    import matplotlib.pyplot as plt
    from matplotlib.axes import Axes

    if ax is None:
        ncols = n if ncols is None else ncols
        fig, grid = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False, **subplots)
        axes = list(grid.ravel())
        for extra in axes[n:]:
            fig.delaxes(extra)
        return fig, axes[:n], True
    given = [ax] if isinstance(ax, Axes) else list(np.ravel(np.asarray(ax, dtype=object)))
    if not all(isinstance(a, Axes) for a in given):
        raise TypeError(f"{what}: ax= must be a matplotlib Axes or a list of Axes, "
                        f"got {type(ax).__name__}.")
    if len(given) != n:
        shape = "one Axes" if n == 1 else f"a list of {n} Axes"
        raise ValueError(f"{what} draws {n} panel{'s' if n != 1 else ''}, so ax= must be "
                         f"{shape} (got {len(given)}); or leave ax=None for a new figure.")
    figures = {id(root_figure(a.figure)) for a in given}
    if len(figures) > 1:
        raise ValueError(f"{what}: the Axes in ax= belong to different figures; give Axes of "
                         "one figure.")
    return root_figure(given[0].figure), given, False


def root_figure(fig: Any) -> Any:
    """The top-level Figure of a Figure or SubFigure."""
    from matplotlib.figure import Figure

    while not isinstance(fig, Figure):
        fig = fig.figure
    return fig


def finish(
    fig: Any, axes: Sequence[Any], *, owned: bool, name: str, save: str | Path | None = None,
    show: bool | None = None, return_fig: bool = False, path: str | Path | None = None,
    dpi: int = 120,
) -> Any:
    """Lay out, save, show and close (or return) a finished plot, by the rule in this module's
    docstring. ``path`` is the deprecated name of ``save``: it saves and returns the open
    Figure, as before, with a :class:`DeprecationWarning`.

    Examples
    --------
    >>> import matplotlib.pyplot as plt
    >>> before = plt.get_fignums()
    >>> fig, axes, owned = panels(None, 1, what="demo", figsize=(3, 3))
    >>> finish(fig, axes, owned=owned, name="demo") is None      # not interactive: closed
    True
    >>> plt.get_fignums() == before
    True
    >>> fig, axes, owned = panels(None, 1, what="demo", figsize=(3, 3))
    >>> finish(fig, axes, owned=owned, name="demo", show=False) is axes[0]   # left open
    True
    >>> plt.fignum_exists(fig.number)
    True
    >>> plt.close(fig)
    """
    import matplotlib.pyplot as plt

    legacy = path is not None
    if legacy:
        if save is not None:
            raise TypeError(f"{name}: give save= only (path= is its deprecated old name).")
        warnings.warn(f"{name}(path=...) is deprecated and will be removed: use save=... "
                      "(the figure is then closed unless return_fig=True).",
                      DeprecationWarning, stacklevel=3)
        save = path
    if owned:
        fig.tight_layout()
    if save is not None:
        save_atomic(fig, save, dpi=dpi)
    if return_fig or (legacy and show is None and owned):
        return fig
    result = axes[0] if len(axes) == 1 else list(axes)
    if not owned:
        if show:
            _show(fig)
        return result
    if show is False:
        if save is not None:
            plt.close(fig)
        return result
    if show or (show is None and _interactive()):
        _show(fig)
        if _interactive() and _can_show() and plt.fignum_exists(fig.number):
            return None  # a window of an interactive session: it stays
    plt.close(fig)
    return None


def save_atomic(fig: Any, path: str | Path, *, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix; folders created) through a temporary
    file in the same folder renamed into place, so a reader never sees a half-written file.

    Examples
    --------
    >>> import matplotlib.pyplot as plt, tempfile, os
    >>> fig = plt.figure(figsize=(1, 1))
    >>> out = save_atomic(fig, os.path.join(tempfile.mkdtemp(), "sub", "f.png"))
    >>> out.stat().st_size > 0, sorted(os.listdir(out.parent))
    (True, ['f.png'])
    >>> plt.close(fig)
    """
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    supported = root_figure(fig).canvas.get_supported_filetypes()
    if fmt not in supported:
        raise ValueError(f"Cannot save a figure to {str(path)!r}: the suffix must name a format, "
                         f"one of {', '.join('.' + s for s in sorted(supported))}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        root_figure(fig).savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _interactive() -> bool:
    import matplotlib

    return bool(matplotlib.is_interactive())


def _can_show() -> bool:
    """Whether the current backend can display a figure (not Agg, PDF, SVG...)."""
    import matplotlib

    backend = str(matplotlib.get_backend()).lower()
    try:
        from matplotlib.backends import BackendFilter, backend_registry

        non_interactive = backend_registry.list_builtin(BackendFilter.NON_INTERACTIVE)
    except ImportError:  # matplotlib < 3.9
        non_interactive = matplotlib.rcsetup.non_interactive_bk  # type: ignore[attr-defined]
    return backend not in {b.lower() for b in non_interactive}


def _show(fig: Any) -> None:
    """Show the figure where the backend can (in Jupyter's inline backend this also closes it)."""
    import matplotlib.pyplot as plt

    if _can_show():
        plt.show()
