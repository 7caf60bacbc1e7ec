"""The adapter contract: every shipped adapter conforms, and every evaluation runs on every
adapter it applies to (tiny random models, a tiny built-in world, no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vlcam
from tiny_adapters import ADAPTERS, ANSWER_MODELS, CAPTIONERS, build, world_text
from vlcam.adapters import AnswerModel, Captioner, ImageModel
from vlcam.adapters.protocol import AnswerModelBase, missing_members

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tiny_world: Path) -> Path:
    return tiny_world


@pytest.fixture(scope="module")
def adapters(world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.nn.Module]:
    tmp = tmp_path_factory.mktemp("adapters")
    return {name: build(name, world, tmp) for name in ADAPTERS}


def first_image(world: Path) -> Image.Image:
    return Image.open(sorted((world / "images").glob("*.png"))[0]).convert("RGB")


def layer_output(model: torch.nn.Module, run) -> torch.Tensor:
    """Return the default layer's output tensor during `run()`."""
    kept = []
    module = model.get_submodule(model.default_layer)
    handle = module.register_forward_hook(lambda m, i, o: kept.append(o[0] if isinstance(o, tuple) else o))
    try:
        with torch.no_grad():
            run()
    finally:
        handle.remove()
    return kept[0]


def check_image_model(model: ImageModel, world: Path) -> torch.Tensor:
    assert isinstance(model, ImageModel)
    assert isinstance(model.default_layer, str) and model.get_submodule(model.default_layer) is not None
    assert model.batch_targets in (True, False, "vmap")
    assert len(model.mean) == 3 and len(model.std) == 3 and all(s > 0 for s in model.std)
    assert isinstance(model.image_size, int) and model.image_size > 0
    pil = first_image(world)
    x = model.preprocess(pil)
    assert x.dim() == 4 and x.shape[:2] == (1, 3) and x.dtype == torch.float32
    assert model.preprocess([pil, pil]).shape == (2, *x.shape[1:])
    torch.testing.assert_close(model.preprocess(x[0]), x)
    return x


@pytest.mark.parametrize("name", CAPTIONERS)
def test_every_captioner_implements_every_member_with_the_promised_types_and_shapes(name, adapters, world):
    model = adapters[name]
    assert isinstance(model, Captioner) and missing_members(model, Captioner) == []
    x = check_image_model(model, world)
    caption = world_text(world)[0][0]
    words, inputs = model.encode_caption(caption)
    assert isinstance(words, list) and all(isinstance(w, str) for w in words) and words
    assert isinstance(inputs, tuple) and all(isinstance(t, torch.Tensor) for t in inputs)
    with torch.no_grad():
        scores = model.word_logprobs(x, *inputs)
    assert scores.shape == (1, len(words) + 1) and bool((scores <= 0).all()) and bool(torch.isfinite(scores).all())
    grid = model.gradcam_reshape(layer_output(model, lambda: model.word_logprobs(x, *inputs)), x)
    assert grid.dim() == 4 and grid.shape[0] == 1 and min(grid.shape[2:]) > 1
    captions = model.caption(x, beam_size=1)
    assert isinstance(captions, list) and len(captions) == 1 and isinstance(captions[0], str)
    known = model.known_words()
    assert len(known) > 10 and all(isinstance(w, str) for w in known)
    with pytest.raises(ValueError, match="no words"):
        model.encode_caption("  ")


