"""What every vlcam trainer keeps between epochs, so an interrupted run resumes.

`out/training.safetensors` holds the last weights and the optimizer state, with the
training state as safetensors metadata, so one atomic rename commits all three;
`out/train_state.json` is a readable copy of that state. Nothing is pickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from vlcam.checkpoint import save_tensors, write_json

TRAINING_FILE = "training.safetensors"
STATE_FILE = "train_state.json"


def save_training(out: Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Write the weights, the optimizer state and `state` to `out` (see the module doc)."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    plain_state: dict[str, dict[str, Any]] = {}
    for pid, values in optimizer.state_dict()["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{pid}.{key}"] = value
            else:
                plain_state.setdefault(str(pid), {})[key] = value
    text = json.dumps({**state, "optimizer_plain_state": plain_state})
    save_tensors(out / TRAINING_FILE, tensors, metadata={"train_state": text})
    write_json(out / STATE_FILE, state)


def resume(out: Path, settings: dict[str, Any], model: nn.Module,
           optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
    """Return the saved training state after loading its weights and optimizer, or None."""
    path = out / TRAINING_FILE
    if not path.is_file():
        if out.is_dir() and any(out.iterdir()):
            raise ValueError(
                f"{out} is not empty and holds no {TRAINING_FILE}: it is not a partial run "
                "to resume; pick an empty or new output folder (or empty this one to start over)"
            )
        return None
    # Read on the CPU: load_state_dict copies onto the model's device, and the optimizer
    # moves its state next to its parameters.
    with safe_open(str(path), framework="pt", device="cpu") as f:
        state: dict[str, Any] = json.loads(f.metadata()["train_state"])
        # safe_open has keys() but cannot be iterated itself.
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    changed = {k: (state["settings"].get(k), v) for k, v in settings.items() if state["settings"].get(k) != v}
    if changed:
        diff = "; ".join(f"{k}: saved {old!r}, now {new!r}" for k, (old, new) in changed.items())
        raise ValueError(
            f"{out} holds a run with other settings ({diff}); resume with the same settings "
            "(only epochs may change) or pick another output folder"
        )
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    optim_state: dict[int, dict[str, Any]] = {
        int(pid): dict(values) for pid, values in state.pop("optimizer_plain_state").items()
    }
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, pid, name = key.split(".", 2)
            optim_state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": optim_state, "param_groups": optimizer.state_dict()["param_groups"]})
    return state


def seed_epoch(seed: int, epoch: int) -> torch.Generator:
    """Seed torch for `epoch` and return the generator that shuffles its batches.

    Seeding from (seed, epoch) alone makes a resumed epoch shuffle and drop out exactly as
    it would have without the interruption, with no RNG state to carry over.
    """
    epoch_seed = seed * 1_000_003 + epoch
    torch.manual_seed(epoch_seed)
    return torch.Generator().manual_seed(epoch_seed)



def plateau_lr(lr: float, val_losses: list[float], patience: int) -> float:
    """Return the learning rate of the next epoch: `lr`, halved once per `patience` // 2
    epochs (at least one) since the best validation loss so far, counted over the whole run.

    A function of the saved history alone, so a resumed run gets the rates it would have had.
    """
    step = max(1, patience // 2)
    halvings, best, since_best = 0, float("inf"), 0
    for loss in val_losses:
        if loss < best:
            best, since_best = loss, 0
        else:
            since_best += 1
            if since_best % step == 0:
                halvings += 1
    return lr * 0.5 ** halvings
