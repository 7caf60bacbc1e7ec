"""Generative VLMs (LLaVA, Qwen2-VL, Qwen2.5-VL, PaliGemma, BLIP-2) and CLIP/SigLIP on tiny random
models built here: scores against each model's own forward on its processor's inputs, every
word's map from one call against one-word calls and against Grad-CAM computed by hand with a
hook and autograd.grad, and the layout of the maps on the original image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import hf_vlm_tiny as tiny
import vlcam
from vlcam.adapters.hf import ADAPTERS, wrap
from vlcam.adapters.protocol import AnswerModel, Responder, TextMatcher

RESPONSE = "a red ball, next to the cube."
PROMPT = "Describe the image."
FAMILIES = list(tiny.GENERATIVE)


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    model, processor = tiny.GENERATIVE[request.param]()
    return request.param, model, processor


def photo(h=40, w=60, seed=0) -> Image.Image:
    return Image.fromarray((np.random.RandomState(seed).rand(h, w, 3) * 255).astype("uint8"))


def processor_inputs(name, processor, img, prompt, response):
    """The model's inputs for `prompt` and `response` as its processor writes them (the reference)."""
    eos = processor.tokenizer.eos_token
    if name == "paligemma":
        enc = processor(images=img, text="<image>" + prompt, suffix=response, return_tensors="pt")
        enc.pop("labels")
        return enc
    if name == "blip2":
        return processor(images=img, text=f"Question: {prompt} Answer:{response}{eos}", return_tensors="pt")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True) + response + eos
    return processor(images=img, text=text, return_tensors="pt")


def own_logprobs(model, enc, last):
    """log p of each of the last `last` tokens under the model's own forward of `enc`."""
    logits = model(**enc).logits[0, -(last + 1):-1]
    return F.log_softmax(logits.float(), -1).gather(-1, enc["input_ids"][0, -last:, None])[:, 0]


# --- wrap ------------------------------------------------------------------------------------

def test_wrap_picks_each_family_and_refuses_others_listing_what_is_supported(family):
    _name, model, processor = family
    adapter = wrap(model, processor)
    assert isinstance(adapter, Responder) and isinstance(adapter, AnswerModel)
    assert adapter.open_vocabulary
    with pytest.raises(TypeError, match="processor"):
        wrap(model)


def test_an_unsupported_class_is_a_type_error_listing_the_supported_ones():
    from transformers import GPT2Config, GPT2LMHeadModel

    with pytest.raises(TypeError, match="GPT2LMHeadModel.*LlavaForConditionalGeneration.*Qwen2VLForConditional"):
        wrap(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=10)))


# --- Scores equal the model's own --------------------------------------------------------------

def test_word_logprobs_equal_the_models_own_forward_on_its_processors_inputs(family):
    name, model, processor = family
    adapter = wrap(model, processor)
    img = photo()
    words, (ids, word_of) = adapter.encode_response(RESPONSE, PROMPT)
    assert words == ["a", "red", "ball", "next", "to", "the", "cube"]
    enc = processor_inputs(name, processor, img, PROMPT, RESPONSE)
    expanded, _ = adapter._expanded(ids, torch.ones_like(ids), adapter.image_tokens(adapter.preprocess(img)))
    assert expanded[0].tolist() == enc["input_ids"][0].tolist()
    ours = adapter.word_logprobs(adapter.preprocess(img), ids, word_of)[0]
    pieces = own_logprobs(model, enc, word_of.shape[0])
    reference = torch.zeros(len(words) + 1).index_add(0, word_of, pieces)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    # The punctuation went to the last column, with the end of the turn: nothing is lost.
    torch.testing.assert_close(ours.sum(), pieces.sum(), rtol=1e-5, atol=1e-5)


def test_answer_scores_equal_the_models_own_forward_and_k_answers_share_one_pass(family):
    name, model, processor = family
    adapter = wrap(model, processor)
    img = photo(seed=1)
    question, answers = "What color is the ball?", ["red", "blue", "green ball"]
    e = vlcam.explain_answer(adapter, img, question, answers)
    for k, answer in enumerate(answers):
        enc = processor_inputs(name, processor, img, question, answer)
        pieces = len(processor.tokenizer(answer, add_special_tokens=False)["input_ids"])
        expected = own_logprobs(model, enc, pieces + 1)[:pieces].sum().exp()
        torch.testing.assert_close(e.probs[k], expected, rtol=1e-4, atol=1e-7)
        one = vlcam.explain_answer(adapter, img, question, answer)
        torch.testing.assert_close(one.maps[0], e.maps[k], rtol=1e-5, atol=1e-7)


