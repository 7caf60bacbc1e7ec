"""Adapters for Hugging Face vision-language models: ``wrap(model, processor)``.

The adapter returned has the captioning or VQA interface, so `vlcam.explain_caption` and
`vlcam.explain_answer` take it unchanged. transformers is imported here, never by
``import vlcam``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from vlcam.adapters.hf._common import HFAdapter
from vlcam.adapters.hf.captioning import BlipCaptioner, HFCaptioner, VisionEncoderDecoderCaptioner
from vlcam.adapters.hf.vqa import BlipVQA, ViltVQA

# transformers class name -> adapter; matched along the model's class hierarchy, so a
# subclass of a supported model is wrapped as its base.
ADAPTERS: dict[str, type[HFAdapter]] = {
    "BlipForConditionalGeneration": BlipCaptioner,
    "BlipForQuestionAnswering": BlipVQA,
    "ViltForQuestionAnswering": ViltVQA,
    "VisionEncoderDecoderModel": VisionEncoderDecoderCaptioner,
}


def wrap(model: nn.Module, processor: Any = None, *, tokenizer: Any = None, image_processor: Any = None) -> HFAdapter:
    """Return the vlcam adapter for a transformers `model` and its `processor`.

    `processor` is the model's processor (e.g. ``BlipProcessor.from_pretrained(...)``);
    for models that ship a separate tokenizer and image processor (VisionEncoderDecoder
    captioners), pass ``tokenizer=`` and ``image_processor=`` instead. The model is used
    as given (its weights, device and dtype); the adapter adds no parameters.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a transformers model (an nn.Module), got {type(model).__name__}")
    adapter = next((ADAPTERS[c.__name__] for c in type(model).__mro__ if c.__name__ in ADAPTERS), None)
    if adapter is None:
        raise TypeError(
            f"no vlcam adapter for {type(model).__name__}; supported: {', '.join(ADAPTERS)}"
        )
    tokenizer = tokenizer if tokenizer is not None else getattr(processor, "tokenizer", None)
    image_processor = image_processor if image_processor is not None else getattr(processor, "image_processor", None)
    return adapter(model, tokenizer, image_processor)


__all__ = ["ADAPTERS", "BlipCaptioner", "BlipVQA", "HFAdapter", "HFCaptioner", "ViltVQA",
           "VisionEncoderDecoderCaptioner", "wrap"]
