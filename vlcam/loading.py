"""Loading a model by folder or hub id: which adapter class a checkpoint belongs to.

A vlcam checkpoint's config.json names its "kind"; each native adapter class declares the
kind it saves (``ShowAndTell.kind == "show_and_tell"``). The registry below names the
classes by import path, so nothing imports an adapter until a checkpoint of its kind loads.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlcam.checkpoint import CONFIG_FILE, existing_dir, read_json

# kind -> "module:Class"; each class's `kind` attribute equals its key (a test checks it).
KINDS: dict[str, str] = {
    "show_and_tell": "vlcam.adapters.show_and_tell:ShowAndTell",
    "vqa_lstm_cnn": "vlcam.adapters.vqa_lstm_cnn:VQALSTMCNN",
    "hiecoatt": "vlcam.adapters.hiecoatt:HieCoAtt",
}


def adapter_class(kind: str) -> Any:
    """Return the native adapter class that saves checkpoints of `kind`."""
    module_name, class_name = KINDS[kind].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def load(ckpt_dir: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Return the model saved in `ckpt_dir`, of the class its config.json's "kind" names.

    A folder saved by transformers (config.json with "architectures") or a Hugging Face
    hub id such as ``"Salesforce/blip-image-captioning-base"`` loads through
    :func:`vlcam.adapters.hf.from_pretrained` and comes back wrapped in its adapter.
    """
    if _is_hub_id(ckpt_dir):
        try:
            return _hugging_face(str(ckpt_dir), map_location)
        except OSError as err:
            raise FileNotFoundError(
                f"{ckpt_dir!r} is neither a local checkpoint folder nor a Hugging Face model that "
                f"could be loaded ({str(err).splitlines()[0]})"
            ) from err
    ckpt_dir = existing_dir(ckpt_dir)
    config = read_json(ckpt_dir / CONFIG_FILE)
    if not isinstance(config, dict):
        raise ValueError(f"{ckpt_dir / CONFIG_FILE} must hold a JSON object of settings, got a "
                         f"{type(config).__name__}")
    kind = config.get("kind")
    if kind is None and "architectures" in config:
        # A local folder: nothing is looked up on the hub.
        return _hugging_face(str(ckpt_dir), map_location, local_files_only=True)
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(
            f"{ckpt_dir / CONFIG_FILE} has kind {kind!r}; known kinds: {', '.join(sorted(KINDS))}, "
            "or a transformers model folder (config.json with 'architectures')"
        )
    cls = adapter_class(kind)
    model: nn.Module = cls.load(ckpt_dir, map_location=map_location)
    return model


def _is_hub_id(name: str | Path) -> bool:
    """Whether `name` reads as a hub id ("org/name" or "name") rather than a local path."""
    if isinstance(name, Path) or Path(name).exists():
        return False
    parts = str(name).split("/")
    return 1 <= len(parts) <= 2 and all(p and not p.startswith(".") and "\\" not in p for p in parts) \
        and not str(name).startswith(("/", "~"))


def _hugging_face(name: str, map_location: str | torch.device, **kwargs: Any) -> nn.Module:
    from vlcam.adapters.hf import from_pretrained

    return from_pretrained(name, device=str(map_location), **kwargs)



def from_factory(spec: str) -> Any:
    """Return the model that ``spec = "path/to/file.py:name"`` or ``"package.module:name"`` builds.

    `name` is a callable taking no arguments (or the model itself): how a user's own adapter
    reaches the command line. The file or module is the user's own code, run as Python.
    """
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ValueError(f"a model factory is 'file.py:name' or 'module:name', got {spec!r}")
    where, name = spec.split(":")
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise FileNotFoundError(f"model factory file not found: {path}")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    if not hasattr(module, name):
        raise ValueError(f"{where} defines no {name!r} (from the model factory {spec!r})")
    factory = getattr(module, name)
    return factory() if callable(factory) and not isinstance(factory, nn.Module) else factory


def is_factory(spec: str | Path) -> bool:
    """Whether `spec` names a model factory ("file.py:name" or "module:name") rather than a folder."""
    text = str(spec)
    if Path(text).exists() or text.count(":") != 1:
        return False
    where, name = text.split(":")
    return bool(where) and name.isidentifier()


__all__ = ["KINDS", "adapter_class", "from_factory", "is_factory", "load"]
