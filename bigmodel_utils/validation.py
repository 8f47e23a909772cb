"""Argument checks shared by the whole package: one idea of "an integer" and of "a number", and
one-line errors that name the parameter, the value given and what is accepted (as scikit-learn's
``check_scalar`` does).

An integer is a Python ``int`` or a NumPy integer, never a ``bool`` (``True`` is an ``int`` to
Python, but a batch size of ``True`` is a mistake) and never a float, even ``32.0``. A number is an
integer or a finite real (``float``, NumPy floats). Imports nothing else of the package and no
backend, so every module can use it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any


def is_int(value: Any) -> bool:
    """True for ``int`` and NumPy integers, False for ``bool``, floats and everything else."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """True for integers (:func:`is_int`) and finite reals; False for ``bool``, NaN and infinities."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return math.isfinite(value)


def _integer_text(minimum, maximum) -> str:
    if minimum is not None and maximum is not None:
        return f"an integer from {minimum} to {maximum}"
    if minimum is not None:
        return {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer of at least {minimum}")
    if maximum is not None:
        return f"an integer of at most {maximum}"
    return "an integer"


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an ``int`` if it is an integer within [minimum, maximum]; otherwise a ValueError.

    >>> check_int("batch_size", 32, minimum=1)
    32
    >>> check_int("batch_size", 32.0, minimum=1)
    Traceback (most recent call last):
    ...
    ValueError: batch_size must be a positive integer, got 32.0
    """
    if not is_int(value) or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {_integer_text(minimum, maximum)}, got {value!r}")
    return int(value)


def check_number(name: str, value: Any, minimum: float | None = None, maximum: float | None = None, *,
                 include_minimum: bool = True, include_maximum: bool = True) -> float:
    """``value`` as a ``float`` if it is a finite number within the bounds; otherwise a ValueError.

    The bounds are inclusive unless ``include_minimum``/``include_maximum`` say otherwise.
    """
    ok = is_number(value)
    if ok and minimum is not None:
        ok = value >= minimum if include_minimum else value > minimum
    if ok and maximum is not None:
        ok = value <= maximum if include_maximum else value < maximum
    if not ok:
        parts = []
        if minimum is not None:
            parts.append(f"{'at least' if include_minimum else 'above'} {minimum}")
        if maximum is not None:
            parts.append(f"{'at most' if include_maximum else 'below'} {maximum}")
        bounds = f" ({' and '.join(parts)})" if parts else ""
        raise ValueError(f"{name} must be a finite number{bounds}, got {value!r}")
    return float(value)


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices``; otherwise a ValueError listing them."""
    choices = tuple(choices)
    if isinstance(value, bool) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def positive(name: str, value: Any) -> float:
    """``value`` as a float if it is a finite number above 0; otherwise a ValueError naming ``name``."""
    if not is_number(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def non_negative(name: str, value: Any) -> float:
    """``value`` as a float if it is a finite number of at least 0; otherwise a ValueError naming ``name``."""
    if not is_number(value) or value < 0:
        raise ValueError(f"{name} must be a number of at least 0, got {value!r}")
    return float(value)


def fraction(name: str, value: Any, example: str) -> float:
    """``value`` if it is in (0, 1]; otherwise a ValueError naming ``name``, with ``example`` as the hint."""
    number = positive(name, value)
    if number > 1:
        raise ValueError(f"{name} must be a fraction between 0 and 1 ({example}), got {value!r}")
    return number


def positive_int(name: str, value: Any) -> int:
    """``value`` as an int if it is an integer of at least 1; otherwise a ValueError naming ``name``.

    The same check as ``check_int(name, value, minimum=1)``, under a shorter name."""
    return check_int(name, value, minimum=1)
