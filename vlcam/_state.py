"""Giving the model back exactly as the caller handed it over."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn


@contextmanager
def preserved(model: nn.Module, *, eval_mode: bool = False, rng: bool = False) -> Iterator[nn.Module]:
    """Yield `model`; restore every submodule's train/eval mode, every parameter's
    `requires_grad` and `.grad`, and every buffer (bit for bit) on exit, also when the
    body raises.

    With ``eval_mode=True`` the model runs in eval mode inside the block (dropout off,
    batch-norm statistics frozen), as an explanation should be deterministic. With
    ``rng=True`` the states of Python's `random`, NumPy's global generator and torch's
    CPU and CUDA generators are restored too, so whatever the block draws (a lazy import,
    a model that samples in eval mode) leaves the caller's random streams where they were.
    """
    modes = [(m, m.training) for m in model.modules()]
    params = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    buffers = _buffer_snapshot(model)
    generators = _rng_state() if rng else None
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
        _restore_buffers(buffers)
        if generators is not None:
            _set_rng_state(generators)
        torch.set_grad_enabled(grad_enabled)


_BufferEntry = tuple[dict[str, Any], str, Any, Any, Any]


def _buffer_snapshot(model: nn.Module) -> list[_BufferEntry]:
    """Return (owner's buffer dict, name, the buffer, its version, a copy) for every buffer."""
    entries: list[_BufferEntry] = []
    with torch.no_grad():
        for module in model.modules():
            for name, buf in module._buffers.items():
                # A lazy module's buffer has no values until its first forward fills it.
                if buf is None or isinstance(buf, nn.parameter.UninitializedBuffer):
                    entries.append((module._buffers, name, buf, None, None))
                    continue
                entries.append((module._buffers, name, buf, _version(buf), buf.clone()))
    return entries


def _restore_buffers(entries: list[_BufferEntry]) -> None:
    for owner, name, buf, version, copy in entries:
        if owner.get(name) is not buf:
            owner[name] = buf  # the forward replaced the tensor: put the caller's back
        if copy is None:
            continue
        # The version counter says whether anything wrote into the buffer; inference
        # tensors have none and are compared instead.
        changed = buf._version != version if version is not None else not torch.equal(buf, copy)
        if changed:
            with torch.inference_mode() if buf.is_inference() else torch.no_grad():
                buf.copy_(copy)


def _version(tensor: torch.Tensor) -> int | None:
    return None if tensor.is_inference() else int(tensor._version)


def _rng_state() -> tuple[Any, Any, torch.Tensor, list[torch.Tensor] | None]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    return random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[Any, Any, torch.Tensor, list[torch.Tensor] | None]) -> None:
    python, numpy_state, cpu, cuda = state
    random.setstate(python)
    np.random.set_state(numpy_state)
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


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
