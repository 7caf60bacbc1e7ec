"""Model-randomisation sanity check (Adebayo et al. 2018) of Grad-CAM, guided backprop and Guided Grad-CAM.

    python scripts/eval_sanity.py --captions world/captions_val.json --images world/images \
        [--checkpoint CKPT_DIR] [--word-map MAP.json] [--layer NAME] [--seed 0] [--limit N] --out OUT_DIR

Randomises the model's blocks from the top down (cascading, cumulatively) and one at a time
(independent), in a copy of the model, and compares each method's map of each visual word
with the trained model's map (Spearman and SSIM): summary.json and sanity.png in OUT_DIR.
With --questions Q.json (and a VQA --checkpoint), each question's top answer is explained
instead. Resumable; runs under torchrun too.
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
    parser.add_argument("--layer", default=None, help="the explained layer (default: the model's)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the random weights of every block")
    parser.add_argument("--limit", type=int, default=None, help="first N captions or questions")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    import vlcam
    from vlcam.data.wordmap import WordMap
    from vlcam.demo import shipped_checkpoint
    from vlcam.eval.sanity import run_sanity

    model = vlcam.load(args.checkpoint or shipped_checkpoint(), map_location=args.device)
    word_map = WordMap.from_file(args.word_map) if args.word_map else None
    summary = run_sanity(args.out, model, args.captions, args.images, questions_json=args.questions,
                         image_pattern=args.image_pattern, word_map=word_map, layer=args.layer, seed=args.seed,
                         limit=args.limit)
    if summary is not None:
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
