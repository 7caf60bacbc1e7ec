"""Generative vision-language models: per-word maps of their responses, any answer's map."""

from vlcam.adapters.hf.vlm._base import DEFAULT_PROMPT, GenerativeVLM
from vlcam.adapters.hf.vlm.blip2 import Blip2VLM
from vlcam.adapters.hf.vlm.llava import LlavaVLM
from vlcam.adapters.hf.vlm.paligemma import PaliGemmaVLM
from vlcam.adapters.hf.vlm.qwen2_vl import Qwen2VLM, Qwen25VLM

__all__ = ["DEFAULT_PROMPT", "Blip2VLM", "GenerativeVLM", "LlavaVLM", "PaliGemmaVLM", "Qwen2VLM", "Qwen25VLM"]
