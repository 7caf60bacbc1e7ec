"""LLaVA-NeXT and LLaVA-OneVision (any-resolution tiles and a base view) on tiny random models built
here: scores and image tokens against each model's own forward on its processor's inputs, every
word's map from one call against one-word calls and against Grad-CAM computed by hand (a hook,
autograd.grad, the tiles stitched and the base view laid on the canvas here), and the layout of
the maps on a non-square original image that the processor cuts into 2 x 2 tiles."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import hf_vlm_tiny as tiny
import vlcam
from vlcam.adapters.hf import ADAPTERS, wrap
from vlcam.adapters.hf._view import fitted_view
from vlcam.adapters.protocol import AnswerModel, Responder

pytestmark = pytest.mark.usefixtures("one_thread")

RESPONSE = "a red ball, next to the cube."
PROMPT = "Describe the image."
SIDE = tiny.IMAGE  # the tile side: 32 pixels, a 4 x 4 patch grid
GRID = SIDE // tiny.PATCH
SPECIALS = ("<pad>", "<s>", "</s>", "<image>", "<video>", "<|im_start|>", "<|im_end|>")
NEXT_PINPOINTS = [[32, 64], [64, 32], [64, 64]]
# Up to 4 x 4 tiles: past 9 tiles' worth, OneVision shrinks the grid the language model reads.
ONEVISION_PINPOINTS = [[32, 32], [32, 64], [64, 32], [64, 64], [128, 128]]

# The 48 x 60 photo's geometry, worked out here from the processor's rules: of the pinpoints, 64 x 64
# keeps most of the image (scale 64/60: 51 x 64 pixels, more than 32 x 64's 40 x 32 or 64 x 32's 25 x 32)
# with 2 x 2 tiles; the image is resized by 64/60 to ceil(48 * 64/60) = 52 rows x 64 columns and padded
# with (64 - 52) / 2 = 6 black rows above and below.
H, W = 48, 60
CANVAS, ROWS, TOP = 64, 52, 6


def _tokenizer():
    template = tiny.chat_template("<image>")
    return template, tiny.tokenizer(SPECIALS, image="<image>", bos="<s>", eos="<|im_end|>", template=template)


def llava_next(seed: int = 0):
    """LLaVA-NeXT: a CLIP tower (3 blocks, the projector reads block 1), a Llama decoder, tiles of 32."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )

    template, tok = _tokenizer()
    config = LlavaNextConfig(vision_config=CLIPVisionConfig(**tiny._vision(projection_dim=32)),
                             text_config=LlamaConfig(**tiny._llama(tok)), image_grid_pinpoints=NEXT_PINPOINTS,
                             image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
                             vision_feature_select_strategy="default")
    torch.manual_seed(seed)
    model = LlavaNextForConditionalGeneration(config).eval()
    image_processor = LlavaNextImageProcessor(size={"shortest_edge": SIDE}, crop_size={"height": SIDE, "width": SIDE},
                                              image_grid_pinpoints=NEXT_PINPOINTS)
    processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tok, patch_size=tiny.PATCH,
                                   vision_feature_select_strategy="default", chat_template=template,
                                   num_additional_image_tokens=1)
    return model, processor


def llava_onevision(seed: int = 0):
    """LLaVA-OneVision: a SigLIP tower (no class token, all tokens read), a Llama decoder, tiles of 32."""
    from transformers import (
        LlamaConfig,
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
        SiglipVisionConfig,
    )

    template, tok = _tokenizer()
    config = LlavaOnevisionConfig(vision_config=SiglipVisionConfig(**tiny._vision()),
                                  text_config=LlamaConfig(**tiny._llama(tok)), image_grid_pinpoints=ONEVISION_PINPOINTS,
                                  image_token_id=tok.convert_tokens_to_ids("<image>"),
                                  video_token_id=tok.convert_tokens_to_ids("<video>"), vision_feature_layer=-1,
                                  vision_feature_select_strategy="full")
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    image_processor = LlavaOnevisionImageProcessor(size={"height": SIDE, "width": SIDE},
                                                   image_grid_pinpoints=ONEVISION_PINPOINTS)
    video_processor = LlavaOnevisionVideoProcessor(size={"height": SIDE, "width": SIDE})
    processor = LlavaOnevisionProcessor(image_processor=image_processor, tokenizer=tok, video_processor=video_processor,
                                        num_image_tokens=GRID * GRID, vision_feature_select_strategy="full",
                                        chat_template=template)
    return model, processor