# --- Maps: one call equals one-word calls and a hand computation ------------------------------------

def test_every_word_map_from_one_call_equals_one_word_calls(family):
    _name, model, processor = family
    adapter = wrap(model, processor)
    img = photo(seed=2)
    e = vlcam.explain_caption(adapter, img, RESPONSE)
    assert e.tokens == ["a", "red", "ball", "next", "to", "the", "cube"]
    assert e.maps.shape == (8, 40, 60) and e.maps.dtype == torch.float32
    # (A random model's map can be all zero after the ReLU; most are not.)
    assert sum(float(m.amax()) > 0 for m in e.maps) >= 5
    for i in (1, 6):
        one = vlcam.explain_caption(adapter, img, RESPONSE, words=[i])
        scale = float(e.maps[1 + i].abs().max())
        assert float((one.maps[1] - e.maps[1 + i]).abs().max()) <= 1e-5 * scale


def _view_grid(name, model, tokens, view):
    """A layer's tokens on the view's patch grid [C, h, w], laid out here, independently."""
    if name.startswith("qwen"):
        p = model.config.vision_config.patch_size
        gh, gw = view.shape[-2] // p, view.shape[-1] // p
        units = tokens.reshape(gh * gw // 4, 4, -1)
        if name == "qwen2_5_vl":
            from transformers.vision_utils import get_vision_window_index

            visual = model.model.visual
            order, _ = get_vision_window_index(torch.tensor([[1, gh, gw]]), spatial_merge_size=2,
                                               window_size=visual.window_size, patch_size=p)
            restored = torch.empty_like(units)
            restored[order] = units
            units = restored
        # merge unit (row r, col c) holds patches (2r + i, 2c + j) in the order (i, j)
        grid = torch.zeros(tokens.shape[-1], gh, gw)
        for u in range(units.shape[0]):
            r, c = divmod(u, gw // 2)
            for k in range(4):
                i, j = divmod(k, 2)
                grid[:, 2 * r + i, 2 * c + j] = units[u, k]
        return grid
    h, w = view.shape[-2] // tiny.PATCH, view.shape[-1] // tiny.PATCH
    return tokens[0, -h * w:].T.reshape(-1, h, w)


def test_word_maps_equal_grad_cam_by_hand_with_a_hook_and_autograd_grad(family):
    name, model, processor = family
    adapter = wrap(model, processor)
    img = photo(seed=3)
    view = adapter.preprocess(img)
    # A preprocessed tensor comes back on the view itself: compare there.
    e = vlcam.explain_caption(adapter, view, RESPONSE, prompt=PROMPT)
    enc = processor_inputs(name, processor, img, PROMPT, RESPONSE)
    layer = adapter.model.get_submodule(adapter.default_layer.removeprefix("model."))
    store = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o[0] if isinstance(o, tuple) else o))
    try:
        pieces = own_logprobs(model, enc, e.inputs[1].shape[0])
    finally:
        handle.remove()
    word_of = e.inputs[1]
    for i in (0, 2, 6):
        (grad,) = torch.autograd.grad(pieces[word_of == i].sum(), store["a"], retain_graph=True)
        a, g = _view_grid(name, model, store["a"].detach(), view), _view_grid(name, model, grad, view)
        cam = torch.relu((g.mean(dim=(1, 2), keepdim=True) * a).sum(0))
        cam = F.interpolate(cam[None, None], size=tuple(view.shape[-2:]), mode="bilinear", align_corners=False)[0, 0]
        torch.testing.assert_close(e.maps[1 + i], cam, rtol=1e-4, atol=1e-6 * float(cam.abs().max()))


# --- Layout on the original image --------------------------------------------------------------

def _embedding_layer(name):
    return {"llava": "model.model.vision_tower.embeddings", "paligemma": "model.model.vision_tower.embeddings",
            "blip2": "model.vision_model.embeddings", "qwen2_vl": "model.model.visual.patch_embed",
            # Qwen2.5-VL reorders tokens into windows after the patch embedding: its blocks are the layers.
            "qwen2_5_vl": "model.model.visual.blocks.0"}[name]


