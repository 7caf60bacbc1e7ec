"""Score a captioner on held-out images: the COCO caption metrics and the word-level pointing game.

    python scripts/eval_captioner.py --captions world/captions_val.json \
        --instances world/instances_val.json --images world/images \
        [--checkpoint CKPT_DIR] [--train-captions world/captions_train.json] \
        [--word-map MAP.json] [--tolerance 0 15] [--limit N] --out report.json

Without --checkpoint it scores the shipped built-in-world captioner; without --word-map it
uses the built-in world's map. Caption quality is CIDEr-D, BLEU-1..4, METEOR, ROUGE-L (the
official COCO caption evaluation, pycocoevalcap) and exact match, with --train-captions also for
the most-frequent-caption baseline; METEOR needs java on PATH.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", required=True)
    parser.add_argument("--instances", required=True)
    parser.add_argument("--images", required=True)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--train-captions", default=None, help="for the most-frequent-caption baseline")
    parser.add_argument("--word-map", default=None)
    parser.add_argument("--tolerance", type=int, nargs="+", default=[0, 15])
    parser.add_argument("--method", default="gradcam")
    parser.add_argument("--beam-size", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None, help="first N images only")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", required=True, help="report JSON path")
    args = parser.parse_args(argv)

    import vlcam
    from vlcam.data.coco import read_coco_captions
    from vlcam.data.wordmap import WordMap
    from vlcam.demo import shipped_checkpoint
    from vlcam.eval.captions import caption_quality
    from vlcam.eval.pointing import caption_pointing_game

    model = vlcam.load(args.checkpoint or shipped_checkpoint(), map_location=args.device)
    word_map = WordMap.from_file(args.word_map) if args.word_map else WordMap.builtin("synthetic")
    baseline = read_coco_captions(args.train_captions) if args.train_captions else ()
    report = {"quality": caption_quality(model, args.captions, args.images, baseline_captions=baseline,
                                         beam_size=args.beam_size, limit=args.limit)}
    for tolerance in args.tolerance:
        game = caption_pointing_game(model, args.captions, args.instances, args.images, word_map,
                                     tolerance=tolerance, method=args.method, limit=args.limit)
        game.pop("items")
        report[f"pointing_tolerance_{tolerance}"] = game
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    quality = report["quality"]
    line = f"CIDEr-D {quality['model']['cider']:.3f} on {quality['images']} images"
    if "baseline_most_frequent" in quality:
        line += f" (most frequent caption: {quality['baseline_most_frequent']['cider']:.3f})"
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
