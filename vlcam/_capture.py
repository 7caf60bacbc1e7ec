"""Capturing one layer's output during one forward: what Grad-CAM and guided backprop share.

A forward hook on the layer hands its output tensor (the first item of a tuple output, as
transformer blocks return) to a `swap` function and puts the result back in its place. The
hook refuses a layer that runs twice in one forward, is removed when the forward ends (also
when it raises), and the capture says so when the forward never reached the layer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from vlcam._state import cudnn_disabled
from vlcam.layers import layer_name, resolve_layer

Swap = Callable[[torch.Tensor], torch.Tensor]


class LayerCapture:
    """One layer of `model`, by module or dotted name, captured during one forward."""

    def __init__(self, model: nn.Module, layer: nn.Module | str) -> None:
        self.model = model
        self.module = resolve_layer(model, layer)
        self.name = layer_name(model, self.module)
        self.output: torch.Tensor | None = None

    def forward(self, run: Callable[[], Any], swap: Swap) -> tuple[Any, torch.Tensor]:
        """Return (what `run()` returned, the layer's output tensor as `swap` received it).

        `run` calls the model once; the layer's output is replaced by ``swap(output)``.
        """
        self.output = None

        def hook(module: nn.Module, inputs: Any, out: Any) -> Any:
            if self.output is not None:
                raise ValueError(
                    f"layer {self.name!r} ran more than once in one forward; Grad-CAM needs a layer "
                    "that runs once (choose a module that is not reused, e.g. a block or a conv)"
                )
            tensor, rebuild = layer_output_tensor(out, self.name)
            self.output = tensor
            return rebuild(swap(tensor))

        # First among the layer's hooks, so that hooks which record outputs (transformers'
        # hidden-state capture, which LLaVA's projector reads from) record the replacement.
        handle = self.module.register_forward_hook(hook, prepend=True)
        try:
            result = run()
        finally:
            handle.remove()
        if self.output is None:
            raise ValueError(
                f"layer {self.name!r} was never reached by the forward pass; pick a layer that "
                "the model's forward calls"
            )
        return result, self.output


def layer_output_tensor(out: Any, name: str) -> tuple[torch.Tensor, Callable[[torch.Tensor], Any]]:
    """Return (the tensor a layer output explains, a function that puts a replacement back).

    Transformer blocks (Hugging Face's among them) may return (hidden_states, extras...):
    the hidden states are explained and the extras pass through unchanged.
    """
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        rest = out

        def rebuild(tensor: torch.Tensor) -> Any:
            items = [tensor, *rest[1:]]
            return type(rest)(*items) if hasattr(rest, "_fields") else type(rest)(items)

        out = out[0]
    else:
        def rebuild(tensor: torch.Tensor) -> Any:
            return tensor

    if not isinstance(out, torch.Tensor) or not out.is_floating_point():
        # A wrong choice of layer (an LSTM over packed words, an argmax), so a ValueError like
        # the one for a non-spatial tensor.
        raise ValueError(
            f"layer {name!r} returns {_described(out)}; Grad-CAM needs a spatial layer of the image "
            "encoder, whose output is one floating-point tensor (B, C, u, v) (or a tuple whose "
            "first item is one)"
        )
    return out, rebuild


def _described(out: Any) -> str:
    if isinstance(out, torch.Tensor):
        return f"a {out.dtype} tensor of shape {tuple(out.shape)}"
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of ({', '.join(type(o).__name__ for o in out)})"
    return type(out).__name__


def needs_native_rnn(model: nn.Module, args: tuple[Any, ...]) -> bool:
    """Whether a backward through `model` on these inputs must avoid cuDNN's RNN kernels.

    cuDNN's RNN backward refuses eval mode; the native kernels compute the same function
    and back-propagate in any mode.
    """
    on_cuda = any(isinstance(a, torch.Tensor) and a.is_cuda for a in args)
    return on_cuda and any(isinstance(m, nn.RNNBase) for m in model.modules())


@contextmanager
def native_rnn(model: nn.Module, args: tuple[Any, ...]) -> Iterator[None]:
    """Run the block without cuDNN when :func:`needs_native_rnn`; the caller's flag is restored."""
    with cudnn_disabled(needs_native_rnn(model, args)):
        yield
