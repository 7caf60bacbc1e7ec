"""Train a Show-and-Tell captioner on a COCO-format captions file (see vlcam.train.captioner).

Example, on the built-in world:
    python scripts/train_captioner.py --captions world/captions_train.json \
        --images world/images --out runs/sat --epochs 10

Running the same command again resumes an interrupted run. The final metrics are printed
as JSON on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys

from vlcam.train.captioner import train_captioner


def main(argv: list[str] | None = None) -> int:
    """Return the exit status after training with the command-line arguments `argv`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", required=True, help="COCO captions JSON of the training split")
    parser.add_argument("--images", required=True, help="folder the captions' file_name entries are in")
    parser.add_argument("--out", required=True, help="checkpoint folder (resumed if it holds a partial run)")
    parser.add_argument("--backbone", default="compact", help="compact, a torchvision CNN, or timm:<name>")
    parser.add_argument("--pretrained", action="store_true", help="start the backbone from ImageNet weights")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--embed-dim", type=int, default=256)
    parser.add_argument("--hidden-dim", type=int, default=512)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--pool", choices=["avg", "max"], default="avg",
                        help="global pooling of the conv map into the image vector")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--val-captions", default=None, help="COCO captions JSON for validation")
    parser.add_argument("--min-count", type=int, default=5, help="keep words seen at least this often")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="use at most this many images per split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    metrics = train_captioner(
        args.captions, args.images, args.out,
        backbone=args.backbone, pretrained=args.pretrained, image_size=args.image_size,
        embed_dim=args.embed_dim, hidden_dim=args.hidden_dim, dropout=args.dropout, pool=args.pool,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, device=args.device,
        val_captions=args.val_captions, min_count=args.min_count, num_workers=args.num_workers,
        limit=args.limit, seed=args.seed, progress=not args.no_progress,
    )
    json.dump(metrics, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
