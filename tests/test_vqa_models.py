"""The two VQA adapters: their equations, broadcasting, checkpoints, and training on the built-in world."""

from __future__ import annotations

import io
import json
import runpy
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vlcam
from vlcam.adapters.hiecoatt import HieCoAtt, ParallelCoAttention
from vlcam.adapters.vqa_lstm_cnn import VQALSTMCNN
from vlcam.data.synthetic import generate
from vlcam.data.vqa import read_vqa
from vlcam.targets import AnswerLogit
from vlcam.text import Vocabulary
from vlcam.train.vqa import evaluate_vqa, train_vqa

# pycocotools' decode trips a NumPy 2 deprecation on every mask; it is theirs, not ours.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
              pytest.mark.usefixtures("one_thread")]

REPO = Path(__file__).resolve().parents[1]
WORDS = "what color is the ball box star how many balls are there a".split()
ANSWERS = ["red", "blue", "green", "1", "2", "yes", "no"]
QUESTIONS = ["what color is the ball?", "how many balls are there", "is there a star?"]
PATTERN = "synth_{image_id:06d}.png"
# Tiny on purpose: 64² images, small layers, a few epochs on 240 training images.
FAST = dict(image_pattern=PATTERN, image_size=64, batch_size=16, lr=3e-3, progress=False)
LSTM_OPTIONS = dict(embed_dim=32, hidden_dim=32, common_dim=64, mlp_dim=64, dropout=0.0)
HIE_OPTIONS = dict(hidden_dim=32, attention_dim=32, dropout=0.0)


def _lstm(seed: int = 0) -> VQALSTMCNN:
    torch.manual_seed(seed)
    return VQALSTMCNN(Vocabulary(WORDS), ANSWERS, "compact", image_size=64, **LSTM_OPTIONS).eval()


def _hie(seed: int = 0) -> HieCoAtt:
    torch.manual_seed(seed)
    return HieCoAtt(Vocabulary(WORDS), ANSWERS, image_size=64, **HIE_OPTIONS).eval()


def _attention(seed: int = 0) -> VQALSTMCNN:
    torch.manual_seed(seed)
    return VQALSTMCNN(Vocabulary(WORDS), ANSWERS, "compact", image_size=64, attention=True, **LSTM_OPTIONS).eval()


@pytest.fixture(scope="module", params=["lstm-cnn", "lstm-cnn+attention", "hiecoatt"])
def model(request: pytest.FixtureRequest) -> nn.Module:
    return {"lstm-cnn": _lstm, "lstm-cnn+attention": _attention, "hiecoatt": _hie}[request.param]()


