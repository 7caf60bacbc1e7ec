"""vlcam.load(folder) of every generative VLM family: the saved model and processor come back
wrapped in their adapter and explain as the model wrapped in memory does."""

from __future__ import annotations

import pytest
from transformers import AutoProcessor

import test_hf_vlm_idefics3 as idefics3
import test_hf_vlm_llava_next as llava_next
import test_hf_vlm_more as more
import vlcam
from vlcam.adapters.hf import wrap

pytestmark = pytest.mark.usefixtures("one_thread")

BUILDERS = {
    "llava_next": (llava_next.llava_next, "LlavaNextVLM"),
    "llava_onevision": (llava_next.llava_onevision, "LlavaOnevisionVLM"),
    "idefics3": (lambda: idefics3.build("idefics3"), "Idefics3VLM"),
    "smolvlm": (lambda: idefics3.build("smolvlm"), "SmolVLMVLM"),
    "gemma3": (more.gemma3, "Gemma3VLM"),
    "instructblip": (more.instructblip, "InstructBlipVLM"),
    "blip2_t5": (more.blip2_t5, "Blip2T5VLM"),
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_a_saved_folder_loads_into_its_adapter_and_explains_as_in_memory(name, tmp_path):
    build, adapter_name = BUILDERS[name]
    model, processor = build()
    model.eval()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = vlcam.load(tmp_path)
    assert type(loaded).__name__ == adapter_name
    img = llava_next.photo()
    # The processor as transformers loads it back (SmolVLM's comes back with another image backend,
    # whose pixels differ in the last bits): the folder's weights are what this checks.
    reference = vlcam.explain_caption(wrap(model, AutoProcessor.from_pretrained(tmp_path)), img, "a red ball")
    again = vlcam.explain_caption(loaded, img, "a red ball")
    assert again.tokens == reference.tokens
    scale = float(reference.maps.abs().max())
    assert scale > 0
    assert float((again.maps - reference.maps).abs().max()) <= 1e-4 * scale
