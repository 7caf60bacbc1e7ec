"""Checks of the trainers' settings, run before anything is read or written."""

from __future__ import annotations

import math


def check_positive(**values: object) -> None:
    """Raise ValueError naming the first of `values` that is not a positive int."""
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive int, got {value!r}")


def check_weight(name: str, value: object, off: str) -> None:
    """Raise ValueError unless `value`, the weight of an auxiliary loss, is a finite number >= 0 (0: `off`)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a number >= 0 (0: {off}), got {value!r}")