def _images(batch: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


# --- Interface and broadcasting -------------------------------------------------------------


def test_logits_per_question_do_not_depend_on_batch_padding(model: nn.Module) -> None:
    x = _images(3)
    together = model(x, model.encode_questions(QUESTIONS))
    assert together.shape == (3, len(ANSWERS))
    for i, question in enumerate(QUESTIONS):
        alone = model(x[i:i + 1], model.encode_questions([question]))
        torch.testing.assert_close(alone[0], together[i], rtol=1e-5, atol=1e-6)


def test_a_larger_image_batch_tiles_the_questions(model: nn.Module) -> None:
    x, q = _images(2), model.encode_questions(QUESTIONS[:2])
    tiled = model(torch.cat([x, x, x]), q)
    torch.testing.assert_close(tiled, model(x, q).repeat(3, 1), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="multiple of it"):
        model(_images(3), q)


def test_batched_targets_equal_one_backward_per_target(model: nn.Module) -> None:
    x, q = _images(2), model.encode_questions(QUESTIONS[:2])
    targets = [AnswerLogit(k) for k in range(4)] + [AnswerLogit(torch.tensor([5, 6]))]
    one = vlcam.grad_cam(model, (x, q), targets, model.default_layer, batch_targets=True)
    each = vlcam.grad_cam(model, (x, q), targets, model.default_layer)
    assert one.shape == (2, 5, 64, 64)
    assert (one - each).abs().max() <= 1e-5 * max(1.0, float(each.abs().max()))
    assert one.abs().sum() > 0


def test_encode_questions_marks_unknown_words_and_refuses_empty_questions(model: nn.Module) -> None:
    with pytest.warns(UserWarning, match="'zebra'"):
        ids = model.encode_questions(["what color is the zebra?", "how many"])
    assert ids.tolist() == [[model.vocab.index(w) for w in ("what", "color", "is", "the")] + [3],
                            [model.vocab.index("how"), model.vocab.index("many"), 0, 0, 0]]
    with pytest.raises(ValueError, match="question 1 .* has no words"):
        model.encode_questions(["what", " ?! "])
    with pytest.raises(ValueError, match="non-empty list"):
        model.encode_questions("what color")


# --- The equations ---------------------------------------------------------------------------


def test_lstm_cnn_fuses_pooled_normalised_image_and_both_lstm_layers_states() -> None:
    m = _lstm()
    x, q = _images(1), m.encode_questions(["what color is the ball?"])
    with torch.no_grad():
        pooled = m.cnn(x).mean(dim=(2, 3))
        image = torch.tanh(m.image_proj(pooled / pooled.norm(dim=1, keepdim=True)))
        _, (h, c) = m.lstm(torch.tanh(m.word_embed(q)))
        question = torch.tanh(m.question_proj(torch.cat([h[0], c[0], h[1], c[1]], dim=1)))
        expected = m.classifier(image * question)
        torch.testing.assert_close(m(x, q), expected)
    assert m.default_layer == "cnn.body.block5"


def test_lstm_cnn_projected_max_normalises_and_projects_each_position_then_keeps_the_maximum(
        tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = VQALSTMCNN(Vocabulary(WORDS), ANSWERS, "compact", image_size=64, pool="projmax", **LSTM_OPTIONS).eval()
    x, q = _images(2), m.encode_questions(["what color is the ball?", "is there a star?"])
    with torch.no_grad():
        conv = m.cnn(x)
        unit = conv / conv.norm(dim=1, keepdim=True)
        projected = torch.einsum("bchw,ec->behw", unit, m.image_proj.weight) + m.image_proj.bias[:, None, None]
        image = torch.tanh(projected.amax(dim=(2, 3)))
        torch.testing.assert_close(m.encode_images(x), image)
        torch.testing.assert_close(m(x, q), m.answer_logits(image, q))
    loaded = VQALSTMCNN.load(m.save(tmp_path / "ckpt"))
    assert loaded.config["pool"] == "projmax"
    torch.testing.assert_close(loaded(x, q), m(x, q), rtol=0, atol=0)


def test_lstm_cnn_with_attention_adds_the_question_weighted_mean_of_the_positions(tmp_path: Path) -> None:
    m = _attention()
    x, q = _images(2), m.encode_questions(["what color is the ball?", "is there a star?"])
    with torch.no_grad():
        conv = m.cnn(x)
        pooled = torch.tanh(m.image_proj(F.normalize(conv.mean(dim=(2, 3)), dim=1)))  # pool="avg"
        positions = torch.tanh(m.position_proj(F.normalize(conv.flatten(2).transpose(1, 2), dim=2)))
        question = m.encode_question_vectors(q)
        read = []
        for b in range(2):
            scores = positions[b] @ m.attention_key(question[b]) / positions.shape[2] ** 0.5
            read.append(pooled[b] + torch.softmax(scores, dim=0) @ positions[b])
        expected = m.classifier(torch.stack(read) * question)
        torch.testing.assert_close(m(x, q), expected)
        # Broadcasting: copies of the images pair with copies of the questions.
        torch.testing.assert_close(m(torch.cat([x, x]), q), expected.repeat(2, 1))
    loaded = VQALSTMCNN.load(m.save(tmp_path / "ckpt"))
    assert loaded.config["attention"] is True
    torch.testing.assert_close(loaded(x, q), m(x, q), rtol=0, atol=0)


def _coattention_by_the_paper(att: ParallelCoAttention, Q: torch.Tensor, V: torch.Tensor) -> tuple:
    """One item, columns as in Lu et al.: Q is d x T, V is d x N."""
    W_b, W_v, W_q = att.w_b.weight, att.w_v.weight, att.w_q.weight
    C = torch.tanh(Q.T @ W_b @ V)  # T x N
    H_v = torch.tanh(W_v @ V + (W_q @ Q) @ C)
    H_q = torch.tanh(W_q @ Q + (W_v @ V) @ C.T)
    a_v = torch.softmax(att.w_hv.weight @ H_v + att.w_hv.bias[:, None], dim=1)[0]
    a_q = torch.softmax(att.w_hq.weight @ H_q + att.w_hq.bias[:, None], dim=1)[0]
    return Q @ a_q, V @ a_v


def test_parallel_coattention_follows_the_paper_and_ignores_padding() -> None:
    torch.manual_seed(0)
    att = ParallelCoAttention(6, 5)
    Q, V = torch.randn(6, 4), torch.randn(6, 9)
    expected_q, expected_v = _coattention_by_the_paper(att, Q, V)
    padded = torch.cat([Q.T, torch.zeros(2, 6)])[None]  # two <pad> words, zero features
    mask = torch.tensor([[True] * 4 + [False] * 2])
    with torch.no_grad():
        q, v = att(padded, V.T[None], mask)
    torch.testing.assert_close(q[0], expected_q)
    torch.testing.assert_close(v[0], expected_v)


def test_hiecoatt_grid_and_every_resnet_block_can_be_explained() -> None:
    m = _hie()
    x, q = _images(1, size=128), m.encode_questions(["what color is the ball?"])
    assert m.encode_images(x).shape == (1, 8 * 8, 32)  # layer4's 8 x 8 grid at 128²
    grids = {b: tuple(vlcam.grad_cam(m, (x, q), AnswerLogit(0), f"cnn.body.{b}", upsample=False).shape[-2:])
             for b in ("layer1", "layer2", "layer3", "layer4")}
    assert grids == {"layer1": (32, 32), "layer2": (16, 16), "layer3": (16, 16), "layer4": (8, 8)}
    assert m.default_layer == "cnn.body.layer4"


def test_hiecoatt_takes_torchvision_resnets_and_refuses_other_backbones() -> None:
    m = HieCoAtt(Vocabulary(WORDS), ANSWERS, "resnet18", image_size=64, **HIE_OPTIONS).eval()
    x, q = _images(1), m.encode_questions(["is there a star"])
    assert m.encode_images(x).shape == (1, 2 * 2, 32)
    assert vlcam.grad_cam(m, (x, q), AnswerLogit(1), "cnn.body.layer3", upsample=False).shape == (1, 4, 4)
    with pytest.raises(ValueError, match="needs a ResNet backbone.*'small_resnet'"):
        HieCoAtt(Vocabulary(WORDS), ANSWERS, "vgg11")


def test_bad_constructor_arguments_name_the_value() -> None:
    with pytest.raises(ValueError, match="answers must be distinct"):
        VQALSTMCNN(Vocabulary(WORDS), ["red", "red"])
    with pytest.raises(ValueError, match="hidden_dim must be a positive int, got 0"):
        HieCoAtt(Vocabulary(WORDS), ANSWERS, hidden_dim=0)
    with pytest.raises(TypeError, match="Vocabulary"):
        VQALSTMCNN(WORDS, ANSWERS)  # type: ignore[arg-type]


# --- Checkpoints -----------------------------------------------------------------------------


def test_checkpoint_round_trip_gives_identical_logits(model: nn.Module, tmp_path: Path) -> None:
    x, q = _images(3), model.encode_questions(QUESTIONS)
    model.save(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "answers.json", "config.json", "model.safetensors", "vocab.json"]
    loaded = vlcam.load(tmp_path / "ckpt")
    assert type(loaded) is type(model) and not loaded.training
    assert loaded.answers == ANSWERS and loaded.vocab == model.vocab and loaded.config == model.config
    with torch.no_grad():
        assert torch.equal(loaded(x, q), model(x, q))
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["kind"] == model.config["kind"]


# --- Training on the built-in world ----------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world")
    generate(out, 300, image_size=64, seed=0, workers=1)
    return out


def _files(world: Path) -> tuple[Path, Path, Path]:
    return world / "vqa_questions_train.json", world / "vqa_annotations_train.json", world / "images"


@pytest.mark.parametrize(("name", "options"), [("lstm-cnn", LSTM_OPTIONS), ("hiecoatt", HIE_OPTIONS)])
def test_training_beats_the_answer_prior_on_held_out_questions(world: Path, tmp_path: Path, name: str,
                                                               options: dict) -> None:
    metrics = train_vqa(*_files(world), tmp_path / "run", model=name, model_options=options, epochs=6, **FAST)
    assert (metrics["train_images"], metrics["val_images"]) == (240, 60)  # the sibling val files are used
    assert metrics["best_val_accuracy"] > metrics["initial_val_accuracy"] + 0.2
    assert metrics["best_val_accuracy"] > metrics["prior"]["most_common"] + 0.1
    model = vlcam.load(tmp_path / "run")
    val = read_vqa(world / "vqa_questions_val.json", world / "vqa_annotations_val.json", world / "images",
                   image_pattern=PATTERN)
    # The checkpoint is the best-validation model, and its accuracy is the reported one.
    assert evaluate_vqa(model, val)["accuracy"] == pytest.approx(metrics["best_val_accuracy"], abs=1e-9)
    assert metrics["best_val_accuracy"] == max(metrics["val_accuracy"])


def test_an_interrupted_run_resumes_and_ends_where_an_uninterrupted_one_does(world: Path, tmp_path: Path) -> None:
    args = dict(model="lstm-cnn", model_options=LSTM_OPTIONS, limit=24, **FAST)
    straight = train_vqa(*_files(world), tmp_path / "straight", epochs=2, **args)
    train_vqa(*_files(world), tmp_path / "resumed", epochs=1, **args)
    resumed = train_vqa(*_files(world), tmp_path / "resumed", epochs=2, **args)
    assert resumed["train_loss"] == pytest.approx(straight["train_loss"], rel=1e-5)
    assert resumed["val_accuracy"] == pytest.approx(straight["val_accuracy"])
    with pytest.raises(ValueError, match="other settings.*lr"):
        train_vqa(*_files(world), tmp_path / "resumed", epochs=3, **{**args, "lr": 1e-3})


def test_the_same_data_seed_and_machine_give_the_same_checkpoint_bit_for_bit(world: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    args = dict(model="lstm-cnn", model_options=LSTM_OPTIONS, limit=24, epochs=2, **FAST)
    for run in ("a", "b"):
        train_vqa(*_files(world), tmp_path / run, **args)
    a, b = (load_file(str(tmp_path / run / "model.safetensors")) for run in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(("name", "options"), [("lstm-cnn", LSTM_OPTIONS), ("hiecoatt", HIE_OPTIONS)])
def test_the_spread_loss_makes_the_features_fire_in_fewer_places(world: Path, tmp_path: Path, name: str,
                                                                 options: dict) -> None:
    from vlcam.train._spread import spread_loss

    args = dict(model=name, model_options=options, limit=24, epochs=4, **{**FAST, "batch_size": 4, "lr": 1e-2})
    train_vqa(*_files(world), tmp_path / "plain", spread_weight=0.0, **args)
    train_vqa(*_files(world), tmp_path / "spread", spread_weight=5.0, **args)
    val = read_vqa(world / "vqa_questions_val.json", world / "vqa_annotations_val.json", world / "images",
                   image_pattern=PATTERN)
    paths = sorted({item.image for item in val})[:8]
    spreads = {}
    for run in ("plain", "spread"):
        model = vlcam.load(tmp_path / run).eval()
        with torch.no_grad():
            spreads[run] = float(spread_loss(model.cnn(model.preprocess(paths))))
    assert spreads["spread"] < 0.8 * spreads["plain"], spreads


def test_a_negative_spread_weight_is_refused_before_anything_is_written(world: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="spread_weight must be a number >= 0.*-0.5"):
        train_vqa(*_files(world), tmp_path / "run", spread_weight=-0.5, epochs=1, limit=4, **FAST)
    assert not (tmp_path / "run").exists()


def test_the_script_is_a_thin_shell_that_writes_a_loadable_checkpoint(world: Path, tmp_path: Path) -> None:
    main = runpy.run_path(str(REPO / "scripts" / "train_vqa.py"))["main"]
    questions, annotations, images = _files(world)
    stdout = io.StringIO()
    with redirect_stdout(stdout):
        status = main(["--questions", str(questions), "--annotations", str(annotations), "--images", str(images),
                       "--image-pattern", PATTERN, "--out", str(tmp_path / "ckpt"), "--model", "hiecoatt",
                       "--image-size", "32", "--hidden-dim", "16", "--attention-dim", "16", "--epochs", "1",
                       "--limit", "16", "--no-progress", "--json"])
    assert status == 0
    metrics = json.loads(stdout.getvalue())
    assert metrics["epochs"] == 1 and metrics["train_images"] == 16
    loaded = vlcam.load(tmp_path / "ckpt")
    assert isinstance(loaded, HieCoAtt) and loaded.image_size == 32 and loaded.config["hidden_dim"] == 16


def test_the_answer_pointing_game_scores_peaks_against_the_object_masks(world: Path) -> None:
    from pycocotools.coco import COCO

    from vlcam.data.vqa import answer_vocabulary
    from vlcam.eval.vqa_pointing import answer_pointing_game
    from vlcam.train.vqa import question_vocabulary

    train = read_vqa(*_files(world), image_pattern=PATTERN)
    torch.manual_seed(0)
    model = VQALSTMCNN(question_vocabulary(i.question for i in train), answer_vocabulary(train), image_size=64,
                       **LSTM_OPTIONS).eval()
    types = ["what color is the", "what shape is the"]
    summary = answer_pointing_game(model, world / "vqa_questions_val.json", world / "vqa_annotations_val.json",
                                   world / "instances_val.json", world / "images", image_pattern=PATTERN,
                                   limit=12, answer="ground_truth", question_types=types)
    val = read_vqa(world / "vqa_questions_val.json", world / "vqa_annotations_val.json", world / "images",
                   image_pattern=PATTERN, limit=12)
    expected = [i for i in val if i.question_type in types and len(i.object_ids) == 1]
    assert [i["question_id"] for i in summary["items"]] == [i.question_id for i in expected]
    assert summary["other_question_type"] == sum(i.question_type not in types for i in val)
    coco = COCO(str(world / "instances_val.json"))
    areas = []
    for row, item in zip(summary["items"], expected):
        mask = coco.annToMask(coco.anns[item.object_ids[0]]).astype(bool)
        assert row["answer"] == item.multiple_choice_answer
        assert row["hit"] == (bool(mask[row["peak"]]) and not row["empty_map"])
        assert row["random_hit_rate"] == pytest.approx(mask.mean())
        areas.append(mask.mean())
    assert summary["baselines"]["random"] == pytest.approx(sum(areas) / len(areas))
    assert summary["accuracy"] == pytest.approx(sum(r["hit"] for r in summary["items"]) / len(expected))


def test_vqa_lstm_cnn_on_a_timm_cnn_by_name_explains_as_captum_does(tmp_path) -> None:
    from captum.attr import LayerGradCam

    torch.manual_seed(0)
    m = VQALSTMCNN(Vocabulary(WORDS), ANSWERS, "timm:resnet10t", image_size=64, **LSTM_OPTIONS).eval()
    assert m.default_layer.startswith("cnn.body.")
    x, q = _images(1), m.encode_questions(["what color is the ball?"])
    e = vlcam.explain_answer(m, x, "what color is the ball?", ["red", "blue"])
    layer = m.get_submodule(m.default_layer)
    for k, index in enumerate(e.answer_indices):
        reference = LayerGradCam(m, layer).attribute(x, target=index, additional_forward_args=(q,),
                                                     relu_attributions=True)
        reference = torch.nn.functional.interpolate(reference, size=(64, 64), mode="bilinear",
                                                    align_corners=False)[0, 0]
        torch.testing.assert_close(e.maps[k], reference, rtol=1e-4, atol=1e-6)
    assert e.maps.abs().sum() > 0
    m.save(tmp_path / "timm_vqa")
    loaded = vlcam.load(tmp_path / "timm_vqa")
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, q), m(x, q))
