"""Describing the values a tensor must not hold, for the errors that refuse it."""

from __future__ import annotations

import torch


def non_finite(tensor: torch.Tensor) -> str | None:
    """Return None for a finite tensor, else what it holds: '1 NaN, 2 +inf (first at index (0, 3))'."""
    finite = torch.isfinite(tensor)
    if bool(finite.all()):
        return None
    counts = {"NaN": int(tensor.isnan().sum()), "+inf": int(tensor.isposinf().sum()),
              "-inf": int(tensor.isneginf().sum())}
    first = tuple(int(i) for i in (~finite).nonzero()[0])
    held = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
    return f"{held} (first at index {first})"
