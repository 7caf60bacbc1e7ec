"""The `vlcam` command line: a thin shell over library functions.

``vlcam explain`` and ``vlcam demo`` live here; the `train`, `eval`, `data` and `import`
groups in :mod:`vlcam.commands`. A user error (a missing file, a value the model refuses)
is one line on stderr and exit status 1; argparse's usage errors exit with 2. ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass

USER_ERRORS = (ValueError, TypeError, OSError)


def _demo(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from vlcam.demo import run_demo
    from vlcam.devices import resolve_device

    if args.num_images < 1:
        parser.error(f"--num-images must be at least 1, got {args.num_images}")
    device = resolve_device(args.device)
    _writable_folder(Path(args.out))
    summary = run_demo(Path(args.out), checkpoint=args.checkpoint, vqa_checkpoint=args.vqa_checkpoint,
                       num_images=args.num_images, seed=args.seed, device=str(device))
    return 0 if summary["words"] else 1


def _writable_folder(folder: Path) -> None:
    """Raise unless `folder` exists as a writable folder or can be made (nothing is created)."""
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise NotADirectoryError(f"cannot write under {folder}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write under {folder}: {existing} is not writable")


def _check_figure_path(out: str) -> None:
    from matplotlib.backend_bases import FigureCanvasBase

    kinds = sorted(FigureCanvasBase.get_supported_filetypes())
    suffix = Path(out).suffix.lower().lstrip(".")
    if suffix not in kinds:
        raise ValueError(f"--out {out!r}: the figure's extension must be one of {', '.join(kinds)}")
    if Path(out).is_dir():
        raise IsADirectoryError(f"--out {out!r} is a folder; give a file name such as explained.png")
    _writable_folder(Path(out).parent)


def _explain(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.answer and args.question is None:
        parser.error("--answer needs --question")
    from vlcam.devices import resolve_device
    from vlcam.image import to_pil

    device = resolve_device(args.device)
    to_pil(args.image)  # a missing, unreadable or non-image file is refused before the model loads
    _check_figure_path(args.out)
    import vlcam
    from vlcam.adapters import AnswerModel, Captioner
    from vlcam.commands._options import load_model

    model = load_model(args.model, str(device))
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


def _report(args: argparse.Namespace) -> int:
    from vlcam.eval.report import write_report

    print(f"report: {write_report(args.run_dir, title=args.title)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlcam", description="Grad-CAM explanations for image-captioning and VQA models."
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="explain the shipped captioner and VQA model on held-out scenes of the built-in world",
        description="Caption a few held-out scenes of the built-in world with the shipped "
        "Show-and-Tell checkpoint, write Grad-CAM figures (caption map and per-word maps), "
        "and print where each visual word's map peaks and whether that point is on the object; "
        "then answer the scenes' colour and shape questions with the shipped VQA model and "
        "check its answer maps against the object asked about.",
    )
    demo.add_argument("--out", default="vlcam-demo", help="output folder (default: ./vlcam-demo)")
    demo.add_argument("--checkpoint", default=None, help="a Show-and-Tell checkpoint folder (default: shipped)")
    demo.add_argument("--vqa-checkpoint", default=None, help="a VQA checkpoint folder (default: shipped)")
    demo.add_argument("--num-images", type=int, default=6, help="held-out scenes to explain (default: 6)")
    demo.add_argument("--seed", type=int, default=20261127, help="seed of the held-out scenes")
    demo.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N or auto (default: cpu)")
    demo.set_defaults(run=lambda args: _demo(args, demo))
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
    explain.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N or auto (default: cpu)")
    explain.set_defaults(run=lambda args: _explain(args, explain))
    from vlcam.commands import data, evaluate, train

    for group in (train, evaluate, data):
        group.add_commands(sub)
    report = sub.add_parser("report", help="write one self-contained HTML page for an evaluation run",
                            description="Write RUN_DIR/report.html: the summary table, the run's plots "
                            "(per-category bars, sanity, deletion), its best, worst and random words, and "
                            "its example overlays, every image embedded.")
    report.add_argument("run_dir", help="the --out folder of a finished vlcam eval run")
    report.add_argument("--title", default=None)
    report.set_defaults(run=_report)
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
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"vlcam {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
