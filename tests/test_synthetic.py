"""The built-in world: a real COCO/VQA dataset whose masks, captions and answers tell the truth."""

from __future__ import annotations

import contextlib
import filecmp
import io
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from vlcam.data import synthetic

ROOT = Path(__file__).resolve().parents[1]
# pycocotools' decode trips a NumPy 2 deprecation on every mask; it is theirs, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
SPLITS = ("train", "val")
NUM_IMAGES = 24

# Every caption word that does not name a category; anything else would be an unmapped noun.
NON_CATEGORY_WORDS = set(synthetic.COLORS) | set(synthetic.SIZES) | {
    "a", "an", "and", "the", "of", "to", "is", "are", "there", "picture", "in", "on", "at",
    "left", "right", "above", "below", "under", "next", "beside", "top", "bottom", "middle",
    "one", "two", "three", "four", "object", "objects", "shape", "shapes",
}


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def quiet_coco(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def word_to_category() -> dict[str, str]:
    return {w: name for name, words in synthetic.category_words().items() for w in words}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    summary = synthetic.generate(out, num_images=NUM_IMAGES, image_size=96, seed=3, workers=2)
    assert summary["splits"]["train"]["images"] + summary["splits"]["val"]["images"] == NUM_IMAGES
    return out


def test_pycocotools_reads_both_splits_with_1_to_4_objects_and_3_captions(world):
    image_ids, categories_used = [], set()
    for split in SPLITS:
        inst = quiet_coco(world / f"instances_{split}.json")
        caps = quiet_coco(world / f"captions_{split}.json")
        assert sorted(inst.getImgIds()) == sorted(caps.getImgIds())
        assert {c["name"] for c in inst.loadCats(inst.getCatIds())} == {c.name for c in synthetic.CATEGORIES}
        for image in inst.loadImgs(inst.getImgIds()):
            assert re.fullmatch(r"synth_\d{6}\.png", image["file_name"])
            with Image.open(world / "images" / image["file_name"]) as png:
                assert png.size == (image["width"], image["height"]) == (96, 96)
            anns = inst.loadAnns(inst.getAnnIds(imgIds=image["id"]))
            assert 1 <= len(anns) <= 4
            assert len(caps.getAnnIds(imgIds=image["id"])) >= 3
            categories_used |= {a["category_id"] for a in anns}
            image_ids.append(image["id"])
    assert len(image_ids) == len(set(image_ids)) == NUM_IMAGES
    assert len(categories_used) >= 8


def test_masks_are_the_visible_pixels_with_matching_area_bbox_and_colour(world):
    for split in SPLITS:
        coco = quiet_coco(world / f"instances_{split}.json")
        for image in coco.loadImgs(coco.getImgIds()):
            pixels = np.asarray(Image.open(world / "images" / image["file_name"]).convert("RGB"))
            taken = np.zeros(pixels.shape[:2], dtype=bool)
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=image["id"])):
                mask = coco.annToMask(ann).astype(bool)
                assert np.array_equal(mask, mask_utils.decode(ann["segmentation"]).astype(bool))
                assert ann["area"] == mask.sum() > 0
                x, y, w, h = ann["bbox"]
                ys, xs = np.nonzero(mask)
                assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)
                assert (pixels[mask] == synthetic.COLORS[ann["color"]]).all(), ann["id"]
                assert ann["size"] in synthetic.SIZES and ann["iscrowd"] == 0
                assert not (taken & mask).any(), "visible parts of two objects overlap"
                taken |= mask


def test_rerendered_scene_has_the_written_pixels_and_masks_and_caps_occlusion(world):
    coco = quiet_coco(world / "instances_train.json")
    for image_id in coco.getImgIds()[:6]:
        scene = synthetic.render_scene(seed=3, index=image_id - 1, image_size=96)
        png = np.asarray(Image.open(world / "images" / f"synth_{image_id:06d}.png").convert("RGB"))
        assert np.array_equal(scene.image, png)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        for obj, ann in zip(scene.objects, anns, strict=True):
            assert np.array_equal(obj.visible, coco.annToMask(ann).astype(bool))
            assert obj.visible.sum() >= synthetic.MIN_VISIBLE_FRACTION * obj.full_area


def test_same_seed_gives_identical_files_whatever_the_workers_and_another_seed_differs(world, tmp_path):
    again, other = tmp_path / "again", tmp_path / "other"
    synthetic.generate(again, num_images=NUM_IMAGES, image_size=96, seed=3, workers=1)
    synthetic.generate(other, num_images=NUM_IMAGES, image_size=96, seed=4, workers=1)
    names = sorted(p.relative_to(world).as_posix() for p in world.rglob("*") if p.is_file())
    assert len(names) == NUM_IMAGES + 11
    _, mismatch, errors = filecmp.cmpfiles(world, again, names, shallow=False)
    assert mismatch == errors == []
    _, differ, _ = filecmp.cmpfiles(world, other, names, shallow=False)
    assert "captions_train.json" in differ and "images/synth_000001.png" in differ


