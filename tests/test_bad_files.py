"""Bad checkpoint files and bad evaluation inputs: each is a clear error or a recorded skip.

A checkpoint file that is missing, corrupt, of the wrong shape or inconsistent with the
others raises FileNotFoundError or ValueError naming the file and the key, tensor or value;
an evaluation records a bad image as skipped with its reason and keeps going; a killed
evaluation leaves no worker process behind and resumes to the uninterrupted summary.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import load_file, save_file

import vlcam
from vlcam.adapters.hiecoatt import HieCoAtt
from vlcam.adapters.show_and_tell import ShowAndTell
from vlcam.adapters.vqa_lstm_cnn import VQALSTMCNN
from vlcam.data.synthetic import generate
from vlcam.data.wordmap import WordMap
from vlcam.demo import shipped_checkpoint
from vlcam.eval.pointing import caption_pointing_game, run_pointing_game
from vlcam.eval.runner import SIZE_DIFFERS, TOO_LARGE, load_image
from vlcam.eval.vqa_pointing import answer_pointing_game
from vlcam.image import to_pil
from vlcam.text import Vocabulary

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["a", "red", "blue", "ball", "box", "on", "the", "what", "color", "is"]
ANSWERS = ["red", "blue", "ball", "box"]
TINY = {
    "show_and_tell": lambda: ShowAndTell(Vocabulary(WORDS), "compact", embed_dim=8, hidden_dim=8, image_size=32),
    "vqa_lstm_cnn": lambda: VQALSTMCNN(Vocabulary(WORDS), ANSWERS, "compact", embed_dim=8, hidden_dim=8,
                                       common_dim=8, mlp_dim=8, image_size=32, dropout=0.0),
    "hiecoatt": lambda: HieCoAtt(Vocabulary(WORDS), ANSWERS, hidden_dim=8, attention_dim=8, image_size=32),
}
KINDS = sorted(TINY)
# Written out here, not read from the schemas, so that a schema that loses a key fails.
REQUIRED = {
    "show_and_tell": ["backbone", "embed_dim", "hidden_dim", "image_size", "dropout", "vocab_size"],
    "vqa_lstm_cnn": ["backbone", "embed_dim", "hidden_dim", "common_dim", "mlp_dim", "image_size", "dropout",
                     "vocab_size", "num_answers"],
    "hiecoatt": ["backbone", "hidden_dim", "attention_dim", "image_size", "dropout", "vocab_size",
                 "num_answers"],
}
OPTIONAL = {"show_and_tell": {"pool": "avg", "image_norm": "none", "lstm_layers": 1, "image_input": "first"},
            "vqa_lstm_cnn": {"pool": "avg", "attention": False}, "hiecoatt": {}}
CHOICES = {"pool": ("avg", "max", "avgmax", "projmax"), "image_norm": ("none", "batchnorm"),
           "image_input": ("first", "every", "gated")}
FILES = {kind: ["config.json", "vocab.json", "model.safetensors"] + (["answers.json"] if kind != "show_and_tell"
                                                                     else []) for kind in KINDS}
# The shipped captioner at 128 x 128 runs several times faster on one thread than on two
# busy cores.
pytestmark = pytest.mark.usefixtures("one_thread")
RELAXED = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def accepted(key: str, value: object) -> bool:
    """Whether config key `key` takes `value` (the oracle the schemas must agree with)."""
    if key in CHOICES:
        return value in CHOICES[key] and isinstance(value, str)
    if key == "attention":
        return isinstance(value, bool)
    if key == "backbone":
        return isinstance(value, str) and bool(value)
    if key == "dropout":
        return type(value) in (int, float) and 0 <= value < 1
    return type(value) is int and value >= 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=4,
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One tiny checkpoint of each native kind."""
    root = tmp_path_factory.mktemp("ckpts")
    torch.manual_seed(0)
    return {kind: TINY[kind]().eval().save(root / kind) for kind in KINDS}


@pytest.fixture
def ckpt(saved, tmp_path):
    """A fresh copy of a saved checkpoint to spoil: ``ckpt(kind) -> folder``."""
    return lambda kind: Path(shutil.copytree(saved[kind], tmp_path / kind, dirs_exist_ok=True))