def square_map(adapter, layer_name, img, blank):
    """|embedding(img) - embedding(blank)| summed over channels, laid out by the adapter and put
    on the original image: non-zero only where the two images differ."""
    layer = adapter.get_submodule(layer_name)
    outs = []
    handle = layer.register_forward_hook(lambda m, i, o: outs.append(o[0] if isinstance(o, tuple) else o))
    try:
        with torch.no_grad():
            for image in (img, blank):
                view = adapter.preprocess(image)
                if isinstance(adapter, TextMatcher):
                    adapter.model.get_image_features(pixel_values=view)
                else:
                    adapter.model.get_image_features(**adapter.vision_inputs(view))
    finally:
        handle.remove()
    view = adapter.preprocess(img)
    grid = adapter.gradcam_reshape((outs[0] - outs[1]).abs(), view).sum(1)  # [1, h, w]
    return adapter.image_maps(grid, (img.height, img.width))[0]


@pytest.mark.parametrize("where", ["left", "right"])
def test_maps_are_laid_out_where_the_image_is(family, where):
    name, model, processor = family
    adapter = wrap(model, processor)
    h, w = 48, 64
    pixels = np.zeros((h, w, 3), dtype=np.uint8)
    # LLaVA's CLIP processor keeps the central 48 x 48: both squares lie inside it.
    top, left = (8, 10) if where == "left" else (28, 40)
    pixels[top:top + 12, left:left + 14] = 255
    m = square_map(adapter, _embedding_layer(name), Image.fromarray(pixels), Image.fromarray(np.zeros_like(pixels)))
    assert m.shape == (h, w)
    row, col = divmod(int(m.argmax()), w)
    assert top - 4 <= row < top + 16 and left - 4 <= col < left + 18, (row, col)
    # Far from the square, the map is low (bicubic resampling rings into the next patches).
    far = torch.ones(h, w, dtype=torch.bool)
    far[max(top - 12, 0):top + 24, max(left - 12, 0):left + 26] = False
    assert float(m[far].max()) < 0.35 * float(m.max())


def test_llava_maps_are_zero_where_the_processor_cropped_and_follow_its_padding():
    model, processor = tiny.llava()
    adapter = wrap(model, processor)
    e = vlcam.explain_caption(adapter, photo(40, 80), RESPONSE)
    # Resized to 32 x 64, centre-cropped to 32 x 32: columns 0-19 and 60-79 of the original are unseen.
    assert float(e.maps[:, :, :19].abs().max()) == 0 and float(e.maps[:, :, 61:].abs().max()) == 0
    assert float(e.maps[:, :, 22:58].amax()) > 0
    model, processor = tiny.llava(pad=True)
    adapter = wrap(model, processor)
    pixels = np.zeros((30, 60, 3), dtype=np.uint8)
    pixels[20:28, 44:56] = 255  # bottom right
    m = square_map(adapter, "model.model.vision_tower.embeddings", Image.fromarray(pixels),
                   Image.fromarray(np.zeros_like(pixels)))
    row, col = divmod(int(m.argmax()), 60)
    assert 16 <= row < 30 and 40 <= col < 60, (row, col)


def test_llava_default_layer_is_the_one_that_feeds_the_projector():
    model, processor = tiny.llava(feature_layer=-2)
    assert wrap(model, processor).default_layer == "model.model.vision_tower.encoder.layers.1"
    model, processor = tiny.llava(feature_layer=-1, strategy="full")
    adapter = wrap(model, processor)
    assert adapter.default_layer == "model.model.vision_tower.encoder.layers.2"
    e = vlcam.explain_caption(adapter, photo(), RESPONSE)
    assert float(e.maps.amax()) > 0
    # The block above the feature layer gets no gradient: its maps are all zero (with a warning).
    model, processor = tiny.llava(feature_layer=-2)
    with pytest.warns(RuntimeWarning, match="all-zero gradients"):
        e = vlcam.explain_caption(wrap(model, processor), photo(), RESPONSE,
                                  layer="model.model.vision_tower.encoder.layers.2")
    assert float(e.maps.abs().max()) == 0


def test_qwen_dynamic_resolution_gives_token_counts_and_views_from_the_image():
    model, processor = tiny.qwen2_vl(max_pixels=64 * 64)
    adapter = wrap(model, processor)
    wide, tall = adapter.preprocess(photo(30, 90)), adapter.preprocess(photo(90, 30))
    assert wide.shape[-1] > wide.shape[-2] and tall.shape[-2] > tall.shape[-1]
    for img in (photo(30, 90), photo(90, 30)):
        enc = processor(images=img, text=processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]), return_tensors="pt")
        view = adapter.preprocess(img)
        torch.testing.assert_close(adapter.vision_inputs(view)["pixel_values"], enc["pixel_values"])
        assert len(adapter.image_tokens(view)) == int((enc["input_ids"] == model.config.image_token_id).sum())


