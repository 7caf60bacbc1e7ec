"""Deletion and insertion curves (Petsiuk et al., RISE) of Grad-CAM, Guided Grad-CAM and occlusion maps.

    python scripts/eval_deletion.py --captions world/captions_val.json --images world/images \
        [--checkpoint CKPT_DIR] [--word-map MAP.json] [--steps 20] [--sigma S] [--patch 32] \
        [--stride 16] [--batch-size 64] [--seed 0] [--limit N] --out OUT_DIR

For each visual word, the pixels of the model input are removed (replaced by a blurred copy)
or inserted (into it) in the order of each map, highest first, and of a random order; the
areas under the word-probability curves are averaged (lower deletion and higher insertion
are better). With --questions Q.json (and a VQA --checkpoint), each question's top answer
is explained instead. Writes items.jsonl, summary.json and deletion.png; resumable; runs
under torchrun too.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--captions", help="COCO captions file: explain each visual word")
    source.add_argument("--questions", help="VQA questions file: explain each top answer")
    parser.add_argument("--image-pattern", default="COCO_{split}2014_{image_id:012d}.jpg",
                        help="image file names for --questions")
    parser.add_argument("--images", required=True)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--word-map", default=None)
    parser.add_argument("--steps", type=int, default=20, help="points per curve, after the first")
    parser.add_argument("--sigma", type=float, default=None,
                        help="blur of the baseline in pixels (default: input side / 16)")
    parser.add_argument("--patch", type=int, default=32, help="occlusion square side")
    parser.add_argument("--stride", type=int, default=16, help="occlusion grid step")
    parser.add_argument("--fill", type=float, default=0.0, help="occlusion value (normalised input)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="seeds the random orders")
    parser.add_argument("--limit", type=int, default=None, help="first N captions or questions")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    import vlcam
    from vlcam.adapters import AnswerModel, Captioner
    from vlcam.data.wordmap import WordMap
    from vlcam.demo import shipped_checkpoint
    from vlcam.eval.deletion import run_deletion

    model = vlcam.load(args.checkpoint or shipped_checkpoint(), map_location=args.device)
    kind, needed = ("--questions", AnswerModel) if args.questions else ("--captions", Captioner)
    if not isinstance(model, needed):
        parser.error(f"{kind} needs a {needed.__name__} checkpoint; {type(model).__name__} is not one")
    word_map = WordMap.from_file(args.word_map) if args.word_map else None
    summary = run_deletion(args.out, model, args.captions or args.questions, args.images, word_map,
                           image_pattern=args.image_pattern, steps=args.steps, batch_size=args.batch_size,
                           sigma=args.sigma, patch=args.patch, stride=args.stride, fill=args.fill,
                           seed=args.seed, limit=args.limit)
    if summary is not None:
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
