"""Gemma 3, InstructBLIP (Llama and T5) and BLIP-2 with T5, on tiny random models built here with
their tokenizers, image processors and processors: scores against each model's own forward on its
processor's inputs, every word's map from one call against one-word calls and against Grad-CAM
computed by hand with a hook and autograd.grad on that forward, the layout of the maps on a
non-square original image, generation, bf16, and the model left as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import hf_vlm_tiny as tiny
import vlcam
from vlcam.adapters.hf import wrap
from vlcam.adapters.hf.vlm import Blip2T5VLM, Gemma3VLM, InstructBlipT5VLM, InstructBlipVLM
from vlcam.adapters.protocol import AnswerModel, Responder

RESPONSE = "a red ball, next to the cube."
PROMPT = "Describe the image."
WORDS = ["a", "red", "ball", "next", "to", "the", "cube"]


# --- Tiny models -----------------------------------------------------------------------------------

def _tokenizer(specials: tuple[str, ...], *, bos: str | None, eos: str, extra: dict[str, str] | None = None,
               template: str | None = None, post: str | None = None, text: tuple[str, ...] = ()):
    """A byte-level BPE as tiny.tokenizer builds it, with named special tokens (`extra`) and a
    post-processor template (`post`, e.g. "<s> $A") that adds special tokens as a real one does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=list(specials),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([*tiny.TEXT, *text] * 3, trainer)
    if post:
        bpe.post_processor = processors.TemplateProcessing(
            single=post, special_tokens=[(t, bpe.token_to_id(t)) for t in specials if t in post.split()])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=bos, eos_token=eos, pad_token="<pad>",
                                   chat_template=template, **({"extra_special_tokens": extra} if extra else {}))


GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<start_of_image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")


def gemma3(seed: int = 0, *, pan_and_scan: bool = False):
    """Gemma 3: SigLIP tower (3 blocks, 4 x 4 patches), a projector pooling them to 2 x 2 = 4 image
    tokens, a 2-layer Gemma 3 decoder (one sliding-window layer, one global); plain resize to 32 x 32."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessor, Gemma3Processor

    specials = ("<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>",
                "<image_soft_token>")
    # "user\n\n\n": the processor's "\n\n" around the image merges with the template's newlines.
    # Gemma's tokenizer adds <bos>, and its chat template writes one too.
    tok = _tokenizer(specials, bos="<bos>", eos="<end_of_turn>", template=GEMMA_TEMPLATE, post="<bos> $A",
                     extra={"image_token": "<image_soft_token>", "boi_token": "<start_of_image>",
                            "eoi_token": "<end_of_image>"}, text=("user\n\n\n", "model\n"))
    ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
    text = dict(tiny._llama(tok), model_type="gemma3_text", num_key_value_heads=1, head_dim=12,
                query_pre_attn_scalar=12, sliding_window=8, layer_types=["sliding_attention", "full_attention"])
    config = Gemma3Config(vision_config=dict(tiny._vision(), model_type="siglip_vision_model"), text_config=text,
                          mm_tokens_per_image=4, boi_token_index=ids["<start_of_image>"],
                          eoi_token_index=ids["<end_of_image>"], image_token_index=ids["<image_soft_token>"])
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config).eval()
    # Gemma 3 initialises the projection to zeros: a random model would not see its image at all.
    with torch.no_grad():
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0, 0.3)
    image_processor = Gemma3ImageProcessor(size={"height": tiny.IMAGE, "width": tiny.IMAGE},
                                           do_pan_and_scan=pan_and_scan)
    processor = Gemma3Processor(image_processor=image_processor, tokenizer=tok, chat_template=GEMMA_TEMPLATE,
                                image_seq_length=4)
    return model, processor


def _qformer_tokenizer():
    """A BERT-style WordPiece tokenizer (lower case, [CLS] ... [SEP]), as InstructBLIP's Q-Former reads."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wordpiece.decoder = decoders.WordPiece()
    wordpiece.train_from_iterator(tiny.TEXT * 3, trainers.WordPieceTrainer(vocab_size=120, special_tokens=specials))
    wordpiece.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[(t, wordpiece.token_to_id(t)) for t in ("[CLS]", "[SEP]")])
    return PreTrainedTokenizerFast(tokenizer_object=wordpiece, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]")


