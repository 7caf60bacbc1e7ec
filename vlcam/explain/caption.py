"""explain_caption: Grad-CAM for a whole caption and for each of its words (Sec. 8.1, 8.1.1).

The captioner is any module with the captioning adapter interface (`ShowAndTell` is one):
``token_logprobs(images, tokens) -> [B, L-1]`` that broadcasts its caption batch to a
larger image-feature batch, a `vocab` with ``encode``, `image_size`, `mean`, `std`,
`default_layer`, and ``caption(images)`` for generation. A captioner with a tokenizer of
its own (the Hugging Face adapters) instead defines ``encode_caption(caption) -> (words,
inputs)`` and ``word_logprobs(images, *inputs) -> [B, words + 1]``, and may define
`gradcam_reshape` (token layers onto the patch grid), ``preprocess_image`` and
`gradcam_batch_targets` (how the engine batches the words' backwards; default True). All maps
come from one encoder forward and one batched backward through the decoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vlcam._state import preserved
from vlcam.data.wordmap import WordMap
from vlcam.explain._common import check_method, prepare_image, resize_maps
from vlcam.explain.figures import overlay_figure, peak, save_figure
from vlcam.gradcam import cam_from_gradients, layer_gradients
from vlcam.guided import guided_grad_cam
from vlcam.layers import layer_name, resolve_layer
from vlcam.targets import CaptionLogProb, WordLogProb
from vlcam.text import tokenize

MAX_WORDS = 64
UNK = 3


class CaptionScorer(nn.Module):
    """model(images, *caption_inputs) -> the caption's per-word log-probabilities [B', n+1].

    Column i < n is log p(word i | earlier words, image); column n is log p(<end> | ...).
    """

    def __init__(self, captioner: nn.Module) -> None:
        super().__init__()
        self.captioner = captioner

    def forward(self, images: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        word_logprobs = getattr(self.captioner, "word_logprobs", None)
        if word_logprobs is not None:
            return word_logprobs(images, *inputs)
        return self.captioner.token_logprobs(images, *inputs)


@dataclass
class CaptionExplanation:
    """Grad-CAM maps for a caption: the whole caption and the requested words.

    Maps are at the original image's resolution, raw (not normalised). For
    ``method="guided-gradcam"`` they are the per-pixel L2 norm over colour channels.
    """

    caption: str
    tokens: list[str]
    token_logprobs: torch.Tensor  # [T]: log p(word t | earlier words, image)
    end_logprob: float  # log p(<end> | caption, image)
    caption_map: torch.Tensor  # [H, W]
    word_indices: list[int]
    word_maps: torch.Tensor  # [len(word_indices), H, W]
    method: str
    layer: str
    image: np.ndarray = field(repr=False)  # H x W x 3 uint8

    @property
    def caption_logprob(self) -> float:
        """log p(caption, <end> | image): what `caption_map` explains."""
        return float(self.token_logprobs.sum()) + self.end_logprob

    def word_peaks(self) -> list[tuple[int, int]]:
        """Return each word map's maximum as (row, col) in the original image."""
        return [peak(m) for m in self.word_maps]

    def plot(self, columns: int = 5) -> Any:
        """Return a matplotlib Figure like the paper's Fig. 11: image, caption map, word maps."""
        maps = [self.caption_map, *self.word_maps]
        titles = [f"caption ({self.method})"] + [f"'{self.tokens[i]}' (word {i})" for i in self.word_indices]
        return overlay_figure(self.image, maps, titles, suptitle=self.caption, columns=columns)

    def save(self, path: str | Path, dpi: int = 100) -> Path:
        """Return `path` after drawing :meth:`plot` into it."""
        return save_figure(self.plot(), path, dpi=dpi)


