"""Giving the model back exactly as the caller handed it over."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def preserved(model: nn.Module, *, eval_mode: bool = False) -> Iterator[nn.Module]:
    """Yield `model`; restore every submodule's train/eval mode and every parameter's
    `requires_grad` and `.grad` on exit, also when the body raises.

    With ``eval_mode=True`` the model runs in eval mode inside the block (dropout off,
    batch-norm statistics frozen), as an explanation should be deterministic.
    """
    modes = [(m, m.training) for m in model.modules()]
    params = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    grad_enabled = torch.is_grad_enabled()
    try:
        if eval_mode:
            model.eval()
        yield model
    finally:
        for module, training in modes:
            module.training = training
        for param, requires_grad, grad in params:
            # Compare first: a lazy module's uninitialised parameters refuse both calls.
            if param.requires_grad != requires_grad:
                param.requires_grad_(requires_grad)
            if param.grad is not grad:
                param.grad = grad
        torch.set_grad_enabled(grad_enabled)


@contextmanager
def cudnn_disabled(active: bool) -> Iterator[None]:
    """Switch cuDNN off inside the block when `active`, restoring the caller's flag after."""
    enabled = torch.backends.cudnn.enabled
    try:
        if active:
            torch.backends.cudnn.enabled = False
        yield
    finally:
        torch.backends.cudnn.enabled = enabled
