"""The adapters' broadcasting rule, which lets the engine explain K targets in one backward.

With ``batch_targets=True`` the layers above the explained one see K stacked copies of the
image rows; an adapter pairs copy j (rows j*B .. j*B+B-1) with the same B text inputs by
tiling them.
"""

from __future__ import annotations

import torch


def tiled(tensor: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    """Return `tensor` [B, ...] repeated to `batch` rows; `what` names it in the error."""
    if batch == tensor.shape[0]:
        return tensor
    if tensor.shape[0] == 0 or batch % tensor.shape[0]:
        raise ValueError(
            f"a batch of {batch} images cannot pair with {tensor.shape[0]} {what}: the image batch "
            f"must equal the number of {what} or be a multiple of it (tiled copies)"
        )
    return tensor.repeat(batch // tensor.shape[0], *[1] * (tensor.dim() - 1))