def _blip_parts(tok, *, t5: bool):
    """The sub-configs of a tiny BLIP-2 / InstructBLIP: ViT, 1-layer Q-Former, a 2-layer Llama or T5."""
    qformer = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                   encoder_hidden_size=32, vocab_size=120)
    if t5:
        text = dict(model_type="t5", vocab_size=len(tok), d_model=48, d_kv=12, d_ff=96, num_layers=2, num_heads=4,
                    pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                    decoder_start_token_id=tok.pad_token_id, feed_forward_proj="gated-gelu")
    else:
        text = dict(tiny._llama(tok), model_type="llama")
    # BLIP's ViT initialises with std 1e-10: the random Q-Former would barely see the image.
    return dict(vision_config=tiny._vision(initializer_range=0.02), qformer_config=qformer, text_config=text,
                num_query_tokens=4, image_token_index=tok.convert_tokens_to_ids("<image>"))


def _pad_row_zeroed(model):
    """`model` in eval mode, a T5 language model's <pad> embedding zeroed: <pad> is also the decoder's
    start, and a random decoder whose output embedding is its input one would write it forever."""
    if not model.config.use_decoder_only_language_model:
        with torch.no_grad():
            model.language_model.get_input_embeddings().weight[model.config.text_config.pad_token_id] = 0
    return model.eval()


def _blip_tokenizer(t5: bool):
    """Vicuna's tokenizer puts <s> first; Flan-T5's ends the text with </s>."""
    return _tokenizer(("<pad>", "<s>", "</s>", "<image>"), bos=None if t5 else "<s>", eos="</s>",
                      post="$A </s>" if t5 else "<s> $A")


def instructblip(seed: int = 0, *, t5: bool = False):
    """InstructBLIP: ViT (3 blocks, class token + 4 x 4 patches), a Q-Former with 4 queries that also
    reads the instruction, a Llama (Vicuna-style) or Flan-T5-style language model; plain resize to 32."""
    from transformers import (
        BlipImageProcessor,
        InstructBlipConfig,
        InstructBlipForConditionalGeneration,
        InstructBlipProcessor,
    )

    tok = _blip_tokenizer(t5)
    torch.manual_seed(seed)
    model = _pad_row_zeroed(InstructBlipForConditionalGeneration(InstructBlipConfig(**_blip_parts(tok, t5=t5))))
    image_processor = BlipImageProcessor(size={"height": tiny.IMAGE, "width": tiny.IMAGE})
    processor = InstructBlipProcessor(image_processor=image_processor, tokenizer=tok,
                                      qformer_tokenizer=_qformer_tokenizer(), num_query_tokens=4)
    return model, processor


def blip2_t5(seed: int = 0):
    """BLIP-2 with a Flan-T5-style encoder-decoder language model."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor

    tok = _blip_tokenizer(True)
    torch.manual_seed(seed)
    model = _pad_row_zeroed(Blip2ForConditionalGeneration(Blip2Config(**_blip_parts(tok, t5=True))))
    processor = Blip2Processor(image_processor=BlipImageProcessor(size={"height": tiny.IMAGE, "width": tiny.IMAGE}),
                               tokenizer=tok, num_query_tokens=4)
    return model, processor


BUILDERS = {"gemma3": gemma3, "instructblip": instructblip, "blip2_t5": blip2_t5,
            "instructblip_t5": lambda seed=0: instructblip(seed, t5=True)}
# The layer whose tokens map one-to-one onto the patch grid (the layout test), and what precedes
# the patches in it (a class token).
EMBEDDINGS = {"gemma3": ("model.model.vision_tower.embeddings", 0),
              **{name: ("model.vision_model.embeddings", 1) for name in BUILDERS if name != "gemma3"}}


ADAPTER = {"gemma3": Gemma3VLM, "instructblip": InstructBlipVLM, "blip2_t5": Blip2T5VLM,
           "instructblip_t5": InstructBlipT5VLM}


@pytest.fixture(scope="module", params=list(BUILDERS))
def family(request, one_thread):
    model, processor = BUILDERS[request.param]()
    return request.param, model, processor


def photo(h: int = 40, w: int = 60, seed: int = 0) -> Image.Image:
    return Image.fromarray((np.random.RandomState(seed).rand(h, w, 3) * 255).astype("uint8"))


# --- The reference: each model's own forward on its processor's inputs ------------------------------

T5 = ("blip2_t5", "instructblip_t5")


def prompt_text(name, processor, prompt):
    """The prompt as each model's processor is given it."""
    if name == "gemma3":
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        return processor.apply_chat_template(messages, add_generation_prompt=True)
    return f"Question: {prompt} Answer:" if name == "blip2_t5" else prompt


