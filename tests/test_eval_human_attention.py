"""Human-attention correlation (Sec. 8.2): per-question values match an independent Spearman."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.stats import spearmanr

import vlcam
from vlcam.adapters.vqa_lstm_cnn import VQALSTMCNN
from vlcam.data.coco import load_coco
from vlcam.data.synthetic import generate
from vlcam.eval.faithfulness import run_human_attention
from vlcam.text import Vocabulary


def test_answer_maps_are_ranked_against_human_attention_maps(tmp_path):
    world = tmp_path / "world"
    generate(world, num_images=4, image_size=64, seed=3, val_fraction=1.0, workers=1)
    questions = json.loads((world / "vqa_questions_val.json").read_text())["questions"]
    annotations = {
        a["question_id"]: a for a in json.loads((world / "vqa_annotations_val.json").read_text())["annotations"]
    }
    instances = load_coco(world / "instances_val.json")
    hat = tmp_path / "hat"
    hat.mkdir()
    for q in questions[1:]:  # the first question has no human map: it must be skipped, not dropped
        ids = annotations[q["question_id"]]["object_ids"] or [a["id"] for a in instances.loadAnns(
            instances.getAnnIds(imgIds=[q["image_id"]]))]
        mask = np.zeros((64, 64), bool)
        for ann in instances.loadAnns(ids):
            mask |= instances.annToMask(ann).astype(bool)
        Image.fromarray((mask * 255).astype(np.uint8)).save(hat / f"{q['question_id']}.png")

    torch.manual_seed(0)
    vocab = Vocabulary.from_captions([q["question"] for q in questions], min_count=1)
    model = VQALSTMCNN(vocab, sorted({a["multiple_choice_answer"] for a in annotations.values()}), image_size=64)
    summary = run_human_attention(tmp_path / "out", model, world / "vqa_questions_val.json", world / "images",
                                  hat, image_pattern="synth_{image_id:06d}.png", grid=8)
    assert summary["questions"] == len(questions)
    assert summary["scored"] == len(questions) - 1 and summary["skipped"] == {"no human attention map": 1}

    q = questions[1]
    explanation = vlcam.explain_answer(model, world / "images" / f"synth_{q['image_id']:06d}.png", q["question"])
    human = np.asarray(Image.open(hat / f"{q['question_id']}.png").convert("L"), dtype=np.float32)

    def grid(a):
        return F.interpolate(torch.as_tensor(a)[None, None].float(), size=(8, 8), mode="area")[0, 0].numpy().ravel()

    expected = spearmanr(grid(explanation.maps[0]), grid(human))[0]
    records = [json.loads(line) for line in (tmp_path / "out" / "items.jsonl").read_text().splitlines()]
    got = next(r for r in records if r["key"] == q["question_id"])
    if np.isnan(expected):  # a constant map: the metric reports 0 instead of NaN
        expected = 0.0
    assert got["gradcam"] == pytest.approx(expected, abs=1e-9)
