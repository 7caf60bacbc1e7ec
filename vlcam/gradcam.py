"""Grad-CAM (Selvaraju et al., Sec. 3): one forward and a partial backward.

The network below the explained layer runs without building an autograd graph. At the
layer, a forward hook swaps the activations for a fresh graph leaf, so the backward starts
at the targets and stops at that leaf: no parameter gradient is computed, and nothing is
back-propagated below the layer.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vlcam._capture import LayerCapture, needs_native_rnn
from vlcam._checks import non_finite
from vlcam._state import cudnn_disabled, preserved
from vlcam.targets import Target

Targets = Target | Sequence[Target]
Reshape = Callable[[torch.Tensor], torch.Tensor]
Upsample = bool | tuple[int, int]
BatchTargets = bool | Literal["vmap"]


# --- The paper's equations -------------------------------------------------------------

def neuron_importance(gradients: torch.Tensor, *, counterfactual: bool = False) -> torch.Tensor:
    """Return alpha_k^c (Eq. 1): the spatial mean of dy^c/dA^k, shape [..., C].

    ``counterfactual=True`` negates the gradients first (Eq. 12).
    """
    alpha = gradients.mean(dim=(-2, -1))
    return -alpha if counterfactual else alpha


def weighted_activation_map(activations: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Return ReLU(sum_k alpha_k^c A^k) (Eq. 2) for every target.

    `activations` is A, [B, C, u, v]; `alpha` is [K, B, C]; the result is [B, K, u, v].
    """
    return torch.relu(torch.einsum("bcuv,kbc->bkuv", activations, alpha))


# --- The engine --------------------------------------------------------------------------

@dataclass
class LayerGradients:
    """What one forward and partial backward leave at the explained layer."""

    activations: torch.Tensor  # A, [B, C, u, v], detached
    gradients: torch.Tensor  # dy/dA, [K, B, C, u, v], detached
    scores: torch.Tensor  # y, [K, B], detached
    output: Any  # the model's output (of the first replica when targets are batched)


def grad_cam(
    model: nn.Module,
    inputs: torch.Tensor | tuple[Any, ...],
    targets: Targets,
    layer: nn.Module | str,
    *,
    counterfactual: bool = False,
    upsample: Upsample = True,
    reshape: Reshape | None = None,
    batch_targets: BatchTargets = False,
) -> torch.Tensor:
    """Return Grad-CAM maps: [B, H, W] for one target, [B, K, H, W] for K targets (float32).

    The maps are the raw Eq. 2 values, not normalised. `inputs` is a tensor or a tuple of
    positional arguments for ``model(*inputs)``; `layer` is a submodule or its dotted name;
    each target maps the model's output to one differentiable scalar per batch item.
    ``upsample=True`` resizes bilinearly (align_corners=False) to the spatial size of the
    first 4-D input, ``upsample=(H, W)`` to that size, ``False`` keeps the layer's u x v.
    `reshape` turns a token-sequence layer output (B, N, C) into (B, C, h, w).

    K targets always share one forward. By default each target then gets its own partial
    backward through the part of the network above `layer`. ``batch_targets=True`` instead
    runs that part once on K stacked copies of the layer's activations, so the K gradients
    come from one backward; the part above `layer` must then treat batch items
    independently and accept (or broadcast to) a batch K times larger.
    ``batch_targets="vmap"`` keeps one forward of that part and runs the K backwards as one
    vectorised backward (``autograd.grad(..., is_grads_batched=True)``): the better choice
    when the part above the layer is heavy (a transformer decoder cross-attending to the
    image), since nothing is recomputed K times; it needs no broadcasting from the model.

    The forward runs in eval mode (dropout off, batch-norm statistics frozen); the model
    comes back exactly as given, buffers included, and the caller's random generators are
    left where they were. ValueError for an input tensor holding NaN/inf and for a layer
    whose output is not spatial (without `reshape`, not (B, C, u, v)).
    """
    target_list, single = _as_target_list(targets)
    result = layer_gradients(model, inputs, target_list, layer, reshape=reshape,
                             batch_targets=batch_targets)
    maps = cam_from_gradients(result, counterfactual=counterfactual)
    maps = _upsample(maps, upsample, _as_args(inputs))
    return maps[:, 0] if single else maps


