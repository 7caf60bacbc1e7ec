"""Hugging Face adapters on tiny random models built here: scores against the models' own
forward, per-word/per-answer maps against separate explanations and hand-computed Grad-CAM,
and constructed models whose output can only come from one image patch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hf_tiny as tiny
import vlcam
from vlcam import WordLogProb
from vlcam.adapters.hf import BlipCaptioner, BlipVQA, ViltVQA, VisionEncoderDecoderCaptioner, wrap
from vlcam.explain.caption import CaptionScorer
from vlcam.targets import AnswerLogit

GRID = tiny.IMAGE // tiny.PATCH


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("hf")


def image(seed=0):
    torch.manual_seed(seed)
    return torch.randn(1, 3, tiny.IMAGE, tiny.IMAGE)


def manual_cam(layer: nn.Module, score_fn, prefix: int) -> torch.Tensor:
    """Grad-CAM by hand (Eq. 1-2) on a token layer: [h, w] at the patch grid, upsampled."""
    store = {}

    def keep(module, inputs, output):
        store["a"] = output[0] if isinstance(output, tuple) else output

    handle = layer.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            score = score_fn()
            (grad,) = torch.autograd.grad(score, store["a"])
    finally:
        handle.remove()

    def grid(t):
        return t[0, prefix:].T.reshape(t.shape[2], GRID, GRID)

    a, g = grid(store["a"].detach()), grid(grad)
    cam = torch.relu((g.mean(dim=(1, 2), keepdim=True) * a).sum(0))
    return F.interpolate(cam[None, None], size=(tiny.IMAGE, tiny.IMAGE), mode="bilinear", align_corners=False)[0, 0]


def piece_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[0, :, 0]


# --- wrap -----------------------------------------------------------------------------------

def test_wrap_picks_the_adapter_by_model_class(tmp):
    model, processor = tiny.blip_captioner(tmp)
    assert isinstance(wrap(model, processor), BlipCaptioner)
    model, processor = tiny.blip_vqa(tmp)
    assert isinstance(wrap(model, processor), BlipVQA)
    model, processor = tiny.vilt_vqa(tmp)
    assert isinstance(wrap(model, processor), ViltVQA)
    model, tokenizer, image_processor = tiny.vit_gpt2()
    assert isinstance(wrap(model, tokenizer=tokenizer, image_processor=image_processor),
                      VisionEncoderDecoderCaptioner)


def test_wrap_errors_name_what_is_accepted(tmp):
    with pytest.raises(TypeError, match="BlipForConditionalGeneration"):
        wrap(nn.Linear(2, 2))
    model, processor = tiny.blip_captioner(tmp)
    with pytest.raises(TypeError, match="tokenizer"):
        wrap(model)

    class SlowTokenizer:  # a Python tokenizer cannot say which word each piece belongs to
        is_fast = False

        def __call__(self, text, **kwargs):
            raise AssertionError("never called")

    slow = SlowTokenizer()
    with pytest.raises(TypeError, match="fast tokenizer"):
        wrap(model, tokenizer=slow, image_processor=processor.image_processor)


# --- BLIP captioning ------------------------------------------------------------------------

def test_blip_word_logprobs_sum_the_pieces_of_the_models_own_forward(tmp):
    model, processor = tiny.blip_captioner(tmp)
    adapter = wrap(model, processor)
    words, (ids, word_of) = adapter.encode_caption("a man with skis and glasses")
    assert words == ["a", "man", "with", "skis", "and", "glasses"]
    x = image()
    with torch.no_grad():
        pieces = piece_logprobs(model(pixel_values=x, input_ids=ids).logits, ids)
        got = adapter.word_logprobs(x, ids, word_of)[0]
    # "skis" is ski + ##s and "glasses" glass + ##es: one word, the sum of its pieces.
    tokens = processor.tokenizer.convert_ids_to_tokens(ids[0, 1:-1].tolist())
    assert tokens[3:5] == ["ski", "##s"] and tokens[-2:] == ["glass", "##es"]
    expected = torch.stack([pieces[0], pieces[1], pieces[2], pieces[3] + pieces[4], pieces[5],
                            pieces[6] + pieces[7], pieces[8]])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_blip_per_word_maps_equal_single_word_and_hand_computed_grad_cam(tmp):
    model, processor = tiny.blip_captioner(tmp)
    adapter = wrap(model, processor)
    x = image(1)
    caption = "a dog sitting on the grass"
    e = vlcam.explain_caption(adapter, x, caption)
    assert e.word_maps.shape == (6, tiny.IMAGE, tiny.IMAGE) and e.word_maps.abs().sum() > 0
    _, (ids, _) = adapter.encode_caption(caption)
    layer = model.vision_model.encoder.layers[-1]
    for i in range(len(e.tokens)):
        single = vlcam.explain_caption(adapter, x, caption, words=[i]).word_maps[0]
        torch.testing.assert_close(e.word_maps[i], single, rtol=0, atol=1e-5)
        hand = manual_cam(layer, lambda i=i: piece_logprobs(model(pixel_values=x, input_ids=ids).logits, ids)[i],
                          prefix=1)
        torch.testing.assert_close(e.word_maps[i], hand, rtol=1e-4, atol=1e-5)
    whole = manual_cam(layer, lambda: piece_logprobs(model(pixel_values=x, input_ids=ids).logits, ids).sum(),
                       prefix=1)
    torch.testing.assert_close(e.caption_map, whole, rtol=1e-4, atol=1e-5)


def test_blip_caption_is_the_models_generation(tmp):
    model, processor = tiny.blip_captioner(tmp)
    adapter = wrap(model, processor)
    x = image(2)
    with torch.no_grad():
        expected = processor.tokenizer.decode(model.generate(pixel_values=x, max_new_tokens=8)[0],
                                              skip_special_tokens=True)
    assert adapter.caption(x, max_len=8) == [expected]
    own = adapter.caption(x)[0]
    assert own
    e = vlcam.explain_caption(adapter, x)  # the model's own caption
    assert e.caption == own and len(e.tokens) == len(e.word_maps) > 0


def test_blip_images_go_through_the_models_image_processor(tmp):
    import numpy as np
    from PIL import Image

    model, processor = tiny.blip_captioner(tmp)
    adapter = wrap(model, processor)
    rng = np.random.default_rng(0)
    pil = Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8))
    expected = processor(images=pil, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(adapter.preprocess(pil), expected)
    torch.testing.assert_close(adapter.preprocess([pil, pil]), torch.cat([expected, expected]))
    assert adapter.caption([pil]) == adapter.caption(expected)
    with pytest.raises(ValueError, match="non-empty list"):
        adapter.preprocess([])
    e = vlcam.explain_caption(adapter, pil, "a red ball")
    assert e.word_maps.shape == (3, 50, 70)
    from_tensor = vlcam.explain_caption(adapter, expected, "a red ball")
    torch.testing.assert_close(
        F.interpolate(from_tensor.word_maps[None], size=(50, 70), mode="bilinear", align_corners=False)[0],
        e.word_maps)


# --- VisionEncoderDecoder (ViT + GPT-2) ---------------------------------------------------------

def test_vision_encoder_decoder_word_maps_exact():
    model, tokenizer, image_processor = tiny.vit_gpt2()
    adapter = wrap(model, tokenizer=tokenizer, image_processor=image_processor)
    caption = "two cats on a red ball"
    words, (ids, word_of) = adapter.encode_caption(caption)
    assert words == caption.split()
    x = image(3)
    with torch.no_grad():
        pieces = piece_logprobs(model(pixel_values=x, decoder_input_ids=ids).logits, ids)
        got = adapter.word_logprobs(x, ids, word_of)[0]
    expected = torch.zeros(len(words) + 1).index_add(0, word_of, pieces)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    e = vlcam.explain_caption(adapter, x, caption)
    layer = model.encoder.get_submodule(adapter.default_layer.removeprefix("model.encoder."))
    for i in range(len(words)):
        single = vlcam.explain_caption(adapter, x, caption, words=[i]).word_maps[0]
        torch.testing.assert_close(e.word_maps[i], single, rtol=0, atol=1e-5)
        positions = (word_of == i).nonzero()[:, 0]
        hand = manual_cam(layer, lambda p=positions: piece_logprobs(
            model(pixel_values=x, decoder_input_ids=ids).logits, ids)[p].sum(), prefix=1)
        torch.testing.assert_close(e.word_maps[i], hand, rtol=1e-4, atol=1e-5)


# --- Constructed: the output can only come from one patch ------------------------------------

def isolate_tokens(blocks, embeddings) -> None:
    """Make `blocks` identities (no token mixing) and embeddings without position/type terms
    or patch bias: a token is then exactly its own patch's linear projection."""
    with torch.no_grad():
        for block in blocks:
            for name, module in block.named_modules():
                if name in ("self_attn.projection", "mlp.fc2", "attention.o_proj",
                            "attention.output.dense", "output.dense"):
                    module.weight.zero_()
                    module.bias.zero_()
        for name, param in embeddings.named_parameters():
            if "position" in name or "token_type" in name or name.endswith("bias"):
                param.zero_()


