"""vlcam eval word-iou: TAM's Obj-IoU, Func-IoU and F1-IoU of a model's own responses."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_thread")

H = W = 20


def _world_map():
    from vlcam.data.wordmap import WordMap

    return WordMap.builtin("synthetic")


def _masks():
    from vlcam.data.wordmap import WordMap

    ids = {c["name"]: c["id"] for c in WordMap.builtin("synthetic").categories}
    ball = np.zeros((H, W), dtype=bool)
    ball[2:8, 2:8] = True
    box = np.zeros((H, W), dtype=bool)
    box[12:18, 10:20] = True
    return ids, {ids["ball"]: ball, ids["box"]: box}


def test_scores_of_maps_drawn_by_hand():
    from vlcam.eval.word_iou import function_words, response_word_ious, summarize_word_ious

    _, masks = _masks()
    tokens = ["a", "red", "ball", "and", "a", "star"]
    maps = np.zeros((len(tokens), H, W), dtype=np.float32)
    maps[2, 2:8, 2:8] = 3.0  # "ball": exactly on the ball
    maps[1, 2:8, 2:5] = 1.0  # "red": not scored (neither object nor function word)
    maps[0] = 0.2
    maps[0, 12:18, 10:20] = 1.0  # "a": lights the box, an object
    maps[3] = 1.0
    maps[3, 2:8, 2:8] = 0.0
    maps[3, 12:18, 10:20] = 0.0  # "and": lights exactly the background
    maps[4] = 0.5  # the second "a": a constant map lights nothing
    maps[5, 0, 0] = 1.0  # "star": no star in the image, a hallucination
    records = {r["word_index"]: r for r in response_word_ious(tokens, maps, masks, _world_map(),
                                                              functions=function_words())}
    assert set(records) == {0, 2, 3, 4, 5}
    assert records[2]["kind"] == "object" and records[2]["iou"] == 1.0 and records[2]["hit"]
    assert records[2]["baseline_iou"] == pytest.approx(36 / 400)
    assert records[0]["kind"] == "function" and records[0]["iou"] == 0.0 and not records[0]["hit"]
    assert records[3]["iou"] == 1.0 and records[3]["hit"] and records[3]["strength"] == pytest.approx(1 / 3)
    assert records[4]["iou"] == 0.0
    assert records[5]["kind"] == "hallucinated" and records[5]["iou"] is None
    summary = summarize_word_ious(list(records.values()))
    assert summary["obj_iou"] == 1.0 and summary["func_iou"] == pytest.approx(1 / 3)
    assert summary["f1_iou"] == pytest.approx(2 * 1 * (1 / 3) / (1 + 1 / 3))
    assert (summary["object_words"], summary["function_words"], summary["hallucinated_object_words"]) == (1, 3, 1)
    background = 1 - (36 + 60) / 400
    assert summary["baselines"]["full_map_func_iou"] == pytest.approx(background)
    assert summary["per_category_obj_iou"] == {"ball": 1.0}


def test_half_covering_map_scores_its_iou():
    from vlcam.eval.word_iou import function_words, response_word_ious

    _, masks = _masks()
    maps = np.zeros((2, H, W), dtype=np.float32)
    maps[1, 2:8, 2:14] = 1.0  # the ball (36 px) and as much beside it
    (record,) = response_word_ious(["the", "ball"], maps, masks, _world_map(), functions=frozenset())
    assert record["iou"] == pytest.approx(36 / 72)
    assert "the" in function_words() and "ball" not in function_words()


def test_a_run_scores_the_models_own_captions_as_an_independent_computation_does(tmp_path, capsys):
    from PIL import Image

    import vlcam
    from vlcam.cli import main
    from vlcam.data.coco import category_masks, load_coco
    from vlcam.data.synthetic import generate
    from vlcam.demo import shipped_checkpoint

    world = tmp_path / "world"
    generate(world, num_images=2, image_size=128, seed=21, val_fraction=1.0, workers=1)
    out = tmp_path / "run"
    assert main(["eval", "word-iou", "--instances", str(world / "instances_val.json"), "--images",
                 str(world / "images"), "--out", str(out), "--workers", "0", "--device", "cpu", "--html"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("word IoU: ") and "obj_iou" in printed and "report.html" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 2 and summary["object_words"] > 0 and summary["function_words"] > 0
    records = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    words = sorted((r for r in records if r["type"] == "word"), key=lambda r: (r["image_id"], r["word_index"]))
    assert ">Words</h2>" in (out / "report.html").read_text(encoding="utf-8")

    # Independently: the model's caption, each word's map on its own, normalised and thresholded by hand.
    model = vlcam.load(shipped_checkpoint())
    instances = load_coco(world / "instances_val.json")
    by_hand = []
    for image_id in sorted(instances.getImgIds()):
        pixels = np.asarray(Image.open(world / "images" / instances.imgs[image_id]["file_name"]).convert("RGB"))
        caption = model.caption(model.preprocess(pixels))[0]
        assert caption == next(r["response"] for r in records if r["type"] == "image" and r["image_id"] == image_id)
        masks = category_masks(instances, image_id)
        objects = torch.from_numpy(np.any(np.stack(list(masks.values())), axis=0))
        for word in (w for w in words if w["image_id"] == image_id and w["kind"] != "hallucinated"):
            heat = vlcam.explain_caption(model, pixels, caption, words=[word["word_index"]]).word_maps[0]
            lit = (heat - heat.min()) >= 0.5 * (heat.max() - heat.min())
            truth = torch.from_numpy(masks[_category_id(word["category"])]) if word["kind"] == "object" else ~objects
            by_hand.append(float((lit & truth).sum() / (lit | truth).sum()))
    assert [w["iou"] for w in words if w["kind"] != "hallucinated"] == pytest.approx(by_hand, abs=1e-6)
    assert summary["obj_iou"] == pytest.approx(np.mean([w["iou"] for w in words if w["kind"] == "object"]))


def _category_id(name):
    return next(c["id"] for c in _world_map().categories if c["name"] == name)


def test_a_bad_threshold_is_refused_before_any_work(tmp_path):
    from vlcam.eval.word_iou import run_word_iou

    with pytest.raises(ValueError, match="threshold must be in"):
        run_word_iou(tmp_path, object(), tmp_path / "nope.json", tmp_path, _world_map(), threshold=1.5)
