"""Idefics3 and SmolVLM on tiny random models built here: image tiles plus a downscaled global view.

The processor resizes the longest edge to 48 px and cuts 16 px tiles (4 x 4 patches of 4 px,
pixel-shuffled 2 x 2 into 4 image tokens per frame): a 40 x 60 image becomes a 32 x 48 view of
2 x 3 tiles and a global view. Checked against each model's own forward on its processor's
inputs: the ids, the frames, the scores, Grad-CAM computed by hand (the tiles stitched and the
global view resampled here, independently), the layout on the original image, generation.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import hf_vlm_tiny as tiny
import vlcam
from vlcam.adapters.hf import ADAPTERS, wrap
from vlcam.adapters.hf._view import fitted_view, maps_in_original
from vlcam.adapters.hf.vlm import Idefics3VLM, SmolVLMVLM
from vlcam.adapters.protocol import AnswerModel, Responder

RESPONSE = "a red ball, next to the cube."
PROMPT = "Describe the image."
TILE, PATCH, LONGEST = 16, 4, 48
SIDE = TILE // PATCH  # patches per tile side
SPECIALS = ("<pad>", "<s>", "<end_of_utterance>", "<image>", "<fake_token_around_image>", "<global-img>",
            *(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)))
# SmolVLM's template: the image follows "User:" directly.
TEMPLATE = ("<s>{% for m in messages %}{{ m['role'] | capitalize }}:"
            "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}"
            "{% endfor %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}")


@functools.cache
def _bpe() -> str:
    """A byte-level BPE (as JSON) that merges "\\n\\n", as real ones do, so the processor's newlines
    between the last tile row and the global view tokenise as one piece. Trained once."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=list(SPECIALS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([*tiny.TEXT, "User:\n\nAssistant:\n\n"] * 3, trainer)
    return bpe.to_str()


def _tokenizer():
    """A fresh fast tokenizer on :func:`_bpe`, with SmolVLM's chat template (each processor gets its own)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_bpe()), bos_token="<s>",
                                   eos_token="<end_of_utterance>", pad_token="<pad>", chat_template=TEMPLATE,
                                   extra_special_tokens={"image_token": "<image>"})


def build(family: str = "idefics3", *, split: bool = True, seed: int = 0):
    """(model in eval mode, processor): a 2-block SigLIP-style tower on 16 px tiles, a Llama decoder.
    SmolVLM's processor uses the PIL image backend, Idefics3's the torchvision one."""
    import transformers as tf

    tok = _tokenizer()
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  image_size=TILE, patch_size=PATCH)
    text = dict(model_type="llama", **tiny._llama(tok))
    image_token = tok.convert_tokens_to_ids("<image>")
    sizes = dict(size={"longest_edge": LONGEST}, max_image_size={"longest_edge": TILE}, do_image_splitting=split)
    seq = SIDE ** 2 // 4
    torch.manual_seed(seed)
    if family == "idefics3":
        config = tf.Idefics3Config(vision_config=vision, text_config=text, scale_factor=2, image_token_id=image_token)
        model = tf.Idefics3ForConditionalGeneration(config).eval()
        processor = tf.Idefics3Processor(image_processor=tf.Idefics3ImageProcessor(**sizes), tokenizer=tok,
                                         image_seq_len=seq, chat_template=TEMPLATE)
    else:
        config = tf.SmolVLMConfig(vision_config=vision, text_config=text, scale_factor=2, image_token_id=image_token)
        model = tf.SmolVLMForConditionalGeneration(config).eval()
        processor = tf.SmolVLMProcessor(image_processor=tf.SmolVLMImageProcessorPil(**sizes), tokenizer=tok,
                                        video_processor=tf.SmolVLMVideoProcessor(), image_seq_len=seq,
                                        chat_template=TEMPLATE)
    return model, processor


@pytest.fixture(scope="module", params=["idefics3", "smolvlm"])
def family(request):
    return build(request.param)


@pytest.fixture(scope="module")
def unsplit():
    return build(split=False)


@pytest.fixture(scope="module")
def idefics3():
    return build()


def photo(h=40, w=60, seed=0) -> Image.Image:
    return Image.fromarray((np.random.RandomState(seed).rand(h, w, 3) * 255).astype("uint8"))


def prompt_text(processor, prompt):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


def processor_inputs(processor, img, prompt, response):
    """The model's inputs for `prompt` and `response` as its processor writes them (the reference)."""
    text = prompt_text(processor, prompt) + response + processor.tokenizer.eos_token
    return processor(images=img, text=text, return_tensors="pt")


