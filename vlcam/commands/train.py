"""`vlcam train captioner|vqa|hf-captioner|shipped`: training runs that resume when interrupted."""

from __future__ import annotations

import argparse
from typing import Any

from vlcam.commands._options import finish, parent


def _true_or_false(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() == "true"


_VQA_OPTIONS: dict[str, Any] = {"embed_dim": int, "hidden_dim": int, "common_dim": int, "mlp_dim": int,
                                "attention_dim": int, "dropout": float, "pool": str, "attention": _true_or_false}


def add_commands(sub: Any) -> None:
    """Register the `train` group's commands on the top-level subparsers `sub`."""
    group = sub.add_parser("train", help="train a captioner or a VQA model (runs resume)").add_subparsers(
        dest="what", required=True, metavar="{captioner,vqa,hf-captioner,shipped}")
    shared = parent("images", "out", "limit", "device", "json")

    c = group.add_parser("captioner", parents=[shared], help="Show-and-Tell on COCO-format captions",
                         description="Train Show-and-Tell on a COCO-format captions file; the same command "
                         "again resumes an interrupted run.")
    c.add_argument("--captions", required=True, help="COCO captions JSON of the training split")
    import inspect

    from vlcam.train.captioner import train_captioner

    # The function's defaults are the command's: one place decides what a user gets.
    default = {k: p.default for k, p in inspect.signature(train_captioner).parameters.items()}
    c.add_argument("--backbone", default=default["backbone"],
                   help="compact_deep (default), compact_replicate, compact, a torchvision CNN, or timm:<name>")
    c.add_argument("--pretrained", action="store_true", help="start the backbone from ImageNet weights")
    c.add_argument("--image-size", type=int, default=default["image_size"])
    c.add_argument("--embed-dim", type=int, default=default["embed_dim"])
    c.add_argument("--hidden-dim", type=int, default=default["hidden_dim"])
    c.add_argument("--dropout", type=float, default=default["dropout"])
    c.add_argument("--pool", choices=["avg", "max", "avgmax", "projmax"], default=default["pool"],
                   help="global pooling of the conv map; projmax projects each position, then takes the "
                        f"max (default {default['pool']})")
    c.add_argument("--image-input", choices=["first", "every", "gated"], default=default["image_input"],
                   help="the image enters the LSTM before the first word (Show and Tell), beside every "
                        "word, or beside and multiplied with every word (gated) "
                        f"(default {default['image_input']})")
    c.add_argument("--concept-weight", type=float, default=default["concept_weight"],
                   help="weight of the auxiliary loss that predicts the captions' words and word pairs "
                        "from the pooled image features (0: off)")
    c.add_argument("--concept-pool", choices=["pooled", "spatial"], default=default["concept_pool"],
                   help="the concept heads read the pooled features, or score each position and keep "
                        f"the best (default {default['concept_pool']})")
    c.add_argument("--spread-weight", type=float, default=default["spread_weight"],
                   help="weight of the auxiliary loss that keeps each conv feature firing where it "
                        "peaks rather than all over the image (0: off)")
    c.add_argument("--no-augment", dest="augment", action="store_false",
                   help="no mirroring (with left/right swapped in the captions) and no shifts")
    c.add_argument("--epochs", type=int, default=default["epochs"], help="at most this many epochs")
    c.add_argument("--patience", type=int, default=default["patience"],
                   help="stop after this many epochs without a better validation loss; the learning "
                        "rate halves after every half of it")
    c.add_argument("--batch-size", type=int, default=default["batch_size"],
                   help="images per batch, each with all its captions")
    c.add_argument("--lr", type=float, default=default["lr"])
    c.add_argument("--val-captions", default=None, help="COCO captions JSON for validation")
    c.add_argument("--instances", default=None, help="COCO instances JSON of the training images, for the "
                   "category concepts (default: instances_train.json beside captions_train.json, if there)")
    c.add_argument("--min-count", type=int, default=default["min_count"], help="keep words seen at least this often")
    c.add_argument("--num-workers", type=int, default=0)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.set_defaults(run=_captioner)

    from vlcam.data.vqa import COCO_IMAGE_PATTERN
    from vlcam.train.vqa import MODELS, train_vqa

    vqa_default = {k: p.default for k, p in inspect.signature(train_vqa).parameters.items()}

    v = group.add_parser("vqa", parents=[shared], help="LSTM+CNN or co-attention VQA on VQA-v2-format files",
                         description="Train the LSTM+CNN or the co-attention VQA model on VQA-v2-format "
                         "files, reporting the official VQA accuracy each epoch; runs resume.")
    v.add_argument("--questions", required=True, help="VQA v2 questions JSON of the training split")
    v.add_argument("--annotations", required=True, help="VQA v2 annotations JSON of the training split")
    v.add_argument("--image-pattern", default=COCO_IMAGE_PATTERN,
                   help=f"image file names over {{image_id}}, {{split}}, {{data_subtype}} "
                        f"(default {COCO_IMAGE_PATTERN!r})")
    v.add_argument("--model", choices=sorted(MODELS), default="lstm-cnn")
    v.add_argument("--backbone", default=None, help="lstm-cnn: compact_deep (default), a torchvision CNN, or "
                   "timm:<name>; hiecoatt: small_resnet (default) or a torchvision resnet*")
    v.add_argument("--pretrained", action="store_true", help="start the backbone from ImageNet weights")
    v.add_argument("--image-size", type=int, default=128)
    v.add_argument("--top-k", type=int, default=1000, help="answer vocabulary: the most common answers")
    v.add_argument("--min-count", type=int, default=1, help="keep question words seen at least this often")
    for name, kind in _VQA_OPTIONS.items():
        v.add_argument("--" + name.replace("_", "-"), type=kind, default=None,
                       help="model option (default: the trainer's, else the model's)")
    v.add_argument("--concept-weight", type=float, default=vqa_default["concept_weight"],
                   help="lstm-cnn: weight of the auxiliary loss that predicts each question's answer and "
                        "(question word, answer) pairs from the pooled image features (0: off)")
    v.add_argument("--concept-pool", choices=["pooled", "spatial"], default=vqa_default["concept_pool"],
                   help="lstm-cnn: the concept heads read the pooled features, or score each position and "
                        f"keep the best (default {vqa_default['concept_pool']})")
    v.add_argument("--spread-weight", type=float, default=vqa_default["spread_weight"],
                   help="weight of the auxiliary loss that keeps each conv feature firing where it "
                        "peaks rather than all over the image (0: off)")
    v.add_argument("--no-augment", dest="augment", action="store_false",
                   help="no mirroring (with left/right swapped in the questions) and no shifts")
    v.add_argument("--epochs", type=int, default=vqa_default["epochs"], help="at most this many epochs")
    v.add_argument("--patience", type=int, default=vqa_default["patience"],
                   help="stop after this many epochs without a better validation accuracy; the "
                        "learning rate halves after every half of it")
    v.add_argument("--batch-size", type=int, default=vqa_default["batch_size"],
                   help="images per batch, each with all its questions")
    v.add_argument("--lr", type=float, default=vqa_default["lr"])
    v.add_argument("--val-questions", default=None, help="questions JSON for validation")
    v.add_argument("--val-annotations", default=None, help="annotations JSON for validation")
    v.add_argument("--instances", default=None, help="COCO instances JSON of the training images, for the "
                   "category concepts (default: instances_train.json beside vqa_questions_train.json, if there)")
    v.add_argument("--num-workers", type=int, default=0)
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--no-progress", action="store_true", help="no progress bar")
    v.set_defaults(run=_vqa)

    h = group.add_parser("hf-captioner", parents=[shared], help="a small ViT + GPT-2 captioner, from scratch",
                         description="Train a small ViT + GPT-2 VisionEncoderDecoderModel captioner from "
                         "scratch (a transformers folder vlcam.load wraps), to evaluate the Hugging Face "
                         "path without downloads.")
    h.add_argument("--captions", required=True, help="COCO captions JSON of the training split")
    h.add_argument("--image-size", type=int, default=128)
    h.add_argument("--patch-size", type=int, default=8)
    h.add_argument("--width", type=int, default=128)
    h.add_argument("--layers", type=int, default=4, help="blocks of the encoder and of the decoder")
    h.add_argument("--epochs", type=int, default=30)
    h.add_argument("--batch-size", type=int, default=32)
    h.add_argument("--lr", type=float, default=5e-4)
    h.add_argument("--val-captions", default=None, help="COCO captions JSON for validation")
    h.add_argument("--seed", type=int, default=0)
    h.add_argument("--no-progress", action="store_true", help="no progress bar")
    h.set_defaults(run=_hf_captioner)

    g = group.add_parser("vlm", parents=[shared], help="a small LLaVA-architecture VLM, from scratch",
                         description="Train a small LLaVA (CLIP-style ViT, projector, Llama decoder) from scratch "
                         "on captions and VQA turns (a transformers folder vlcam.load wraps), to evaluate the "
                         "generative path without downloads.")
    g.add_argument("--captions", required=True, help="COCO captions JSON of the training split")
    g.add_argument("--questions", default=None, help="VQA v2 questions JSON of the training split (optional)")
    g.add_argument("--annotations", default=None, help="VQA v2 annotations JSON of the training split")
    g.add_argument("--image-pattern", default="synth_{image_id:06d}.png", help="VQA image file name pattern")
    g.add_argument("--val-captions", default=None, help="COCO captions JSON for validation")
    g.add_argument("--image-size", type=int, default=128)
    g.add_argument("--patch-size", type=int, default=16)
    g.add_argument("--epochs", type=int, default=12)
    g.add_argument("--batch-size", type=int, default=32, help="images per step (each with a caption and a question)")
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.set_defaults(run=_vlm)

    from vlcam.train.shipped import ASSETS, MINUTES_ON_2_CPU_CORES

    s = group.add_parser("shipped", parents=[parent("device", "json")],
                         help="rebuild a checkpoint shipped in vlcam/assets",
                         description="Rebuild a shipped checkpoint from scratch: render the built-in world "
                         "(3,000 scenes, seed 0), train with the trainer's defaults, and copy the "
                         "best-validation checkpoint into the package (about "
                         + ", ".join(f"{m} min for the {w}" for w, m in MINUTES_ON_2_CPU_CORES.items())
                         + " on 2 CPU cores). Interrupted rebuilds resume.")
    s.add_argument("which", choices=sorted(ASSETS), help="which shipped model")
    s.add_argument("--work", default="runs/shipped", help="folder for the world and the run (default: runs/shipped)")
    s.add_argument("--dest", default=None, help="where to copy the checkpoint (default: the package's assets)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(run=_shipped)


def _device(args: argparse.Namespace) -> str:
    from vlcam.devices import resolve_device

    return str(resolve_device(args.device))


def _captioner(args: argparse.Namespace) -> int:
    from vlcam.train.captioner import train_captioner

    metrics = train_captioner(
        args.captions, args.images, args.out,
        backbone=args.backbone, pretrained=args.pretrained, image_size=args.image_size,
        embed_dim=args.embed_dim, hidden_dim=args.hidden_dim, dropout=args.dropout, pool=args.pool,
        image_input=args.image_input, concept_weight=args.concept_weight, concept_pool=args.concept_pool,
        spread_weight=args.spread_weight, augment=args.augment,
        epochs=args.epochs, patience=args.patience, batch_size=args.batch_size, lr=args.lr, device=_device(args),
        val_captions=args.val_captions, instances=args.instances, min_count=args.min_count,
        num_workers=args.num_workers, limit=args.limit, seed=args.seed, progress=not args.no_progress,
    )
    return finish(metrics, args, f"captioner trained: {args.out}")


def _vqa(args: argparse.Namespace) -> int:
    from vlcam.train.vqa import train_vqa

    options = {k: getattr(args, k) for k in _VQA_OPTIONS if getattr(args, k) is not None}
    metrics = train_vqa(
        args.questions, args.annotations, args.images, args.out,
        model=args.model, backbone=args.backbone, pretrained=args.pretrained,
        image_pattern=args.image_pattern, image_size=args.image_size, top_k=args.top_k,
        min_count=args.min_count, model_options=options, concept_weight=args.concept_weight,
        concept_pool=args.concept_pool, spread_weight=args.spread_weight, augment=args.augment,
        epochs=args.epochs,
        patience=args.patience,
        batch_size=args.batch_size, lr=args.lr, device=_device(args),
        val_questions=args.val_questions, val_annotations=args.val_annotations, instances=args.instances,
        num_workers=args.num_workers, limit=args.limit, seed=args.seed, progress=not args.no_progress,
    )
    return finish(metrics, args, f"{args.model} VQA model trained: {args.out}")


def _hf_captioner(args: argparse.Namespace) -> int:
    from vlcam.train.hf_captioner import train_hf_captioner

    metrics = train_hf_captioner(
        args.captions, args.images, args.out, image_size=args.image_size, patch_size=args.patch_size,
        width=args.width, layers=args.layers, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        device=_device(args), val_captions=args.val_captions, seed=args.seed, limit=args.limit,
        progress=not args.no_progress,
    )
    return finish(metrics, args, f"ViT + GPT-2 captioner trained: {args.out}")


def _vlm(args: argparse.Namespace) -> int:
    from vlcam.train.vlm import train_vlm

    metrics = train_vlm(
        args.captions, args.images, args.out, questions=args.questions, annotations=args.annotations,
        image_pattern=args.image_pattern, val_captions=args.val_captions, image_size=args.image_size,
        patch_size=args.patch_size, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        device=_device(args), seed=args.seed, limit=args.limit, progress=not args.no_progress,
    )
    return finish(metrics, args, f"LLaVA-architecture VLM trained: {args.out}")


def _shipped(args: argparse.Namespace) -> int:
    from vlcam.train.shipped import reproduce_shipped

    metrics = reproduce_shipped(args.which, args.work, args.dest, device=_device(args), progress=not args.no_progress)
    return finish(metrics, args, f"shipped {args.which} rebuilt: {metrics['copied_to']}")
