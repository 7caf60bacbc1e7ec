"""scripts/eval_pointing.py: resumes to the same summary, records bad images, shards over 2 processes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import vlcam
from vlcam.data.synthetic import generate
from vlcam.data.wordmap import WordMap
from vlcam.demo import shipped_checkpoint
from vlcam.eval.pointing import run_pointing_game

ROOT = Path(__file__).resolve().parents[1]
TIMING = "items_per_second"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    generate(out, num_images=6, image_size=128, seed=31, val_fraction=1.0, workers=1)
    (out / "images" / "synth_000002.png").unlink()  # a missing image
    (out / "images" / "synth_000003.png").write_bytes(b"not a png")  # an unreadable one
    return out


def run(world, out, **kwargs):
    return run_pointing_game(out, vlcam.load(shipped_checkpoint()), world / "captions_val.json",
                             world / "instances_val.json", world / "images", WordMap.builtin("synthetic"),
                             num_workers=0, progress=False, **kwargs)


def without_timing(summary):
    return {k: v for k, v in summary.items() if k != TIMING}


def test_interrupted_run_resumes_to_the_same_summary(world, tmp_path):
    full = run(world, tmp_path / "full")
    assert full["images"] == 6 and full["skipped"] == {"missing image": 1, "unreadable image": 1}
    assert full["hits"] + full["misses"] > 0
    assert set(full["baselines"]) == {"center", "random", "random_expected"}
    items = (tmp_path / "full" / "items.jsonl").read_text().splitlines()
    words = [json.loads(line) for line in items if json.loads(line)["type"] == "word"]
    assert len(words) == full["hits"] + full["misses"]
    ious = [w["box_iou"] for w in words]
    assert full["localization"]["mean_iou"] == pytest.approx(sum(ious) / len(ious))
    assert full["localization"]["share_iou_at_least_0.5"] == pytest.approx(sum(i >= 0.5 for i in ious) / len(ious))
    assert all(0.0 <= i <= 1.0 for i in ious)
    assert (tmp_path / "full" / "per_category.png").is_file()

    part = tmp_path / "part"
    run(world, part, limit=3)  # the "interruption": only the first images are done
    lines = (part / "items.jsonl").read_text().splitlines()
    (part / "items.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:10])  # torn last line
    resumed = run(world, part)
    assert without_timing(resumed) == without_timing(full)
    assert json.loads((part / "summary.json").read_text())["hits"] == full["hits"]


def test_two_gloo_processes_give_the_single_process_summary(world, tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    single = run(world, tmp_path / "single")
    done = subprocess.run(
        [torchrun, "--nproc_per_node=2", "--master_port=29533", str(ROOT / "scripts" / "eval_pointing.py"),
         "--captions", str(world / "captions_val.json"), "--instances", str(world / "instances_val.json"),
         "--images", str(world / "images"), "--workers", "0", "--device", "cpu", "--out", str(tmp_path / "dist")],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    distributed = json.loads((tmp_path / "dist" / "summary.json").read_text())
    assert without_timing(distributed) == without_timing(single)
    assert not list((tmp_path / "dist").glob("items.rank*.jsonl"))


def test_the_explained_layer_can_be_chosen(world, tmp_path):
    default = run(world, tmp_path / "default")
    earlier = run(world, tmp_path / "block4", layer="encoder.body.block4")
    assert default["layer"] == "encoder.body.block7" and earlier["layer"] == "encoder.body.block4"
    peaks = [[json.loads(line).get("peak") for line in (tmp_path / name / "items.jsonl").read_text().splitlines()]
             for name in ("default", "block4")]
    assert peaks[0] != peaks[1]  # another layer, other maps


def test_the_difficult_set_is_small_objects_among_other_categories():
    import numpy as np

    from vlcam.eval.pointing import is_difficult, pointing_scores

    small, large = np.zeros((10, 10), bool), np.ones((10, 10), bool)
    small[:2, :2] = True
    assert is_difficult({1: small, 2: large}, 1) and not is_difficult({1: large, 2: small}, 1)
    assert not is_difficult({1: small}, 1)  # alone in the image: not difficult, however small
    words = [{"category": "ball", "hit": True, "center_hit": False, "random_hit_rate": 0.1, "difficult": True},
             {"category": "ball", "hit": False, "center_hit": True, "random_hit_rate": 0.1, "difficult": False},
             {"category": "box", "hit": False, "center_hit": False, "random_hit_rate": 0.1, "difficult": True}]
    scores = pointing_scores(words)
    assert scores["difficult"] == {"words": 2, "accuracy": 0.5, "mean_category_accuracy": 0.5, "center": 0.0}
    assert scores["mean_category_accuracy"] == 0.25  # ball 1/2, box 0/1: the mean over categories