def own_logprobs(model, enc, last):
    """log p of each of the last `last` tokens under the model's own forward of `enc`."""
    logits = model(**enc).logits[0, -(last + 1):-1]
    return F.log_softmax(logits.float(), -1).gather(-1, enc["input_ids"][0, -last:, None])[:, 0]


# --- wrap ------------------------------------------------------------------------------------

def test_wrap_picks_the_adapter_of_each_class_and_refuses_others(family):
    model, processor = family
    adapter = wrap(model, processor)
    assert type(adapter) is (SmolVLMVLM if "SmolVLM" in type(model).__name__ else Idefics3VLM)
    assert isinstance(adapter, Responder) and isinstance(adapter, AnswerModel)
    assert adapter.default_layer == "model.model.vision_model.encoder.layers.1"
    assert adapter.image_size == TILE
    with pytest.raises(TypeError, match="processor"):
        wrap(model)
    from transformers import GPT2Config, GPT2LMHeadModel

    with pytest.raises(TypeError, match="GPT2LMHeadModel.*Idefics3ForConditionalGeneration.*SmolVLMForConditional"):
        wrap(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=10)))
    assert {"Idefics3ForConditionalGeneration", "SmolVLMForConditionalGeneration"} <= set(ADAPTERS)


# --- The ids, the frames and the scores are the processor's and the model's own ---------------------

@pytest.mark.parametrize(("size", "grid"), [((40, 60), (2, 3)), ((30, 90), (1, 3)), ((90, 30), (3, 1)),
                                            ((40, 40), (3, 3)), ((1, 300), (1, 3))])
def test_expanded_ids_and_frames_are_the_processors(family, size, grid):
    model, processor = family
    adapter = wrap(model, processor)
    assert len(processor.tokenizer("\n\n", add_special_tokens=False)["input_ids"]) == 1
    img = photo(*size)
    view = adapter.preprocess(img)
    assert tuple(view.shape) == (1, 3, grid[0] * TILE, grid[1] * TILE)
    enc = processor(images=img, text=prompt_text(processor, PROMPT), return_tensors="pt")
    ids = torch.tensor([adapter.encode_prompt(PROMPT)])
    expanded, _ = adapter._expanded(ids, torch.ones_like(ids), adapter.image_tokens(view))
    assert expanded[0].tolist() == enc["input_ids"][0].tolist()
    # The tiles row by row, then the global view: exactly the processor's pixels (all of them real).
    assert torch.equal(adapter.vision_inputs(view)["pixel_values"], enc["pixel_values"])
    assert bool(enc["pixel_attention_mask"].all())


def test_without_splitting_the_view_is_the_one_frame(unsplit):
    model, processor = unsplit
    adapter = wrap(model, processor)
    for size in ((40, 60), (90, 30)):
        img = photo(*size)
        view = adapter.preprocess(img)
        assert tuple(view.shape) == (1, 3, TILE, TILE)
        enc = processor(images=img, text=prompt_text(processor, PROMPT), return_tensors="pt")
        ids = torch.tensor([adapter.encode_prompt(PROMPT)])
        expanded, _ = adapter._expanded(ids, torch.ones_like(ids), adapter.image_tokens(view))
        assert expanded[0].tolist() == enc["input_ids"][0].tolist()
        assert torch.equal(adapter.vision_inputs(view)["pixel_values"], enc["pixel_values"])