def one_patch_image(row, col):
    x = torch.zeros(1, 3, tiny.IMAGE, tiny.IMAGE)
    torch.manual_seed(row * 10 + col)
    p = tiny.PATCH
    x[:, :, row * p:(row + 1) * p, col * p:(col + 1) * p] = torch.randn(1, 3, p, p)
    return x


def assert_only_patch(maps, row, col):
    """Grad-CAM + counterfactual Grad-CAM: > 0 in the patch's cell, exactly 0 elsewhere."""
    both = maps[0] + maps[1]
    assert both[row, col] > 0
    both[row, col] = 0
    assert torch.count_nonzero(both) == 0


CELLS = [(0, 0), (0, GRID - 1), (GRID - 1, 1), (2, 3)]


@pytest.mark.parametrize("row,col", CELLS)
def test_blip_caption_map_lands_on_the_only_informative_patch(tmp, row, col):
    model, processor = tiny.blip_captioner(tmp)
    isolate_tokens(model.vision_model.encoder.layers, model.vision_model.embeddings)
    adapter = wrap(model, processor)
    x = one_patch_image(row, col)
    _, inputs = adapter.encode_caption("a red ball")
    maps = [vlcam.grad_cam(CaptionScorer(adapter), (x, *inputs), WordLogProb(2),
                           adapter.get_submodule(adapter.default_layer),
                           reshape=lambda t: adapter.gradcam_reshape(t, x), upsample=False, counterfactual=cf)[0]
            for cf in (False, True)]
    assert_only_patch(maps, row, col)


