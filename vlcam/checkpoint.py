"""Checkpoints as plain files: weights in safetensors, everything else in JSON.

Nothing is ever unpickled, so loading a checkpoint from someone else cannot run code.
Which class a checkpoint belongs to is :mod:`vlcam.loading`'s business.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def save_checkpoint(
    ckpt_dir: str | Path,
    state_dict: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    extra_json: Mapping[str, Any] | None = None,
) -> Path:
    """Return `ckpt_dir` after writing model.safetensors, config.json and each extra JSON file.

    `extra_json` maps a file name (e.g. "vocab.json") to a JSON-serialisable object.
    Each file is written to a temporary name and renamed, so an interrupted save never
    leaves a half-written file under the final name.
    """
    ckpt_dir = Path(ckpt_dir)
    if "kind" not in config:
        raise ValueError(
            f"config must name the model's 'kind' (the adapter class's `kind`), got keys {sorted(config)}"
        )
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    save_tensors(ckpt_dir / MODEL_FILE, state_dict)
    write_json(ckpt_dir / CONFIG_FILE, dict(config))
    for name, obj in (extra_json or {}).items():
        if Path(name).name != name:
            raise ValueError(f"extra_json keys must be plain file names, got {name!r}")
        write_json(ckpt_dir / name, obj)
    return ckpt_dir


def load_state(
    ckpt_dir: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return (the state dict from model.safetensors, the config from config.json)."""
    ckpt_dir = existing_dir(ckpt_dir)
    config = read_json(ckpt_dir / CONFIG_FILE)
    weights = ckpt_dir / MODEL_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"checkpoint {ckpt_dir} has no {MODEL_FILE}")
    return load_file(str(weights), device=str(map_location)), config


def save_tensors(
    path: Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """Write `tensors` to a safetensors file at `path` (atomically, via a temporary name).

    safetensors refuses tensors that share memory (tied weights); those, and
    non-contiguous tensors, are saved as copies.
    """
    seen: set[int] = set()
    plain = {}
    for name, t in tensors.items():
        t = t.detach().to("cpu")
        storage = t.untyped_storage()
        if storage.data_ptr() in seen or not t.is_contiguous() or storage.nbytes() != t.nbytes:
            t = t.clone(memory_format=torch.contiguous_format)
        else:
            seen.add(storage.data_ptr())
        plain[name] = t
    tmp = path.with_name(path.name + ".tmp")
    save_file(plain, str(tmp), metadata=metadata)
    # safetensors creates the file as 0600; a checkpoint is meant to be shared like the
    # JSON files next to it.
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    """Write `obj` as indented UTF-8 JSON at `path` (atomically, via a temporary name)."""
    text = json.dumps(obj, indent=2, ensure_ascii=False)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_text(path: Path) -> str:
    """Return the UTF-8 text of a checkpoint file; FileNotFoundError naming it if it is missing."""
    if not path.is_file():
        raise FileNotFoundError(f"missing checkpoint file: {path}")
    return path.read_text(encoding="utf-8")


def read_json(path: Path) -> Any:
    """Return the JSON content of `path`; FileNotFoundError naming it if it is missing."""
    if not path.is_file():
        raise FileNotFoundError(f"missing checkpoint file: {path}")
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def existing_dir(ckpt_dir: str | Path) -> Path:
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {ckpt_dir}")
    return ckpt_dir
