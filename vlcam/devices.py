"""The one device lookup: a user's device string checked before any work is done."""

from __future__ import annotations

import os

import torch


def resolve_device(name: str | torch.device) -> torch.device:
    """Return the torch device `name` names ("auto": CUDA when there is one, this process's
    GPU under torchrun (LOCAL_RANK), else the CPU).

    ValueError naming the value for a string torch does not read, or a CUDA/MPS device this
    machine does not have.
    """
    if isinstance(name, torch.device):
        device = name
    elif name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device(f"cuda:{os.environ['LOCAL_RANK']}" if "LOCAL_RANK" in os.environ else "cuda")
    else:
        try:
            device = torch.device(name)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"device {name!r} is not a torch device; accepted: auto, cpu, cuda, cuda:N, mps") \
                from err
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index is not None and device.index >= count):
            raise ValueError(f"device {str(device)!r} is not on this machine: it has {count} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {str(device)!r} is not on this machine: MPS is not available")
    return device