BUILDERS = {"llava_next": llava_next, "llava_onevision": llava_onevision}


@pytest.fixture(scope="module", params=list(BUILDERS))
def family(request):
    model, processor = BUILDERS[request.param]()
    return request.param, model, processor


def photo(h: int = H, w: int = W, seed: int = 0) -> Image.Image:
    return Image.fromarray((np.random.RandomState(seed).rand(h, w, 3) * 255).astype("uint8"))


def processor_inputs(processor, img, prompt, response):
    """The model's inputs for `prompt` and `response` as its processor writes them (the reference)."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    eos = processor.tokenizer.eos_token
    text = processor.apply_chat_template(messages, add_generation_prompt=True) + response + eos
    return processor(images=img, text=text, return_tensors="pt")


def own_logprobs(model, enc, last):
    """log p of each of the last `last` tokens under the model's own forward of `enc`."""
    logits = model(**enc).logits[0, -(last + 1):-1]
    return F.log_softmax(logits.float(), -1).gather(-1, enc["input_ids"][0, -last:, None])[:, 0]


def image_token_count(model, enc):
    return int((enc["input_ids"] == model.config.image_token_id).sum())


# --- wrap and the preprocessed tensor ----------------------------------------------------------------

def test_wrap_picks_the_tiled_adapters_and_refuses_an_unsupported_class():
    from transformers import GPT2Config, GPT2LMHeadModel

    from vlcam.adapters.hf.vlm import LlavaNextVLM, LlavaOnevisionVLM

    assert ADAPTERS["LlavaNextForConditionalGeneration"] is LlavaNextVLM
    assert ADAPTERS["LlavaOnevisionForConditionalGeneration"] is LlavaOnevisionVLM
    for build, adapter_class in ((llava_next, LlavaNextVLM), (llava_onevision, LlavaOnevisionVLM)):
        model, processor = build()
        adapter = wrap(model, processor)
        assert type(adapter) is adapter_class
        assert isinstance(adapter, Responder) and isinstance(adapter, AnswerModel)
        with pytest.raises(TypeError, match="processor"):
            wrap(model)
    with pytest.raises(TypeError, match="GPT2LMHeadModel.*LlavaNextForConditionalGeneration"):
        wrap(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=10)))


def test_the_tensor_holds_the_processors_views_and_the_size_and_passes_as_an_image_batch(family):
    _name, model, processor = family
    adapter = wrap(model, processor)
    img = photo()
    x = adapter.preprocess(img)
    assert x.shape == (1, 3, SIDE + 1, SIDE * 5) and x.dtype == torch.float32  # the base view and 2 x 2 tiles
    enc = processor.image_processor(images=img, return_tensors="pt")
    inputs = adapter.vision_inputs(x)
    assert torch.equal(inputs["pixel_values"], enc["pixel_values"])
    assert inputs["image_sizes"].tolist() == enc["image_sizes"].tolist() == [[H, W]]
    torch.testing.assert_close(adapter.preprocess(x[0]), x)
    assert adapter.preprocess([img, photo(seed=1)]).shape == (2, *x.shape[1:])
    # The size survives bfloat16: it is written as base-256 digits.
    assert adapter.vision_inputs(x.to(torch.bfloat16))["image_sizes"].tolist() == [[H, W]]


# --- Scores and image tokens equal the model's own -----------------------------------------------------

def test_word_logprobs_equal_the_models_own_forward_on_its_processors_inputs(family):
    _name, model, processor = family
    adapter = wrap(model, processor)
    img = photo()
    words, (ids, word_of) = adapter.encode_response(RESPONSE, PROMPT)
    assert words == ["a", "red", "ball", "next", "to", "the", "cube"]
    enc = processor_inputs(processor, img, PROMPT, RESPONSE)
    expanded, _ = adapter._expanded(ids, torch.ones_like(ids), adapter.image_tokens(adapter.preprocess(img)))
    assert expanded[0].tolist() == enc["input_ids"][0].tolist()
    ours = adapter.word_logprobs(adapter.preprocess(img), ids, word_of)[0]
    pieces = own_logprobs(model, enc, word_of.shape[0])
    reference = torch.zeros(len(words) + 1).index_add(0, word_of, pieces)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [(48, 60), (30, 90), (90, 30), (20, 20), (128, 128), (1, 300)])
