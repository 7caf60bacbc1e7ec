"""Checking the word ids a native adapter's scoring forward is given.

An id outside the vocabulary would otherwise reach ``nn.Embedding``, which raises a bare
IndexError on the CPU and a device-side assert on CUDA (after which the process's CUDA
context is unusable).
"""

from __future__ import annotations

import torch


def check_word_ids(ids: torch.Tensor, vocab_size: int, what: str) -> None:
    """Raise TypeError for non-integer `ids`, ValueError naming the first id outside
    0..vocab_size-1; `what` ("caption", "question") names them in the message."""
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise TypeError(f"{what} ids must be an integer (long) tensor, got dtype {ids.dtype}")
    outside = (ids < 0) | (ids >= vocab_size)
    if bool(outside.any()):
        position = tuple(int(i) for i in outside.nonzero()[0])
        raise ValueError(
            f"{what} id {int(ids[position])} at position {position} is outside the model's vocabulary "
            f"of {vocab_size} words (ids 0..{vocab_size - 1}); encode {what}s with the model's own "
            "vocabulary"
        )
