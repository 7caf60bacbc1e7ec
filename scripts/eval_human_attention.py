"""Rank correlation of VQA answer maps with human attention maps (paper Sec. 8.2, VQA-HAT).

    python scripts/eval_human_attention.py --questions Q.json --images DIR --attention HAT_DIR \
        --checkpoint VQA_CKPT [--image-pattern P] [--grid 14] [--limit N] --out OUT_DIR

HAT_DIR holds grayscale PNGs named <question_id>.png. Resumable; runs under torchrun too.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", required=True)
    parser.add_argument("--images", required=True)
    parser.add_argument("--attention", required=True, help="folder of <question_id>.png maps")
    parser.add_argument("--checkpoint", required=True, help="a VQA checkpoint folder")
    parser.add_argument("--image-pattern", default="COCO_{split}2014_{image_id:012d}.jpg")
    parser.add_argument("--grid", type=int, default=14)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    import vlcam
    from vlcam.eval.faithfulness import run_human_attention

    model = vlcam.load(args.checkpoint, map_location=args.device)
    summary = run_human_attention(args.out, model, args.questions, args.images, args.attention,
                                  image_pattern=args.image_pattern, grid=args.grid, seed=args.seed,
                                  limit=args.limit)
    if summary is not None:
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
