"""The `vlcam` command line: a thin shell over library functions."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    from vlcam.demo import run_demo

    summary = run_demo(
        Path(args.out), checkpoint=args.checkpoint, num_images=args.num_images, seed=args.seed,
        device=args.device,
    )
    return 0 if summary["words"] else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlcam", description="Grad-CAM explanations for image-captioning and VQA models."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="explain the shipped captioner on held-out scenes of the built-in world",
        description="Caption a few held-out scenes of the built-in world with the shipped "
        "Show-and-Tell checkpoint, write Grad-CAM figures (caption map and per-word maps), "
        "and print where each visual word's map peaks and whether that point is on the object.",
    )
    demo.add_argument("--out", default="vlcam-demo", help="output folder (default: ./vlcam-demo)")
    demo.add_argument("--checkpoint", default=None, help="a Show-and-Tell checkpoint folder (default: shipped)")
    demo.add_argument("--num-images", type=int, default=6, help="held-out scenes to explain (default: 6)")
    demo.add_argument("--seed", type=int, default=20261127, help="seed of the held-out scenes")
    demo.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the `vlcam` command line; return the exit status."""
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
