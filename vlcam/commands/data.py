"""`vlcam data synthetic|word-map` and `vlcam import show-and-tell`: datasets, word maps, and
checkpoints of other code."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from vlcam.commands._options import finish, parent


def add_commands(sub: Any) -> None:
    """Register the `data` and `import` groups on the top-level subparsers `sub`."""
    group = sub.add_parser("data", help="render the built-in world; propose word maps").add_subparsers(
        dest="what", required=True, metavar="{synthetic,word-map}")
    s = group.add_parser("synthetic", parents=[parent("json")], help="render the built-in world",
                         description="Render scenes of 1-4 shapes as a COCO-format dataset: PNG images, "
                         "captions, instances (RLE masks), VQA-v2 questions and annotations, region phrases "
                         "and a word map.")
    s.add_argument("--out", required=True, help="output folder (created if missing)")
    s.add_argument("--num-images", type=int, default=2000)
    s.add_argument("--image-size", type=int, default=128, help="side of the square images, px")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--val-fraction", type=float, default=0.2)
    s.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    s.set_defaults(run=_synthetic)

    from vlcam.eval.wordmap import DEFAULT_MIN_PMI, DEFAULT_MIN_SUPPORT, DEFAULT_TOP

    w = group.add_parser("word-map", help="propose caption words per category by PMI, for review",
                         description="Score every caption word against every category by pointwise mutual "
                         "information over images, for a person to review before extending a word map.")
    w.add_argument("--captions", required=True, help="COCO captions JSON")
    w.add_argument("--instances", required=True, help="COCO instances JSON of the same images")
    w.add_argument("--out", required=True, help="proposals JSON to write")
    w.add_argument("--min-support", type=int, default=DEFAULT_MIN_SUPPORT,
                   help="least number of images with both the word and the category")
    w.add_argument("--min-pmi", type=float, default=DEFAULT_MIN_PMI, help="least PMI, in bits")
    w.add_argument("--top", type=int, default=DEFAULT_TOP, help="words kept per category")
    w.set_defaults(run=_word_map)

    imports = sub.add_parser("import", help="turn checkpoints of other code into vlcam checkpoints")
    i = imports.add_subparsers(dest="what", required=True, metavar="{show-and-tell}").add_parser(
        "show-and-tell", help="a PyTorch-tutorial Show-and-Tell checkpoint (two state dicts and a vocab pickle)",
        description="Import yunjey/pytorch-tutorial's image_captioning checkpoint: the state dicts are read "
        "with torch.load(weights_only=True), the vocabulary pickle through a restricted unpickler.")
    i.add_argument("--encoder", required=True, help="the tutorial's encoder-*.ckpt (EncoderCNN state_dict)")
    i.add_argument("--decoder", required=True, help="the tutorial's decoder-*.ckpt (DecoderRNN state_dict)")
    i.add_argument("--vocab", required=True, help="the tutorial's vocab.pkl")
    i.add_argument("--out", required=True, help="vlcam checkpoint folder to write")
    i.add_argument("--backbone", default="resnet152",
                   help="the torchvision ResNet the encoder was built on (default resnet152, as in the tutorial)")
    i.add_argument("--image-size", type=int, default=224,
                   help="side of the square images the model is fed (default 224, as in the tutorial)")
    i.set_defaults(run=_import_show_and_tell)


def _synthetic(args: argparse.Namespace) -> int:
    from vlcam.data.synthetic import generate

    summary = generate(args.out, num_images=args.num_images, image_size=args.image_size, seed=args.seed,
                       val_fraction=args.val_fraction, workers=args.workers)
    return finish(summary, args, f"built-in world written: {args.out}")


def _word_map(args: argparse.Namespace) -> int:
    from vlcam.eval.wordmap import propose_words

    proposals = propose_words(args.captions, args.instances, min_support=args.min_support,
                              min_pmi=args.min_pmi, top=args.top)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(proposals, indent=2) + "\n", encoding="utf-8")
    new = sum(not p["in_map"] for c in proposals["categories"] for p in c["proposals"])
    print(f"{out}: {new} words proposed that the map does not list for their category, "
          f"from {proposals['images']} images", file=sys.stderr)
    return 0


def _import_show_and_tell(args: argparse.Namespace) -> int:
    from vlcam.adapters.show_and_tell_tutorial import import_tutorial_checkpoint

    model = import_tutorial_checkpoint(args.encoder, args.decoder, args.vocab, backbone=args.backbone,
                                       image_size=args.image_size)
    out = model.save(args.out)
    config = model.config
    print(f"{out}: show_and_tell checkpoint on {config['backbone']}, {config['vocab_size']} words, "
          f"embed {config['embed_dim']}, hidden {config['hidden_dim']}, {config['lstm_layers']} LSTM "
          f"layer(s), images {config['image_size']}x{config['image_size']}; load it with vlcam.load")
    return 0