def test_image_tokens_follow_the_image_as_the_processor_and_the_model_count_them(family, size):
    _name, model, processor = family
    adapter = wrap(model, processor)
    img = photo(*size)
    x = adapter.preprocess(img)
    enc = processor(images=img, text=processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]), return_tensors="pt")
    with torch.no_grad():
        features = model.model.get_image_features(**adapter.vision_inputs(x)).pooler_output
    assert len(adapter.image_tokens(x)) == image_token_count(model, enc) == sum(f.shape[0] for f in features)


def test_onevision_counts_the_shrunk_grid_of_a_large_canvas():
    model, processor = llava_onevision()
    adapter = wrap(model, processor)
    # 128 x 128: 4 x 4 tiles, a 16 x 16 grid of 256 patches; over 9 tiles' worth (144) by more than 10%,
    # the model shrinks it by sqrt(256 / 144) to 12 x 12, each row with its newline; the base view's 16 first.
    assert adapter.kept_grid(128, 128) == (12, 12)
    assert len(adapter.image_tokens(adapter.preprocess(photo(128, 128)))) == 16 + 12 * 13


def test_answer_scores_equal_the_models_own_forward_and_k_answers_share_one_pass(family):
    _name, model, processor = family
    adapter = wrap(model, processor)
    img = photo(seed=1)
    question, answers = "What color is the ball?", ["red", "blue", "green ball"]
    e = vlcam.explain_answer(adapter, img, question, answers)
    for k, answer in enumerate(answers):
        enc = processor_inputs(processor, img, question, answer)
        pieces = len(processor.tokenizer(answer, add_special_tokens=False)["input_ids"])
        expected = own_logprobs(model, enc, pieces + 1)[:pieces].sum().exp()
        torch.testing.assert_close(e.probs[k], expected, rtol=1e-4, atol=1e-7)
    one = vlcam.explain_answer(adapter, img, question, answers[2])
    torch.testing.assert_close(one.maps[0], e.maps[2], rtol=1e-5, atol=1e-7)


# --- Maps: one call equals one-word calls and a hand computation ----------------------------------------

def test_every_word_map_from_one_call_equals_one_word_calls(family):
    _name, model, processor = family
    adapter = wrap(model, processor)
    img = photo(seed=2)
    e = vlcam.explain_caption(adapter, img, RESPONSE)
    assert e.maps.shape == (8, H, W) and e.maps.dtype == torch.float32
    assert sum(float(m.amax()) > 0 for m in e.maps) >= 5
    for i in (1, 6):
        one = vlcam.explain_caption(adapter, img, RESPONSE, words=[i])
        scale = float(e.maps[1 + i].abs().max())
        assert float((one.maps[1] - e.maps[1 + i]).abs().max()) <= 1e-5 * scale


def stitched_tiles(patches):
    """The 2 x 2 tiles' patch tokens [4, 4, 4, C] (tile, row, column) on the canvas grid [C, 8, 8]."""
    grid = torch.zeros(patches.shape[-1], 2 * GRID, 2 * GRID, dtype=patches.dtype)
    for t in range(4):
        r, c = divmod(t, 2)  # the processor cuts the canvas row by row
        grid[:, r * GRID:(r + 1) * GRID, c * GRID:(c + 1) * GRID] = patches[t].permute(2, 0, 1)
    return grid