def prompt_inputs(name, processor, img, prompt):
    """The processor's inputs for `prompt` alone, as generation starts from them."""
    if name == "gemma3":
        messages = [{"role": "user", "content": [{"type": "image", "image": img}, {"type": "text", "text": prompt}]}]
        return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                             return_tensors="pt")
    return processor(images=img, text=prompt_text(name, processor, prompt), return_tensors="pt")


def processor_inputs(name, processor, img, prompt, response):
    """The model's inputs for `prompt` and `response` (teacher-forced) as its processor writes them."""
    if name in T5:
        # The encoder reads the image and the prompt; the labels are the response and </s>, which
        # the model shifts right after the decoder's start token itself.
        enc = prompt_inputs(name, processor, img, prompt)
        enc["labels"] = processor.tokenizer(response, return_tensors="pt")["input_ids"]
        return enc
    # Gemma 3's template writes <bos>: the processor's apply_chat_template(tokenize=True) adds no second one.
    enc = processor(images=img, text=prompt_text(name, processor, prompt) + response + processor.tokenizer.eos_token,
                    return_tensors="pt", add_special_tokens=name != "gemma3")
    if name == "instructblip":
        # The Q-Former reads the instruction, as in generation and in InstructBLIP's training.
        instruction = processor(text=prompt, return_tensors="pt")
        enc["qformer_input_ids"] = instruction["qformer_input_ids"]
        enc["qformer_attention_mask"] = instruction["qformer_attention_mask"]
    return enc


def own_logprobs(model, enc, last):
    """log p of each of the last `last` response tokens under the model's own forward of `enc`."""
    if "labels" in enc:
        targets = enc["labels"][0]
        assert targets.shape[0] == last
        return F.log_softmax(model(**enc).logits[0].float(), -1).gather(-1, targets[:, None])[:, 0]
    logits = model(**enc).logits[0, -(last + 1):-1]
    return F.log_softmax(logits.float(), -1).gather(-1, enc["input_ids"][0, -last:, None])[:, 0]


# --- wrap --------------------------------------------------------------------------------------------

def test_wrap_picks_the_adapter_and_refuses_others(family):
    name, model, processor = family
    adapter = wrap(model, processor)
    assert type(adapter) is ADAPTER[name]
    assert isinstance(adapter, Responder) and isinstance(adapter, AnswerModel) and adapter.open_vocabulary
    with pytest.raises(TypeError, match="processor"):
        wrap(model)
    from transformers import GPT2Config, GPT2LMHeadModel

    with pytest.raises(TypeError, match="no vlcam adapter for GPT2LMHeadModel") as refused:
        wrap(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=10)))
    assert "Gemma3ForConditionalGeneration" in str(refused.value)
    assert "InstructBlipForConditionalGeneration" in str(refused.value)


# --- Scores equal the model's own --------------------------------------------------------------------