@pytest.mark.parametrize("split", [True, False])
def test_word_logprobs_equal_the_models_own_forward_on_its_processors_inputs(family, unsplit, split):
    model, processor = family if split else unsplit
    adapter = wrap(model, processor)
    img = photo()
    words, (ids, word_of) = adapter.encode_response(RESPONSE, PROMPT)
    assert words == ["a", "red", "ball", "next", "to", "the", "cube"]
    ours = adapter.word_logprobs(adapter.preprocess(img), ids, word_of)[0]
    pieces = own_logprobs(model, processor_inputs(processor, img, PROMPT, RESPONSE), word_of.shape[0])
    reference = torch.zeros(len(words) + 1).index_add(0, word_of, pieces)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def test_a_batch_of_views_scores_each_image_as_alone(idefics3):
    model, processor = idefics3
    adapter = wrap(model, processor)
    views = adapter.preprocess([photo(seed=1), photo(seed=2)])
    _words, (ids, word_of) = adapter.encode_response(RESPONSE, PROMPT)
    alone = torch.cat([adapter.word_logprobs(views[b:b + 1], ids, word_of) for b in range(2)])
    torch.testing.assert_close(adapter.word_logprobs(views, ids, word_of), alone, rtol=1e-5, atol=1e-6)


def test_answer_scores_equal_the_models_own_forward_and_k_answers_share_one_pass(family):
    model, processor = family
    adapter = wrap(model, processor)
    img = photo(seed=1)
    question, answers = "What color is the ball?", ["red", "blue", "green ball"]
    e = vlcam.explain_answer(adapter, img, question, answers)
    for k, answer in enumerate(answers):
        enc = processor_inputs(processor, img, question, answer)
        pieces = len(processor.tokenizer(answer, add_special_tokens=False)["input_ids"])
        expected = own_logprobs(model, enc, pieces + 1)[:pieces].sum().exp()
        torch.testing.assert_close(e.probs[k], expected, rtol=1e-4, atol=1e-7)
        one = vlcam.explain_answer(adapter, img, question, answer)
        torch.testing.assert_close(one.maps[0], e.maps[k], rtol=1e-5, atol=1e-7)


# --- Maps: one call equals one-word calls and a hand computation ------------------------------------

def test_every_word_map_from_one_call_equals_one_word_calls(family):
    model, processor = family
    adapter = wrap(model, processor)
    img = photo(seed=2)
    e = vlcam.explain_caption(adapter, img, RESPONSE)
    assert e.maps.shape == (8, 40, 60) and e.maps.dtype == torch.float32
    assert sum(float(m.amax()) > 0 for m in e.maps) >= 5
    for i in (1, 6):
        one = vlcam.explain_caption(adapter, img, RESPONSE, words=[i])
        scale = float(e.maps[1 + i].abs().max())
        assert float((one.maps[1] - e.maps[1 + i]).abs().max()) <= 1e-5 * scale


