"""explain_texts: Grad-CAM for the texts a contrastive model (CLIP, SigLIP) matches to an image.

The model is any :class:`vlcam.adapters.TextMatcher`: the score of text k is its image-text
logit, and all K maps come from one forward and one vectorised backward. This is a separate
function rather than `explain_answer` because nothing is asked: there is no question, and
the texts compete (CLIP) or are judged one by one (SigLIP), which the probabilities say.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from vlcam._state import preserved
from vlcam.adapters.protocol import TextMatcher, check_conforms
from vlcam.explain._common import Explanation, check_method, explained_maps, prepare_image
from vlcam.layers import layer_name, resolve_layer
from vlcam.targets import Target, TextLogit

MAX_TEXTS = 64


class TextScorer(nn.Module):
    """scorer(images, *text_inputs) -> the image-text logits [B, K]."""

    def __init__(self, model: TextMatcher) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, *text_inputs: torch.Tensor) -> torch.Tensor:
        return self.model.text_scores(images, *text_inputs)


@dataclass
class TextsExplanation(Explanation):
    """Grad-CAM maps for texts matched to an image, one map per text (``targets[k]`` is
    ``TextLogit(k)``)."""

    texts: list[str]
    logits: torch.Tensor  # [K]: the image-text logits
    probs: torch.Tensor  # [K]: the model's probability of each text

    def panels(self) -> tuple[list[torch.Tensor], list[str], str]:
        """Return one map per text, titled with its probability."""
        titles = [f"{t!r:.40}: p = {float(p):.2f}" for t, p in zip(self.texts, self.probs)]
        return list(self.maps), titles, f"texts ({self.method})"


def explain_texts(
    model: TextMatcher,
    img: object,
    texts: str | Sequence[str],
    *,
    method: str = "gradcam",
    layer: nn.Module | str | None = None,
) -> TextsExplanation:
    """Return Grad-CAM maps of `texts` (one string or a list) matched to `img` by a CLIP or
    SigLIP model (``vlcam.adapters.hf.wrap(model, processor)``).

    `img` is what :func:`vlcam.explain_caption` takes. `method` is "gradcam",
    "guided-gradcam" or "counterfactual" (Eq. 12); `layer` defaults to the model's
    `default_layer`. Maps are on the original image (0 where the processor cropped it away).
    The model comes back as given.
    """
    torch_model = check_conforms(model, TextMatcher, "explain_texts needs a CLIP or SigLIP model")
    method = check_method(method)
    module = resolve_layer(torch_model, model.default_layer if layer is None else layer)
    requested = _texts(texts)
    prepared = prepare_image(model, img)
    scorer = TextScorer(model)
    with preserved(torch_model, eval_mode=True, rng=True):
        inputs = tuple(model.encode_texts(requested))
        targets: list[Target] = [TextLogit(k) for k in range(len(requested))]
        maps, output = explained_maps(model, scorer, prepared.tensor, inputs, targets, module, method, prepared)
    logits = output[0].detach().float()
    return TextsExplanation(
        maps=maps, targets=targets, method=method, layer=layer_name(torch_model, module), scorer=scorer,
        inputs=inputs, images=prepared.tensor, image=prepared.display, texts=requested, logits=logits,
        probs=model.text_probabilities(logits),
    )


def _texts(texts: object) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, Sequence) or not texts:
        raise TypeError(f"texts must be a str or a non-empty list of str, got {texts!r:.80}")
    if len(texts) > MAX_TEXTS:
        raise ValueError(f"{len(texts)} texts given; at most {MAX_TEXTS} are explained at once")
    for t in texts:
        if not isinstance(t, str):
            raise TypeError(f"each text must be a str, got {type(t).__name__}: {t!r:.80}")
    return list(texts)


__all__ = ["TextScorer", "TextsExplanation", "explain_texts"]