def test_expanded_ids_and_word_logprobs_equal_the_models_own_on_its_processors_inputs(family):
    name, model, processor = family
    adapter = wrap(model, processor)
    img = photo()
    words, (ids, word_of) = adapter.encode_response(RESPONSE, PROMPT)
    assert words == WORDS
    enc = processor_inputs(name, processor, img, PROMPT, RESPONSE)
    view = adapter.preprocess(img)
    torch.testing.assert_close(view, enc["pixel_values"])
    expanded, _ = adapter._expanded(ids, torch.ones_like(ids), adapter.image_tokens(view))
    # T5: the encoder's ids, then the decoder's targets.
    expected = enc["input_ids"][0].tolist() + (enc["labels"][0].tolist() if name in T5 else [])
    assert expanded[0].tolist() == expected
    ours = adapter.word_logprobs(view, ids, word_of)[0]
    pieces = own_logprobs(model, enc, word_of.shape[0])
    reference = torch.zeros(len(words) + 1).index_add(0, word_of, pieces)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.sum(), pieces.sum(), rtol=1e-5, atol=1e-5)


def test_gemma3_image_tokens_attend_both_ways_as_in_its_own_forward():
    model, processor = gemma3()
    adapter = wrap(model, processor)
    enc = processor_inputs("gemma3", processor, photo(), PROMPT, RESPONSE)
    _words, (ids, _word_of) = adapter.encode_response(RESPONSE, PROMPT)
    expanded, mask = adapter._expanded(ids, torch.ones_like(ids), adapter.image_tokens(enc["pixel_values"]))
    types = adapter.text_inputs(expanded, mask, enc["pixel_values"], 0, 1)["token_type_ids"]
    assert types.tolist() == enc["token_type_ids"].tolist() and int(types.sum()) == 4
    # The "\n\n" the processor writes before <start_of_image> merged with the template's "\n".
    tokens = processor.tokenizer.convert_ids_to_tokens(expanded[0].tolist())
    assert tokens.count("<bos>") == 1
    prompt = torch.tensor([adapter.encode_prompt(PROMPT)])
    expanded_prompt, _ = adapter._expanded(prompt, torch.ones_like(prompt), adapter.image_tokens(enc["pixel_values"]))
    assert expanded_prompt.tolist() == prompt_inputs("gemma3", processor, photo(), PROMPT)["input_ids"].tolist()
    at = tokens.index("<start_of_image>")
    assert tokens[at - 1:at + 7] == ["ĊĊĊ", "<start_of_image>", *["<image_soft_token>"] * 4, "<end_of_image>", "Ċ"]
    # Without the bidirectional image block the scores change: the adapter's equality above needs it.
    enc_causal = {k: v for k, v in enc.items() if k != "token_type_ids"}
    with torch.no_grad():
        change = own_logprobs(model, enc, 10) - own_logprobs(model, enc_causal, 10)
    assert float(change.abs().max()) > 1e-3


def test_answer_scores_equal_the_models_own_and_k_answers_share_one_vision_forward(family):
    name, model, processor = family
    adapter = wrap(model, processor)
    img = photo(seed=1)
    question, answers = "What color is the ball?", ["red", "blue", "green ball"]
    tower = adapter.get_submodule(EMBEDDINGS[name][0])
    calls = []
    handle = tower.register_forward_hook(lambda m, i, o: calls.append(1))
    try:
        e = vlcam.explain_answer(adapter, img, question, answers)
    finally:
        handle.remove()
    assert len(calls) == 1
    for k, answer in enumerate(answers):
        enc = processor_inputs(name, processor, img, question, answer)
        pieces = len(processor.tokenizer(answer, add_special_tokens=False)["input_ids"])
        expected = own_logprobs(model, enc, pieces + 1)[:pieces].sum().exp()
        torch.testing.assert_close(e.probs[k], expected, rtol=1e-4, atol=1e-7)
        one = vlcam.explain_answer(adapter, img, question, answer)
        torch.testing.assert_close(one.maps[0], e.maps[k], rtol=1e-5, atol=1e-7)


# --- Maps --------------------------------------------------------------------------------------------

