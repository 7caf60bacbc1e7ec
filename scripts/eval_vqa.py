"""Evaluate a VQA checkpoint: VQA accuracy against the answer priors, and the answer pointing game.

Example, on the built-in world's held-out split:
    python scripts/eval_vqa.py --checkpoint runs/vqa --questions world/vqa_questions_val.json \
        --annotations world/vqa_annotations_val.json --instances world/instances_val.json \
        --images world/images --image-pattern 'synth_{image_id:06d}.png' \
        --train-questions world/vqa_questions_train.json \
        --train-annotations world/vqa_annotations_train.json --out report.json

The report (without the per-question items unless --items) is printed as JSON on stdout
and, with --out, written in full to that file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import vlcam
from vlcam.data.vqa import COCO_IMAGE_PATTERN, prior_accuracy, read_vqa
from vlcam.eval.vqa_pointing import ANSWER_CHOICES, answer_pointing_game
from vlcam.train.vqa import evaluate_vqa


def main(argv: list[str] | None = None) -> int:
    """Return the exit status after evaluating with the command-line arguments `argv`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a VQA checkpoint folder (vlcam.load)")
    parser.add_argument("--questions", required=True, help="VQA v2 questions JSON of the evaluated split")
    parser.add_argument("--annotations", required=True, help="VQA v2 annotations JSON of the evaluated split")
    parser.add_argument("--instances", default=None, help="COCO instances JSON with the questions' objects "
                        "(object_ids); without it, no pointing game")
    parser.add_argument("--images", required=True, help="folder holding the images")
    parser.add_argument("--image-pattern", default=COCO_IMAGE_PATTERN)
    parser.add_argument("--train-questions", default=None, help="training questions, for the answer priors")
    parser.add_argument("--train-annotations", default=None, help="training annotations, for the answer priors")
    parser.add_argument("--answer", choices=ANSWER_CHOICES, default="predicted", help="which answer's map points")
    parser.add_argument("--method", default="gradcam", choices=("gradcam", "guided-gradcam", "counterfactual"))
    parser.add_argument("--layer", default=None, help="Grad-CAM layer (default: the model's default_layer)")
    parser.add_argument("--question-types", default=None,
                        help="comma-separated question types to point with, e.g. "
                             "'what color is the,what shape is the' (default: all single-object questions)")
    parser.add_argument("--tolerance", type=int, default=0, help="pixels a peak may miss the mask by")
    parser.add_argument("--limit", type=int, default=None, help="use the questions of at most this many images")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="write the full report (with every item) here")
    parser.add_argument("--items", action="store_true", help="also print every pointing item")
    args = parser.parse_args(argv)

    model = vlcam.load(args.checkpoint, map_location=args.device)
    items = read_vqa(args.questions, args.annotations, args.images, image_pattern=args.image_pattern,
                     limit=args.limit)
    accuracy = evaluate_vqa(model, items)
    report = {"checkpoint": str(args.checkpoint), "kind": model.config["kind"],
              "accuracy": {k: v for k, v in accuracy.items() if k != "predictions"}}
    if args.train_questions and args.train_annotations:
        train = read_vqa(args.train_questions, args.train_annotations, args.images,
                         image_pattern=args.image_pattern, check_images=False)
        report["prior"] = prior_accuracy(train, items)
    if args.instances:
        report["pointing"] = answer_pointing_game(
            model, args.questions, args.annotations, args.instances, args.images,
            image_pattern=args.image_pattern, limit=args.limit, answer=args.answer, method=args.method,
            layer=args.layer, tolerance=args.tolerance,
            question_types=args.question_types.split(",") if args.question_types else None,
        )
        report["pointing"]["layer"] = args.layer or model.default_layer
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if not args.items and "pointing" in report:
        report["pointing"] = {k: v for k, v in report["pointing"].items() if k != "items"}
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