def config_of(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def write_config(folder: Path, config: object) -> Path:
    path = folder / "config.json"
    path.write_text(json.dumps(config))
    return path


def refused(folder: Path, error: type[Exception] = ValueError) -> str:
    with pytest.raises(error) as info:
        vlcam.load(folder)
    return str(info.value)


# --- config.json --------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_the_saved_configs_have_exactly_the_listed_keys(saved, kind):
    assert set(config_of(saved[kind])) == {"kind", *REQUIRED[kind], *OPTIONAL[kind]}


@pytest.mark.parametrize(("kind", "key"), [(k, key) for k in KINDS for key in REQUIRED[k]])
def test_each_required_key_missing_is_named(ckpt, kind, key):
    folder = ckpt(kind)
    config = config_of(folder)
    del config[key]
    path = write_config(folder, config)
    message = refused(folder)
    assert str(path) in message and f"missing key {key!r}" in message


@pytest.mark.parametrize("kind", KINDS)
def test_a_missing_or_foreign_kind_is_named(ckpt, kind):
    folder = ckpt(kind)
    config = config_of(folder)
    for bad in (None, "clip", ["show_and_tell"], 3):
        path = write_config(folder, {**config, "kind": bad} if bad is not None else
                            {k: v for k, v in config.items() if k != "kind"})
        message = refused(folder)
        assert str(path) in message and repr(bad) in message
    other = next(k for k in KINDS if k != kind)
    write_config(folder, {**config, "kind": other})
    cls = type(TINY[kind]())
    with pytest.raises(ValueError, match=f"holds a '{other}' checkpoint, not '{kind}'"):
        cls.load(folder)


@pytest.mark.parametrize("kind", KINDS)
@RELAXED
@given(data=st.data())
def test_a_value_of_the_wrong_type_or_range_is_named(ckpt, kind, data):
    folder = ckpt(kind)
    config = config_of(folder)
    key = data.draw(st.sampled_from(REQUIRED[kind] + sorted(OPTIONAL[kind])), label="key")
    value = data.draw(json_values.filter(lambda v: not accepted(key, v)), label="value")
    path = write_config(folder, {**config, key: value})
    message = refused(folder)
    assert str(path) in message and repr(key) in message and repr(value)[:80] in message


@pytest.mark.parametrize(("key", "value"), [
    ("embed_dim", True), ("embed_dim", 0), ("embed_dim", 8.0), ("embed_dim", "8"), ("hidden_dim", -3),
    ("dropout", "0"), ("dropout", 1), ("dropout", 1.0), ("dropout", -0.1), ("dropout", None), ("dropout", False),
    ("image_size", [32]), ("vocab_size", {"n": 14}), ("backbone", ""), ("backbone", 3),
    ("pool", "sum"), ("pool", None), ("image_norm", "layernorm"), ("lstm_layers", 0), ("lstm_layers", 1.5),
])
def test_the_listed_bad_values_are_named(ckpt, key, value):
    folder = ckpt("show_and_tell")
    path = write_config(folder, {**config_of(folder), key: value})
    message = refused(folder)
    assert str(path) in message and f"{key!r} must be" in message and f"got {value!r}" in message


@pytest.mark.parametrize("kind", KINDS)
@RELAXED
@given(name=st.text(min_size=1, max_size=12))
def test_an_unknown_key_is_named(ckpt, kind, name):
    folder = ckpt(kind)
    config = config_of(folder)
    if name in config:
        return
    path = write_config(folder, {**config, name: 1})
    message = refused(folder)
    assert str(path) in message and "unknown key" in message and repr(name) in message


def test_every_problem_of_a_config_is_named_at_once(ckpt):
    folder = ckpt("show_and_tell")
    config = {**config_of(folder), "dropout": "0", "embeddim": 8}
    del config["embed_dim"]
    message = refused(write_config(folder, config).parent)
    assert all(part in message for part in ("missing key 'embed_dim'", "'dropout' must be a number in [0, 1)",
                                            "unknown key 'embeddim'"))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("content", [[], "show_and_tell", 3, None, [{"kind": "show_and_tell"}]])
def test_a_config_that_is_not_an_object_is_named(ckpt, kind, content):
    folder = ckpt(kind)
    path = write_config(folder, content)
    assert str(path) in refused(folder) and "JSON object" in refused(folder)
    with pytest.raises(ValueError, match="JSON object"):
        type(TINY[kind]()).load(folder)


@pytest.mark.parametrize(("backbone", "expected"), [("nonesuch", "unknown backbone 'nonesuch'"),
                                                     ("vit_b_16", "vit_b_16")])
def test_a_backbone_the_model_refuses_is_named_with_the_config(ckpt, backbone, expected):
    folder = ckpt("show_and_tell")
    path = write_config(folder, {**config_of(folder), "backbone": backbone})
    message = refused(folder)
    assert message.startswith(f"{path}: ") and expected in message
    folder = ckpt("hiecoatt")
    path = write_config(folder, {**config_of(folder), "backbone": "compact"})
    assert refused(folder).startswith(f"{path}: HieCoAtt needs a ResNet backbone")


def test_older_and_equivalent_configs_still_load(ckpt, saved):
    x = torch.randn(1, 3, 32, 32)
    tokens = ShowAndTell.load(saved["show_and_tell"]).encode_captions(["a red ball"])
    reference = ShowAndTell.load(saved["show_and_tell"])(x, tokens)
    for drop in ([], ["pool"], ["image_norm"], ["lstm_layers"], ["image_input"],
                 ["pool", "image_norm", "lstm_layers", "image_input"]):
        folder = ckpt("show_and_tell")
        config = {k: v for k, v in config_of(folder).items() if k not in drop}
        loaded = vlcam.load(write_config(folder, {**config, "dropout": 0}).parent)  # an int is a number
        assert {k: loaded.config[k] for k in OPTIONAL["show_and_tell"]} == OPTIONAL["show_and_tell"]
        torch.testing.assert_close(loaded(x, tokens), reference, rtol=0, atol=0)


def test_the_shipped_checkpoint_loads_unchanged():
    folder = Path(shipped_checkpoint())
    model = vlcam.load(folder)
    on_disk = json.loads((folder / "config.json").read_text())
    assert {k: model.config[k] for k in on_disk} == on_disk
    weights = load_file(str(folder / "model.safetensors"))
    state = model.state_dict()
    assert set(state) == set(weights) and all(torch.equal(state[k], weights[k]) for k in weights)


# --- Corrupt, missing and inconsistent files ------------------------------------------------

@pytest.mark.parametrize(("kind", "name"), [(k, n) for k in KINDS for n in FILES[k]])
def test_a_missing_file_is_named(ckpt, kind, name):
    folder = ckpt(kind)
    (folder / name).unlink()
    assert str(folder / name) in refused(folder, FileNotFoundError)


@pytest.mark.parametrize(("kind", "name"), [(k, n) for k in KINDS for n in FILES[k]])
@RELAXED
@given(cut=st.floats(0.0, 0.999))
def test_a_truncated_file_is_named(ckpt, kind, name, cut):
    folder = ckpt(kind)
    data = (folder / name).read_bytes().rstrip()
    (folder / name).write_bytes(data[:int(cut * len(data))])
    message = refused(folder)
    assert str(folder / name) in message
    assert ("not a readable safetensors file" if name == "model.safetensors" else "not valid JSON") in message


@pytest.mark.parametrize(("kind", "name"), [(k, n) for k in KINDS for n in FILES[k] if n.endswith(".json")])
def test_a_file_that_is_not_utf8_is_named(ckpt, kind, name):
    folder = ckpt(kind)
    data = bytearray((folder / name).read_bytes())
    data[len(data) // 2] = 0xFF
    (folder / name).write_bytes(bytes(data))
    message = refused(folder)
    assert message.startswith(f"{folder / name} is not UTF-8 text") and f"byte {len(data) // 2} is 0xff" in message


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("content", [b"", b"not safetensors at all", struct.pack("<Q", 2**40) + b"{}",
                                     struct.pack("<Q", 4) + b"{}{}"])
def test_a_corrupt_weights_file_is_named(ckpt, kind, content):
    folder = ckpt(kind)
    (folder / "model.safetensors").write_bytes(content)
    assert refused(folder).startswith(f"{folder / 'model.safetensors'} is not a readable safetensors file")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("content", "expected"), [
    ({"words": WORDS}, "must be a list of words starting with"),
    (WORDS, "must be a list of words starting with"),
    (["<pad>", "<start>", "<end>", "<unk>", "a", "a"], "appears twice"),
    (["<pad>", "<start>", "<end>", "<unk>", "a", 7], "non-empty strings, got 7"),
    (["<pad>", "<start>", "<end>", "<unk>", *WORDS, "extra"], "holds 15 words but .*config.json says vocab_size is 14"),
])
def test_a_bad_vocabulary_is_named(ckpt, kind, content, expected):
    folder = ckpt(kind)
    (folder / "vocab.json").write_text(json.dumps(content))
    message = refused(folder)
    assert message.startswith(str(folder / "vocab.json")) and re.search(expected, message)


@pytest.mark.parametrize("kind", ["vqa_lstm_cnn", "hiecoatt"])
@pytest.mark.parametrize(("content", "expected"), [
    ({"answers": ANSWERS}, "must hold a JSON list of answers, got a dict"),
    ("red", "must hold a JSON list of answers, got a str"),
    (["red", "", "ball", "box"], "answer 1 is ''"),
    (["red", 3, "ball", "box"], "answer 1 is 3"),
    (["red", "red", "ball", "box"], "the answer 'red' appears twice"),
    (["red", "blue", "ball"], "holds 3 answers but .*config.json says num_answers is 4"),
])
def test_bad_answers_are_named(ckpt, kind, content, expected):
    folder = ckpt(kind)
    (folder / "answers.json").write_text(json.dumps(content))
    message = refused(folder)
    assert message.startswith(str(folder / "answers.json")) and re.search(expected, message)


def spoil_weights(folder: Path, change) -> Path:
    path = folder / "model.safetensors"
    state = load_file(str(path))
    change(state)
    save_file(state, str(path))
    return path


@pytest.mark.parametrize("kind", KINDS)
def test_missing_unexpected_and_misshaped_tensors_are_listed_with_shapes(ckpt, kind):
    folder = ckpt(kind)
    names = list(load_file(str(folder / "model.safetensors")))
    gone, reshaped = names[0], names[-1]

    def change(state):
        del state[gone]
        state["stray.weight"] = torch.zeros(2)
        state[reshaped] = torch.zeros(3, 5)

    path = spoil_weights(folder, change)
    message = refused(folder)
    expected = tuple(TINY[kind]().state_dict()[reshaped].shape)
    assert message.startswith(f"{path} does not hold the weights of the model {folder / 'config.json'} describes")
    assert f"missing tensors (1): {gone};" in message and "unexpected tensors (1): stray.weight;" in message
    assert f"tensors of another shape (1): {reshaped} [3, 5] in the file, [{', '.join(map(str, expected))}] " \
        "expected" in message


def test_only_the_first_few_tensor_names_are_listed(ckpt):
    folder = ckpt("show_and_tell")
    dropped = list(load_file(str(folder / "model.safetensors")))[:8]
    spoil_weights(folder, lambda state: [state.pop(n) for n in dropped])
    message = refused(folder)
    in_model_order = [n for n in TINY["show_and_tell"]().state_dict() if n in dropped]
    assert f"missing tensors (8): {', '.join(in_model_order[:5])}, ..." in message
    assert not any(n in message for n in in_model_order[5:])


@pytest.mark.parametrize(("kind", "key"), [("show_and_tell", "embed_dim"), ("show_and_tell", "lstm_layers"),
                                           ("vqa_lstm_cnn", "common_dim"), ("hiecoatt", "attention_dim")])
def test_a_config_whose_sizes_disagree_with_the_weights_is_named(ckpt, kind, key):
    folder = ckpt(kind)
    config = config_of(folder)
    write_config(folder, {**config, key: config.get(key, 1) * 2})
    message = refused(folder)
    assert f"{folder / 'model.safetensors'} does not hold the weights of the model" in message
    assert "in the file" in message or "missing tensors" in message


# --- Evaluation runs -----------------------------------------------------------------------

def png_header_only(path: Path, width: int, height: int) -> Path:
    """Write a PNG whose header claims width x height RGB pixels, with almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))
    return path


def small_world(out: Path, num_images: int, seed: int) -> Path:
    """Return `out` after generating a built-in world of 64 x 64 images with one caption each."""
    generate(out, num_images=num_images, image_size=64, seed=seed, val_fraction=1.0, workers=1)
    captions = json.loads((out / "captions_val.json").read_text())
    first = {}
    for ann in captions["annotations"]:
        first.setdefault(ann["image_id"], ann)
    captions["annotations"] = list(first.values())
    (out / "captions_val.json").write_text(json.dumps(captions))
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return small_world(tmp_path_factory.mktemp("world"), 4, seed=7)


@pytest.fixture(scope="module")
def captioner():
    return vlcam.load(shipped_checkpoint())


def copy_world(world: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(world, tmp_path / "world"))


def resize(path: Path, size: int) -> None:
    Image.open(path).convert("RGB").resize((size, size)).save(path)


@pytest.mark.parametrize("side", [20000, 10000])  # PIL raises above twice its limit, warns above it
def test_a_decompression_bomb_is_a_skip_not_a_crash(tmp_path, side):
    assert side * side > Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(png_header_only(tmp_path / "bomb.png", side, side)) == (None, TOO_LARGE)
    assert not any(f[0] == "error" and f[2] is Image.DecompressionBombWarning for f in warnings.filters)


def test_sixteen_bit_images_are_read_as_explain_caption_reads_them(tmp_path, captioner):
    ramp = (np.arange(48 * 48, dtype=np.uint32).reshape(48, 48) * 65535 // (48 * 48 - 1)).astype(np.uint16)
    path = tmp_path / "gray16.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode in ("I;16", "I")
    pixels, reason = load_image(path)
    assert reason is None and pixels.shape == (48, 48, 3)
    np.testing.assert_array_equal(pixels, np.asarray(to_pil(path)))
    np.testing.assert_array_equal(pixels[..., 0], np.round(ramp / 257.0).astype(np.uint8))  # not clipped to white
    from_eval = vlcam.explain_caption(captioner, pixels, "a red ball")
    from_path = vlcam.explain_caption(captioner, path, "a red ball")
    torch.testing.assert_close(from_eval.caption_map, from_path.caption_map, rtol=0, atol=0)
    torch.testing.assert_close(from_eval.word_maps, from_path.word_maps, rtol=0, atol=0)


def test_a_run_records_bombs_and_images_of_another_size_and_scores_the_rest(world, tmp_path, captioner):
    bad = copy_world(world, tmp_path)
    images = bad / "images"
    png_header_only(images / "synth_000001.png", 20000, 20000)
    resize(images / "synth_000002.png", 80)  # larger than its annotation
    resize(images / "synth_000003.png", 48)  # smaller
    word_map = WordMap.builtin("synthetic")
    summary = run_pointing_game(tmp_path / "run", captioner, bad / "captions_val.json", bad / "instances_val.json",
                                images, word_map, num_workers=0, progress=False, examples=0)
    assert summary["images"] == 4 and summary["skipped"] == {TOO_LARGE: 1, SIZE_DIFFERS: 2}
    records = [json.loads(line) for line in (tmp_path / "run" / "items.jsonl").read_text().splitlines()]
    assert {r["image_id"]: r["skipped"] for r in records if r["type"] == "image"} == {
        1: TOO_LARGE, 2: SIZE_DIFFERS, 3: SIZE_DIFFERS, 4: None}
    run_pointing_game(tmp_path / "good", captioner, world / "captions_val.json", world / "instances_val.json",
                      world / "images", word_map, num_workers=0, progress=False, examples=0)
    good = [json.loads(line) for line in (tmp_path / "good" / "items.jsonl").read_text().splitlines()]
    words = [r for r in records if r["type"] == "word"]
    assert words and words == [r for r in good if r["type"] == "word" and r["image_id"] == 4]


def test_in_memory_games_count_images_of_another_size_as_skipped(world, tmp_path, captioner):
    bad = copy_world(world, tmp_path)
    resize(bad / "images" / "synth_000002.png", 80)
    word_map = WordMap.builtin("synthetic")
    files = ("captions_val.json", "instances_val.json")
    good = caption_pointing_game(captioner, *(world / f for f in files), world / "images", word_map)
    game = caption_pointing_game(captioner, *(bad / f for f in files), bad / "images", word_map)
    assert "skipped" not in good and game["skipped"] == {SIZE_DIFFERS: 1}
    assert game["items"] == [i for i in good["items"] if i["image_id"] != 2]

    from vlcam.data.vqa import answer_vocabulary, read_vqa
    from vlcam.train.vqa import question_vocabulary

    vqa_files = (bad / "vqa_questions_val.json", bad / "vqa_annotations_val.json")
    items = read_vqa(*vqa_files, bad / "images", image_pattern="synth_{image_id:06d}.png")
    torch.manual_seed(0)
    vqa = VQALSTMCNN(question_vocabulary(i.question for i in items), answer_vocabulary(items), "compact",
                     embed_dim=8, hidden_dim=8, common_dim=8, mlp_dim=8, image_size=32).eval()
    pointing = answer_pointing_game(vqa, *vqa_files, bad / "instances_val.json", bad / "images",
                                    image_pattern="synth_{image_id:06d}.png")
    single = [i for i in items if len(i.object_ids) == 1]
    asked_about_image_2 = sum(i.image_id == 2 for i in single)
    assert asked_about_image_2 > 0 and pointing["skipped"] == {SIZE_DIFFERS: asked_about_image_2}
    assert pointing["questions"] == sum(i.image_id != 2 for i in single)


def test_captions_and_instances_of_different_splits_are_refused(world, tmp_path, captioner):
    bad = copy_world(world, tmp_path)
    instances = json.loads((bad / "instances_val.json").read_text())
    for image in instances["images"]:
        image["id"] += 1000
    for ann in instances["annotations"]:
        ann["image_id"] += 1000
    (bad / "instances_val.json").write_text(json.dumps(instances))
    args = (bad / "captions_val.json", bad / "instances_val.json", bad / "images", WordMap.builtin("synthetic"))
    for play in (lambda: caption_pointing_game(captioner, *args),
                 lambda: run_pointing_game(tmp_path / "run", captioner, *args, num_workers=0, progress=False)):
        with pytest.raises(ValueError, match="different splits") as info:
            play()
        assert str(args[0]) in str(info.value) and str(args[1]) in str(info.value)
    assert not (tmp_path / "run" / "summary.json").exists()


# --- Killed runs -----------------------------------------------------------------------------

def _parents() -> dict[int, int]:
    """pid -> parent pid of every process, from /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat[stat.rindex(")") + 2:].split()[1])
    return parents