def test_every_word_map_from_one_call_equals_one_word_calls(family):
    _name, model, processor = family
    adapter = wrap(model, processor)
    img = photo(seed=2)
    e = vlcam.explain_caption(adapter, img, RESPONSE)
    assert e.tokens == WORDS
    assert e.maps.shape == (8, 40, 60) and e.maps.dtype == torch.float32
    assert sum(float(m.amax()) > 0 for m in e.maps) >= 5
    for i in (1, 6):
        one = vlcam.explain_caption(adapter, img, RESPONSE, words=[i])
        scale = float(e.maps[1 + i].abs().max())
        assert float((one.maps[1] - e.maps[1 + i]).abs().max()) <= 1e-5 * scale


def _grid(name, tokens, view):
    """A ViT layer's tokens [1, N, C] on the view's patch grid [C, h, w], laid out here: the last
    h*w tokens, row by row (a class token, if any, comes first)."""
    h, w = view.shape[-2] // tiny.PATCH, view.shape[-1] // tiny.PATCH
    assert tokens.shape[1] == h * w + EMBEDDINGS[name][1]
    return tokens[0, -h * w:].T.reshape(-1, h, w)


def test_word_maps_equal_grad_cam_by_hand_with_a_hook_and_autograd_grad(family):
    name, model, processor = family
    adapter = wrap(model, processor)
    img = photo(seed=3)
    view = adapter.preprocess(img)
    e = vlcam.explain_caption(adapter, view, RESPONSE, prompt=PROMPT)  # maps on the view itself
    enc = processor_inputs(name, processor, img, PROMPT, RESPONSE)
    layer = model.get_submodule(adapter.default_layer.removeprefix("model."))
    store = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o[0] if isinstance(o, tuple) else o))
    try:
        pieces = own_logprobs(model, enc, e.inputs[1].shape[0])
    finally:
        handle.remove()
    word_of = e.inputs[1]
    for i in (0, 2, 6):
        (grad,) = torch.autograd.grad(pieces[word_of == i].sum(), store["a"], retain_graph=True)
        a, g = _grid(name, store["a"].detach(), view), _grid(name, grad, view)
        cam = torch.relu((g.mean(dim=(1, 2), keepdim=True) * a).sum(0))
        cam = F.interpolate(cam[None, None], size=tuple(view.shape[-2:]), mode="bilinear", align_corners=False)[0, 0]
        torch.testing.assert_close(e.maps[1 + i], cam, rtol=1e-4, atol=1e-6 * float(cam.abs().max()))


def test_the_default_layer_is_the_last_vision_block_the_projector_reads(family):
    name, model, processor = family
    adapter = wrap(model, processor)
    blocks = "model.model.vision_tower.encoder.layers" if name == "gemma3" else "model.vision_model.encoder.layers"
    assert adapter.default_layer == f"{blocks}.{tiny._vision()['num_hidden_layers'] - 1}"


@pytest.mark.parametrize("where", ["top-left", "top-right", "bottom-left", "bottom-right"])
def test_maps_are_laid_out_where_the_image_is_on_a_non_square_original(family, where):
    name, model, processor = family
    adapter = wrap(model, processor)
    h, w = 40, 72  # resized to 32 x 32: rows and columns scale differently
    top = 4 if where.startswith("top") else 26
    left = 6 if where.endswith("left") else 52
    pixels = np.zeros((h, w, 3), dtype=np.uint8)
    pixels[top:top + 10, left:left + 14] = 255
    img, blank = Image.fromarray(pixels), Image.fromarray(np.zeros_like(pixels))
    embeddings = adapter.get_submodule(EMBEDDINGS[name][0])
    with torch.no_grad():
        outs = [embeddings(adapter.vision_inputs(adapter.preprocess(image))["pixel_values"]) for image in (img, blank)]
    # Non-zero only at the patches whose pixels differ, laid out by the adapter.
    grid = adapter.gradcam_reshape((outs[0] - outs[1]).abs(), adapter.preprocess(img)).sum(1)  # [1, h, w]
    m = adapter.image_maps(grid, (h, w))[0]
    assert m.shape == (h, w)
    row, col = divmod(int(m.argmax()), w)
    assert top - 4 <= row < top + 14 and left - 6 <= col < left + 20, (where, row, col)
    far = torch.ones(h, w, dtype=torch.bool)
    far[max(top - 12, 0):top + 22, max(left - 20, 0):left + 34] = False
    assert float(m[far].max()) < 0.35 * float(m.max())


