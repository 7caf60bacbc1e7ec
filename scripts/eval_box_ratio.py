"""Box ratio (paper Sec. 8.1): caption maps of region phrases, mean inside the box over outside.

    python scripts/eval_box_ratio.py --regions world/regions_val.json --images world/images \
        [--image-pattern "synth_{image_id:06d}.png"] [--checkpoint CKPT_DIR] [--limit N] --out OUT_DIR

Resumable; runs under torchrun too. A uniform map scores 1.0.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regions", required=True, help='{"regions": [{"image_id", "bbox", "phrase"}]}')
    parser.add_argument("--images", required=True)
    parser.add_argument("--image-pattern", default="synth_{image_id:06d}.png")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    import vlcam
    from vlcam.demo import shipped_checkpoint
    from vlcam.eval.faithfulness import run_box_ratio

    model = vlcam.load(args.checkpoint or shipped_checkpoint(), map_location=args.device)
    summary = run_box_ratio(args.out, model, args.regions, args.images, image_pattern=args.image_pattern,
                            limit=args.limit)
    if summary is not None:
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
