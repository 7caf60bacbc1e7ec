"""Backbones, the Show-and-Tell captioner, and its checkpoints."""

from __future__ import annotations

import itertools
import json
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import models

import vlcam.adapters.show_and_tell as sat
from vlcam import checkpoint, loading
from vlcam.adapters.backbones import build_backbone
from vlcam.adapters.show_and_tell import ShowAndTell, token_logprobs_from_logits
from vlcam.image import preprocess
from vlcam.text import END, PAD, START, Vocabulary

CAPTIONS = ["a red ball left of a blue box", "two green stars", "a blue box above a red ball"]


def _tiny(vocab: Vocabulary | None = None, seed: int = 0) -> ShowAndTell:
    torch.manual_seed(seed)
    vocab = vocab or Vocabulary.from_captions(CAPTIONS, min_count=1)
    return ShowAndTell(vocab, "compact", embed_dim=16, hidden_dim=24, image_size=32).eval()


def _images(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# --- Backbones --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "size", "channels", "map_size"),
    [
        ("compact", 128, 256, 16),
        ("resnet18", 64, 512, 2),
        ("vgg11", 224, 512, 14),
        ("inception_v3", 299, 2048, 8),
        ("timm:resnet10t", 64, 512, 2),
        ("mobilenetv3_small_050", 64, 288, 2),
    ],
)
def test_backbones_give_the_last_conv_map_at_their_gradcam_layer(name, size, channels, map_size) -> None:
    backbone = build_backbone(name).eval()
    captured = {}
    layer = dict(backbone.named_modules())[backbone.gradcam_layer]
    layer.register_forward_hook(lambda m, i, o: captured.setdefault("map", o))
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, size, size))
    assert out.shape == (1, channels, map_size, map_size) and backbone.out_channels == channels
    # The default Grad-CAM layer is the last block: its output is the backbone's output.
    torch.testing.assert_close(captured["map"], out)
    assert len(backbone.mean) == len(backbone.std) == 3


def test_compact_backbone_is_small_and_keeps_a_fine_map() -> None:
    backbone = build_backbone("compact")
    assert 0.3e6 <= sum(p.numel() for p in backbone.parameters()) <= 1.5e6
    assert backbone.gradcam_layer == "body.block5"


def test_resnet_backbone_is_the_torchvision_model_without_its_head() -> None:
    torch.manual_seed(0)
    model = models.resnet18(weights=None).eval()
    backbone = build_backbone("resnet18").eval()
    backbone.body.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("fc.")})
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(model.fc(backbone(x).mean(dim=(2, 3))), model(x))