# --- Generation, dtypes, the model left as it was -------------------------------------------------

def test_respond_is_the_models_own_greedy_generation(family):
    name, model, processor = family
    adapter = wrap(model, processor)
    img = photo(seed=4)
    enc = prompt_inputs(name, processor, img, PROMPT)
    generated = model.generate(**enc, max_new_tokens=6, do_sample=False, eos_token_id=adapter.end_id,
                               pad_token_id=adapter.pad_id)
    # A decoder-only model writes the prompt back first; T5's decoder starts from its start token.
    new = generated[0, 1:] if name in T5 else generated[0, enc["input_ids"].shape[1]:]
    expected = processor.tokenizer.decode(new, skip_special_tokens=True).strip()
    assert expected
    assert adapter.respond(img, PROMPT, max_new_tokens=6) == [expected]


def test_bf16_gives_float32_maps_close_to_float32_ones(family):
    name, _model, processor = family
    model, _ = BUILDERS[name]()
    img = photo(seed=5)
    reference = vlcam.explain_caption(wrap(model, processor), img, RESPONSE)
    half = vlcam.explain_caption(wrap(model.to(torch.bfloat16), processor), img, RESPONSE)
    assert half.maps.dtype == torch.float32
    close = [float(F.cosine_similarity(a.flatten(), b.flatten(), dim=0)) for a, b in zip(reference.maps, half.maps)
             if float(a.amax()) > 0]
    assert len(close) >= 5 and min(close) > 0.9, close


def test_the_model_comes_back_as_it_was(family):
    _name, model, processor = family
    adapter = wrap(model, processor)
    tiny.assert_explaining_leaves_it_unchanged(model, adapter, photo(), RESPONSE)


# --- Bad input ----------------------------------------------------------------------------------------

def test_bad_prompts_responses_and_images_are_value_errors_naming_them(family):
    name, model, processor = family
    adapter = wrap(model, processor)
    with pytest.raises(ValueError, match="prompt ''"):
        vlcam.explain_caption(adapter, photo(), RESPONSE, prompt="")
    with pytest.raises(ValueError, match="no words"):
        vlcam.explain_caption(adapter, photo(), " ... !")
    with pytest.raises(ValueError, match="question ''"):
        vlcam.explain_answer(adapter, photo(), "", "red")
    with pytest.raises(ValueError, match="holds the image token"):
        adapter.encode_prompt("look: " + processor.tokenizer.decode([adapter.image_token_id]))
    if name not in T5:  # T5's relative positions set no context length
        with pytest.raises(ValueError, match="at most 256"):
            adapter.encode_response("red " * 300)
    # The processors resize any image; a preprocessed tensor at another size is what the tower refuses.
    with pytest.raises(ValueError, match=r"reads images \[B, 3, 32, 32\].*\(1, 3, 40, 48\)"):
        vlcam.explain_caption(adapter, torch.zeros(1, 3, 40, 48), RESPONSE)


def test_gemma3_pan_and_scan_is_refused_as_a_tiled_view():
    model, processor = gemma3(pan_and_scan=True)
    with pytest.raises(ValueError, match="do_pan_and_scan=True.*tiled"):
        wrap(model, processor)