def cam_from_gradients(result: LayerGradients, *, counterfactual: bool = False) -> torch.Tensor:
    """Return the [B, K, u, v] float32 maps (Eq. 1, 2, 12) from a forward and backward."""
    with torch.autocast(result.activations.device.type, enabled=False):
        alpha = neuron_importance(result.gradients.float(), counterfactual=counterfactual)
        maps = weighted_activation_map(result.activations.float(), alpha)
    flat = result.gradients.flatten(2)
    zero = ~flat.any(dim=2)  # [K, B]
    if bool(zero.any()):
        warnings.warn(
            f"all-zero gradients at the layer for {int(zero.sum())} of {zero.numel()} "
            "(target, item) pairs: their maps are all zero (the score does not depend on "
            "this layer there, or a saturated unit blocks the gradient)",
            RuntimeWarning,
            stacklevel=3,
        )
    return maps


def layer_gradients(
    model: nn.Module,
    inputs: torch.Tensor | tuple[Any, ...],
    targets: Sequence[Target],
    layer: nn.Module | str,
    *,
    reshape: Reshape | None = None,
    batch_targets: BatchTargets = False,
) -> LayerGradients:
    """Return the layer's activations and each target's gradient from one forward.

    The building block under :func:`grad_cam`, for callers that need more than the map
    (the scores, the model output). The forward runs in eval mode; the model (buffers
    included) and the random generators come back exactly as they were given.
    """
    args = _as_args(inputs)
    if not targets:
        raise ValueError("targets is empty: pass one target or a non-empty sequence of targets")
    capture = LayerCapture(model, layer)
    name = capture.name
    _check_inputs(args)
    if batch_targets not in (True, False, "vmap"):
        raise ValueError(f"batch_targets must be False, True or 'vmap', got {batch_targets!r}")
    replicas = len(targets) if batch_targets is True else 1
    # The image batch: a token layer may hold all images' tokens in one sequence (Qwen2-VL's
    # vision tower), so the batch is what the reshape lays out, not the layer's first dimension.
    images = next(a.shape[0] for a in args if isinstance(a, torch.Tensor))
    rnn_above = needs_native_rnn(model, args)
    leaves: list[torch.Tensor] = []
    spatial: list[torch.Tensor] = []

    def swap_for_leaf(out: torch.Tensor) -> torch.Tensor:
        if out.shape[0] == 0:
            raise ValueError("empty batch: the inputs hold 0 items")
        # Checked here, before the activations are replicated for batched targets and the
        # forward goes on: a text layer would otherwise fail far above with a size error.
        spatial.append(_spatial_activations(out.detach(), name, reshape, images))
        # Everything above the layer builds a graph; everything below did not.
        torch.set_grad_enabled(True)
        if rnn_above:
            torch.backends.cudnn.enabled = False
        activations = out.detach()
        leaf = activations.repeat(replicas, *[1] * (out.dim() - 1)) if replicas > 1 else activations
        leaves.append(leaf.requires_grad_(True))
        # A clone, so that an in-place op right after the layer (ReLU(inplace=True))
        # cannot modify the leaf or the activations.
        return leaf.clone()

    with preserved(model, eval_mode=True, rng=True), cudnn_disabled(False), torch.inference_mode(False):
        args = tuple(a.clone() if isinstance(a, torch.Tensor) and a.is_inference() else a
                     for a in args)
        torch.set_grad_enabled(False)
        output, out = capture.forward(lambda: model(*args), swap_for_leaf)
        (leaf,) = leaves
        batch = spatial[0].shape[0]
        if replicas > 1 and out.shape[0] != batch:
            raise ValueError(
                f"batch_targets=True stacks copies of layer {name!r}'s output along its first dimension, "
                f"which holds {out.shape[0]} rows for {batch} images; use batch_targets='vmap'"
            )
        outputs = [_slice_batch(output, k * batch, (k + 1) * batch) for k in range(replicas)]
        scores = [_score(t, outputs[k if replicas > 1 else 0], batch) for k, t in enumerate(targets)]
        grads = _gradients(scores, leaf, replicas, batch, vectorised=batch_targets == "vmap")

    if not torch.isfinite(grads).all():
        bad = [repr(t) for k, t in enumerate(targets) if not torch.isfinite(grads[k]).all()]
        raise ValueError(
            f"non-finite gradients at layer {name!r} for targets {', '.join(bad)}: the score "
            "is infinite or NaN, or overflowed (under autocast, try float32)"
        )
    if reshape is not None:
        grads = torch.stack([_reshaped(reshape, g, name, batch) for g in grads])
    return LayerGradients(
        activations=spatial[0],
        gradients=grads,
        scores=torch.stack([s.detach() for s in scores]),
        output=outputs[0],
    )