# --- Generation, dtypes, the model left as it was ---------------------------------------------------

def test_respond_is_the_models_own_greedy_generation(family):
    name, model, processor = family
    adapter = wrap(model, processor)
    img = photo(seed=4)
    enc = processor_inputs(name, processor, img, PROMPT, "")
    # Drop the (empty) response's end token: generation starts after the prompt.
    cut = enc["input_ids"].shape[1] - 1
    enc = {k: (v[:, :cut] if k in ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids") else v)
           for k, v in enc.items()}
    generated = model.generate(**enc, max_new_tokens=6, do_sample=False, eos_token_id=adapter.end_id,
                               pad_token_id=adapter.pad_id)
    expected = processor.tokenizer.decode(generated[0, cut:], skip_special_tokens=True).strip()
    prompt = torch.tensor([adapter.encode_prompt(PROMPT)])
    assert adapter._generated(adapter.preprocess(img), prompt, 6, 1) == [expected]


def test_caption_none_explains_the_models_own_response(monkeypatch):
    model, processor = tiny.llava()
    adapter = wrap(model, processor)
    calls = []

    def respond(images, prompt=None, *, beam_size=1):
        calls.append(prompt)
        return ["a blue cube"]

    monkeypatch.setattr(adapter, "respond", respond)
    e = vlcam.explain_caption(adapter, photo(), prompt="What is it?")
    assert e.caption == "a blue cube" and e.tokens == ["a", "blue", "cube"] and calls == ["What is it?"]
    expected = vlcam.explain_caption(adapter, photo(), "a blue cube", prompt="What is it?")
    torch.testing.assert_close(e.maps, expected.maps)
    monkeypatch.setattr(adapter, "respond", lambda images, prompt=None, *, beam_size=1: ["..."])
    with pytest.raises(ValueError, match="no words"):
        vlcam.explain_caption(adapter, photo())


def test_bf16_models_give_float32_maps_close_to_float32_ones():
    model, processor = tiny.llava()
    img = photo(seed=5)
    reference = vlcam.explain_caption(wrap(model, processor), img, RESPONSE)
    half = vlcam.explain_caption(wrap(model.to(torch.bfloat16), processor), img, RESPONSE)
    assert half.maps.dtype == torch.float32
    assert next(model.parameters()).dtype == torch.bfloat16
    for a, b in zip(reference.maps, half.maps):
        assert F.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.9


def test_the_model_comes_back_as_it_was(family):
    _name, model, processor = family
    adapter = wrap(model, processor)
    tiny.assert_explaining_leaves_it_unchanged(model, adapter, photo(), RESPONSE)


# --- Bad input --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["llava", "paligemma", "blip2"])
def test_a_preprocessed_tensor_of_another_size_than_the_tower_reads_is_a_value_error(name):
    model, processor = tiny.GENERATIVE[name]()
    adapter = wrap(model, processor)
    side = adapter.image_size
    wrong = torch.zeros(1, 3, side + adapter.patch, side)
    shape = rf"shape \(1, 3, {side + adapter.patch}, {side}\)"
    with pytest.raises(ValueError, match=rf"reads images \[B, 3, \d+, \d+\].*{shape}"):
        vlcam.explain_caption(adapter, wrong, RESPONSE)


def test_bad_prompts_responses_and_images_are_value_errors_naming_them(family):
    _name, model, processor = family
    adapter = wrap(model, processor)
    with pytest.raises(ValueError, match="prompt ''"):
        vlcam.explain_caption(adapter, photo(), RESPONSE, prompt="")
    with pytest.raises(ValueError, match="no words"):
        vlcam.explain_caption(adapter, photo(), " ... !")
    with pytest.raises(ValueError, match=r"at most 256"):
        adapter.encode_response("red " * 300)
    with pytest.raises(ValueError, match="question ''"):
        vlcam.explain_answer(adapter, photo(), "", "red")
    with pytest.raises(TypeError, match="prompt must be a str"):
        vlcam.explain_caption(adapter, photo(), RESPONSE, prompt=3)


def test_prompt_is_refused_for_a_captioner_without_prompts():
    from hf_tiny import vit_gpt2

    model, tokenizer, image_processor = vit_gpt2()
    with pytest.raises(TypeError, match="prompt= is for generative"):
        vlcam.explain_caption(wrap(model, tokenizer=tokenizer, image_processor=image_processor), photo(),
                              "a dog", prompt="Describe")


def test_an_image_the_processor_refuses_is_a_value_error_naming_its_size():
    model, processor = tiny.qwen2_vl()
    # Qwen2-VL's resize refuses an aspect ratio above 200.
    with pytest.raises(ValueError, match="refuses the 1 x 300 image.*aspect ratio"):
        vlcam.explain_caption(wrap(model, processor), photo(1, 300), RESPONSE)


# --- CLIP / SigLIP ----------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=list(tiny.CONTRASTIVE))
def contrastive(request):
    model, processor = tiny.CONTRASTIVE[request.param]()
    return request.param, model, processor


TEXTS = ["a red ball", "a blue cube on the grass", "two cats"]


def test_text_logits_equal_the_models_and_k_texts_share_one_pass(contrastive):
    name, model, processor = contrastive
    adapter = wrap(model, processor)
    assert isinstance(adapter, TextMatcher)
    img = photo(seed=6)
    e = vlcam.explain_texts(adapter, img, TEXTS)
    enc = processor(images=img, text=TEXTS, return_tensors="pt", padding="max_length", max_length=16)
    if name == "siglip":
        enc.pop("attention_mask", None)  # SigLIP reads padded texts without a mask, as its tokenizer gives them
    torch.testing.assert_close(e.logits, model(**enc).logits_per_image[0].detach(), rtol=1e-5, atol=1e-5)
    probs = torch.softmax(e.logits, 0) if name == "clip" else torch.sigmoid(e.logits)
    torch.testing.assert_close(e.probs, probs)
    assert all(float(m.amax()) > 0 for m in e.maps)
    for k in range(len(TEXTS)):
        one = vlcam.explain_texts(adapter, img, TEXTS[k])
        assert float((one.maps[0] - e.maps[k]).abs().max()) <= 1e-5 * float(e.maps[k].abs().max())


def test_text_maps_are_laid_out_where_the_image_is(contrastive):
    _name, model, processor = contrastive
    adapter = wrap(model, processor)
    pixels = np.zeros((48, 64, 3), dtype=np.uint8)
    pixels[30:42, 40:54] = 255
    m = square_map(adapter, "model.vision_model.embeddings", Image.fromarray(pixels),
                   Image.fromarray(np.zeros_like(pixels)))
    row, col = divmod(int(m.argmax()), 64)
    assert 26 <= row < 46 and 36 <= col < 58, (row, col)


def test_clip_default_layer_is_the_block_below_the_class_token_readout():
    model, processor = tiny.clip()
    adapter = wrap(model, processor)
    assert adapter.default_layer == "model.vision_model.encoder.layers.1"
    with pytest.warns(RuntimeWarning, match="all-zero gradients"):
        e = vlcam.explain_texts(adapter, photo(), TEXTS, layer="model.vision_model.encoder.layers.2")
    assert float(e.maps.abs().max()) == 0
    with pytest.raises(ValueError, match="text ''"):
        vlcam.explain_texts(adapter, photo(), [""])
    with pytest.raises(TypeError, match="explain_texts needs"):
        vlcam.explain_texts(wrap(*tiny.llava()), photo(), TEXTS)


def test_every_adapter_class_is_registered():
    for name in ("LlavaForConditionalGeneration", "Qwen2VLForConditionalGeneration",
                 "Qwen2_5_VLForConditionalGeneration", "PaliGemmaForConditionalGeneration",
                 "Blip2ForConditionalGeneration", "CLIPModel", "SiglipModel"):
        assert name in ADAPTERS


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["llava", "qwen2_vl"])
def test_on_cuda_in_bf16_maps_match_the_cpu_float32_maps(name):
    model, processor = tiny.GENERATIVE[name]()
    img = photo(seed=7)
    reference = vlcam.explain_caption(wrap(model, processor), img, RESPONSE)
    adapter = wrap(model.to("cuda", torch.bfloat16), processor)
    e = vlcam.explain_caption(adapter, img, RESPONSE)
    assert e.maps.dtype == torch.float32
    for a, b in zip(reference.maps, e.maps.cpu()):
        assert F.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.9
