"""Checks of numeric arguments at the API boundary: one place, one wording.

Every message names the argument, the value it got and the range it accepts, e.g.
``ValueError: max_epochs must be an integer >= 1 (or None to choose from the data), got 0.``
Booleans are refused where a number is asked for (``True`` is not one epoch).
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any


def check_int(name: str, value: Any, least: int = 1, *, none: str | None = None) -> None:
    """Raise a ValueError unless ``value`` is an integer >= ``least`` (or ``None`` when
    ``none`` says what ``None`` means).

    Examples
    --------
    >>> check_int("batch_size", 128)
    >>> check_int("max_epochs", None, none="to choose from the data")
    >>> check_int("max_epochs", 1.5, none="to choose from the data")
    Traceback (most recent call last):
    ...
    ValueError: max_epochs must be an integer >= 1 (or None to choose from the data), got 1.5.
    """
    if value is None and none is not None:
        return
    if isinstance(value, bool) or not isinstance(value, Integral) or value < least:
        alternative = f" (or None {none})" if none is not None else ""
        raise ValueError(f"{name} must be an integer >= {least}{alternative}, got {value!r}.")


def check_number(name: str, value: Any, *, low: float = -math.inf, high: float = math.inf,
                 low_open: bool = False, high_open: bool = False,
                 none: str | None = None) -> None:
    """Raise a ValueError unless ``value`` is a finite real number in the interval from
    ``low`` to ``high`` (each end open or closed), or ``None`` when ``none`` says what ``None``
    means.

    Examples
    --------
    >>> check_number("lr", 1e-3, low=0, low_open=True)
    >>> check_number("validation_fraction", 1.0, low=0, high=1, high_open=True)
    Traceback (most recent call last):
    ...
    ValueError: validation_fraction must be a number in [0, 1), got 1.0.
    >>> check_number("lr", float("nan"), low=0, low_open=True)
    Traceback (most recent call last):
    ...
    ValueError: lr must be a number > 0, got nan.
    """
    if value is None and none is not None:
        return
    ok = not isinstance(value, bool) and isinstance(value, Real) and math.isfinite(value)
    if ok:
        x = float(value)
        ok = (x > low if low_open else x >= low) and (x < high if high_open else x <= high)
    if not ok:
        alternative = f" (or None {none})" if none is not None else ""
        raise ValueError(f"{name} must be a number {_interval(low, high, low_open, high_open)}"
                         f"{alternative}, got {value!r}.")


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    def show(x: float) -> str:
        return f"{x:g}"

    if math.isinf(high):
        return f"{'>' if low_open else '>='} {show(low)}" if not math.isinf(low) else "(finite)"
    if math.isinf(low):
        return f"{'<' if high_open else '<='} {show(high)}"
    return (f"in {'(' if low_open else '['}{show(low)}, {show(high)}"
            f"{')' if high_open else ']'}")
