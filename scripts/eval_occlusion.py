"""Occlusion faithfulness (paper Sec. 5.3) of caption word maps: rank correlation with occlusion.

    python scripts/eval_occlusion.py --captions world/captions_val.json --images world/images \
        [--checkpoint CKPT_DIR] [--word-map MAP.json] [--patch 32] [--stride 16] [--fill 0] \
        [--batch-size 64] [--limit N] --out OUT_DIR

Compares Grad-CAM and guided backpropagation against occlusion maps for each visual word.
With --questions Q.json (and a VQA --checkpoint), it does the same for each question's top
answer instead. Resumable; runs under torchrun too.
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
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--stride", type=int, default=16)
    parser.add_argument("--fill", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--limit", type=int, default=None, help="first N captions")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    import vlcam
    from vlcam.data.wordmap import WordMap
    from vlcam.demo import shipped_checkpoint
    from vlcam.eval.faithfulness import run_answer_occlusion, run_caption_occlusion

    model = vlcam.load(args.checkpoint or shipped_checkpoint(), map_location=args.device)
    if args.questions:
        summary = run_answer_occlusion(args.out, model, args.questions, args.images, image_pattern=args.image_pattern,
                                       patch=args.patch, stride=args.stride, fill=args.fill,
                                       batch_size=args.batch_size, limit=args.limit)
        if summary is not None:
            print(json.dumps(summary, indent=2))
        return 0
    word_map = WordMap.from_file(args.word_map) if args.word_map else WordMap.builtin("synthetic")
    summary = run_caption_occlusion(args.out, model, args.captions, args.images, word_map, patch=args.patch,
                                    stride=args.stride, fill=args.fill, batch_size=args.batch_size,
                                    limit=args.limit)
    if summary is not None:
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