@pytest.mark.parametrize("row,col", CELLS)
def test_vision_encoder_decoder_map_lands_on_the_only_informative_patch(row, col):
    model, tokenizer, image_processor = tiny.vit_gpt2()
    isolate_tokens(model.encoder.layers, model.encoder.embeddings)
    adapter = wrap(model, tokenizer=tokenizer, image_processor=image_processor)
    _, inputs = adapter.encode_caption("a red ball")
    x = one_patch_image(row, col)
    maps = [vlcam.grad_cam(CaptionScorer(adapter), (x, *inputs), WordLogProb(1),
                           adapter.get_submodule(adapter.default_layer),
                           reshape=lambda t: adapter.gradcam_reshape(t, x), upsample=False, counterfactual=cf)[0]
            for cf in (False, True)]
    assert_only_patch(maps, row, col)


@pytest.mark.parametrize("row,col", CELLS)
def test_vilt_map_lands_on_the_only_informative_patch_despite_shuffled_patches(tmp, row, col):
    model, processor = tiny.vilt_vqa(tmp)
    layers = model.vilt.encoder.layer
    isolate_tokens(layers[:-1], model.vilt.embeddings)
    adapter = wrap(model, processor)
    q = adapter.encode_questions(["what color is the ball?"])
    x = one_patch_image(row, col)
    maps = [vlcam.grad_cam(adapter, (x, q), AnswerLogit(2), adapter.default_layer,
                           reshape=lambda t: adapter.gradcam_reshape(t, x), upsample=False, counterfactual=cf)[0]
            for cf in (False, True)]
    assert_only_patch(maps, row, col)


