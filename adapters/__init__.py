"""Model adapters (installed as ``vlcam.adapters``) and the contract they implement.

The protocols are imported here; the adapters themselves load on first use of their module
(``vlcam.adapters.show_and_tell``, ``vlcam.adapters.hf``, ...).
"""

from vlcam.adapters.protocol import (
    AnswerModel,
    AnswerModelBase,
    Captioner,
    CaptionerBase,
    ImageModel,
    ImageModelBase,
    Responder,
    TextMatcher,
)

__all__ = ["AnswerModel", "AnswerModelBase", "Captioner", "CaptionerBase", "ImageModel", "ImageModelBase", "Responder",
           "TextMatcher"]
