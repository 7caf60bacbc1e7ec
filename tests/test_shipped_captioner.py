"""The shipped built-in-world captioner: loads without pickle, captions and points well, runs the demo."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vlcam
from vlcam.data.synthetic import generate
from vlcam.data.wordmap import WordMap
from vlcam.demo import shipped_checkpoint
from vlcam.eval.captions import caption_quality
from vlcam.eval.pointing import caption_pointing_game


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    """Fresh scenes from a seed the shipped model never saw."""
    world = tmp_path_factory.mktemp("heldout")
    generate(world, num_images=12, image_size=128, seed=777, val_fraction=1.0, workers=1)
    return world


@pytest.fixture(scope="module")
def model():
    return vlcam.load(shipped_checkpoint())


def test_shipped_checkpoint_is_small_and_loads_without_unpickling(monkeypatch):
    folder = shipped_checkpoint()
    size = sum(f.stat().st_size for f in folder.iterdir())
    assert size <= 10 * 2**20, f"{size / 2**20:.1f} MiB"

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint load must not unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    model = vlcam.load(folder)
    assert type(model).__name__ == "ShowAndTell" and not model.training


def test_captions_beat_the_most_frequent_training_caption(model, heldout, tmp_path):
    train = tmp_path / "train"
    generate(train, num_images=200, image_size=128, seed=0, val_fraction=0.0, workers=1)
    captions = [a["caption"] for a in json.loads((train / "captions_train.json").read_text())["annotations"]]
    report = caption_quality(model, heldout / "captions_val.json", heldout / "images",
                             baseline_captions=captions)
    assert report["model"]["bleu4"] > 0.2
    assert report["model"]["bleu4"] > 3 * report["baseline_most_frequent"]["bleu4"]
    assert report["model"]["cider"] > 3 * report["baseline_most_frequent"]["cider"]


def test_word_maps_point_at_their_objects(model, heldout):
    game = caption_pointing_game(model, heldout / "captions_val.json", heldout / "instances_val.json",
                                 heldout / "images", WordMap.from_file(heldout / "word_map.json"))
    assert game["hits"] + game["misses"] >= 50
    assert game["accuracy"] >= 3 * game["baselines"]["random"]
    assert game["accuracy"] > game["baselines"]["center"]


def test_demo_writes_figures_and_reports_each_visual_word(tmp_path):
    exe = shutil.which("vlcam") or str(Path(sys.executable).with_name("vlcam"))
    done = subprocess.run([exe, "demo", "--out", str(tmp_path), "--num-images", "2"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["figures"]) == 2 and all(Path(f).is_file() for f in summary["figures"])
    assert summary["words"] == len(summary["items"]) > 0
    verdicts = [line for line in done.stdout.splitlines() if "peak at (row" in line]
    assert len(verdicts) == summary["words"]
    assert all(line.endswith(("on the object", "off the object", "not in image")) for line in verdicts)


def test_command_line_explain_prints_the_visual_words_of_the_models_own_caption(heldout, model, tmp_path, capsys):
    from vlcam.cli import main

    image = sorted((heldout / "images").iterdir())[0]
    assert main(["explain", str(shipped_checkpoint()), str(image), "--words", "visual",
                 "--out", str(tmp_path / "fig.png")]) == 0
    out = capsys.readouterr().out.splitlines()
    expected = vlcam.explain_caption(model, image, words="visual")
    assert out[0].startswith(f"caption: {expected.caption!r}")
    assert [line.split()[0] for line in out[1:-1]] == [expected.tokens[i] for i in expected.word_indices]
    assert out[-1] == f"figure: {tmp_path / 'fig.png'}" and (tmp_path / "fig.png").is_file()