@pytest.mark.parametrize("row,col", CELLS[:2])
def test_blip_vqa_map_lands_on_the_only_informative_patch(tmp, row, col):
    model, processor = tiny.blip_vqa(tmp)
    isolate_tokens(model.vision_model.encoder.layers, model.vision_model.embeddings)
    adapter = wrap(model, processor)
    q = adapter.encode_questions(["what color is the ball?"])
    x = one_patch_image(row, col)
    maps = [vlcam.grad_cam(adapter, (x, q, *encode_answers(adapter, ["red"])), AnswerLogit(0),
                           adapter.default_layer, reshape=lambda t: adapter.gradcam_reshape(t, x), upsample=False,
                           counterfactual=cf)[0]
            for cf in (False, True)]
    assert_only_patch(maps, row, col)


def encode_answers(adapter, answers):
    return adapter.answer_inputs(answers)[0]


# --- ViLT VQA -------------------------------------------------------------------------------

def test_vilt_logits_equal_the_models_own_forward_and_answers_are_its_labels(tmp):
    model, processor = tiny.vilt_vqa(tmp)
    adapter = wrap(model, processor)
    assert adapter.answers == tiny.ANSWERS
    x = image(4)
    enc = processor.tokenizer(["what color is the ball?"], return_tensors="pt")
    with torch.no_grad():
        expected = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=x,
                         pixel_mask=torch.ones(1, tiny.IMAGE, tiny.IMAGE, dtype=torch.long)).logits
        got = adapter(x, adapter.encode_questions(["what color is the ball?"]))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_vilt_several_answers_equal_single_answer_explanations(tmp):
    model, processor = tiny.vilt_vqa(tmp)
    adapter = wrap(model, processor)
    x = image(5)
    question = "what color is the ball?"
    e = vlcam.explain_answer(adapter, x, question, ["red", "blue", "two"])
    assert e.answers == ["red", "blue", "two"] and e.maps.abs().sum() > 0
    with torch.no_grad():
        logits = adapter(x, adapter.encode_questions([question]))[0]
    torch.testing.assert_close(e.probs, torch.sigmoid(logits)[[2, 3, 4]], rtol=0, atol=1e-5)
    for k, a in enumerate(e.answers):
        torch.testing.assert_close(e.maps[k], vlcam.explain_answer(adapter, x, question, a).maps[0],
                                   rtol=0, atol=1e-5)


def test_vilt_explaining_leaves_the_model_and_the_random_stream_as_they_were(tmp):
    model, processor = tiny.vilt_vqa(tmp)
    model.train()
    model.vilt.pooler.dense.weight.requires_grad_(False)
    adapter = wrap(model, processor)
    modes = [m.training for m in model.modules()]
    x = image(6)
    state = torch.get_rng_state()
    vlcam.explain_answer(adapter, x, "how many dogs?", "two")
    assert torch.equal(torch.get_rng_state(), state)
    assert [m.training for m in model.modules()] == modes
    assert not model.vilt.pooler.dense.weight.requires_grad
    assert "visual_embed" not in vars(model.vilt.embeddings)
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(ValueError, match="not in the model's vocabulary"):
        vlcam.explain_answer(adapter, image(6), "how many dogs?", "seven")
    with pytest.raises(ValueError, match="tokens long; this model reads at most 64"):
        vlcam.explain_answer(adapter, image(6), "skis " * 40 + "?", "yes")  # 40 words, 83 tokens
    assert "visual_embed" not in vars(model.vilt.embeddings)


