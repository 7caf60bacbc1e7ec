"""Write the built-in synthetic world (COCO captions/instances, VQA, regions, word map) to a folder.

Example:
    python scripts/make_synthetic_coco.py --out world --num-images 2000 --image-size 128

The same arguments always give the same files. The summary (counts per split, categories,
colours) is printed as JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys

from vlcam.data.synthetic import generate


def main(argv: list[str] | None = None) -> int:
    """Return the exit status after writing the dataset the command-line arguments `argv` ask for."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--num-images", type=int, default=2000)
    parser.add_argument("--image-size", type=int, default=128, help="side of the square images, px")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    args = parser.parse_args(argv)
    summary = generate(
        args.out,
        num_images=args.num_images,
        image_size=args.image_size,
        seed=args.seed,
        val_fraction=args.val_fraction,
        workers=args.workers,
    )
    json.dump(summary, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