# --- Helpers -------------------------------------------------------------------------------

def _as_args(inputs: Any) -> tuple[Any, ...]:
    if isinstance(inputs, tuple):
        return inputs
    if isinstance(inputs, list):
        return tuple(inputs)
    if isinstance(inputs, torch.Tensor):
        return (inputs,)
    raise TypeError(
        f"inputs must be a tensor or a tuple of positional arguments for model(*inputs), "
        f"got {type(inputs).__name__}"
    )


def _as_target_list(targets: Targets) -> tuple[list[Target], bool]:
    if callable(targets):
        return [targets], True
    if isinstance(targets, Sequence) and not isinstance(targets, (str, bytes)):
        target_list = list(targets)
        for t in target_list:
            if not callable(t):
                raise TypeError(
                    f"each target must be callable as target(output) -> Tensor[B], got {t!r}"
                )
        return target_list, False
    raise TypeError(
        f"targets must be a callable target(output) -> Tensor[B] or a sequence of them, "
        f"got {targets!r}"
    )


def _check_inputs(args: tuple[Any, ...]) -> None:
    """Raise for inputs the engine cannot explain: no tensor, an empty batch, or a
    floating-point tensor holding NaN/inf (ValueError naming its position among `args`)."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if not tensors:
        raise TypeError("inputs hold no tensor: pass the image batch as a tensor")
    if tensors[0].dim() == 0 or tensors[0].shape[0] == 0:
        raise ValueError(f"empty batch: the first input has shape {tuple(tensors[0].shape)}")
    for i, a in enumerate(args):
        held = non_finite(a) if isinstance(a, torch.Tensor) and a.is_floating_point() else None
        if held is not None:
            raise ValueError(
                f"input {i} of shape {tuple(a.shape)} and dtype {a.dtype} holds {held}; the model inputs "
                "must be finite"
            )


def _spatial_activations(activations: torch.Tensor, name: str, reshape: Reshape | None, images: int
                         ) -> torch.Tensor:
    """Return the layer's activations as (B, C, u, v), through `reshape` when given; ValueError
    naming the layer and its output shape when they are not a spatial map of the `images` inputs."""
    if reshape is not None:
        return _reshaped(reshape, activations, name, images)
    if activations.dim() != 4:
        raise ValueError(
            f"layer {name!r} outputs shape {tuple(activations.shape)}, not a spatial map (B, C, u, v): "
            "Grad-CAM needs a spatial layer of the image encoder (a conv layer or block). For a "
            "token sequence (B, N, C), pass reshape= to lay it out as (B, C, h, w)"
        )
    return activations


def _slice_batch(output: Any, start: int, stop: int) -> Any:
    if isinstance(output, torch.Tensor):
        return output[start:stop]
    if isinstance(output, tuple) and hasattr(output, "_fields"):
        return type(output)(*(_slice_batch(o, start, stop) for o in output))
    if isinstance(output, (tuple, list)):
        return type(output)(_slice_batch(o, start, stop) for o in output)
    if isinstance(output, Mapping):
        items = {k: _slice_batch(v, start, stop) for k, v in output.items()}
        try:
            return type(output)(**items)
        except TypeError:
            return items
    return output


def _score(target: Target, output: Any, batch: int) -> torch.Tensor:
    y = target(output)
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"target {target!r} returned {type(y).__name__}; it must return a Tensor[B]")
    if tuple(y.shape) != (batch,):
        raise ValueError(
            f"target {target!r} returned shape {tuple(y.shape)}; a target must return one "
            f"scalar per batch item, shape ({batch},)"
        )
    if not y.is_floating_point():
        raise TypeError(f"target {target!r} returned dtype {y.dtype}; it must be floating point")
    return y


def _gradients(
    scores: list[torch.Tensor], leaf: torch.Tensor, replicas: int, batch: int, *, vectorised: bool = False
) -> torch.Tensor:
    """Return dy_k/dA for each target k, [K, B, ...], back-propagating only to the leaf."""
    connected = [y.requires_grad for y in scores]
    if vectorised and sum(connected) > 1:
        # One-hot cotangents, one per target: row k of the batched backward is dy_k/dA.
        live = [k for k, c in enumerate(connected) if c]
        stacked = torch.stack([scores[k] for k in live])  # [K', B]
        eye = torch.eye(len(live), dtype=stacked.dtype, device=stacked.device)
        cotangents = eye[:, :, None].expand(-1, -1, batch)
        (batched,) = torch.autograd.grad(stacked, leaf, grad_outputs=cotangents, is_grads_batched=True,
                                         allow_unused=True)
        grads = torch.zeros((len(scores), *leaf.shape), dtype=leaf.dtype, device=leaf.device)
        if batched is not None:
            grads[live] = batched.detach()
        return grads
    if replicas > 1:
        total = sum(y.sum() for y, c in zip(scores, connected) if c)
        if not isinstance(total, torch.Tensor):
            return torch.zeros((replicas, batch, *leaf.shape[1:]), dtype=leaf.dtype, device=leaf.device)
        (grad,) = torch.autograd.grad(total, leaf, allow_unused=True)
        if grad is None:
            grad = torch.zeros_like(leaf)
        replicated: torch.Tensor = grad.detach().unflatten(0, (replicas, batch))
        return replicated
    per_target: list[torch.Tensor] = []
    last = max((k for k, c in enumerate(connected) if c), default=-1)
    for k, y in enumerate(scores):
        one: torch.Tensor | None = None
        if connected[k]:
            (one,) = torch.autograd.grad(y.sum(), leaf, retain_graph=k < last, allow_unused=True)
        per_target.append(torch.zeros_like(leaf) if one is None else one.detach())
    return torch.stack(per_target)


def _reshaped(reshape: Reshape, tensor: torch.Tensor, name: str, batch: int) -> torch.Tensor:
    try:
        out = reshape(tensor)
    except ValueError as e:
        # An adapter's reshape refuses a non-spatial output; the user chose the layer by name.
        shape = str(tuple(tensor.shape))
        raise ValueError(f"layer {name!r}" + ("" if shape in str(e) else f" outputs shape {shape}")
                         + f": {e}") from e
    if not isinstance(out, torch.Tensor) or out.dim() != 4 or out.shape[0] != batch:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"reshape turned layer {name!r}'s output {tuple(tensor.shape)} into {got}; "
            f"it must return (B, C, h, w) with B = {batch}, the batch of the first input"
        )
    return out


def _upsample(maps: torch.Tensor, upsample: Upsample, args: tuple[Any, ...]) -> torch.Tensor:
    if upsample is False:
        return maps
    if upsample is True:
        images = [a for a in args if isinstance(a, torch.Tensor) and a.dim() == 4]
        if not images:
            raise ValueError(
                "upsample=True needs a (B, C, H, W) image among the inputs; pass "
                "upsample=(H, W) or upsample=False"
            )
        size = tuple(images[0].shape[-2:])
    elif (isinstance(upsample, (tuple, list)) and len(upsample) == 2
          and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in upsample)):
        size = tuple(upsample)
    else:
        raise TypeError(f"upsample must be True, False or a (H, W) pair of positive ints, got {upsample!r}")
    if tuple(maps.shape[-2:]) == size:
        return maps
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
