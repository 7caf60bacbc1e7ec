"""Where a model loses which colour goes with which shape: in its image features, or after them.

Two measurements on a world with instance annotations (the built-in world's ``color`` field):

- **probe**: a linear probe (logistic regression on standardised features, Adam, a fixed
  number of full-batch steps) trained on the training images' image vectors to say which
  (category, colour) pairs are present; on the held-out images, for each category present,
  the share where the probe's most likely colour for it is the colour of one of its
  instances. High means the features bind colour to shape.
- **conditional** (captioners): on the held-out images with two or more categories, for each
  colour present, feed "<start> a <colour>" and take the object word the decoder ranks first;
  the share naming a category that has an instance of that colour. This is what the
  captions need: after "a red", the red object's name.
- **asked** (VQA models): on the held-out images with two or more categories, ask "what color
  is the <category name>?" of each category present; the share answered with a colour of one
  of its instances, and the share of images whose objects all got the same answer (a model
  that reads which colours are there but not which goes with the object asked about); and,
  over "what color is the <name>?" for every category name, the question vectors' mean
  cosine and the share of their components beyond +-0.995 (tanh saturation).

    python benchmarks/binding_probe.py CHECKPOINT WORLD_DIR [--train-world DIR] [--limit 200] [--steps 400]
        [--out report.json]

The probe trains on the training split of `--train-world` (default WORLD_DIR) and is scored
on the first `--limit` held-out images of WORLD_DIR.

"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import vlcam
from vlcam.adapters.show_and_tell import ShowAndTell
from vlcam.adapters.vqa_lstm_cnn import VQALSTMCNN
from vlcam.data.wordmap import WordMap
from vlcam.text import START

_BATCH = 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("world", type=Path)
    parser.add_argument("--train-world", type=Path, help="world whose training split trains the probe")
    parser.add_argument("--limit", type=int, default=200, help="held-out images to score (default 200)")
    parser.add_argument("--steps", type=int, default=400, help="full-batch steps of the probe (default 400)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = vlcam.load(args.checkpoint).eval()
    train_world = args.train_world or args.world
    train = _split(train_world, "train", None)
    held_out = _split(args.world, "val", args.limit)
    report: dict[str, Any] = {"checkpoint": str(args.checkpoint), "world": str(args.world),
                              "probe_trained_on": str(train_world),
                              "held_out_images": len(held_out[0]), "probe_steps": args.steps}
    with torch.no_grad():
        train_x = _image_vectors(model, train_world, train[0])
        held_x = _image_vectors(model, args.world, held_out[0])
    report["probe"] = _probe(train_x, train[1], held_x, held_out[1], args.steps)
    with torch.no_grad():
        if isinstance(model, ShowAndTell):
            report["conditional"] = _conditional(model, args.world, *held_out)
        else:
            report["asked"] = _asked(model, args.world, *held_out)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


def _split(world: Path, split: str, limit: int | None) -> tuple[list[dict[str, Any]], list[list[tuple[int, str]]]]:
    """Return (images sorted by id, each image's (category id, colour) instances)."""
    instances = json.loads((world / f"instances_{split}.json").read_text())
    images = sorted(instances["images"], key=lambda image: image["id"])[:limit]
    objects: dict[int, list[tuple[int, str]]] = collections.defaultdict(list)
    for ann in instances["annotations"]:
        objects[ann["image_id"]].append((ann["category_id"], ann["color"]))
    return images, [objects[image["id"]] for image in images]


def _image_vectors(model: Any, world: Path, images: list[dict[str, Any]]) -> torch.Tensor:
    """Return what the decoder or answer classifier reads of each image: [N, D] (features per
    region, as HieCoAtt gives them, are max pooled)."""
    out = []
    for start in range(0, len(images), _BATCH):
        x = model.preprocess([world / "images" / image["file_name"] for image in images[start:start + _BATCH]])
        vectors = model.image_vector(model.encode(x)) if isinstance(model, ShowAndTell) else model.encode_images(x)
        if isinstance(model, VQALSTMCNN) and model.attention:  # the pooled vector, then the positions'
            vectors = vectors[:, 0]
        out.append(vectors.amax(dim=1) if vectors.dim() == 3 else vectors)
    return torch.cat(out)


def _probe(train_x: torch.Tensor, train_objects: list[list[tuple[int, str]]], held_x: torch.Tensor,
           held_objects: list[list[tuple[int, str]]], steps: int) -> dict[str, Any]:
    categories = sorted({c for objects in train_objects for c, _ in objects})
    colours = sorted({k for objects in train_objects for _, k in objects})
    column = {(c, k): j for j, (c, k) in enumerate((c, k) for c in categories for k in colours)}
    targets = torch.zeros(len(train_objects), len(column))
    for row, objects in enumerate(train_objects):
        for pair in objects:
            targets[row, column[pair]] = 1.0
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    head = torch.nn.Linear(train_x.shape[1], len(column))
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(head((train_x - mean) / std), targets)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        scores = head((held_x - mean) / std).view(-1, len(categories), len(colours))
    counts: collections.Counter[str] = collections.Counter()
    for row, objects in enumerate(held_objects):
        present = {c for c, _ in objects}
        for c in present:
            said = colours[int(scores[row, categories.index(c)].argmax())]
            counts[f"{min(len(present), 4)} categories: {'right' if (c, said) in objects else 'wrong'}"] += 1
    right = sum(n for key, n in counts.items() if key.endswith("right"))
    return {"colour_given_category": round(right / max(1, sum(counts.values())), 4),
            "train_loss": round(float(loss.detach()), 4), "counts": dict(sorted(counts.items()))}


def _conditional(model: ShowAndTell, world: Path, images: list[dict[str, Any]],
                 objects: list[list[tuple[int, str]]]) -> dict[str, Any]:
    word_map = WordMap.from_file(world / "word_map.json")
    known = set(model.known_words())
    names = {model.vocab.index(w): m[0].category_id for w in sorted(known)
             if (m := word_map.match([w])) and m[0].start == 0}
    ids = torch.tensor(sorted(names))
    category_of = [names[i] for i in ids.tolist()]
    counts: collections.Counter[str] = collections.Counter()
    for image, found in zip(images, objects):
        present = {c for c, _ in found}
        if len(present) < 2:
            continue
        conv_map = model.encode(model.preprocess([world / "images" / image["file_name"]]))
        for colour in sorted({k for _, k in found} & known):
            tokens = torch.tensor([[START, model.vocab.index("a"), model.vocab.index(colour), 0]])
            first = category_of[int(model.decode(conv_map, tokens)[0, 2, ids].argmax())]
            kind = "right" if (first, colour) in found else "another present" if first in present else "absent"
            counts[f"{min(len(present), 4)} categories: {kind}"] += 1
    right = sum(n for key, n in counts.items() if key.endswith("right"))
    return {"names_the_coloured_object": round(right / max(1, sum(counts.values())), 4),
            "prompts": sum(counts.values()), "counts": dict(sorted(counts.items()))}


def _asked(model: Any, world: Path, images: list[dict[str, Any]],
           objects: list[list[tuple[int, str]]]) -> dict[str, Any]:
    names = {c["id"]: c["name"] for c in json.loads((world / "instances_val.json").read_text())["categories"]}
    every = model.encode_question_vectors(model.encode_questions(
        [f"what color is the {name}?" for name in names.values()], warn=False))
    unit = F.normalize(every, dim=1)
    counts: collections.Counter[str] = collections.Counter()
    for image, found in zip(images, objects):
        present = sorted({c for c, _ in found})
        if len(present) < 2:
            continue
        x = model.preprocess([world / "images" / image["file_name"]])
        questions = model.encode_questions([f"what color is the {names[c]}?" for c in present], warn=False)
        said = [model.answers[k] for k in model(x.expand(len(present), -1, -1, -1), questions).argmax(1).tolist()]
        counts["right"] += sum((c, a) in found for c, a in zip(present, said))
        counts["questions"] += len(present)
        counts["images"] += 1
        counts["images with one answer for all"] += len(set(said)) == 1
    return {"answers_the_asked_object": round(counts["right"] / max(1, counts["questions"]), 4),
            "one_answer_for_all": round(counts["images with one answer for all"] / max(1, counts["images"]), 4),
            "colour_question_cosine": round(float((unit @ unit.T).mean()), 4),
            "colour_question_saturated": round(float((every.abs() > 0.995).float().mean()), 4),
            "counts": dict(counts)}


if __name__ == "__main__":
    main()