def _cam_by_hand(a, g, rows, cols):
    """Grad-CAM of frames' block outputs a, g [frames, n, C] on the view's patch grid, written here:
    each view's channel weights are its gradients' mean over its own positions (Eq. 1); tile t
    (row-major) holds view rows r*SIDE.., columns c*SIDE..; global patch (y, x) covers the view
    cells (i, j) with i // rows == y and j // cols == x; both views' sums before the ReLU (Eq. 2)."""
    if rows * cols == 1:
        return torch.relu((a[0] @ g[0].mean(0)).reshape(SIDE, SIDE))
    tiles = a[:-1] @ g[:-1].mean(dim=(0, 1))  # [tiles, n]
    whole = (a[-1] @ g[-1].mean(0)).reshape(SIDE, SIDE)
    cam = torch.zeros(rows * SIDE, cols * SIDE)
    for t in range(rows * cols):
        r, c = divmod(t, cols)
        cam[r * SIDE:(r + 1) * SIDE, c * SIDE:(c + 1) * SIDE] = tiles[t].reshape(SIDE, SIDE)
    for i in range(rows * SIDE):
        for j in range(cols * SIDE):
            cam[i, j] += whole[i // rows, j // cols]
    return torch.relu(cam)


@pytest.mark.parametrize(("split", "grid"), [(True, (2, 3)), (False, (1, 1))])
def test_word_maps_equal_grad_cam_by_hand_with_a_hook_and_autograd_grad(family, unsplit, split, grid):
    model, processor = family if split else unsplit
    adapter = wrap(model, processor)
    img = photo(seed=3)
    e = vlcam.explain_caption(adapter, img, RESPONSE, prompt=PROMPT)
    enc = processor_inputs(processor, img, PROMPT, RESPONSE)
    store = {}
    layer = model.model.vision_model.encoder.layers[-1]
    handle = layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o[0] if isinstance(o, tuple) else o))
    try:
        pieces = own_logprobs(model, enc, e.inputs[1].shape[0])
    finally:
        handle.remove()
    assert store["a"].shape[0] == (grid[0] * grid[1] + (grid != (1, 1)))
    word_of = e.inputs[1]
    for i in (0, 2, 6):
        (grad,) = torch.autograd.grad(pieces[word_of == i].sum(), store["a"], retain_graph=True)
        cam = _cam_by_hand(store["a"].detach(), grad, *grid)
        # The view is the whole image resized: pixel centres scale, nothing is cropped or padded.
        cam = F.interpolate(cam[None, None], size=(40, 60), mode="bilinear", align_corners=False)[0, 0]
        torch.testing.assert_close(e.maps[1 + i], cam, rtol=1e-4, atol=1e-6 * float(cam.abs().max()))


def test_guided_backprop_is_the_models_input_gradient_through_tiles_and_global_view(idefics3):
    model, processor = idefics3
    adapter = wrap(model, processor)
    img = photo(seed=4)
    e = vlcam.explain_caption(adapter, img, RESPONSE, words=[2])
    guided = e.guided_backprop(1)  # no ReLU in this model: the plain gradient
    assert guided.shape == (3, 32, 48)
    enc = processor_inputs(processor, img, PROMPT, RESPONSE)
    pixels = enc["pixel_values"].clone().requires_grad_(True)
    pieces = own_logprobs(model, {**enc, "pixel_values": pixels}, e.inputs[1].shape[0])
    (grad,) = torch.autograd.grad(pieces[e.inputs[1] == 2].sum(), pixels)
    expected = torch.zeros(3, 32, 48)
    for t in range(6):
        r, c = divmod(t, 3)
        expected[:, r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE] = grad[0, t]
    # The global view's pixels reach the view through an antialiased bicubic resize (the adapter's
    # stand-in for the processor's resize of uint8 pixels, which has no gradient).
    view = e.images.detach().clone().requires_grad_(True)
    resized = F.interpolate(view, size=(TILE, TILE), mode="bicubic", antialias=True, align_corners=False)
    (through_global,) = torch.autograd.grad(resized, view, grad_outputs=grad[:, 6])
    expected += through_global[0]
    torch.testing.assert_close(guided, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))
    maps = vlcam.explain_caption(adapter, img, RESPONSE, words=[2], method="guided-gradcam").maps
    assert maps.shape == (2, 40, 60) and bool(torch.isfinite(maps).all()) and float(maps.amax()) > 0


# --- Layout on the original image --------------------------------------------------------------

def embedding_difference(adapter, img, blank):
    """|embedding(img) - embedding(blank)| laid out by the adapter on the view grid [C', h, w]:
    non-zero only where the two images differ."""
    layer = adapter.model.model.vision_model.embeddings
    outs = []
    handle = layer.register_forward_hook(lambda m, i, o: outs.append(o))
    try:
        with torch.no_grad():
            for image in (img, blank):
                adapter.model.get_image_features(**adapter.vision_inputs(adapter.preprocess(image)))
    finally:
        handle.remove()
    return adapter.gradcam_reshape((outs[0] - outs[1]).abs(), adapter.preprocess(img))[0]