def test_inception_normalisation_reproduces_torchvision_transform_input() -> None:
    # Pretrained inception_v3 expects torchvision's transform_input; the backbone's
    # mean/std (0.5) must feed Mixed_7c exactly what that transform would.
    torch.manual_seed(0)
    model = models.inception_v3(weights=None, aux_logits=False, init_weights=False, transform_input=True).eval()
    backbone = build_backbone("inception_v3").eval()
    backbone.body.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("fc.")})
    pixels = torch.rand(1, 3, 299, 299)
    imagenet = (pixels - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    ours = (pixels - torch.tensor(backbone.mean).view(1, 3, 1, 1)) / torch.tensor(backbone.std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model.fc(backbone(ours).mean(dim=(2, 3))), model(imagenet), atol=1e-4, rtol=1e-4)


def test_unknown_backbone_lists_close_names_and_families() -> None:
    with pytest.raises(ValueError, match="resnet-18") as err:
        build_backbone("resnet-18")
    assert "'resnet18'" in str(err.value) and "timm:<name>" in str(err.value)


def test_torchvision_transformers_are_refused_with_a_hint() -> None:
    with pytest.raises(ValueError, match="vit_b_16.*timm"):
        build_backbone("vit_b_16")


# --- The model ------------------------------------------------------------------------


def test_logits_have_one_row_per_next_word() -> None:
    model = _tiny()
    tokens = model.encode_captions(CAPTIONS)
    logits = model(_images(3), tokens)
    assert logits.shape == (3, tokens.shape[1] - 1, len(model.vocab))
    assert model.default_layer == "encoder.body.block5"
    assert model.default_layer in dict(model.named_modules())


def test_token_logprobs_match_a_hand_computation() -> None:
    model = _tiny()
    tokens = model.encode_captions(CAPTIONS)
    images = _images(3)
    logits = model(images, tokens).detach()
    expected = torch.zeros(tokens.shape[0], tokens.shape[1] - 1)
    for b, t in itertools.product(range(tokens.shape[0]), range(tokens.shape[1] - 1)):
        target = int(tokens[b, t + 1])
        if target != PAD:
            row = logits[b, t].double()
            expected[b, t] = float(row[target] - torch.log(torch.exp(row).sum()))
    torch.testing.assert_close(model.word_logprobs(images, tokens), expected, atol=1e-5, rtol=0)
    assert (model.word_logprobs(images, tokens)[tokens[:, 1:] == PAD] == 0).all()


def test_a_word_is_predicted_from_the_image_and_the_earlier_words_only() -> None:
    model = _tiny()
    tokens = model.encode_captions(["a red ball left of a blue box"])
    changed = tokens.clone()
    changed[0, 4:-1] = model.vocab.index("two")
    images = _images(1)
    a, b = model(images, tokens), model(images, changed)
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert not torch.allclose(a[:, 4:], b[:, 4:])
    assert not torch.allclose(model(_images(1, seed=1), tokens)[:, 0], a[:, 0])


def test_tiled_features_give_identical_copies_of_the_logprobs() -> None:
    model = _tiny()
    tokens = model.encode_captions(CAPTIONS)
    features = model.encode(_images(3))
    single = token_logprobs_from_logits(model.decode(features, tokens), tokens)
    tiled = token_logprobs_from_logits(model.decode(features.repeat(4, 1, 1, 1), tokens), tokens)
    assert tiled.shape == (12, tokens.shape[1] - 1)
    torch.testing.assert_close(tiled.view(4, 3, -1), single.expand(4, -1, -1), atol=1e-6, rtol=0)


def test_images_that_do_not_tile_the_captions_are_refused() -> None:
    model = _tiny()
    tokens = model.encode_captions(CAPTIONS)
    with pytest.raises(ValueError, match="4 images.*3 captions"):
        model(_images(4), tokens)


def test_the_engine_explains_several_words_in_one_backward_through_the_tiling_rule() -> None:
    from vlcam import WordLogProb, grad_cam

    class Scores(nn.Module):
        def __init__(self, captioner: ShowAndTell) -> None:
            super().__init__()
            self.captioner = captioner

        def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
            return self.captioner.word_logprobs(images, tokens)

    scorer = Scores(_tiny())
    tokens = scorer.captioner.encode_captions(CAPTIONS[:2])
    targets = [WordLogProb(t) for t in range(3)]
    layer = "captioner." + scorer.captioner.default_layer
    one_by_one = grad_cam(scorer, (_images(2), tokens), targets, layer)
    batched = grad_cam(scorer, (_images(2), tokens), targets, layer, batch_targets=True)
    assert one_by_one.shape == (2, 3, 32, 32) and one_by_one.abs().sum() > 0
    torch.testing.assert_close(batched, one_by_one, atol=1e-5, rtol=1e-4)


def test_encode_captions_pads_and_warns_once_about_unknown_words() -> None:
    model = _tiny()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tokens = model.encode_captions(["a zebra", "two red qux balls"])
    assert len(caught) == 1 and "'zebra'" in str(caught[0].message) and "'qux'" in str(caught[0].message)
    assert tokens.dtype == torch.long and tokens.shape == (2, 6)
    assert tokens[0].tolist()[:4] == [START, model.vocab.index("a"), model.vocab.UNK, END]
    assert tokens[0, 4:].tolist() == [PAD, PAD]


# --- Generation -----------------------------------------------------------------------


def _greedy_by_rescoring(model: ShowAndTell, image: torch.Tensor, max_len: int) -> list[int]:
    """Greedy decoding through the teacher-forced decode(): an independent implementation."""
    words: list[int] = []
    with torch.no_grad():
        features = model.encode(image)
        for _ in range(max_len):
            tokens = torch.tensor([[START, *words, PAD]])
            scores = model.decode(features, tokens)[0, -1]
            scores[[PAD, START]] = float("-inf")
            word = int(scores.argmax())
            if word == END:
                break
            words.append(word)
    return words


def _caption_logprob(model: ShowAndTell, image: torch.Tensor, words: list[int], max_len: int) -> float:
    ending = [END] if len(words) < max_len else []
    tokens = torch.tensor([[START, *words, *ending]])
    with torch.no_grad():
        return float(model.word_logprobs(image, tokens).sum())


def test_greedy_generation_matches_teacher_forced_rescoring() -> None:
    model = _tiny(seed=3)
    images = _images(4, seed=3)
    generated = model.generate(images, max_len=6)
    assert generated == [_greedy_by_rescoring(model, images[i:i + 1], 6) for i in range(4)]
    assert all(START not in g and END not in g and PAD not in g and len(g) <= 6 for g in generated)


def test_beam_search_of_width_one_is_greedy() -> None:
    model = _tiny(seed=4)
    images = _images(4, seed=4)
    with torch.no_grad():
        embedded = model.image_embed(model.encode(images).mean(dim=(2, 3)))
        beams = [model._beam(embedded[i:i + 1], 8, 1) for i in range(4)]
    assert beams == model.generate(images, max_len=8, beam_size=1)


def test_beam_search_scores_at_least_as_high_as_greedy() -> None:
    model = _tiny(seed=5)
    images = _images(6, seed=5)
    greedy = model.generate(images, max_len=8)
    beam = model.generate(images, max_len=8, beam_size=4)
    for i in range(6):
        image = images[i:i + 1]
        assert _caption_logprob(model, image, beam[i], 8) >= _caption_logprob(model, image, greedy[i], 8) - 1e-5


def test_a_beam_wide_enough_finds_the_most_likely_caption() -> None:
    vocab = Vocabulary(["ball", "box", "star"])
    model = _tiny(vocab, seed=6)
    image, max_len = _images(1, seed=6), 3
    choices = [vocab.UNK, *range(4, len(vocab))]
    candidates = [list(c) for n in range(max_len + 1) for c in itertools.product(choices, repeat=n)]
    best = max(candidates, key=lambda c: _caption_logprob(model, image, c, max_len))
    beam = model.generate(image, max_len=max_len, beam_size=len(choices) ** max_len)[0]
    assert _caption_logprob(model, image, beam, max_len) == pytest.approx(
        _caption_logprob(model, image, best, max_len), abs=1e-5)


def test_caption_returns_words_and_restores_train_mode() -> None:
    model = _tiny().train()
    captions = model.caption(_images(2), max_len=5)
    assert len(captions) == 2
    assert all(w in model.vocab for c in captions for w in c.split())
    assert model.training and all(m.training for m in model.modules())


def test_generate_preprocesses_arrays_and_files_with_the_backbone_normalisation(tmp_path) -> None:
    model = _tiny()
    array = np.random.default_rng(0).integers(0, 256, size=(50, 70, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "a.png")
    expected = preprocess(array, 32, model.encoder.mean, model.encoder.std)[0].repeat(2, 1, 1, 1)
    torch.testing.assert_close(model.preprocess([array, tmp_path / "a.png"]), expected)
    assert model.generate([array, tmp_path / "a.png"], max_len=5) == model.generate(expected, max_len=5)


# --- Checkpoints ------------------------------------------------------------------------


def test_checkpoint_round_trip_gives_identical_logits_without_unpickling(tmp_path, monkeypatch) -> None:
    model = _tiny()
    model.encoder.body.block1[1].running_mean.add_(0.5)  # buffers must travel too
    model.save(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors", "vocab.json"]
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["kind"] == "show_and_tell" and config == model.config

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("loading a checkpoint unpickled something")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    built_with = []
    real_build = sat.build_backbone
    monkeypatch.setattr(sat, "build_backbone", lambda name, **kw: built_with.append(kw) or real_build(name, **kw))
    for loaded in (ShowAndTell.load(tmp_path / "ckpt"), loading.load(tmp_path / "ckpt")):
        assert isinstance(loaded, ShowAndTell) and not loaded.training
        assert loaded.vocab == model.vocab and loaded.default_layer == model.default_layer
        tokens = model.encode_captions(CAPTIONS)
        torch.testing.assert_close(loaded(_images(3), tokens), model(_images(3), tokens), atol=0, rtol=0)
    assert built_with == [{"pretrained": False}] * 2


def test_checkpoints_with_tied_weights_can_be_saved(tmp_path) -> None:
    shared = torch.arange(6.0).view(2, 3)
    state = {"embed.weight": shared, "out.weight": shared, "view": shared[0]}
    checkpoint.save_checkpoint(tmp_path, state, {"kind": "show_and_tell"})
    loaded, config = checkpoint.load_state(tmp_path)
    assert config == {"kind": "show_and_tell"}
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_load_names_the_missing_path_or_unknown_kind(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        loading.load(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="config.json"):
        loading.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"kind": "clip"}))
    with pytest.raises(ValueError, match="'clip'.*show_and_tell"):
        loading.load(tmp_path)


def test_the_checkpoint_and_loading_modules_import_no_adapter() -> None:
    code = ("import sys, vlcam.checkpoint, vlcam.loading; "
            "assert not [m for m in sys.modules if m.startswith('vlcam.adapters')], 'adapter imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("kind", sorted(loading.KINDS))
def test_each_registered_class_declares_the_kind_it_is_registered_under(kind) -> None:
    assert loading.adapter_class(kind).kind == kind


def test_max_pooling_is_kept_in_the_checkpoint_and_reads_only_the_maxima(tmp_path):
    vocab = Vocabulary.from_captions(["a red ball", "a blue box"], min_count=1)
    torch.manual_seed(0)
    model = ShowAndTell(vocab, "compact", embed_dim=8, hidden_dim=8, image_size=32, pool="max").eval()
    x, tokens = torch.randn(2, 3, 32, 32), model.encode_captions(["a red ball", "a blue box"])
    loaded = ShowAndTell.load(model.save(tmp_path / "ckpt"))
    assert loaded.pool == "max" and loaded.config["pool"] == "max"
    torch.testing.assert_close(loaded(x, tokens), model(x, tokens), rtol=0, atol=0)
    with torch.no_grad():
        conv = model.encode(x)
        lowered = torch.where(conv == conv.amax(dim=(2, 3), keepdim=True), conv, conv - 0.5)
        torch.testing.assert_close(model.decode(lowered, tokens), model.decode(conv, tokens))
        avg = ShowAndTell(vocab, "compact", embed_dim=8, hidden_dim=8, image_size=32).eval()
        avg.load_state_dict(model.state_dict())
        assert not torch.allclose(avg.decode(lowered, tokens), avg.decode(conv, tokens))
    with pytest.raises(ValueError, match="pool must be one of"):
        ShowAndTell(vocab, pool="sum")


@pytest.mark.parametrize(("name", "offset"), [("compact_deep", -3.5), ("compact_aligned", 0.0)])
def test_compact_aligned_centres_each_map_cell_where_upsampling_draws_it(name, offset) -> None:
    # With every weight 1, a cell's input gradient is its receptive field's weighting, whose
    # centre of mass is where the cell looks. Bilinear upsampling (align_corners=False) of
    # the 16 x 16 map at 128^2 draws cell j at pixel 8j + 3.5.
    backbone = build_backbone(name).eval()
    for module in backbone.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.constant_(module.weight, 1.0)
    x = torch.ones(1, 3, 128, 128, requires_grad=True)
    cell = 7
    backbone(x)[0, :, cell, cell].sum().backward()
    weight = x.grad[0].abs().sum(0)
    rows = torch.arange(128.0)
    centre = (float((weight.sum(1) * rows).sum() / weight.sum()), float((weight.sum(0) * rows).sum() / weight.sum()))
    drawn = 8 * cell + 3.5
    assert centre == pytest.approx((drawn + offset, drawn + offset), abs=1e-3)


def test_gated_input_is_word_image_and_their_product_and_greedy_decoding_agrees_with_teacher_forcing(tmp_path) -> None:
    vocab = Vocabulary.from_captions(CAPTIONS, min_count=1)
    torch.manual_seed(0)
    model = ShowAndTell(vocab, "compact", embed_dim=8, hidden_dim=12, image_size=32, pool="max",
                        image_input="gated").eval()
    x, tokens = _images(2), model.encode_captions(CAPTIONS[:2])
    with torch.no_grad():
        image = model.image_vector(model.encode(x))  # [B, E]
        words = model.word_embed(tokens[:, :-1])  # [B, L-1, E]
        tiled = image[:, None].expand_as(words)
        hidden, _ = model.lstm(torch.cat([words, tiled, words * tiled], dim=2))
        torch.testing.assert_close(model(x, tokens), model.classifier(hidden))
        # Greedy decoding steps through the same inputs: its words are the teacher-forced argmax.
        said = model.generate(x, max_len=6)
        for row, ids in enumerate(said):
            forced = model.encode_captions([" ".join(vocab.decode(ids))])
            logits = model(x[row:row + 1], forced)[0]
            allowed = logits.clone()
            allowed[:, [PAD, START]] = float("-inf")
            assert allowed.argmax(dim=-1)[:len(ids)].tolist() == ids
    loaded = ShowAndTell.load(model.save(tmp_path / "ckpt"))
    assert loaded.config["image_input"] == "gated" and loaded.lstm.input_size == 3 * 8
    torch.testing.assert_close(loaded(x, tokens), model(x, tokens), rtol=0, atol=0)


def test_projected_max_projects_each_position_then_keeps_each_components_maximum(tmp_path) -> None:
    from vlcam import WordLogProb, grad_cam

    vocab = Vocabulary.from_captions(CAPTIONS, min_count=1)
    torch.manual_seed(0)
    model = ShowAndTell(vocab, "compact", embed_dim=8, hidden_dim=8, image_size=32, pool="projmax",
                        image_input="every").eval()
    x, tokens = _images(2), model.encode_captions(CAPTIONS[:2])
    with torch.no_grad():
        conv = model.encode(x)
        by_hand = torch.einsum("bchw,ec->behw", conv, model.image_embed.weight).amax(dim=(2, 3)) \
            + model.image_embed.bias
        torch.testing.assert_close(model.image_vector(conv), by_hand)
    loaded = ShowAndTell.load(model.save(tmp_path / "ckpt"))
    assert loaded.config["pool"] == "projmax"
    torch.testing.assert_close(loaded(x, tokens), model(x, tokens), rtol=0, atol=0)

    # A word's Grad-CAM map is, at each place, the projected features' contribution there:
    # relu(sum_e g_e (W a(x))_e) / (h w), g = d score / d image vector (bias-free projection).
    class Scores(nn.Module):
        def __init__(self, captioner: ShowAndTell) -> None:
            super().__init__()
            self.captioner = captioner

        def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
            return self.captioner.word_logprobs(images, tokens)

    maps = grad_cam(Scores(model), (x, tokens), WordLogProb(1), "captioner." + model.default_layer, upsample=False)
    conv = model.encode(x).detach()
    vector = model.image_vector(conv).detach().requires_grad_(True)
    score = token_logprobs_from_logits(model.vector_logits(vector, tokens), tokens)[:, 1].sum()
    (g,) = torch.autograd.grad(score, vector)
    projected = torch.einsum("bchw,ec->behw", conv, model.image_embed.weight)
    expected = torch.relu((g[:, :, None, None] * projected).sum(1)) / (conv.shape[2] * conv.shape[3])
    torch.testing.assert_close(maps, expected, atol=1e-6, rtol=1e-5)
