"""Adapters for Hugging Face vision-language models: ``wrap(model, processor)``.

The adapter returned has the captioning or VQA interface, so `vlcam.explain_caption` and
`vlcam.explain_answer` take it unchanged. transformers is imported here, never by
``import vlcam``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from vlcam.adapters.hf._common import HFAdapter
from vlcam.adapters.hf.captioning import (
    BlipCaptioner,
    HFCaptioner,
    VisionEncoderDecoderCaptioner,
)
from vlcam.adapters.hf.contrastive import ClipAdapter, SiglipAdapter
from vlcam.adapters.hf.vlm import Blip2VLM, GenerativeVLM, LlavaVLM, PaliGemmaVLM, Qwen2VLM, Qwen25VLM
from vlcam.adapters.hf.vlm.blip2 import InstructBlipVLM
from vlcam.adapters.hf.vlm.gemma3 import Gemma3VLM
from vlcam.adapters.hf.vlm.idefics3 import Idefics3VLM, SmolVLMVLM
from vlcam.adapters.hf.vlm.llava_next import LlavaNextVLM, LlavaOnevisionVLM
from vlcam.adapters.hf.vqa import BlipVQA, ViltVQA

# transformers class name -> adapter; matched along the model's class hierarchy, so a
# subclass of a supported model is wrapped as its base.
ADAPTERS: dict[str, type[HFAdapter]] = {
    "BlipForConditionalGeneration": BlipCaptioner,
    "BlipForQuestionAnswering": BlipVQA,
    "ViltForQuestionAnswering": ViltVQA,
    "VisionEncoderDecoderModel": VisionEncoderDecoderCaptioner,
    "LlavaForConditionalGeneration": LlavaVLM,
    "LlavaNextForConditionalGeneration": LlavaNextVLM,
    "LlavaOnevisionForConditionalGeneration": LlavaOnevisionVLM,
    "Qwen2VLForConditionalGeneration": Qwen2VLM,
    "Qwen2_5_VLForConditionalGeneration": Qwen25VLM,
    "PaliGemmaForConditionalGeneration": PaliGemmaVLM,
    "Blip2ForConditionalGeneration": Blip2VLM,
    "Gemma3ForConditionalGeneration": Gemma3VLM,
    "InstructBlipForConditionalGeneration": InstructBlipVLM,
    "Idefics3ForConditionalGeneration": Idefics3VLM,
    "SmolVLMForConditionalGeneration": SmolVLMVLM,
    "CLIPModel": ClipAdapter,
    "SiglipModel": SiglipAdapter,
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
    if issubclass(adapter, GenerativeVLM):
        if processor is None:
            raise TypeError(f"{type(model).__name__} needs its processor (AutoProcessor.from_pretrained(...)): "
                            "it writes the prompt and places the image in it")
        return adapter(model, processor)
    tokenizer = tokenizer if tokenizer is not None else getattr(processor, "tokenizer", None)
    image_processor = image_processor if image_processor is not None else getattr(processor, "image_processor", None)
    return adapter(model, tokenizer, image_processor)


def from_pretrained(name_or_path: str, *, device: str | None = None, **kwargs: Any) -> HFAdapter:
    """Return the adapter for a saved or hub model, with its tokenizer and image processor.

    The model class is read from config.json's ``architectures``; the processor is the
    model's (``AutoProcessor``), or its tokenizer and image processor loaded one by one
    when it ships no processor (as VisionEncoderDecoder captioners often do). `kwargs`
    go to every ``from_pretrained`` (``revision=``, ``local_files_only=True``, ...). The
    model comes back in eval mode, on `device` when given.
    """
    import transformers

    config = transformers.AutoConfig.from_pretrained(name_or_path, **kwargs)
    architectures = list(getattr(config, "architectures", None) or [])
    name = next((a for a in architectures if a in ADAPTERS), None)
    if name is None:
        raise ValueError(
            f"{name_or_path!r} is a {', '.join(architectures) or type(config).__name__} model; vlcam adapts "
            f"{', '.join(ADAPTERS)}"
        )
    model = getattr(transformers, name).from_pretrained(name_or_path, **kwargs).eval()
    if device is not None:
        model = model.to(device)
    processor = _processor(transformers, name_or_path, kwargs)
    if issubclass(ADAPTERS[name], GenerativeVLM):
        if processor is None:
            raise ValueError(f"{name_or_path!r} holds no processor (processor_config.json): a {name} needs one")
        return wrap(model, processor)
    tokenizer = getattr(processor, "tokenizer", None) or \
        transformers.AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    image_processor = getattr(processor, "image_processor", None) or \
        transformers.AutoImageProcessor.from_pretrained(name_or_path, **kwargs)
    return wrap(model, tokenizer=tokenizer, image_processor=image_processor)


def _processor(transformers: Any, name_or_path: str, kwargs: dict[str, Any]) -> Any:
    try:
        return transformers.AutoProcessor.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError, TypeError, KeyError):
        # No processor config: the tokenizer and image processor are loaded one by one.
        return None


__all__ = ["ADAPTERS", "BlipCaptioner", "BlipVQA", "HFAdapter", "HFCaptioner", "ViltVQA",
           "VisionEncoderDecoderCaptioner", "from_pretrained", "wrap"]
