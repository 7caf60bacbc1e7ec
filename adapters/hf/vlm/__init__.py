"""Generative vision-language models: per-word maps of their responses, any answer's map."""

from vlcam.adapters.hf.vlm._base import DEFAULT_PROMPT, GenerativeVLM
from vlcam.adapters.hf.vlm.blip2 import Blip2T5VLM, Blip2VLM, InstructBlipT5VLM, InstructBlipVLM
from vlcam.adapters.hf.vlm.gemma3 import Gemma3VLM
from vlcam.adapters.hf.vlm.idefics3 import Idefics3VLM, SmolVLMVLM
from vlcam.adapters.hf.vlm.llava import LlavaVLM
from vlcam.adapters.hf.vlm.llava_next import LlavaNextVLM, LlavaOnevisionVLM
from vlcam.adapters.hf.vlm.paligemma import PaliGemmaVLM
from vlcam.adapters.hf.vlm.qwen2_vl import Qwen2VLM, Qwen25VLM

__all__ = ["DEFAULT_PROMPT", "Blip2T5VLM", "Blip2VLM", "Gemma3VLM", "GenerativeVLM", "Idefics3VLM", "InstructBlipT5VLM",
           "InstructBlipVLM", "LlavaVLM", "PaliGemmaVLM",
           "Qwen2VLM", "Qwen25VLM", "SmolVLMVLM", "LlavaNextVLM", "LlavaOnevisionVLM"]