@pytest.mark.parametrize("name", ANSWER_MODELS)
def test_every_vqa_adapter_implements_every_member_with_the_promised_types_and_shapes(name, adapters, world):
    model = adapters[name]
    assert isinstance(model, AnswerModel) and missing_members(model, AnswerModel) == []
    x = check_image_model(model, world)
    assert isinstance(model.open_vocabulary, bool)
    assert model.open_vocabulary == (len(model.answers) == 0)
    _, questions, answers = world_text(world)
    q = model.encode_question(questions[0])
    assert q.dtype == torch.long and q.dim() == 2 and q.shape[0] == 1
    requested = answers[:2]
    inputs, columns = model.answer_inputs(requested)
    assert isinstance(inputs, tuple) and len(columns) == 2 and all(isinstance(c, int) for c in columns)
    with torch.no_grad():
        scores = model.answer_scores(x, q, *inputs)
    assert scores.dim() == 2 and scores.shape[0] == 1 and scores.shape[1] > max(columns)
    if not model.open_vocabulary:
        assert [model.answers[c] for c in columns] == requested and scores.shape[1] == len(model.answers)
    probs = model.answer_probabilities(scores)
    assert probs.shape == scores.shape and bool(((probs >= 0) & (probs <= 1)).all())
    grid = model.gradcam_reshape(layer_output(model, lambda: model.answer_scores(x, q, *inputs)), x)
    assert grid.dim() == 4 and grid.shape[0] == 1 and min(grid.shape[2:]) > 1
    top = model.top_answers(x, q)
    assert isinstance(top, list) and len(top) == 1 and isinstance(top[0], str)
    with pytest.raises(ValueError, match="no words|unknown"):
        model.encode_question("?!")


@pytest.mark.parametrize("name", ANSWER_MODELS)
def test_a_fixed_vocabulary_refuses_an_unknown_answer_and_an_open_one_scores_it(name, adapters):
    model = adapters[name]
    if model.open_vocabulary:
        assert model.answer_inputs(["a purple elephant"])[1] == [0]
    else:
        with pytest.raises(ValueError, match="'a purple elephant' is not in the model's vocabulary"):
            model.answer_inputs(["a purple elephant"])


def test_explain_names_what_a_model_lacks(adapters, world):
    vqa, captioner = adapters["vqa_lstm_cnn"], adapters["show_and_tell"]
    image = first_image(world)
    with pytest.raises(TypeError, match="VQALSTMCNN is not a vlcam Captioner: it lacks encode_caption, "
                                        "word_logprobs, caption, known_words \\("):
        vlcam.explain_caption(vqa, image, "a red ball")
    with pytest.raises(TypeError, match="ShowAndTell is not a vlcam AnswerModel: it lacks open_vocabulary, "
                                        "answers, encode_question, answer_inputs"):
        vlcam.explain_answer(captioner, image, "what color is the ball?")

    class Misspelt(torch.nn.Module):
        default_layer, batch_targets, mean, std, image_size = "conv", True, (0.5,) * 3, (0.5,) * 3, 8

        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 2, 3)

        def preprocess(self, images): ...
        def gradcam_reshape(self, activations, images): ...
        def image_maps(self, maps, size): ...
        def encode_caption(self, caption): ...
        def word_logprob(self, images, *inputs): ...  # one letter short
        def caption(self, images, *, beam_size=1): ...
        def known_words(self): ...

    with pytest.raises(TypeError, match="Misspelt is not a vlcam Captioner: it lacks word_logprobs \\("):
        vlcam.explain_caption(Misspelt(), image, "a red ball")


def test_a_question_whose_ids_equal_vlcams_own_unk_id_is_explained(world):
    """The adapter's ids are its own: id 3 is vlcam's <unk> but may be any word of another tokenizer."""

    class WordIds(AnswerModelBase):
        default_layer, mean, std, image_size = "conv", (0.5,) * 3, (0.5,) * 3, 16
        answers = ("yes", "no")

        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.embed = torch.nn.Embedding(8, 4)
            self.head = torch.nn.Linear(4, 2)

        def preprocess(self, images):
            from vlcam.image import image_batch, preprocess

            return image_batch(images, lambda i: preprocess(i, 16, self.mean, self.std)[0], torch.device("cpu"))

        def encode_question(self, question):
            return torch.tensor([[{"red": 3, "ball": 3}.get(w, 1) for w in question.split()]])

        def forward(self, images, questions):
            pooled = torch.relu(self.conv(images)).mean(dim=(2, 3))
            return self.head(pooled * self.embed(questions).mean(dim=1))

    e = vlcam.explain_answer(WordIds(), first_image(world), "red ball", ["yes", "no"])
    assert e.answers == ["yes", "no"] and e.maps.shape[0] == 2 and bool((e.maps > 0).any())