@pytest.mark.parametrize("tile", [(0, 0), (1, 2), (1, 0)])
def test_a_square_in_one_tile_lights_that_tile_and_the_global_view_there(idefics3, tile):
    model, processor = idefics3
    adapter = wrap(model, processor)
    h, w = 40, 60  # 2 x 3 tiles of 20 x 20 original pixels
    pixels = np.zeros((h, w, 3), dtype=np.uint8)
    top, left = tile[0] * 20 + 6, tile[1] * 20 + 6
    pixels[top:top + 8, left:left + 8] = 255
    grid = embedding_difference(adapter, Image.fromarray(pixels), Image.fromarray(np.zeros_like(pixels)))
    assert grid.shape == (2 * 32, 2 * SIDE, 3 * SIDE)
    tiles, whole = grid[:32].sum(0), grid[32:].sum(0)
    # On the view grid, the tiles' half is non-zero in that tile's patches only.
    inside = torch.zeros_like(tiles, dtype=torch.bool)
    inside[tile[0] * SIDE:(tile[0] + 1) * SIDE, tile[1] * SIDE:(tile[1] + 1) * SIDE] = True
    assert float(tiles[~inside].abs().max()) == 0 and float(tiles[inside].max()) > 0
    for part, cell in ((tiles, 5), (whole, 15)):
        m = adapter.image_maps(part[None], (h, w))[0]
        row, col = divmod(int(m.argmax()), w)
        assert top - cell <= row < top + 8 + cell and left - cell <= col < left + 8 + cell, (row, col)
        # Away from the square (by more than a patch of this view), the map is zero or nearly.
        far = torch.ones(h, w, dtype=torch.bool)
        far[max(top - 2 * cell, 0):top + 8 + 2 * cell, max(left - 2 * cell, 0):left + 8 + 2 * cell] = False
        assert float(m[far].max()) < 0.1 * float(m.max())


@pytest.mark.parametrize("where", ["left", "right"])
def test_without_splitting_a_square_lights_the_one_view_there(unsplit, where):
    model, processor = unsplit
    adapter = wrap(model, processor)
    pixels = np.zeros((40, 80, 3), dtype=np.uint8)
    left = 8 if where == "left" else 56
    pixels[24:36, left:left + 16] = 255  # bottom
    grid = embedding_difference(adapter, Image.fromarray(pixels), Image.fromarray(np.zeros_like(pixels)))
    assert grid.shape == (32, SIDE, SIDE)
    m = adapter.image_maps(grid.sum(0)[None], (40, 80))[0]
    row, col = divmod(int(m.argmax()), 80)
    assert 20 <= row < 40 and left - 10 <= col < left + 26, (row, col)


def test_maps_are_laid_on_the_original_image_where_a_fitted_coordinate_image_puts_them(idefics3):
    model, processor = idefics3
    adapter = wrap(model, processor)
    for size in ((40, 60), (30, 90)):
        view = fitted_view(lambda pil: adapter._pixel_values(pil), size, adapter.mean, adapter.std)
        assert (view.height, view.width) == tuple(adapter.preprocess(photo(*size)).shape[-2:])
        assert view.scale_y == pytest.approx(size[0] / view.height, rel=0.02)
        assert view.scale_x == pytest.approx(size[1] / view.width, rel=0.02)
        assert abs(view.offset_y) < 0.3 and abs(view.offset_x) < 0.3
        maps = torch.rand(2, view.height // PATCH, view.width // PATCH, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(adapter.image_maps(maps, size), maps_in_original(maps, view, size),
                                   rtol=0, atol=0.05)


