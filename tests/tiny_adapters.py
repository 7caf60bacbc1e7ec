"""Every adapter vlcam ships, tiny and random, speaking the words of a built-in world."""

from __future__ import annotations

import json
from pathlib import Path

import torch

import hf_tiny as tiny
from vlcam.adapters.hf import wrap
from vlcam.adapters.hiecoatt import HieCoAtt
from vlcam.adapters.show_and_tell import ShowAndTell
from vlcam.adapters.vqa_lstm_cnn import VQALSTMCNN
from vlcam.data.coco import read_coco_captions
from vlcam.text import Vocabulary, tokenize

CAPTIONERS = ("show_and_tell", "blip_captioner", "vit_gpt2")
ANSWER_MODELS = ("vqa_lstm_cnn", "hiecoatt", "blip_vqa", "vilt_vqa")
ADAPTERS = CAPTIONERS + ANSWER_MODELS


def world_text(world: Path) -> tuple[list[str], list[str], list[str]]:
    """Return (the world's captions, its questions, its answers, most common first)."""
    captions = read_coco_captions(world / "captions_val.json")
    questions = [q["question"] for q in json.loads((world / "vqa_questions_val.json").read_text())["questions"]]
    annotations = json.loads((world / "vqa_annotations_val.json").read_text())["annotations"]
    counts: dict[str, int] = {}
    for a in annotations:
        counts[a["multiple_choice_answer"]] = counts.get(a["multiple_choice_answer"], 0) + 1
    answers = sorted(counts, key=lambda a: (-counts[a], a))
    return captions, questions, answers


def build(name: str, world: Path, tmp: Path, seed: int = 0) -> torch.nn.Module:
    """Return adapter `name` (one of ADAPTERS), random, knowing every word of `world`."""
    captions, questions, answers = world_text(world)
    words = sorted({w for text in captions + questions + answers for w in tokenize(text)})
    folder = tmp / name
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if name == "show_and_tell":
        return ShowAndTell(Vocabulary(words), "compact", embed_dim=16, hidden_dim=16, image_size=64).eval()
    if name == "vqa_lstm_cnn":
        return VQALSTMCNN(Vocabulary(words), answers, "compact", embed_dim=16, hidden_dim=16, common_dim=32,
                          mlp_dim=32, image_size=64, dropout=0.2).eval()
    if name == "hiecoatt":
        return HieCoAtt(Vocabulary(words), answers, hidden_dim=16, attention_dim=16, image_size=64,
                        dropout=0.2).eval()
    if name == "blip_captioner":
        return wrap(*tiny.blip_captioner(folder, seed, words))
    if name == "blip_vqa":
        return wrap(*tiny.blip_vqa(folder, seed, words))
    if name == "vilt_vqa":
        return wrap(*tiny.vilt_vqa(folder, seed, words, answers))
    if name == "vit_gpt2":
        model, tokenizer, image_processor = tiny.vit_gpt2(seed, captions)
        return wrap(model, tokenizer=tokenizer, image_processor=image_processor)
    raise ValueError(f"unknown adapter {name!r}; one of {ADAPTERS}")