# --- BLIP VQA -------------------------------------------------------------------------------

def blip_answer_logprob(model, x, question_ids, answer_ids):
    """log p(answer | image, question) from HF's own forward and loss (no label smoothing)."""
    model.config.text_config.label_smoothing = 0.0
    model.text_decoder.label_smoothing = 0.0
    out = model(input_ids=question_ids, pixel_values=x, labels=answer_ids)
    return -out.loss * (answer_ids.shape[1] - 1)


def test_blip_vqa_answer_scores_and_maps_equal_references(tmp):
    model, processor = tiny.blip_vqa(tmp)
    adapter = wrap(model, processor)
    x = image(7)
    question = "what color is the ball?"
    q = adapter.encode_questions([question])
    answers = ["red", "blue", "two dogs"]
    ids, mask = encode_answers(adapter, answers)
    with torch.no_grad():
        got = adapter(x, q, ids, mask)[0]
        for k, a in enumerate(answers):
            one, _ = encode_answers(adapter, [a])
            torch.testing.assert_close(got[k], blip_answer_logprob(model, x, q, one), rtol=0, atol=1e-5)
    e = vlcam.explain_answer(adapter, x, question, answers)
    assert e.answers == answers
    torch.testing.assert_close(e.probs, got.exp(), rtol=0, atol=1e-6)
    layer = model.vision_model.encoder.layers[-1]
    for k, a in enumerate(answers):
        single = vlcam.explain_answer(adapter, x, question, a)
        torch.testing.assert_close(e.maps[k], single.maps[0], rtol=0, atol=1e-5)
        one, _ = encode_answers(adapter, [a])
        hand = manual_cam(layer, lambda one=one: blip_answer_logprob(model, x, q, one), prefix=1)
        torch.testing.assert_close(e.maps[k], hand, rtol=1e-4, atol=1e-5)


def test_blip_vqa_without_an_answer_explains_the_generated_one(tmp):
    model, processor = tiny.blip_vqa(tmp)
    adapter = wrap(model, processor)
    x = image(8)
    question = "is the dog on the grass?"
    q = adapter.encode_questions([question])
    with torch.no_grad():
        generated = processor.tokenizer.decode(model.generate(input_ids=q, pixel_values=x, max_new_tokens=10)[0],
                                               skip_special_tokens=True)
    e = vlcam.explain_answer(adapter, x, question)
    assert e.answers == [generated]
    with pytest.raises(ValueError, match="empty list"):
        vlcam.explain_answer(adapter, x, question, [])
    with pytest.raises(ValueError, match="every word of the question 'zebra giraffe' is unknown"):
        vlcam.explain_answer(adapter, x, "zebra giraffe", "yes")
    with pytest.raises(ValueError, match="no words"):
        vlcam.explain_answer(adapter, x, question, "  ")


def test_methods_and_state_on_a_hf_captioner(tmp):
    model, processor = tiny.blip_captioner(tmp)
    model.train()
    adapter = wrap(model, processor)
    x = image(9)
    for method in ("guided-gradcam", "counterfactual"):
        e = vlcam.explain_caption(adapter, x, "a dog on the grass", method=method)
        assert e.word_maps.shape == (5, tiny.IMAGE, tiny.IMAGE) and torch.isfinite(e.word_maps).all()
    assert model.training and all(m.training for m in model.modules())
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(ValueError, match="no words"):
        vlcam.explain_caption(adapter, x, "   ")
    with pytest.raises(ValueError, match="unknown to the model's tokenizer"):
        vlcam.explain_caption(adapter, x, "zebra giraffe")


# --- Loading saved models -----------------------------------------------------------------------