def base_on_canvas_grid(patches):
    """The base view's patch tokens [4, 4, C] on the canvas grid [C, 8, 8]: each canvas pixel of the
    image takes the base patch over it (the image spans canvas rows 6..57, 13 rows a base patch, and all
    64 columns, 16 a patch), padding pixels take nothing, and each grid cell averages its 8 x 8 pixels."""
    pixels = torch.zeros(patches.shape[-1], CANVAS, CANVAS, dtype=patches.dtype)
    for y in range(TOP, TOP + ROWS):
        for x in range(CANVAS):
            pixels[:, y, x] = patches[(y - TOP) // (ROWS // GRID), x // (CANVAS // GRID)]
    return F.avg_pool2d(pixels[None], tiny.PATCH)[0]


def on_the_photo(grid):
    """A map on the canvas grid [8, 8] at each pixel of the 48 x 60 photo: the pixel's centre in the
    canvas (6 rows down, scaled by 52/48 and 64/60), bilinear between grid-cell centres, clamped at the edge."""
    y = (TOP + (torch.arange(H, dtype=torch.float64) + 0.5) * ROWS / H) / tiny.PATCH - 0.5
    x = ((torch.arange(W, dtype=torch.float64) + 0.5) * CANVAS / W) / tiny.PATCH - 0.5
    y, x = y.clamp(0, 2 * GRID - 1), x.clamp(0, 2 * GRID - 1)
    y0, x0 = y.floor().long().clamp(max=2 * GRID - 2), x.floor().long().clamp(max=2 * GRID - 2)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    g = grid.double()
    top = g[y0][:, x0] * (1 - fx) + g[y0][:, x0 + 1] * fx
    bottom = g[y0 + 1][:, x0] * (1 - fx) + g[y0 + 1][:, x0 + 1] * fx
    return (top * (1 - fy) + bottom * fy).float()


def test_word_maps_equal_grad_cam_by_hand_with_a_hook_and_autograd_grad(family):
    _name, model, processor = family
    adapter = wrap(model, processor)
    img = photo(seed=3)
    e = vlcam.explain_caption(adapter, img, RESPONSE, prompt=PROMPT)
    enc = processor_inputs(processor, img, PROMPT, RESPONSE)
    assert enc["pixel_values"].shape == (1, 5, 3, SIDE, SIDE)
    layer = model.get_submodule(adapter.default_layer.removeprefix("model."))
    store = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o[0] if isinstance(o, tuple) else o))
    try:
        pieces = own_logprobs(model, enc, e.inputs[1].shape[0])
    finally:
        handle.remove()
    word_of = e.inputs[1]
    activations = store["a"].detach()[:, -GRID * GRID:].reshape(5, GRID, GRID, -1)  # views: the base, 4 tiles
    for i in (0, 2, 6):
        (grad,) = torch.autograd.grad(pieces[word_of == i].sum(), store["a"], retain_graph=True)
        grad = grad[:, -GRID * GRID:].reshape(5, GRID, GRID, -1)
        # Eq. 1 per view, over its own positions; Eq. 2 sums both views on the canvas grid, then the ReLU.
        base_alpha, tile_alpha = grad[0].mean(dim=(0, 1)), grad[1:].mean(dim=(0, 1, 2))
        cam = torch.relu(torch.einsum("c,cij->ij", base_alpha, base_on_canvas_grid(activations[0]))
                         + torch.einsum("c,cij->ij", tile_alpha, stitched_tiles(activations[1:])))
        expected = on_the_photo(cam)
        torch.testing.assert_close(e.maps[1 + i], expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))


# --- Layout on the original image ---------------------------------------------------------------------------

def test_the_canvas_is_where_the_processor_puts_the_image_on_a_coordinate_image(family):
    _name, model, processor = family
    adapter = wrap(model, processor)
    for h, w in [(48, 60), (30, 90), (90, 30), (20, 20), (64, 33), (100, 41)]:
        canvas = adapter.canvas(h, w)
        gh, gw = canvas.height // SIDE, canvas.width // SIDE

        def views(pil):
            return torch.as_tensor(processor.image_processor(images=pil, return_tensors="pt")["pixel_values"][0])

        def stitched(pil, gh=gh, gw=gw):
            tiles = views(pil)[1:]
            return tiles.reshape(gh, gw, 3, SIDE, SIDE).permute(2, 0, 3, 1, 4).reshape(1, 3, gh * SIDE, gw * SIDE)

        fit = fitted_view(stitched, (h, w), adapter.mean, adapter.std)
        assert (fit.height, fit.width) == (canvas.height, canvas.width)
        for scale, offset, extent, start, side in ((fit.scale_y, fit.offset_y, canvas.rows, canvas.top, h),
                                                   (fit.scale_x, fit.offset_x, canvas.cols, canvas.left, w)):
            assert scale == pytest.approx(side / extent, rel=0.03)
            assert -offset / scale == pytest.approx(start, abs=0.4)  # where the image starts in the canvas
        base = fitted_view(lambda pil: views(pil)[:1], (h, w), adapter.mean, adapter.std)
        assert base.scale_y == pytest.approx(h / SIDE, rel=0.03) and base.scale_x == pytest.approx(w / SIDE, rel=0.03)
        assert abs(base.offset_y) < 0.4 * base.scale_y and abs(base.offset_x) < 0.4 * base.scale_x


