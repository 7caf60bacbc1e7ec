"""vlcam: Grad-CAM explanations for image-captioning and VQA models.

The engine (`grad_cam`, `guided_backprop`, `guided_grad_cam`, the targets) is imported
eagerly; everything that needs spaCy, matplotlib or the adapters loads on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from vlcam.gradcam import cam_from_gradients, grad_cam, layer_gradients
from vlcam.guided import guided_backprop, guided_grad_cam
from vlcam.targets import CaptionLogProb, ClassLogit, Target, WordLogProb

__version__ = "0.1.0"

_LAZY = {
    "explain_caption": "vlcam.explain.caption",
    "CaptionExplanation": "vlcam.explain.caption",
    "explain_answer": "vlcam.explain.answer",
    "AnswerExplanation": "vlcam.explain.answer",
    "explain_texts": "vlcam.explain.texts",
    "TextsExplanation": "vlcam.explain.texts",
    "Explanation": "vlcam.explain._common",
    "AnswerLogit": "vlcam.targets",
    "load": "vlcam.loading",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vlcam' has no attribute {name!r}")


__all__ = [
    "grad_cam",
    "layer_gradients",
    "cam_from_gradients",
    "guided_backprop",
    "guided_grad_cam",
    "Target",
    "ClassLogit",
    "CaptionLogProb",
    "WordLogProb",
    *_LAZY,
]