def test_from_pretrained_loads_a_saved_model_and_processor_offline(tmp):
    from vlcam.adapters.hf import from_pretrained

    model, processor = tiny.blip_captioner(tmp)
    model.save_pretrained(tmp / "blip")
    processor.save_pretrained(tmp / "blip")
    loaded = from_pretrained(str(tmp / "blip"), local_files_only=True)
    assert isinstance(loaded, BlipCaptioner) and not loaded.model.training
    x = image(10)
    caption = "a dog on the grass"
    torch.testing.assert_close(vlcam.explain_caption(loaded, x, caption).word_maps,
                               vlcam.explain_caption(wrap(model, processor), x, caption).word_maps)


def test_from_pretrained_without_a_processor_file_loads_tokenizer_and_image_processor(tmp):
    from vlcam.adapters.hf import from_pretrained

    model, tokenizer, image_processor = tiny.vit_gpt2()
    for part in (model, tokenizer, image_processor):
        part.save_pretrained(tmp / "vit-gpt2")
    loaded = from_pretrained(str(tmp / "vit-gpt2"), local_files_only=True)
    assert isinstance(loaded, VisionEncoderDecoderCaptioner)
    words, (ids, word_of) = loaded.encode_caption("two cats on a red ball")
    assert words == ["two", "cats", "on", "a", "red", "ball"]
    reference = wrap(model, tokenizer=tokenizer, image_processor=image_processor)
    with torch.no_grad():
        torch.testing.assert_close(loaded.word_logprobs(image(11), ids, word_of),
                                   reference.word_logprobs(image(11), ids, word_of))


def test_from_pretrained_refuses_an_unsupported_architecture(tmp):
    from transformers import BertConfig, BertModel

    from vlcam.adapters.hf import from_pretrained

    BertModel(BertConfig(vocab_size=40, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=16)).save_pretrained(tmp / "bert")
    with pytest.raises(ValueError, match="BertModel.*vlcam adapts"):
        from_pretrained(str(tmp / "bert"), local_files_only=True)


def test_vlcam_load_reads_a_transformers_folder_and_names_a_missing_model(tmp, monkeypatch):
    model, processor = tiny.vilt_vqa(tmp)
    model.save_pretrained(tmp / "vilt")
    processor.save_pretrained(tmp / "vilt")
    loaded = vlcam.load(tmp / "vilt")
    assert isinstance(loaded, ViltVQA) and loaded.answers == tiny.ANSWERS
    # A name that is no local path goes to the hub loader; a stand-in for it fails as an
    # unknown repository does, so nothing is fetched.
    asked = []

    def unknown_repository(name, device=None):
        asked.append(name)
        raise OSError(f"{name} is not a local folder and is not a valid model identifier")

    monkeypatch.setattr("vlcam.adapters.hf.from_pretrained", unknown_repository)
    monkeypatch.chdir(tmp)
    with pytest.raises(FileNotFoundError, match="'no-such-org/no-such-model' is neither a local checkpoint"):
        vlcam.load("no-such-org/no-such-model")
    assert asked == ["no-such-org/no-such-model"]
    with pytest.raises(FileNotFoundError, match="checkpoint directory not found"):
        vlcam.load(tmp / "no-such-folder")
    assert asked == ["no-such-org/no-such-model"]  # a Path is always local


def test_command_line_explains_a_saved_hf_captioner_and_vqa_model(tmp, capsys):
    import numpy as np
    from PIL import Image

    from vlcam.cli import main

    model, processor = tiny.blip_captioner(tmp)
    model.save_pretrained(tmp / "blip-cli")
    processor.save_pretrained(tmp / "blip-cli")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp / "img.png")
    assert main(["explain", str(tmp / "blip-cli"), str(tmp / "img.png"), "--caption", "a red ball",
                 "--out", str(tmp / "cap.png")]) == 0
    out = capsys.readouterr().out
    expected = vlcam.explain_caption(wrap(model, processor), tmp / "img.png", "a red ball")
    assert f"log p = {expected.caption_logprob:.3f}" in out and (tmp / "cap.png").stat().st_size > 0
    assert [line.split()[0] for line in out.splitlines()[1:4]] == ["a", "red", "ball"]

    model, processor = tiny.vilt_vqa(tmp)
    model.save_pretrained(tmp / "vilt-cli")
    processor.save_pretrained(tmp / "vilt-cli")
    assert main(["explain", str(tmp / "vilt-cli"), str(tmp / "img.png"), "--question", "what color is it?",
                 "--answer", "red", "--answer", "blue", "--out", str(tmp / "vqa.png")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:3]] == ["red", "blue"] and (tmp / "vqa.png").is_file()