def square_difference(adapter, img, blank):
    """|embedding(img) - embedding(blank)| of every view's tokens, [5, T, C]: non-zero only where the
    two images differ."""
    layer = adapter.model.model.vision_tower.embeddings
    outs = []
    handle = layer.register_forward_hook(lambda m, i, o: outs.append(o))
    try:
        with torch.no_grad():
            for image in (img, blank):
                adapter.model.get_image_features(**adapter.vision_inputs(adapter.preprocess(image)))
    finally:
        handle.remove()
    return (outs[0] - outs[1]).abs()


@pytest.mark.parametrize("tile", [0, 1, 2, 3])
def test_a_square_in_one_tile_lights_that_tile_and_its_place_in_the_original_image(family, tile):
    _name, model, processor = family
    adapter = wrap(model, processor)
    # Tile (r, c) of the 64 x 64 canvas holds photo rows 24r..24r+24 ((32 - 6) * 48/52 = 24) and columns
    # 30c..30c+30 (32 * 60/64): a 10 x 12 square well inside it.
    r, c = divmod(tile, 2)
    top, left = 24 * r + 7, 30 * c + 9
    pixels = np.zeros((H, W, 3), dtype=np.uint8)
    pixels[top:top + 10, left:left + 12] = 255
    img, blank = Image.fromarray(pixels), Image.fromarray(np.zeros_like(pixels))
    difference = square_difference(adapter, img, blank)
    changed = [v for v in range(5) if float(difference[v].sum()) > 1e-4 * float(difference.sum())]
    assert changed == [0, 1 + tile]  # the base view and that tile
    grid = adapter.gradcam_reshape(difference, adapter.preprocess(img))
    channels = difference.shape[-1]
    assert grid.shape == (1, 2 * channels, 2 * GRID, 2 * GRID)
    for view, reach in ((slice(0, channels), 12), (slice(channels, None), 4)):  # the base view, the tiles
        m = adapter.image_maps(grid[:, view].sum(1), (H, W))[0]
        assert m.shape == (H, W)
        row, col = divmod(int(m.argmax()), W)
        assert top - reach <= row < top + 10 + reach and left - reach <= col < left + 12 + reach, (row, col)
        # The other tiles' places are low (the base view's coarse patches reach a little into them).
        far = torch.ones(H, W, dtype=torch.bool)
        far[24 * r:24 * r + 24, 30 * c:30 * c + 30] = False
        assert float(m[far].max()) < 0.5 * float(m.max())


# --- Generation, dtypes, the model left as it was ---------------------------------------------------------

def test_respond_is_the_models_own_greedy_generation(family):
    _name, model, processor = family
    adapter = wrap(model, processor)
    img = photo(seed=4)
    enc = processor_inputs(processor, img, PROMPT, "")
    cut = enc["input_ids"].shape[1] - 1  # generation starts after the prompt, without the end token
    enc = {k: (v[:, :cut] if k in ("input_ids", "attention_mask") else v) for k, v in enc.items()}
    generated = model.generate(**enc, max_new_tokens=6, do_sample=False, eos_token_id=adapter.end_id,
                               pad_token_id=adapter.pad_id)
    expected = processor.tokenizer.decode(generated[0, cut:], skip_special_tokens=True).strip()
    assert adapter.respond(img, PROMPT, max_new_tokens=6) == [expected]


def test_bf16_models_give_float32_maps_close_to_float32_ones():
    model, processor = llava_next()
    img = photo(seed=5)
    reference = vlcam.explain_caption(wrap(model, processor), img, RESPONSE)
    half = vlcam.explain_caption(wrap(model.to(torch.bfloat16), processor), img, RESPONSE)
    assert half.maps.dtype == torch.float32 and next(model.parameters()).dtype == torch.bfloat16
    for a, b in zip(reference.maps, half.maps):
        assert F.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.9


