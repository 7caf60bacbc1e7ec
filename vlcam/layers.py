"""Finding the layer a Grad-CAM map is computed at."""

from __future__ import annotations

import difflib
from collections.abc import Iterator

from torch import nn


def resolve_layer(model: nn.Module, layer: nn.Module | str) -> nn.Module:
    """Return the submodule of `model` named by `layer` (a dotted name or the module itself)."""
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in model.modules()):
            raise ValueError(
                f"layer {type(layer).__name__} is not a submodule of the model "
                f"({type(model).__name__}); pass one of its submodules or a dotted name"
            )
        return layer
    if not isinstance(layer, str):
        raise TypeError(
            f"layer must be an nn.Module or a dotted name such as 'layer4', got {type(layer).__name__}"
        )
    modules: dict[str, nn.Module] = dict(model.named_modules())
    if layer in modules and layer != "":
        return modules[layer]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(layer, names, n=5, cutoff=0.5)
    if not close:
        # Suggest the deepest named modules that contain the query as a piece.
        close = [n for n in names if layer.split(".")[-1] in n][:5] or names[-5:]
    raise ValueError(
        f"layer {layer!r} not found in {type(model).__name__}; closest names: "
        + ", ".join(repr(n) for n in close)
    )


def layer_name(model: nn.Module, layer: nn.Module) -> str:
    """Return the dotted name of `layer` inside `model` ('' for the model itself)."""
    named: Iterator[tuple[str, nn.Module]] = model.named_modules()
    for name, module in named:
        if module is layer:
            return name
    return type(layer).__name__