def explain_caption(
    model: nn.Module,
    img: Any,
    caption: str | None = None,
    *,
    words: str | Sequence[int] = "all",
    method: str = "gradcam",
    layer: nn.Module | str | None = None,
    word_map: WordMap | None = None,
    beam_size: int = 1,
) -> CaptionExplanation:
    """Return Grad-CAM maps for `caption` on `img`: one for the caption, one per requested word.

    `img` is a PIL image, an H x W x 3 (or grayscale, RGBA) array, a file path, or an
    already preprocessed [3, S, S] / [1, 3, S, S] tensor. `caption=None` explains the
    model's own caption (beam search with `beam_size`). `words` is "all", "visual" or a
    list of word indices into `tokens`; "visual" takes the words that name an object in
    `word_map` (for a multi-word name, its last word), by default the shipped map, the
    built-in world's or COCO's, that names more of the model's vocabulary. `method` is
    "gradcam", "guided-gradcam" or "counterfactual" (Eq. 12). `layer` defaults to the
    model's `default_layer`. The model is explained in eval mode and comes back as given.
    """
    method = check_method(method)
    module = resolve_layer(model, model.default_layer if layer is None else layer)
    prepared = prepare_image(model, img)
    with preserved(model, eval_mode=True):
        if caption is None:
            caption = model.caption(prepared.tensor, beam_size=beam_size)[0]
        tokens, inputs = caption_inputs(model, caption)
        indices = _word_indices(words, tokens, word_map, _known_words(model))
        targets = [CaptionLogProb(), *(WordLogProb(i) for i in indices)]
        scorer = CaptionScorer(model)
        args = (prepared.tensor, *inputs)
        reshape = getattr(model, "gradcam_reshape", None)
        if method == "guided-gradcam":
            fused = guided_grad_cam(scorer, args, targets, module, reshape=reshape)[0]  # [K, 3, S, S]
            maps = fused.norm(dim=1)
            with torch.no_grad():
                logprobs = scorer(*args)[0]
        else:
            result = layer_gradients(scorer, args, targets, module, reshape=reshape,
                                     batch_targets=getattr(model, "gradcam_batch_targets", True))
            maps = cam_from_gradients(result, counterfactual=method == "counterfactual")[0]
            logprobs = result.output[0].detach()
    maps = resize_maps(maps, prepared.size)
    if not torch.isfinite(maps).all():
        raise ValueError("the maps hold non-finite values: the image or the model produced NaN/inf")
    n = len(tokens)
    return CaptionExplanation(
        caption=caption,
        tokens=tokens,
        token_logprobs=logprobs[:n].float(),
        end_logprob=float(logprobs[n]),
        caption_map=maps[0],
        word_indices=indices,
        word_maps=maps[1:],
        method=method,
        layer=layer_name(model, module),
        image=prepared.display,
    )


def caption_words(model: nn.Module, caption: str) -> list[str]:
    """Return the words of `caption` as :func:`explain_caption` indexes them for `model`.

    For the native captioners, vlcam's tokens (lowercased, without punctuation); for an
    adapter with its own tokenizer, that tokenizer's words (punctuation included, since
    the model scores it).
    """
    own = getattr(model, "encode_caption", None)
    return own(caption)[0] if own is not None else tokenize(caption)


def caption_inputs(model: nn.Module, caption: object) -> tuple[list[str], tuple[torch.Tensor, ...]]:
    """Return (the caption's words, the inputs that follow the image in ``CaptionScorer``).

    ValueError for a caption without words, with more than `MAX_WORDS`, or with no word
    the model knows.
    """
    if not isinstance(caption, str):
        raise TypeError(f"caption must be a str or None, got {type(caption).__name__}")
    own = getattr(model, "encode_caption", None)
    if own is not None:
        tokens, inputs = own(caption)
        if len(tokens) > MAX_WORDS:
            raise ValueError(f"the caption has {len(tokens)} words; at most {MAX_WORDS} are explained at once")
        return tokens, tuple(inputs)
    tokens = tokenize(caption)
    if not tokens:
        raise ValueError(f"the caption {caption!r:.80} has no words to explain")
    if len(tokens) > MAX_WORDS:
        raise ValueError(f"the caption has {len(tokens)} words; at most {MAX_WORDS} are explained at once")
    ids = model.vocab.encode(caption, add_special=True, warn=True)
    words = ids[1:-1]
    if len(words) != len(tokens):
        raise ValueError(f"the vocabulary split {caption!r:.80} into {len(words)} words, the tokenizer into {len(tokens)}")
    if all(w == UNK for w in words):
        raise ValueError(
            f"every word of the caption {caption!r:.80} is unknown to the model's vocabulary; "
            "nothing could be explained"
        )
    device = next(model.parameters()).device
    return tokens, (torch.tensor([ids], dtype=torch.long, device=device),)


def _known_words(model: nn.Module) -> list[str]:
    """Return the words the model can write: its vocabulary, or its tokenizer's."""
    vocab = getattr(model, "vocab", None)
    if vocab is not None:
        return vocab.words
    return list(model.tokenizer.get_vocab())


def default_word_map(vocab_words: Sequence[str]) -> WordMap:
    """Return the shipped word map (built-in world or COCO) that names most of a vocabulary's words."""
    vocab = set(vocab_words)
    maps = [WordMap.builtin(name) for name in ("synthetic", "coco")]
    return max(maps, key=lambda m: len(m.words() & vocab))


def _word_indices(
    words: object, tokens: list[str], word_map: WordMap | None, vocab_words: Sequence[str]
) -> list[int]:
    if words == "all":
        return list(range(len(tokens)))
    if words == "visual":
        return [m.head for m in (word_map or default_word_map(vocab_words)).match(tokens)]
    if isinstance(words, str) or not isinstance(words, Sequence):
        raise TypeError(f"words must be 'all', 'visual' or a list of word indices, got {words!r:.80}")
    indices = []
    for i in words:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"word indices must be ints, got {i!r}")
        if not 0 <= i < len(tokens):
            raise ValueError(
                f"word index {i} is out of range for the caption's {len(tokens)} words "
                f"(0..{len(tokens) - 1}: {' '.join(tokens)[:120]})"
            )
        indices.append(int(i))
    return indices


__all__ = ["CaptionExplanation", "CaptionScorer", "caption_inputs", "caption_words", "explain_caption"]