def test_the_model_comes_back_as_it_was(family):
    _name, model, processor = family
    adapter = wrap(model, processor)
    tiny.assert_explaining_leaves_it_unchanged(model, adapter, photo(), RESPONSE)


def test_the_default_layer_is_the_block_the_projector_reads():
    model, processor = llava_next()
    adapter = wrap(model, processor)
    assert adapter.default_layer == "model.model.vision_tower.encoder.layers.1"  # vision_feature_layer -2
    with pytest.warns(RuntimeWarning, match="all-zero gradients"):
        e = vlcam.explain_caption(adapter, photo(), RESPONSE, layer="model.model.vision_tower.encoder.layers.2")
    assert float(e.maps.abs().max()) == 0
    model, processor = llava_onevision()
    assert wrap(model, processor).default_layer == "model.model.vision_tower.encoder.layers.2"  # -1


# --- Bad input ------------------------------------------------------------------------------------------------

def test_bad_prompts_responses_images_and_tensors_are_value_errors_naming_them(family):
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
    with pytest.raises(ValueError, match="1 x 70000 image"):
        adapter.preprocess(Image.new("RGB", (70000, 1)))
    with pytest.raises(ValueError, match=r"its preprocess makes.*got shape \(1, 3, 32, 32\)"):
        adapter.respond(torch.zeros(1, 3, SIDE, SIDE))
    corrupted = adapter.preprocess(photo()).clone()
    corrupted[0, 1, SIDE, 7] = 0.5
    with pytest.raises(ValueError, match="holds no size"):
        adapter.word_logprobs(corrupted, *adapter.encode_response(RESPONSE)[1])
    with pytest.raises(ValueError, match=r"guided-gradcam.*not supported for Llava"):
        vlcam.explain_caption(adapter, photo(), RESPONSE, method="guided-gradcam")


def test_a_processor_that_does_not_match_the_model_is_refused():
    model, processor = llava_next()
    processor.image_processor.image_grid_pinpoints = [[32, 64], [64, 32]]
    with pytest.raises(ValueError, match=r"image_grid_pinpoints \[\(32, 64\), \(64, 32\)\] are not the model's"):
        wrap(model, processor)


def test_a_batch_of_two_images_scores_and_lays_out_each_as_alone(family):
    _name, model, processor = family
    adapter = wrap(model, processor)
    batch = adapter.preprocess([photo(seed=8), photo(seed=9)])
    _words, inputs = adapter.encode_response(RESPONSE)
    layer = adapter.get_submodule(adapter.default_layer)
    outs = []
    handle = layer.register_forward_hook(lambda m, i, o: outs.append(o[0] if isinstance(o, tuple) else o))
    try:
        with torch.no_grad():
            scores = [adapter.word_logprobs(x, *inputs) for x in (batch, batch[:1], batch[1:])]
    finally:
        handle.remove()
    torch.testing.assert_close(scores[0], torch.cat(scores[1:]), rtol=1e-5, atol=1e-5)
    grids = [adapter.gradcam_reshape(a, x) for a, x in zip(outs, (batch, batch[:1], batch[1:]))]
    torch.testing.assert_close(grids[0], torch.cat(grids[1:]), rtol=1e-5, atol=1e-6)


def test_images_with_different_numbers_of_image_tokens_do_not_share_a_batch():
    model, processor = llava_next()
    adapter = wrap(model, processor)
    # Both on a 64 x 64 canvas (5 views), but the 48 x 60 image keeps 6 of 8 grid rows, the 60 x 60 all 8.
    batch = torch.cat([adapter.preprocess(photo(48, 60)), adapter.preprocess(photo(60, 60))])
    with pytest.raises(ValueError, match=r"take \[.*\] image tokens"):
        adapter.image_tokens(batch)
    with pytest.raises(ValueError, match="different numbers of tiles"):
        adapter.preprocess([photo(48, 60), photo(30, 90)])  # 5 and 3 views


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_in_bf16_maps_match_the_cpu_float32_maps():
    model, processor = llava_next()
    img = photo(seed=7)
    reference = vlcam.explain_caption(wrap(model, processor), img, RESPONSE)
    e = vlcam.explain_caption(wrap(model.to("cuda", torch.bfloat16), processor), img, RESPONSE)
    assert e.maps.dtype == torch.float32
    for a, b in zip(reference.maps, e.maps.cpu()):
        assert F.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.9