def test_evaluations_leave_a_train_mode_model_in_train_mode(adapters, world, tmp_path):
    from vlcam.data.wordmap import WordMap
    from vlcam.eval.faithfulness import run_caption_occlusion

    model = adapters["show_and_tell"].train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        run_caption_occlusion(tmp_path / "occ", model, world / "captions_val.json", world / "images",
                              WordMap.builtin("synthetic"), patch=32, stride=32, limit=2, num_workers=0)
        assert all(m.training for m in model.modules())
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    finally:
        model.eval()


# --- Every evaluation on every adapter it applies to ---------------------------------------

@pytest.mark.parametrize("name", CAPTIONERS)
def test_caption_evaluations_run_on_every_captioner(name, adapters, world, tmp_path):
    from vlcam.data.wordmap import WordMap
    from vlcam.eval.faithfulness import run_box_ratio, run_caption_occlusion
    from vlcam.eval.pointing import caption_pointing_game, run_pointing_game

    model, word_map = adapters[name], WordMap.from_file(world / "word_map.json")
    images = world / "images"
    pointing = run_pointing_game(tmp_path / "pointing", model, world / "captions_val.json",
                                 world / "instances_val.json", images, word_map, num_workers=0, progress=False)
    in_memory = caption_pointing_game(model, world / "captions_val.json", world / "instances_val.json", images,
                                      word_map)
    assert pointing["hits"] + pointing["misses"] == len(in_memory["items"]) > 0
    assert pointing["hits"] == in_memory["hits"] and pointing["layer"] == model.default_layer
    boxes = run_box_ratio(tmp_path / "boxes", model, world / "regions_val.json", images, limit=3, num_workers=0)
    assert boxes["regions"] == 3 and boxes["mean_ratio"] is not None and boxes["mean_ratio"] > 0
    occlusion = run_caption_occlusion(tmp_path / "occ", model, world / "captions_val.json", images, word_map,
                                      patch=32, stride=32, limit=3, num_workers=0)
    assert occlusion["words"] > 0
    for method in ("gradcam", "guided_backprop"):
        assert -1.0 <= occlusion[method]["mean_rank_correlation"] <= 1.0


@pytest.mark.parametrize("name", ANSWER_MODELS)
def test_answer_evaluations_run_on_every_vqa_adapter(name, adapters, world, tmp_path):
    from vlcam.eval.faithfulness import run_answer_occlusion, run_human_attention
    from vlcam.eval.vqa_pointing import answer_pointing_game

    model, images, pattern = adapters[name], world / "images", "synth_{image_id:06d}.png"
    questions, annotations = world / "vqa_questions_val.json", world / "vqa_annotations_val.json"
    for answer in ("predicted", "ground_truth"):
        pointing = answer_pointing_game(model, questions, annotations, world / "instances_val.json", images,
                                        image_pattern=pattern, answer=answer)
        assert pointing["questions"] > 0 and pointing["answer_not_in_vocabulary"] == 0
        assert all(item["predicted"] in model.answers or model.open_vocabulary for item in pointing["items"])
    occlusion = run_answer_occlusion(tmp_path / "occ", model, questions, images, image_pattern=pattern, patch=32,
                                     stride=32, limit=3, num_workers=0)
    assert occlusion["scored"] == 3 and -1.0 <= occlusion["gradcam"]["mean_rank_correlation"] <= 1.0
    attention = tmp_path / "hat"
    attention.mkdir()
    import json

    for q in json.loads(questions.read_text())["questions"][:3]:
        Image.fromarray(np.random.default_rng(q["question_id"]).integers(0, 256, (64, 64), dtype=np.uint8)).save(
            attention / f"{q['question_id']}.png")
    human = run_human_attention(tmp_path / "human", model, questions, images, attention, image_pattern=pattern,
                                grid=4, limit=3, num_workers=0)
    assert human["scored"] == 3 and -1.0 <= human["gradcam"]["mean_rank_correlation"] <= 1.0
