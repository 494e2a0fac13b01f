"""Colours of categories, shared with scanpy through ``uns[f"{column}_colors"]``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def category_colors(n: int) -> list[tuple[float, float, float, float]]:
    """``n`` distinct colours: tab10 up to 10 categories, tab20 up to 20, then tab20, tab20b and
    tab20c (60 colours); beyond 60 the hues of a continuous map (distinct, less separable).

    Examples
    --------
    >>> colors = category_colors(41)
    >>> len(colors), len(set(colors))
    (41, 41)
    """
    import matplotlib.pyplot as plt

    if n <= 20:
        cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
        return [cmap(i) for i in range(n)]
    if n <= 60:
        maps = [plt.get_cmap(name) for name in ("tab20", "tab20b", "tab20c")]
        return [maps[i // 20](i % 20) for i in range(n)]
    cmap = plt.get_cmap("gist_ncar")
    return [cmap(x) for x in np.linspace(0.02, 0.95, n)]


def categories(values: pd.Series) -> list[str]:
    """The categories of a column in scanpy's order: a categorical's own order (unused ones
    included, as scanpy counts them), else the sorted distinct values; as strings.

    Examples
    --------
    >>> categories(pd.Series(pd.Categorical(["b", "a"], categories=["b", "a", "c"])))
    ['b', 'a', 'c']
    >>> categories(pd.Series([10, 2, 2, None]))
    ['2.0', '10.0']
    """
    if isinstance(values.dtype, pd.CategoricalDtype):
        return [str(c) for c in values.cat.categories]
    return [str(c) for c in pd.Categorical(values.dropna()).categories]


def palette(data: Any, column: str, values: pd.Series) -> dict[str, str]:
    """Category -> colour for ``column``, from ``data.uns[f"{column}_colors"]`` when it holds at
    least one valid colour per category (scanpy's rule; extra colours are ignored), else
    :func:`category_colors`, which are then stored there as hex strings so that scanpy's plots
    of the column use the same colours.

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> a = ad.AnnData(np.zeros((3, 1)), obs=pd.DataFrame({"g": ["x", "y", "x"]},
    ...                                                     index=["c1", "c2", "c3"]))
    >>> palette(a, "g", a.obs["g"]), list(a.uns["g_colors"])
    ({'x': '#1f77b4', 'y': '#ff7f0e'}, ['#1f77b4', '#ff7f0e'])
    >>> a.uns["g_colors"] = ["red", "blue"]
    >>> palette(a, "g", a.obs["g"])
    {'x': 'red', 'y': 'blue'}
    """
    from matplotlib.colors import is_color_like, to_hex

    names = categories(values)
    key = f"{column}_colors"
    stored = data.uns.get(key)
    if stored is not None and not isinstance(stored, str):
        stored = [str(c) for c in np.ravel(np.asarray(stored, dtype=object))]
        if len(stored) >= len(names) and all(is_color_like(c) for c in stored):
            return dict(zip(names, stored[:len(names)], strict=True))
    colors = [to_hex(c) for c in category_colors(len(names))]
    data.uns[key] = colors
    return dict(zip(names, colors, strict=True))
