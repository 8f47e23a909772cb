"""Argument checks shared by the calculators (costs, inference, pricing): one-line errors that name the
parameter, the value given and what is accepted. Imports nothing else of the package."""

from __future__ import annotations

import math
import numbers


def positive(name: str, value) -> float:
    """``value`` as a float if it is a finite number above 0; otherwise a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def non_negative(name: str, value) -> float:
    """``value`` as a float if it is a finite number of at least 0; otherwise a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a number of at least 0, got {value!r}")
    return float(value)


def fraction(name: str, value, example: str) -> float:
    """``value`` if it is in (0, 1]; otherwise a ValueError naming ``name``, with ``example`` as the hint."""
    number = positive(name, value)
    if number > 1:
        raise ValueError(f"{name} must be a fraction between 0 and 1 ({example}), got {value!r}")
    return number


def positive_int(name: str, value) -> int:
    """``value`` as an int if it is an integer of at least 1; otherwise a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
