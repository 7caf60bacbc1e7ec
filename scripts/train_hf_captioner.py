"""Train a small ViT + GPT-2 VisionEncoderDecoder captioner from scratch (see vlcam.train.hf_captioner).

Example, on the built-in world:
    python scripts/train_hf_captioner.py --captions world/captions_train.json \
        --images world/images --out runs/vit_gpt2 --epochs 30

`out` is a transformers folder: ``vlcam.load(out)`` returns it wrapped in its adapter, and
scripts/eval_pointing.py --checkpoint out runs the pointing game on it. The final metrics
are printed as JSON on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys

from vlcam.train.hf_captioner import train_hf_captioner


def main(argv: list[str] | None = None) -> int:
    """Return the exit status after training with the command-line arguments `argv`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", required=True, help="COCO captions JSON of the training split")
    parser.add_argument("--images", required=True, help="folder the captions' file_name entries are in")
    parser.add_argument("--out", required=True, help="output folder (a transformers model folder)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--patch-size", type=int, default=8)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4, help="blocks of the encoder and of the decoder")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--val-captions", default=None, help="COCO captions JSON for validation")
    parser.add_argument("--limit", type=int, default=None, help="use at most this many images per split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    metrics = train_hf_captioner(
        args.captions, args.images, args.out, image_size=args.image_size, patch_size=args.patch_size,
        width=args.width, layers=args.layers, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        device=args.device, val_captions=args.val_captions, seed=args.seed, limit=args.limit,
        progress=not args.no_progress,
    )
    json.dump(metrics, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
