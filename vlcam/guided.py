"""Guided backpropagation and Guided Grad-CAM (Sec. 3.2).

Guided backpropagation rectifies the gradient at every ReLU: only positive gradients pass,
and only where the ReLU's input was positive. Models call ReLU in many ways (``nn.ReLU``,
``F.relu``, ``torch.relu``, ``torch.relu_``, ``Tensor.relu``), so the patch is made at the
function level, as TorchRay does, and undone in ``finally``. The patch is process-wide
while a call runs: do not run other models in other threads meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from vlcam._capture import LayerCapture, native_rnn
from vlcam._state import preserved
from vlcam.gradcam import (
    LayerGradients,
    Reshape,
    Targets,
    _as_args,
    _as_target_list,
    _check_inputs,
    _reshaped,
    _score,
    _spatial_activations,
    _upsample,
    cam_from_gradients,
)
from vlcam.targets import Target


class _Rectify:
    """Whether the patched ReLUs rectify their backward; read at backward time, so one
    forward can serve a plain backward (to the layer) and a guided one (to the input)."""

    on = True


class _GuidedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        out = x.clamp(min=0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (out,) = ctx.saved_tensors
        return _relu_backward(grad, out)


class _GuidedReLUInplace(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.mark_dirty(x)
        x.clamp_(min=0)
        ctx.save_for_backward(x)
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (out,) = ctx.saved_tensors
        return _relu_backward(grad, out)


def _relu_backward(grad: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    grad = grad * (out > 0).to(grad.dtype)
    return grad.clamp(min=0) if _Rectify.on else grad


def _guided_relu(input: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    return cast(torch.Tensor, _GuidedReLUInplace.apply(input) if inplace else _GuidedReLU.apply(input))


def _guided_relu_(input: torch.Tensor) -> torch.Tensor:
    return cast(torch.Tensor, _GuidedReLUInplace.apply(input))


def _guided_tensor_relu(self: torch.Tensor) -> torch.Tensor:
    return cast(torch.Tensor, _GuidedReLU.apply(self))


def _guided_tensor_relu_(self: torch.Tensor) -> torch.Tensor:
    return cast(torch.Tensor, _GuidedReLUInplace.apply(self))


@contextmanager
def guided_relus() -> Iterator[None]:
    """Patch every ReLU entry point with the guided ReLU inside the block; restore after."""
    patches = [
        (torch, "relu", _guided_relu),
        (torch, "relu_", _guided_relu_),
        (F, "relu", _guided_relu),
        (torch.Tensor, "relu", _guided_tensor_relu),
        (torch.Tensor, "relu_", _guided_tensor_relu_),
    ]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    try:
        for owner, name, fn in patches:
            setattr(owner, name, fn)
        _Rectify.on = True
        yield
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)
        _Rectify.on = True


def guided_backprop(
    model: nn.Module, inputs: torch.Tensor | tuple[Any, ...], targets: Targets
) -> torch.Tensor:
    """Return guided-backprop gradients at the image: [B, C, H, W], or [B, K, C, H, W] for K targets.

    The image is the first floating-point tensor among `inputs`. The forward runs in eval
    mode; the model (buffers included) and the random generators come back as given.
    ValueError for an input tensor holding NaN/inf.
    """
    target_list, single = _as_target_list(targets)
    args = _as_args(inputs)
    _check_inputs(args)
    args, image_index = _image_requiring_grad(args)
    with preserved(model, eval_mode=True, rng=True), guided_relus(), native_rnn(model, args), torch.enable_grad():
        output = model(*args)
        batch = args[image_index].shape[0]
        scores = [_score(t, output, batch) for t in target_list]
        grads = _input_gradients(scores, args[image_index])
    grads = grads.transpose(0, 1)
    return grads[:, 0] if single else grads


def guided_grad_cam(
    model: nn.Module,
    inputs: torch.Tensor | tuple[Any, ...],
    targets: Targets,
    layer: nn.Module | str,
    *,
    counterfactual: bool = False,
    reshape: Reshape | None = None,
) -> torch.Tensor:
    """Return Guided Grad-CAM: [B, C, H, W], or [B, K, C, H, W] for K targets.

    The upsampled Grad-CAM map times guided backpropagation (Sec. 3.2), both from one
    forward: a plain backward to `layer` for Grad-CAM, a guided one to the image. Runs in
    eval mode and gives the model back as :func:`vlcam.grad_cam` does, with the same errors
    for non-finite inputs and non-spatial layers.
    """
    target_list, single = _as_target_list(targets)
    args = _as_args(inputs)
    _check_inputs(args)
    capture = LayerCapture(model, layer)
    name = capture.name
    args, image_index = _image_requiring_grad(args)
    images = args[image_index].shape[0]
    spatial: list[torch.Tensor] = []

    def checked_clone(out: torch.Tensor) -> torch.Tensor:
        # Checked before the forward goes on, as in layer_gradients.
        spatial.append(_spatial_activations(out.detach(), name, reshape, images))
        # A clone, so that an in-place op right after the layer cannot modify the activations.
        return out.clone()

    with preserved(model, eval_mode=True, rng=True), guided_relus(), native_rnn(model, args), torch.enable_grad():
        output, activations = capture.forward(lambda: model(*args), checked_clone)
        batch = args[image_index].shape[0]
        scores = [_score(t, output, batch) for t in target_list]
        _Rectify.on = False
        layer_grads = torch.stack([
            _grad_or_zeros(y, activations, retain=True) for y in scores
        ])
        _Rectify.on = True
        guided = _input_gradients(scores, args[image_index])
    if reshape is not None:
        layer_grads = torch.stack([_reshaped(reshape, g, name, images) for g in layer_grads])
    scored = torch.stack([s.detach() for s in scores])
    maps = cam_from_gradients(LayerGradients(spatial[0], layer_grads, scored, output),
                              counterfactual=counterfactual)
    maps = _upsample(maps, tuple(args[image_index].shape[-2:]), args)  # [B, K, H, W]
    result = maps.unsqueeze(2) * guided.transpose(0, 1).float()
    return result[:, 0] if single else result


def _image_requiring_grad(args: tuple[Any, ...]) -> tuple[tuple[Any, ...], int]:
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            image = a.detach().clone().requires_grad_(True)
            return (*args[:i], image, *args[i + 1:]), i
    raise TypeError("inputs hold no floating-point tensor to take the gradient at (the image)")


def _input_gradients(scores: Sequence[torch.Tensor], image: torch.Tensor) -> torch.Tensor:
    grads = [_grad_or_zeros(y, image, retain=k < len(scores) - 1) for k, y in enumerate(scores)]
    result = torch.stack(grads)
    if not torch.isfinite(result).all():
        raise ValueError("non-finite guided-backprop gradients: the score is infinite or NaN")
    return result


def _grad_or_zeros(y: torch.Tensor, x: torch.Tensor, *, retain: bool) -> torch.Tensor:
    if not y.requires_grad:
        return torch.zeros_like(x)
    (grad,) = torch.autograd.grad(y.sum(), x, retain_graph=retain, allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad.detach()


__all__ = ["guided_backprop", "guided_grad_cam", "guided_relus", "Target"]
