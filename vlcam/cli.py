"""The `vlcam` command line: a thin shell over library functions.

A user error (a missing file, a value the model refuses) is one line on stderr and exit
status 1; argparse's usage errors exit with 2. ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

USER_ERRORS = (ValueError, TypeError, FileNotFoundError, IsADirectoryError, PermissionError)


def _demo(args: argparse.Namespace) -> int:
    from vlcam.demo import run_demo

    summary = run_demo(
        Path(args.out), checkpoint=args.checkpoint, num_images=args.num_images, seed=args.seed,
        device=args.device,
    )
    return 0 if summary["words"] else 1


def _load(spec: str, device: str) -> Any:
    from vlcam import loading

    if loading.is_factory(spec):
        return loading.from_factory(spec).to(device)
    return loading.load(spec, map_location=device)


def _explain(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.answer and args.question is None:
        parser.error("--answer needs --question")
    if not Path(args.image).is_file():
        raise FileNotFoundError(f"image file not found: {args.image}")
    import vlcam
    from vlcam.adapters import AnswerModel, Captioner

    model = _load(args.model, args.device)
    if args.question is None:
        if not isinstance(model, Captioner):
            raise TypeError(f"{args.model} is a {type(model).__name__}, not a captioner: pass --question "
                            "(and --answer) to explain its answers")
        e = vlcam.explain_caption(model, args.image, args.caption, words=args.words, method=args.method,
                                  layer=args.layer)
        print(f"caption: {e.caption!r}  log p = {e.caption_logprob:.3f}  ({e.method} at {e.layer})")
        for i, (row, col) in zip(e.word_indices, e.word_peaks()):
            print(f"  {e.tokens[i]:<16} log p = {float(e.token_logprobs[i]):8.3f}   peak (row {row}, col {col})")
        print(f"figure: {e.save(args.out)}")
        return 0
    if not isinstance(model, AnswerModel):
        raise TypeError(f"{args.model} is a {type(model).__name__}, not a VQA model: --question needs one")
    a = vlcam.explain_answer(model, args.image, args.question, args.answer or None, method=args.method,
                             layer=args.layer)
    print(f"question: {a.question!r}  ({a.method} at {a.layer})")
    for answer, p, (row, col) in zip(a.answers, a.probs.tolist(), a.peaks()):
        print(f"  {answer:<16} p = {p:.3f}   peak (row {row}, col {col})")
    print(f"figure: {a.save(args.out)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlcam", description="Grad-CAM explanations for image-captioning and VQA models."
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
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
    demo.set_defaults(run=lambda args: _demo(args))
    explain = sub.add_parser(
        "explain",
        help="explain a caption (or the model's own) or answers for one image; write a figure",
        description="Load a model (a vlcam checkpoint folder, a transformers model folder, a "
        "Hugging Face hub id, or your own adapter as file.py:factory), explain a caption or answers "
        "to a question about IMAGE, print each word's or answer's score and where its map peaks, "
        "and write the figure.",
    )
    explain.add_argument("model", help="vlcam checkpoint folder, transformers folder, hub id, or file.py:factory")
    explain.add_argument("image", help="image file")
    explain.add_argument("--caption", default=None, help="caption to explain (default: the model's own)")
    explain.add_argument("--words", default="all", choices=["all", "visual"], help="which words get maps")
    explain.add_argument("--question", default=None, help="explain answers to this question (VQA models)")
    explain.add_argument("--answer", action="append", default=[],
                         help="an answer to explain; repeat for several (default: the top answer)")
    explain.add_argument("--method", default="gradcam", choices=["gradcam", "guided-gradcam", "counterfactual"])
    explain.add_argument("--layer", default=None, help="dotted layer name (default: the model's)")
    explain.add_argument("--out", default="explained.png", help="figure path (default: ./explained.png)")
    explain.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    explain.set_defaults(run=lambda args: _explain(args, explain))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the `vlcam` command line; return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        status: int = args.run(args)
        return status
    except USER_ERRORS as err:
        if args.debug:
            raise
        print(f"vlcam {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