def test_pointing_game_runs_on_a_hf_captioner_over_the_same_words_as_a_native_one(tmp):
    from vlcam.data.synthetic import generate
    from vlcam.data.wordmap import WordMap
    from vlcam.demo import shipped_checkpoint
    from vlcam.eval.pointing import caption_pointing_game

    world = tmp / "world"
    generate(world, num_images=3, image_size=64, seed=5, val_fraction=1.0, workers=1)
    word_map = WordMap.from_file(world / "word_map.json")
    files = (world / "captions_val.json", world / "instances_val.json", world / "images")
    model, processor = tiny.blip_captioner(tmp)
    ours = caption_pointing_game(wrap(model, processor), *files, word_map)
    native = caption_pointing_game(vlcam.load(shipped_checkpoint()), *files, word_map)
    words = [(i["image_id"], i["word"]) for i in ours["items"]]
    assert words and words == [(i["image_id"], i["word"]) for i in native["items"]]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_adapters_on_cuda_give_the_cpu_maps(tmp):
    x = image(12)
    model, processor = tiny.vilt_vqa(tmp)
    cpu = vlcam.explain_answer(wrap(model, processor), x, "what color is the ball?", ["red", "blue"])
    state = torch.cuda.get_rng_state()
    gpu = vlcam.explain_answer(wrap(model.cuda(), processor), x, "what color is the ball?", ["red", "blue"])
    assert torch.equal(torch.cuda.get_rng_state(), state)
    torch.testing.assert_close(gpu.maps.cpu(), cpu.maps, rtol=1e-3, atol=1e-4)
    model, processor = tiny.blip_captioner(tmp)
    cpu = vlcam.explain_caption(wrap(model, processor), x, "a dog on the grass")
    gpu = vlcam.explain_caption(wrap(model.cuda(), processor), x, "a dog on the grass")
    torch.testing.assert_close(gpu.word_maps.cpu(), cpu.word_maps, rtol=1e-3, atol=1e-4)


def test_occlusion_runs_score_hf_captioners_and_open_vocabulary_vqa(tmp):
    from vlcam.data.synthetic import generate
    from vlcam.data.wordmap import WordMap
    from vlcam.eval.faithfulness import run_answer_occlusion, run_caption_occlusion

    world = tmp / "occlusion-world"
    generate(world, num_images=2, image_size=64, seed=9, val_fraction=1.0, workers=1)
    (world / "images" / "synth_000002.png").unlink()
    model, processor = tiny.blip_captioner(tmp)
    captions = run_caption_occlusion(tmp / "occ-cap", wrap(model, processor), world / "captions_val.json",
                                     world / "images", WordMap.builtin("synthetic"), patch=8, stride=8,
                                     num_workers=0)
    assert captions["words"] > 0 and captions["skipped"] == {"missing image": 5}
    for method in ("gradcam", "guided_backprop"):
        assert -1.0 <= captions[method]["mean_rank_correlation"] <= 1.0
    model, processor = tiny.blip_vqa(tmp)
    answers = run_answer_occlusion(tmp / "occ-vqa", wrap(model, processor), world / "vqa_questions_val.json",
                                   world / "images", image_pattern="synth_{image_id:06d}.png", patch=8,
                                   stride=8, limit=4, num_workers=0)
    assert answers["scored"] + sum(answers["skipped"].values()) == answers["questions"] == 4
    assert answers["scored"] > 0 and -1.0 <= answers["gradcam"]["mean_rank_correlation"] <= 1.0
