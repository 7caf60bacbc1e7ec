"""Idefics3 and SmolVLM (`Idefics3ForConditionalGeneration`, `SmolVLMForConditionalGeneration`):
a SigLIP-style tower (no class token) run on image tiles and a downscaled global view, a
connector that pixel-shuffles each frame's patch tokens (``scale_factor``) and projects them,
a Llama-style decoder.

The processor resizes the image (its longest edge to ``size``), then to multiples of the tile
side m (``max_image_size``), cuts that into rows x cols tiles of m x m and appends the whole
image resized to m x m (the global view); an image that fits one tile, or a processor with
``do_image_splitting=False``, gives one m x m frame only. The prompt's image becomes, per tile,
``<fake_token_around_image><row_r_col_c><image>*n``, a newline per row, then the global view's
``<fake_token_around_image><global-img><image>*n<fake_token_around_image>``.

The adapter's preprocessed image is the processor's resized image before the cut, the view
[B, 3, rows*m, cols*m], normalised: the tiles are cut from it as the processor cuts them, so
the tile grid is a pure function of the view's shape (rows = H / m, cols = W / m; one frame
when the view is m x m). The global view is made by the processor itself from the view's
pixels (de-normalised to the uint8 values it resized), so the frames equal the processor's
exactly. Its pixel gradient (guided backpropagation only) is that of an antialiased bicubic
resize of the view: the processor's resize of uint8 pixels has none.

Grad-CAM explains the last vision block by default (the connector reads its output through
the post-layernorm). A map combines both views: each channel of the stitched tiles and each
channel of the global view (nearest-resampled onto the same grid) is a feature map of its
own, so Eq. 1 pools each view's gradients over that view's positions and Eq. 2 sums both
views' weighted activations before the ReLU. The view is the whole image resized (no crop, no
padding), so the maps lie on the original image by a plain resize.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlcam.adapters.hf.vlm._base import GenerativeVLM
from vlcam.adapters.hf.vlm.llava import last_block


class Idefics3VLM(GenerativeVLM):
    """`Idefics3ForConditionalGeneration`; :class:`SmolVLMVLM` for SmolVLM."""

    def __init__(self, model: nn.Module, processor: Any) -> None:
        super().__init__(model, processor)
        config = self.model.config
        self.image_token_id = int(config.image_token_id)
        self.patch = int(config.vision_config.patch_size)
        #: The side m of a tile and of the global view, in pixels.
        self.tile = int(self.image_processor.max_image_size["longest_edge"])
        self.image_size = self.tile
        self.default_layer = "model.model.vision_model." + last_block(self.model.model.vision_model)

    # --- The view and its frames ----------------------------------------------------------

    def _pixel_values(self, image: Any) -> torch.Tensor:
        out = self._processed(image, return_row_col_info=True)
        rows, cols = int(out["rows"][0][0]), int(out["cols"][0][0])
        frames = torch.as_tensor(out["pixel_values"], dtype=torch.float32)[0]  # [frames, 3, m, m]
        if rows == 0:
            return frames[:1]
        m = frames.shape[-1]
        return frames[:rows * cols].view(rows, cols, 3, m, m).permute(2, 0, 3, 1, 4).reshape(1, 3, rows * m, cols * m)

    def _grid(self, images: torch.Tensor) -> tuple[int, int]:
        """Return the view's (rows, cols) of tiles; ValueError for a tensor that is no view."""
        m = self.tile
        h, w = images.shape[-2:] if images.dim() == 4 else (0, 0)
        if h == 0 or w == 0 or h % m or w % m:
            raise ValueError(
                f"{type(self.model).__name__} takes views [B, 3, H, W] with H and W multiples of its tile side "
                f"{m} (the processor's max_image_size), got shape {tuple(images.shape)}; pass an image to "
                "preprocess instead"
            )
        return h // m, w // m

    def _frames(self, images: torch.Tensor) -> torch.Tensor:
        """Return the frames the model reads, [B, frames, 3, m, m]: the tiles row by row, then
        the global view (or the view alone when it is one tile)."""
        rows, cols = self._grid(images)
        b, m = images.shape[0], self.tile
        if rows * cols == 1:
            frames = images.unsqueeze(1)
        else:
            tiles = images.reshape(b, 3, rows, m, cols, m).permute(0, 2, 4, 1, 3, 5).reshape(b, rows * cols, 3, m, m)
            frames = torch.cat([tiles, self._global_view(images).unsqueeze(1)], dim=1)
        # The model drops all-zero frames as padding, which would leave tokens without features.
        empty = ~frames.flatten(2).any(dim=2)
        if bool(empty.any()):
            item, frame = (int(i) for i in empty.nonzero()[0])
            raise ValueError(
                f"frame {frame} of image {item} is all zeros after normalisation: {type(self.model).__name__} "
                "takes an all-zero frame for padding and drops it"
            )
        return frames

    def _global_view(self, images: torch.Tensor) -> torch.Tensor:
        """Return the global view [B, 3, m, m] of each view, as the processor makes it."""
        mean = torch.tensor(self.mean, device=images.device).view(3, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(3, 1, 1)
        # The processor resizes the uint8 pixels that the view normalises; they come back exactly.
        pixels = ((images.detach().float() * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)
        exact = torch.cat([
            torch.as_tensor(self._processed(p.permute(1, 2, 0).cpu().numpy(), do_resize=False,
                                            do_image_splitting=False)["pixel_values"], dtype=torch.float32)[:, 0]
            for p in pixels
        ]).to(images.device)
        smooth = F.interpolate(images.float(), size=(self.tile, self.tile), mode="bicubic", antialias=True,
                               align_corners=False)
        # The processor's values, the smooth resize's gradient.
        return exact + (smooth - smooth.detach())

    # --- The VLM hooks -----------------------------------------------------------------------

    def image_tokens(self, images: torch.Tensor) -> list[int]:
        """Return the ids the processor writes for one image of the views `images`: each tile's
        tokens row by row, then the global view's."""
        rows, cols = self._grid(images)
        split = (0, 0) if rows * cols == 1 else (rows, cols)
        text: str = self.processor.replace_image_token({"rows": [[split[0]]], "cols": [[split[1]]]}, 0)
        # Tokenised on its own: it starts and ends with a special token, so the text around it
        # tokenises as with the one placeholder, and "\n\n" merges here as it does in the prompt.
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def vision_inputs(self, images: torch.Tensor) -> dict[str, Any]:
        """Return the frames [B, frames, 3, m, m] as ``pixel_values`` (every pixel is real: no
        pixel_attention_mask)."""
        return {"pixel_values": self._frames(images).to(self.dtype)}

    def _image_extra(self) -> int:
        """Return how many tokens the image adds at most: the processor's largest view, a
        square at its longest edge."""
        longest = self.image_processor.size.get("longest_edge") or self.tile
        side = math.ceil(longest / self.tile) * self.tile if self.image_processor.do_image_splitting else self.tile
        return len(self.image_tokens(torch.zeros(1, 3, side, side))) - 1

    # --- Layout --------------------------------------------------------------------------------

    def gradcam_reshape(self, activations: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Return the frames' tokens [B * frames, n, C] (a vision block's patches, or the
        connector's pixel-shuffled tokens) on the view's grid: the tiles stitched, then the
        global view nearest-resampled onto the same grid, [B, 2C, rows*s, cols*s] (s*s = n);
        [B, C, s, s] for a one-frame view."""
        rows, cols = self._grid(images)
        b = images.shape[0]
        count = 1 if rows * cols == 1 else rows * cols + 1
        if activations.dim() != 3 or activations.shape[0] != b * count:
            raise ValueError(
                f"the layer outputs shape {tuple(activations.shape)}, not the tokens [{b * count}, n, C] of the "
                f"{b} x {count} frames of the images: choose a block of the vision tower (model.model.vision_model) "
                "or the connector"
            )
        n = activations.shape[1]
        s = math.isqrt(n)
        if s * s != n:
            raise ValueError(f"the layer holds {n} tokens per frame, not a square grid of patches")
        grid = activations.reshape(b, count, s, s, -1).permute(0, 1, 4, 2, 3)  # [B, frames, C, s, s]
        if count == 1:
            return grid[:, 0]
        c = grid.shape[2]
        tiles = grid[:, :-1].reshape(b, rows, cols, c, s, s).permute(0, 3, 1, 4, 2, 5).reshape(b, c, rows * s, cols * s)
        whole = grid[:, -1].repeat_interleave(rows, dim=2).repeat_interleave(cols, dim=3)
        return torch.cat([tiles, whole], dim=1)

    def image_maps(self, maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Return maps [K, h, w] on the view's grid as maps [K, H, W] on the original image of
        `size`: a bilinear resize (align_corners=False), since the view is the whole image
        resized, and pixel centres map as (i + 0.5) * H / h."""
        return super().image_maps(maps, size)


class SmolVLMVLM(Idefics3VLM):
    """`SmolVLMForConditionalGeneration`: Idefics3's model and prompt format (the processor
    reads its special tokens from the tokenizer)."""