def test_caption_nouns_are_all_in_the_word_map_and_name_objects_in_the_image(world):
    to_category = word_to_category()
    for split in SPLITS:
        inst = quiet_coco(world / f"instances_{split}.json")
        caps = quiet_coco(world / f"captions_{split}.json")
        for image_id in inst.getImgIds():
            anns = inst.loadAnns(inst.getAnnIds(imgIds=image_id))
            present = {inst.cats[a["category_id"]]["name"] for a in anns}
            captions = [a["caption"] for a in caps.loadAnns(caps.getAnnIds(imgIds=image_id))]
            assert len(set(captions)) == len(captions), "captions of an image must vary"
            for caption in captions:
                assert caption == caption.lower()
                tokens = re.findall(r"[a-z]+", caption)
                assert set(tokens) - set(to_category) <= NON_CATEGORY_WORDS, caption
                assert {to_category[t] for t in tokens if t in to_category} <= present, caption


def test_word_map_is_committed_written_and_names_each_category_twice(world):
    committed = load(ROOT / "vlcam" / "data" / "synthetic_word_map.json")
    assert committed == synthetic.word_map() == load(world / "word_map.json")
    assert [c["id"] for c in committed["categories"]] == [c.id for c in synthetic.CATEGORIES]
    for category in synthetic.CATEGORIES:
        words = synthetic.category_words()[category.name]
        singulars = {singular for singular, _ in category.nouns}
        assert len(singulars) >= 2 and category.name in words
        assert all(plural in words for _, plural in category.nouns)
    all_words = [w for c in committed["categories"] for w in c["words"]]
    assert len(all_words) == len(set(all_words)), "a word must name one category only"


RELATION_CAPTION = re.compile(
    r"an? (?:small |large )?(\w+) (\w+)(?: is)? (left of|to the left of|right of|to the right of|above|"
    r"below|under) an? (?:small |large )?(\w+) (\w+)\."
)


def centroid(coco: COCO, ann: dict) -> np.ndarray:
    ys, xs = np.nonzero(coco.annToMask(ann))
    return np.array([xs.mean(), ys.mean()])


def on_side(a: np.ndarray, b: np.ndarray, relation: str) -> bool:
    dx, dy = a - b
    return {"left of": dx < 0, "right of": dx > 0, "above": dy < 0, "below": dy > 0}[relation]


def test_relation_captions_agree_with_the_geometry(world):
    to_category = word_to_category()
    checked = 0
    for split in SPLITS:
        inst = quiet_coco(world / f"instances_{split}.json")
        caps = quiet_coco(world / f"captions_{split}.json")
        name_to_id = {c["name"]: c["id"] for c in inst.loadCats(inst.getCatIds())}
        for cap in caps.loadAnns(caps.getAnnIds()):
            found = RELATION_CAPTION.fullmatch(cap["caption"])
            if not found:
                continue
            colour_a, noun_a, relation, colour_b, noun_b = found.groups()
            relation = {"to the left of": "left of", "to the right of": "right of", "under": "below"}.get(
                relation, relation
            )
            anns = inst.loadAnns(inst.getAnnIds(imgIds=cap["image_id"]))

            # only() is called within this iteration, so the loop variables it reads are current.
            def only(colour: str, noun: str) -> dict | None:
                category = name_to_id[to_category[noun]]  # noqa: B023
                hits = [a for a in anns if a["color"] == colour and a["category_id"] == category]  # noqa: B023
                assert hits, cap["caption"]  # noqa: B023
                return hits[0] if len(hits) == 1 else None

            a, b = only(colour_a, noun_a), only(colour_b, noun_b)
            if a is not None and b is not None:
                assert on_side(centroid(inst, a), centroid(inst, b), relation), cap["caption"]
                checked += 1
    assert checked >= 5


