"""Checkpoints as plain files: weights in safetensors, everything else in JSON.

Nothing is ever unpickled, so loading a checkpoint from someone else cannot run code.
Which class a checkpoint belongs to is :mod:`vlcam.loading`'s business.

Loading checks each file before it is used: a config.json against its adapter's
:class:`CheckpointConfig` schema, the word lists, and the weights against the model the
config describes. Every refusal is a ValueError (FileNotFoundError for a missing file)
that names the file, the key or tensor, and what was expected.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

if TYPE_CHECKING:
    from typing_extensions import Self

    from vlcam.text import Vocabulary

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
    return read_weights(ckpt_dir, map_location), config


def read_weights(ckpt_dir: Path, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Return the state dict in `ckpt_dir`/model.safetensors; ValueError naming it if it is corrupt."""
    weights = ckpt_dir / MODEL_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"missing checkpoint file: {weights}")
    try:
        return load_file(str(weights), device=str(map_location))
    except SafetensorError as err:
        raise ValueError(f"{weights} is not a readable safetensors file (truncated or corrupt?): {err}") from err


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
    """Return the UTF-8 text of a checkpoint file.

    FileNotFoundError naming it if it is missing; ValueError naming it if it is not UTF-8.
    """
    if not path.is_file():
        raise FileNotFoundError(f"missing checkpoint file: {path}")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text (byte {err.start} is {err.object[err.start]:#04x})") from err


def read_json(path: Path) -> Any:
    """Return the JSON content of `path`.

    FileNotFoundError naming it if it is missing; ValueError naming it, with the line and
    column, if it is not UTF-8 JSON.
    """
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise _not_json(path, err) from err


def _not_json(path: Path, err: json.JSONDecodeError) -> ValueError:
    return ValueError(f"{path} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}")


def read_vocabulary(path: Path, size: int | None = None) -> Vocabulary:
    """Return the :class:`vlcam.text.Vocabulary` stored in `path` (a vocab.json).

    ValueError naming the file if it is not a vocabulary, or if `size` (the config's
    vocab_size) is given and the vocabulary has another number of words.
    """
    from vlcam.text import Vocabulary

    text = read_text(path)
    try:
        vocab = Vocabulary.from_json(text)
    except json.JSONDecodeError as err:
        raise _not_json(path, err) from err
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    if size is not None and len(vocab) != size:
        raise ValueError(
            f"{path} holds {len(vocab)} words but {path.with_name(CONFIG_FILE)} says vocab_size is {size}: "
            "the vocabulary belongs to another checkpoint"
        )
    return vocab


def existing_dir(ckpt_dir: str | Path) -> Path:
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {ckpt_dir}")
    return ckpt_dir


# --- Checked configs ----------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    """What one config key accepts: `accepts(value)`, described as `expected` in errors."""

    expected: str
    accepts: Callable[[Any], bool]


def _is_int(value: Any) -> bool:
    # JSON true/false arrive as bool, which Python counts as int.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or isinstance(value, float)


POSITIVE_INT = Rule("a positive integer", lambda v: _is_int(v) and v >= 1)
FRACTION = Rule("a number in [0, 1)", lambda v: _is_number(v) and 0 <= v < 1)
NAME = Rule("a non-empty string", lambda v: isinstance(v, str) and bool(v))
BOOL = Rule("true or false", lambda v: isinstance(v, bool))


def one_of(*choices: str) -> Rule:
    """Return the rule of a key that takes one of the strings `choices`."""
    return Rule(f"one of {', '.join(map(repr, choices))}", lambda v: isinstance(v, str) and v in choices)


def setting(rule: Rule, default: Any = MISSING) -> Any:
    """Return the dataclass field of a config key checked by `rule`; optional if it has a default."""
    return field(default=default, metadata={"rule": rule})


Config = TypeVar("Config", bound="CheckpointConfig")
Model = TypeVar("Model", bound=nn.Module)


@dataclass(frozen=True)
class CheckpointConfig:
    """A checkpoint's config.json, checked key by key.

    An adapter declares one field per key with :func:`setting` (a default makes a key
    optional, so checkpoints saved before it existed still load), its `KIND`, and the keys
    in `DESCRIBES_FILES` that describe the other files (vocab_size) rather than being
    constructor arguments.
    """

    kind: str = setting(NAME)

    KIND: ClassVar[str] = ""
    DESCRIBES_FILES: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_json(cls, mapping: Any, path: Path) -> Self:
        """Return the config `mapping` read from `path`, once every key is checked.

        ValueError naming `path` and each key that is missing, unknown, of the wrong type
        or out of range, with what the key accepts.
        """
        if not isinstance(mapping, Mapping):
            raise ValueError(f"{path} must hold a JSON object of settings, got a {type(mapping).__name__}")
        if mapping.get("kind") != cls.KIND:
            raise ValueError(f"{path} holds a {mapping.get('kind')!r} checkpoint, not {cls.KIND!r}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        problems = [f"missing key {name!r} ({f.metadata['rule'].expected})"
                    for name, f in fields.items() if f.default is MISSING and name not in mapping]
        unknown = [name for name in mapping if name not in fields]
        if unknown:
            problems.append(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
                            f"(a {cls.KIND} config has {', '.join(map(repr, fields))})")
        for name, value in mapping.items():
            rule = fields[name].metadata["rule"] if name in fields else None
            if rule is not None and not rule.accepts(value):
                problems.append(f"{name!r} must be {rule.expected}, got {value!r:.80}")
        if problems:
            raise ValueError(f"{path}: " + "; ".join(problems))
        return cls(**mapping)

    def arguments(self) -> dict[str, Any]:
        """Return the model constructor's keyword arguments: every key but kind and `DESCRIBES_FILES`."""
        skip = ("kind", *self.DESCRIBES_FILES)
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}


def read_config(ckpt_dir: Path, schema: type[Config]) -> Config:
    """Return `ckpt_dir`/config.json checked against `schema` (see :meth:`CheckpointConfig.from_json`)."""
    path = ckpt_dir / CONFIG_FILE
    return schema.from_json(read_json(path), path)


# How many tensor names an error lists.
_SHOWN = 5


def build_with_weights(build: Callable[[], Model], state: Mapping[str, torch.Tensor], ckpt_dir: Path) -> Model:
    """Return the model `build()` makes, with the weights `state` read from `ckpt_dir`.

    ValueError naming config.json for arguments the model refuses, and naming
    model.safetensors with the first missing, unexpected and wrongly shaped tensors
    (the shapes in the file and those the config implies).
    """
    config = ckpt_dir / CONFIG_FILE
    try:
        model = build()
    except (ValueError, TypeError) as err:
        raise ValueError(f"{config}: {err}") from err
    check_weights(model.state_dict(), state, ckpt_dir / MODEL_FILE, config)
    model.load_state_dict(state)
    return model


def check_weights(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor],
                  weights: Path, config: Path) -> None:
    """Raise ValueError naming `weights` unless `found` has exactly the names and shapes of `expected`."""
    missing = [name for name in expected if name not in found]
    unexpected = [name for name in found if name not in expected]
    misshaped = [f"{name} {_shape(found[name])} in the file, {_shape(t)} expected" for name, t in expected.items()
                 if name in found and found[name].shape != t.shape]
    problems = [f"{what} ({len(names)}): {', '.join(names[:_SHOWN])}{', ...' if len(names) > _SHOWN else ''}"
                for what, names in (("missing tensors", missing), ("unexpected tensors", unexpected),
                                    ("tensors of another shape", misshaped)) if names]
    if problems:
        raise ValueError(f"{weights} does not hold the weights of the model {config} describes: "
                         + "; ".join(problems))


def _shape(tensor: torch.Tensor) -> str:
    return "[" + ", ".join(map(str, tensor.shape)) + "]"