# --- BLIP-2 / InstructBLIP ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["instructblip", "instructblip_t5"])
def test_instructblip_image_features_follow_each_prompt_and_k_answers_share_one_qformer_pass(name):
    model, processor = BUILDERS[name]()
    adapter = wrap(model, processor)
    img = photo(seed=6)
    view = adapter.preprocess(img)
    first, second = "What color is the ball?", "how many balls are there?"
    features = []
    for question in (first, second):
        ids = adapter.encode_question(question)
        inputs = adapter.prompt_image_inputs(ids, view)
        assert inputs["qformer_input_ids"].tolist() == processor(text=question)["qformer_input_ids"]
        with torch.no_grad():
            features.append(model.get_image_features(pixel_values=view, **inputs).pooler_output)
    assert float((features[0] - features[1]).abs().max()) > 1e-3  # the Q-Former reads the prompt
    answers = ["red", "blue", "two"]
    for question in (first, second):
        read: list[torch.Tensor] = []
        handle = model.qformer.register_forward_pre_hook(lambda m, a, kw, read=read: read.append(kw["input_ids"]),
                                                         with_kwargs=True)
        try:
            e = vlcam.explain_answer(adapter, img, question, answers)
        finally:
            handle.remove()
        assert len(read) == 1 and read[0].tolist() == processor(text=question)["qformer_input_ids"]
        for k, answer in enumerate(answers):
            enc = processor_inputs(name, processor, img, question, answer)
            pieces = len(processor.tokenizer(answer, add_special_tokens=False)["input_ids"])
            torch.testing.assert_close(e.probs[k], own_logprobs(model, enc, pieces + 1)[:pieces].sum().exp(),
                                       rtol=1e-4, atol=1e-7)


def test_instructblip_refuses_rows_of_different_prompts_and_prompts_the_qformer_would_read_otherwise():
    model, processor = instructblip()
    adapter = wrap(model, processor)
    view = adapter.preprocess(photo())
    ball, cube = adapter.encode_prompt("What color is the ball?"), adapter.encode_prompt("What color is the cube?")
    assert len(ball) == len(cube)
    adapter.prompt_image_inputs(torch.tensor([ball, ball]), view)
    with pytest.raises(ValueError, match="different prompts"):
        adapter.prompt_image_inputs(torch.tensor([ball, cube]), view)
    # "</s>" is the tokenizer's special token: it does not read back, the Q-Former would read "< / s >".
    with pytest.raises(ValueError, match=r"prompt 'what is it</s>\?' reads back .* 'what is it\?'"):
        adapter.encode_prompt("what is it</s>?")


def test_blip2_puts_the_query_tokens_before_the_tokenizers_bos_as_its_processor_does():
    from tokenizers import processors

    model, processor = tiny.blip2()
    tok = processor.tokenizer
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.convert_tokens_to_ids("<s>"))])  # as OPT's tokenizer does
    adapter = wrap(model, processor)
    img = photo(seed=7)
    _words, (ids, word_of) = adapter.encode_response(RESPONSE, PROMPT)
    enc = processor(images=img, text=f"Question: {PROMPT} Answer:{RESPONSE}{tok.eos_token}", return_tensors="pt")
    assert enc["input_ids"][0, 4] == tok.bos_token_id
    expanded, _ = adapter._expanded(ids, torch.ones_like(ids), adapter.image_tokens(adapter.preprocess(img)))
    assert expanded[0].tolist() == enc["input_ids"][0].tolist()
    pieces = own_logprobs(model, enc, word_of.shape[0])
    torch.testing.assert_close(adapter.word_logprobs(adapter.preprocess(img), ids, word_of)[0],
                               torch.zeros(len(WORDS) + 1).index_add(0, word_of, pieces), rtol=1e-5, atol=1e-5)


def test_the_blip_adapters_follow_the_kind_of_language_model():
    from vlcam.adapters.hf.vlm import Blip2VLM

    t5, t5_processor = blip2_t5()
    opt, opt_processor = tiny.blip2()
    assert type(Blip2VLM(t5, t5_processor)) is Blip2T5VLM and type(wrap(opt, opt_processor)) is Blip2VLM
    assert type(InstructBlipVLM(*instructblip(t5=True))) is InstructBlipT5VLM
    with pytest.raises(TypeError, match="Blip2T5VLM does not take a Blip2ForConditionalGeneration with a decoder-only"):
        Blip2T5VLM(opt, opt_processor)
    with pytest.raises(TypeError, match="needs its InstructBlipProcessor"):
        InstructBlipVLM(instructblip()[0], opt_processor)