def test_vqa_answers_match_the_instances(world):
    to_category = word_to_category()
    kinds, yes_no = Counter(), Counter()
    for split in SPLITS:
        inst = quiet_coco(world / f"instances_{split}.json")
        questions = load(world / f"vqa_questions_{split}.json")
        answers = load(world / f"vqa_annotations_{split}.json")
        assert (questions["task_type"], questions["data_subtype"]) == ("Open-Ended", split)
        by_id = {a["question_id"]: a for a in answers["annotations"]}
        assert sorted(by_id) == sorted(q["question_id"] for q in questions["questions"])
        per_image = Counter(q["image_id"] for q in questions["questions"])
        assert set(per_image) == set(inst.getImgIds()) and all(2 <= n <= 5 for n in per_image.values())
        name_to_id = {c["name"]: c["id"] for c in inst.loadCats(inst.getCatIds())}
        shape_of = {c.id: c.shape for c in synthetic.CATEGORIES}
        for q in questions["questions"]:
            ann = by_id[q["question_id"]]
            answer = ann["multiple_choice_answer"]
            assert ann["image_id"] == q["image_id"]
            assert [a["answer_id"] for a in ann["answers"]] == list(range(1, 11))
            assert {a["answer"] for a in ann["answers"]} == {answer}
            assert ann["answer_type"] in ("yes/no", "number", "other")
            objs = inst.loadAnns(inst.getAnnIds(imgIds=q["image_id"]))
            about = inst.loadAnns(ann["object_ids"])
            assert all(o["image_id"] == q["image_id"] for o in about)
            words = q["question"].rstrip("?").split()
            if q["question"].startswith("how many"):
                category = name_to_id[to_category[words[2]]]
                assert answer == str(sum(o["category_id"] == category for o in objs))
                assert {o["category_id"] for o in about} <= {category}
                kinds["count"] += 1
            elif q["question"].startswith("what color"):
                category = name_to_id[to_category[words[-1]]]
                same = [o for o in objs if o["category_id"] == category]
                assert len(same) == 1 and about == same and answer == same[0]["color"]
                kinds["color"] += 1
            elif q["question"].startswith("what shape"):
                same = [o for o in objs if o["color"] == words[-2]]
                assert len(same) == 1 and about == same and answer == shape_of[same[0]["category_id"]]
                kinds["shape"] += 1
            elif q["question"].startswith(("is there", "are there")):
                category = name_to_id[to_category[words[-1]]]
                present = any(o["category_id"] == category for o in objs)
                assert answer == ("yes" if present else "no")
                yes_no[answer] += 1
            else:
                relation = re.fullmatch(r"what is (left of|right of|above|below) the (\w+)\?", q["question"])
                assert relation, q["question"]
                target, reference = about
                assert reference["category_id"] == name_to_id[to_category[relation.group(2)]]
                assert answer == inst.cats[target["category_id"]]["name"]
                assert on_side(centroid(inst, target), centroid(inst, reference), relation.group(1))
                kinds["relation"] += 1
    assert min(kinds.values()) >= 1 and len(kinds) == 4
    assert yes_no["yes"] >= 3 and yes_no["no"] >= 3


def test_one_region_phrase_per_object_with_its_box(world):
    for split in SPLITS:
        inst = quiet_coco(world / f"instances_{split}.json")
        regions = load(world / f"regions_{split}.json")["regions"]
        assert sorted(r["object_id"] for r in regions) == sorted(inst.getAnnIds())
        for region in regions:
            ann = inst.anns[region["object_id"]]
            assert region["image_id"] == ann["image_id"] and region["bbox"] == ann["bbox"]
            name = inst.cats[ann["category_id"]]["name"]
            assert region["phrase"] == f"a {ann['size']} {ann['color']} {name}"


@pytest.mark.parametrize("image_size", [64, 256])
def test_objects_scale_with_the_image(image_size):
    sides = []
    for index in range(12):
        for obj in synthetic.render_scene(seed=0, index=index, image_size=image_size).objects:
            ys, xs = np.nonzero(obj.visible)
            sides.append(max(np.ptp(xs), np.ptp(ys)) + 1)
    assert max(sides) <= 0.42 * image_size
    assert min(sides) >= 0.05 * image_size
    assert max(sides) >= 0.3 * image_size, "large objects should be about a third of the image"


@pytest.mark.parametrize(
    "kwargs, bad",
    [({"val_fraction": 1.5}, "1.5"), ({"image_size": 16}, "16"), ({"num_images": 0}, "0"),
     ({"workers": 0}, "0")],
)
def test_bad_arguments_are_named(tmp_path, kwargs, bad):
    with pytest.raises(ValueError, match=re.escape(bad)):
        synthetic.generate(tmp_path, **kwargs)


def test_command_line_script_writes_a_readable_dataset(tmp_path):
    out = tmp_path / "cli"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_synthetic_coco.py"), "--out", str(out),
         "--num-images", "10", "--image-size", "64", "--workers", "1", "--json"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])},
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["splits"]["train"]["images"], summary["splits"]["val"]["images"]) == (8, 2)
    assert len(quiet_coco(out / "captions_val.json").getImgIds()) == 2
    assert len(list((out / "images").glob("synth_*.png"))) == 10
