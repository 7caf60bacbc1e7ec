"""explain_caption: Grad-CAM for a whole caption and for each of its words (Sec. 8.1, 8.1.1).

The captioner is any :class:`vlcam.adapters.Captioner`: it encodes the caption itself
(``encode_caption``) and scores it word by word (``word_logprobs``). All maps come from
one encoder forward and one batched backward through the decoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from vlcam._state import preserved
from vlcam.adapters.protocol import Captioner, Responder, check_conforms
from vlcam.data.wordmap import WordMap
from vlcam.explain._common import Explanation, check_method, explained_maps, prepare_image
from vlcam.layers import layer_name, resolve_layer
from vlcam.targets import CaptionLogProb, Target, WordLogProb

# The most words of one caption explained at once.
MAX_WORDS = 64


class CaptionScorer(nn.Module):
    """scorer(images, *caption_inputs) -> the caption's per-word log-probabilities [B', n+1].

    Column i < n is log p(word i | earlier words, image); column n is log p(<end> | ...).
    """

    def __init__(self, captioner: Captioner) -> None:
        super().__init__()
        self.captioner = captioner

    def forward(self, images: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        return self.captioner.word_logprobs(images, *inputs)


@dataclass
class CaptionExplanation(Explanation):
    """Grad-CAM maps for a caption: ``maps[0]`` the whole caption's, then one per requested word.

    ``targets`` are ``CaptionLogProb()`` then ``WordLogProb(i)`` for each of `word_indices`.
    """

    caption: str
    tokens: list[str]
    token_logprobs: torch.Tensor  # [T]: log p(word t | earlier words, image)
    end_logprob: float  # log p(<end> | caption, image)
    word_indices: list[int]

    @property
    def caption_map(self) -> torch.Tensor:
        """The whole caption's map [H, W] (its log-probability, with <end>)."""
        return self.maps[0]

    @property
    def word_maps(self) -> torch.Tensor:
        """The requested words' maps [len(word_indices), H, W]."""
        return self.maps[1:]

    @property
    def caption_logprob(self) -> float:
        """log p(caption, <end> | image): what `caption_map` explains."""
        return float(self.token_logprobs.sum()) + self.end_logprob

    def word_peaks(self) -> list[tuple[int, int]]:
        """Return each word map's maximum as (row, col) in the original image."""
        return self.peaks()[1:]

    def panels(self) -> tuple[list[torch.Tensor], list[str], str]:
        """Return the caption map and the word maps, titled (the paper's Fig. 11)."""
        titles = [f"caption ({self.method})"] + [f"'{self.tokens[i]}' (word {i})" for i in self.word_indices]
        return list(self.maps), titles, self.caption