def test_the_connectors_pixel_shuffled_tokens_lie_where_their_patches_are(unsplit):
    model, processor = unsplit
    adapter = wrap(model, processor)
    rows, cols = torch.meshgrid(torch.arange(SIDE), torch.arange(SIDE), indexing="ij")
    patches = torch.zeros(1, SIDE * SIDE, 32)
    patches[0, :, 0], patches[0, :, 1] = rows.flatten().float(), cols.flatten().float()
    shuffled = model.model.connector.pixel_shuffle(patches, 2)  # [1, 4, 4 * 32]
    grid = adapter.gradcam_reshape(shuffled, torch.zeros(1, 3, TILE, TILE))  # [1, 128, 2, 2]
    assert grid.shape == (1, 128, 2, 2)
    for y in range(2):
        for x in range(2):
            read = {(int(grid[0, 32 * q, y, x]), int(grid[0, 32 * q + 1, y, x])) for q in range(4)}
            assert read == {(2 * y + a, 2 * x + b) for a in (0, 1) for b in (0, 1)}


# --- Generation, dtypes, the model left as it was ---------------------------------------------------

def test_respond_is_the_models_own_greedy_generation(family):
    model, processor = family
    adapter = wrap(model, processor)
    img = photo(seed=5)
    enc = processor(images=img, text=prompt_text(processor, PROMPT), return_tensors="pt")
    generated = model.generate(**enc, max_new_tokens=6, do_sample=False, eos_token_id=adapter.end_id,
                               pad_token_id=adapter.pad_id)
    cut = enc["input_ids"].shape[1]
    expected = processor.tokenizer.decode(generated[0, cut:], skip_special_tokens=True).strip()
    prompt = torch.tensor([adapter.encode_prompt(PROMPT)])
    assert adapter._generated(adapter.preprocess(img), prompt, 6, 1) == [expected]


def test_bf16_models_give_float32_maps_close_to_float32_ones():
    model, processor = build()
    img = photo(seed=6)
    reference = vlcam.explain_caption(wrap(model, processor), img, RESPONSE)
    half = vlcam.explain_caption(wrap(model.to(torch.bfloat16), processor), img, RESPONSE)
    assert half.maps.dtype == torch.float32
    assert next(model.parameters()).dtype == torch.bfloat16
    for a, b in zip(reference.maps, half.maps):
        assert F.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.9


def test_the_model_comes_back_as_it_was(family):
    model, processor = family
    adapter = wrap(model, processor)
    tiny.assert_explaining_leaves_it_unchanged(model, adapter, photo(), RESPONSE)


# --- Bad input --------------------------------------------------------------------------------------

def test_bad_prompts_responses_views_and_layers_are_value_errors_naming_them(family):
    model, processor = family
    adapter = wrap(model, processor)
    with pytest.raises(ValueError, match="prompt ''"):
        vlcam.explain_caption(adapter, photo(), RESPONSE, prompt="")
    with pytest.raises(ValueError, match="no words"):
        vlcam.explain_caption(adapter, photo(), " ... !")
    # The largest view (48 x 48: 9 tiles and the global view) counts against the context.
    with pytest.raises(ValueError, match=r"tokens with the image; this model reads at most 256"):
        adapter.encode_response("red " * 200)
    with pytest.raises(ValueError, match="question ''"):
        vlcam.explain_answer(adapter, photo(), "", "red")
    # The processor resizes any image; a tensor that is no view of it is refused.
    with pytest.raises(ValueError, match=r"multiples of its tile side 16.*shape \(1, 3, 20, 20\)"):
        vlcam.explain_caption(adapter, torch.zeros(1, 3, 20, 20), RESPONSE)
    # The model would take an all-zero tile for padding and drop it.
    _words, (ids, word_of) = adapter.encode_response(RESPONSE)
    with pytest.raises(ValueError, match="frame 0 of image 0 is all zeros"):
        adapter.word_logprobs(torch.zeros(1, 3, TILE, 2 * TILE), ids, word_of)
    with pytest.raises(ValueError, match=r"not the tokens \[7, n, C\] of the 1 x 7 frames.*vision tower"):
        vlcam.explain_caption(adapter, photo(), RESPONSE, layer="model.model.text_model.layers.0")
