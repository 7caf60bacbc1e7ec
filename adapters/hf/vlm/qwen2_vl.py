"""Qwen2-VL and Qwen2.5-VL (`Qwen2VLForConditionalGeneration`, `Qwen2_5_VLForConditionalGeneration`).

Dynamic resolution: the processor resizes each image to multiples of patch x merge (28 px),
so the number of image tokens depends on the image. The model takes flattened patches,
grouped by the 2 x 2 spatial merge: token order is (merge row, merge column, row in the
merge unit, column in it), not row-major. The adapter's preprocessed image is the resized
view [B, 3, H, W]; it patchifies it in the forward, as the processor does, so a map can be
laid back on the view and the view on the original image. Qwen2.5-VL's vision blocks also
run on window-ordered merge units; its layout undoes that order too.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vlcam.adapters.hf._view import SingleView
from vlcam.adapters.hf.vlm._base import GenerativeVLM


class Qwen2VLM(SingleView, GenerativeVLM):
    """Qwen2-VL; :class:`Qwen25VLM` for 2.5."""

    def __init__(self, model: nn.Module, processor: Any) -> None:
        super().__init__(model, processor)
        config = self.model.config
        vision = config.vision_config
        self.image_token_id = int(config.image_token_id)
        self.patch = int(vision.patch_size)
        self.merge = int(vision.spatial_merge_size)
        self.temporal = int(vision.temporal_patch_size)
        self.default_layer = f"model.model.visual.blocks.{len(self.model.model.visual.blocks) - 1}"
        self.image_size = self.patch * self.merge * 8

    # --- Pixels: the view and its patches -------------------------------------------------

    def _pixel_values(self, image: Any) -> torch.Tensor:
        out = self._processed(image)
        _t, gh, gw = (int(v) for v in out["image_grid_thw"][0])
        patches = torch.as_tensor(out["pixel_values"], dtype=torch.float32)
        p, m = self.patch, self.merge
        # [gh/m, gw/m, m, m, C, T, p, p] -> the first frame's [C, gh, gw] pixels.
        grid = patches.view(gh // m, gw // m, m, m, 3, self.temporal, p, p)[:, :, :, :, :, 0]
        return grid.permute(4, 0, 2, 5, 1, 3, 6).reshape(1, 3, gh * p, gw * p)

    def _patches(self, images: torch.Tensor) -> torch.Tensor:
        b, c, h, w = images.shape
        p, m = self.patch, self.merge
        self._check_view(images)
        grid = images.reshape(b, c, h // (p * m), m, p, w // (p * m), m, p).permute(0, 2, 5, 3, 6, 1, 4, 7)
        frames = grid.unsqueeze(6).expand(-1, -1, -1, -1, -1, -1, self.temporal, -1, -1)
        return frames.reshape(b * (h // p) * (w // p), c * self.temporal * p * p)

    def _grid(self, images: torch.Tensor, rows: int = 1) -> torch.Tensor:
        h, w = images.shape[-2] // self.patch, images.shape[-1] // self.patch
        return torch.tensor([[1, h, w]], dtype=torch.long, device=images.device).repeat(images.shape[0] * rows, 1)

    def _check_view(self, images: torch.Tensor) -> None:
        side = self.patch * self.merge
        if images.dim() != 4 or images.shape[-2] % side or images.shape[-1] % side:
            raise ValueError(
                f"{type(self.model).__name__} takes images [B, 3, H, W] with H and W multiples of {side}, "
                f"got shape {tuple(images.shape)}; pass an image to preprocess instead"
            )

    # --- The VLM hooks ---------------------------------------------------------------------

    def image_tokens(self, images: torch.Tensor) -> list[int]:
        """Return one image token per merge unit of the view."""
        self._check_view(images)
        side = self.patch * self.merge
        return [self.image_token_id] * ((images.shape[-2] // side) * (images.shape[-1] // side))

    def vision_inputs(self, images: torch.Tensor) -> dict[str, Any]:
        """Return the flattened patches and their grid, as the processor gives them."""
        return {"pixel_values": self._patches(images).to(self.dtype), "image_grid_thw": self._grid(images)}

    def text_inputs(self, ids: torch.Tensor, mask: torch.Tensor, images: torch.Tensor, prompt_length: int,
                    per_image: int) -> dict[str, Any]:
        """Return the 3-D rotary positions of the rows (computed here, so the model's cached
        rope deltas stay as they were) and what generation needs to compute them itself."""
        types = (ids == self.image_token_id).long()
        grid = self._grid(images, per_image)
        positions, _ = self.model.model.get_rope_index(ids, types, image_grid_thw=grid, attention_mask=mask)
        return {"position_ids": positions, "mm_token_type_ids": types, "image_grid_thw": grid}

    def _generated(self, images: torch.Tensor, prompt: torch.Tensor, max_new_tokens: int, beam_size: int
                   ) -> list[str]:
        inner = self.model.model
        kept = inner.rope_deltas
        try:
            return super()._generated(images, prompt, max_new_tokens, beam_size)
        finally:
            inner.rope_deltas = kept

    # --- Layout ------------------------------------------------------------------------------

    def gradcam_reshape(self, activations: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Return vision-block tokens [B*h*w, C] (or merger outputs [B*h*w/4, C]) on the patch
        grid [B, C, h, w] (or the merged grid) of the view `images`."""
        b = images.shape[0]
        gh, gw = images.shape[-2] // self.patch, images.shape[-1] // self.patch
        m = self.merge
        tokens = activations if activations.dim() == 2 else activations.reshape(-1, activations.shape[-1])
        if tokens.shape[0] == b * gh * gw:
            units = self._unit_order(tokens.reshape(b * gh * gw // (m * m), m * m, -1), images)
            grid = units.reshape(b, gh // m, gw // m, m, m, -1).permute(0, 5, 1, 3, 2, 4)
            return grid.reshape(b, -1, gh, gw)
        if tokens.shape[0] == b * gh * gw // (m * m):
            units = self._unit_order(tokens.unsqueeze(1), images)
            return units.reshape(b, gh // m, gw // m, -1).permute(0, 3, 1, 2)
        raise ValueError(
            f"the layer holds {tokens.shape[0]} tokens, neither the {b} x {gh} x {gw} patches nor the "
            "merged grid of the images: choose a block of the vision tower (model.model.visual)"
        )

    def _unit_order(self, units: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Return merge units [U, ...] in the processor's order (Qwen2-VL keeps it)."""
        return units


class Qwen25VLM(Qwen2VLM):
    """Qwen2.5-VL: as Qwen2-VL, with vision blocks that run on window-ordered merge units.

    The layout is the blocks' and the merger's (window order); the patch embedding, before
    the reordering, is not a layer to explain.
    """

    def _unit_order(self, units: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        from transformers.vision_utils import get_vision_window_index

        visual = self.model.model.visual
        grid = self._grid(images)
        window_index, _ = get_vision_window_index(grid, spatial_merge_size=visual.spatial_merge_size,
                                                  window_size=visual.window_size, patch_size=visual.patch_size)
        # Block row j holds merge unit window_index[j]; unit u sits at row argsort(window_index)[u].
        return units[torch.argsort(window_index.to(units.device))]