def explain_caption(
    model: Captioner,
    img: object,
    caption: str | None = None,
    *,
    words: str | Sequence[int] = "all",
    method: str = "gradcam",
    layer: nn.Module | str | None = None,
    word_map: WordMap | None = None,
    beam_size: int = 1,
    prompt: str | None = None,
) -> CaptionExplanation:
    """Return Grad-CAM maps for `caption` on `img`: one for the caption, one per requested word.

    `img` is a PIL image, an H x W x 3 (or grayscale, RGBA) array, a file path, or an
    already preprocessed [3, S, S] / [1, 3, S, S] float tensor (float16, bfloat16 and
    float64 are cast to float32; integer pixels are refused: pass them as an image or an
    array). `caption=None` explains the model's own caption (beam search with
    `beam_size`). `words` is "all", "visual" or a list of word indices into `tokens`;
    "visual" takes the words that name an object in `word_map` (for a multi-word name, its
    last word), by default the shipped map, the built-in world's or COCO's, that names more
    of the model's vocabulary. `method` is "gradcam", "guided-gradcam" or "counterfactual"
    (Eq. 12). `layer` defaults to the model's `default_layer`. For a generative
    vision-language model (``vlcam.adapters.hf.wrap(llava, processor)``), `caption` is its
    response to `prompt` (default: the model's `default_prompt`, through the processor's chat
    template) and `caption=None` its own greedy response; punctuation and special tokens are
    not words, and the caption's map also covers them and the end of the turn. The model is explained in
    eval mode and comes back as given, buffers included; the caller's random generators
    (Python, NumPy, torch) are left where they were.
    """
    torch_model = check_conforms(model, Captioner, "explain_caption needs a captioner")
    method = check_method(method)
    module = resolve_layer(torch_model, model.default_layer if layer is None else layer)
    if caption is not None and not isinstance(caption, str):
        raise TypeError(f"caption must be a str or None, got {type(caption).__name__}")
    responder = model if isinstance(model, Responder) else None
    if prompt is not None:
        if responder is None:
            raise TypeError(
                f"prompt= is for generative vision-language models (a vlcam Responder); "
                f"{type(model).__name__} captions without a prompt"
            )
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str or None, got {type(prompt).__name__}")
    prepared = prepare_image(model, img)
    scorer = CaptionScorer(model)
    with preserved(torch_model, eval_mode=True, rng=True):
        if responder is not None:
            if caption is None:
                caption = responder.respond(prepared.tensor, prompt, beam_size=beam_size)[0]
                if not caption.strip():
                    raise ValueError(
                        f"the model's own response to the prompt {prompt or responder.default_prompt!r:.80} is "
                        "empty: nothing to explain (pass caption= to explain a response of your own)"
                    )
            tokens, inputs = checked_words(*responder.encode_response(caption, prompt))
        else:
            if caption is None:
                caption = model.caption(prepared.tensor, beam_size=beam_size)[0]
            tokens, inputs = encoded_caption(model, caption)
        indices = _word_indices(words, tokens, word_map, model.known_words())
        targets: list[Target] = [CaptionLogProb(), *(WordLogProb(i) for i in indices)]
        maps, output = explained_maps(model, scorer, prepared.tensor, inputs, targets, module, method,
                                      prepared)
    logprobs = output[0].detach()
    n = len(tokens)
    return CaptionExplanation(
        maps=maps,
        targets=targets,
        method=method,
        layer=layer_name(torch_model, module),
        scorer=scorer,
        inputs=inputs,
        images=prepared.tensor,
        image=prepared.display,
        caption=caption,
        tokens=tokens,
        token_logprobs=logprobs[:n].float(),
        end_logprob=float(logprobs[n]),
        word_indices=indices,
    )


def encoded_caption(model: Captioner, caption: str) -> tuple[list[str], tuple[torch.Tensor, ...]]:
    """Return the model's ``encode_caption(caption)``, checked: ValueError past `MAX_WORDS`."""
    return checked_words(*model.encode_caption(caption))


def checked_words(tokens: list[str], inputs: tuple[torch.Tensor, ...]) -> tuple[list[str], tuple[torch.Tensor, ...]]:
    """Return (tokens, inputs); ValueError past `MAX_WORDS` words."""
    if len(tokens) > MAX_WORDS:
        raise ValueError(f"the caption has {len(tokens)} words; at most {MAX_WORDS} are explained at once")
    return tokens, tuple(inputs)


def caption_words(model: Captioner, caption: str) -> list[str]:
    """Return the words of `caption` as :func:`explain_caption` indexes them for `model`."""
    return model.encode_caption(caption)[0]


def default_word_map(vocab_words: Sequence[str]) -> WordMap:
    """Return the shipped word map (built-in world or COCO) that names most of a vocabulary's words."""
    vocab = set(vocab_words)
    maps = [WordMap.builtin(name) for name in ("synthetic", "coco")]
    return max(maps, key=lambda m: len(m.words() & vocab))


def _word_indices(
    words: object, tokens: list[str], word_map: WordMap | None, vocab_words: Sequence[str]
) -> list[int]:
    # Checked whatever `words` is: a wrong word_map is a mistake even where it goes unused.
    if word_map is not None and not isinstance(word_map, WordMap):
        raise TypeError(
            f"word_map must be a vlcam WordMap (e.g. WordMap.builtin('coco') or WordMap.from_file(path)), "
            f"got {type(word_map).__name__}: {word_map!r:.80}"
        )
    if isinstance(words, str) and words == "all":
        return list(range(len(tokens)))
    if isinstance(words, str) and words == "visual":
        return [m.head for m in (word_map or default_word_map(vocab_words)).match(tokens)]
    if isinstance(words, np.ndarray):
        words = words.tolist()
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


__all__ = ["CaptionExplanation", "CaptionScorer", "caption_words", "encoded_caption", "explain_caption"]
