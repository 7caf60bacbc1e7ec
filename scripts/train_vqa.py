"""Train a VQA model on VQA v2 files (see vlcam.train.vqa).

Example, on the built-in world:
    python scripts/train_vqa.py --questions world/vqa_questions_train.json \
        --annotations world/vqa_annotations_train.json --images world/images \
        --image-pattern 'synth_{image_id:06d}.png' --out runs/vqa --model lstm-cnn --epochs 10

Running the same command again resumes an interrupted run. The final metrics are printed
as JSON on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys

from vlcam.data.vqa import COCO_IMAGE_PATTERN
from vlcam.train.vqa import MODELS, train_vqa

# Constructor arguments the command line passes through when given (model_options).
_OPTIONS = {"embed_dim": int, "hidden_dim": int, "common_dim": int, "mlp_dim": int,
            "attention_dim": int, "dropout": float}


def main(argv: list[str] | None = None) -> int:
    """Return the exit status after training with the command-line arguments `argv`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", required=True, help="VQA v2 questions JSON of the training split")
    parser.add_argument("--annotations", required=True, help="VQA v2 annotations JSON of the training split")
    parser.add_argument("--images", required=True, help="folder holding the images")
    parser.add_argument("--image-pattern", default=COCO_IMAGE_PATTERN,
                        help="image file names, a format string over {image_id}, {split}, {data_subtype} "
                             f"(default {COCO_IMAGE_PATTERN!r})")
    parser.add_argument("--out", required=True, help="checkpoint folder (resumed if it holds a partial run)")
    parser.add_argument("--model", choices=sorted(MODELS), default="lstm-cnn")
    parser.add_argument("--backbone", default=None,
                        help="lstm-cnn: compact (default), a torchvision CNN, or timm:<name>; "
                             "hiecoatt: small_resnet (default) or a torchvision resnet*")
    parser.add_argument("--pretrained", action="store_true", help="start the backbone from ImageNet weights")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--top-k", type=int, default=1000, help="answer vocabulary: the most common answers")
    parser.add_argument("--min-count", type=int, default=1, help="keep question words seen at least this often")
    for name, kind in _OPTIONS.items():
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=None,
                            help="model option (default: the model's)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32, help="images per batch, each with all its questions")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--val-questions", default=None, help="questions JSON for validation")
    parser.add_argument("--val-annotations", default=None, help="annotations JSON for validation")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="use at most this many images per split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    options = {k: getattr(args, k) for k in _OPTIONS if getattr(args, k) is not None}
    metrics = train_vqa(
        args.questions, args.annotations, args.images, args.out,
        model=args.model, backbone=args.backbone, pretrained=args.pretrained,
        image_pattern=args.image_pattern, image_size=args.image_size, top_k=args.top_k,
        min_count=args.min_count, model_options=options, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, device=args.device,
        val_questions=args.val_questions, val_annotations=args.val_annotations,
        num_workers=args.num_workers, limit=args.limit, seed=args.seed, progress=not args.no_progress,
    )
    json.dump(metrics, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