def descendants(pid: int) -> list[int]:
    parents, found, todo = _parents(), [], [pid]
    while todo:
        parent = todo.pop()
        children = [c for c, p in parents.items() if p == parent]
        found += children
        todo += children
    return found


def running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"  # a zombie has exited; only its parent has not reaped it


def gone_within(pids: list[int], seconds: float) -> list[int]:
    """Return the pids still running after waiting up to `seconds` for all to end."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(map(running, pids)):
        time.sleep(0.05)
    return [p for p in pids if running(p)]


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads processes from /proc")


@needs_proc
def test_a_killed_evaluation_leaves_no_worker_and_resumes_to_the_same_summary(tmp_path_factory, captioner):
    world = small_world(tmp_path_factory.mktemp("big_world"), 12, seed=11)
    out, log = world / "killed", world / "stderr.txt"
    command = [sys.executable, str(ROOT / "scripts" / "eval_pointing.py"), "--captions",
               str(world / "captions_val.json"), "--instances", str(world / "instances_val.json"), "--images",
               str(world / "images"), "--workers", "2", "--device", "cpu", "--out", str(out)]
    with log.open("w") as stderr:
        script = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        workers: list[int] = []
        done = 0
        while script.poll() is None and not (done and len(workers) >= 2):
            time.sleep(0.02)
            workers = descendants(script.pid)
            items = out / "items.jsonl"
            done = items.read_text().count('"type": "image"') if items.is_file() else 0
        assert script.poll() is None, f"the evaluation ended before it could be killed: {log.read_text()[-2000:]}"
        os.kill(script.pid, signal.SIGKILL)
        script.wait()
    finally:
        if script.poll() is None:
            script.kill()
    # The loader's own watchdog would take 5 s or more, or wait for ever on a full pipe.
    assert len(workers) == 2 and gone_within(workers, 3.0) == []
    assert not (out / "summary.json").exists() and done < 12

    args = (world / "captions_val.json", world / "instances_val.json", world / "images",
            WordMap.builtin("synthetic"))
    resumed = run_pointing_game(out, captioner, *args, num_workers=0, progress=False, examples=0)
    whole = run_pointing_game(world / "whole", captioner, *args, num_workers=0, progress=False, examples=0)
    assert resumed["images"] == 12
    assert {k: v for k, v in resumed.items() if k != "items_per_second"} == \
        {k: v for k, v in whole.items() if k != "items_per_second"}


@needs_proc
@pytest.mark.parametrize("platform", ["linux", "darwin"])
def test_a_worker_dies_with_its_parent(platform):
    # The parent forks a worker that calls die_with_parent (on "darwin", the thread that
    # watches for the parent to go), prints the worker's pid and exits without waiting.
    code = f"""
import os, sys, time
from vlcam.eval.runner import die_with_parent
parent = os.getpid()
read, write = os.pipe()
if os.fork() == 0:
    sys.platform = {platform!r}
    die_with_parent(parent)
    os.write(write, str(os.getpid()).encode())
    time.sleep(60)
    os._exit(0)
print(os.read(read, 32).decode(), flush=True)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    worker = int(done.stdout)
    assert gone_within([worker], 3.0) == []
