"""The trainer-defaults ablation of benchmarks/RESULTS.md: one row per change, same held-out scenes.

    python benchmarks/ablation.py --world /work/data/world0 --runs runs/ablation \
        --out benchmarks/reports/ablation [--epochs 6] [--rows cap_no_concepts,...]

Each row trains with the trainer's defaults but one setting changed, for the same number of
epochs, then evaluates on the first 200 held-out scenes (`vlcam eval captions` for
captioners: caption metrics, object mentions, pointing at 0 and 15 px, border peaks;
`vlcam eval vqa` for VQA models: accuracy and answer pointing on single-object colour and
shape questions). The defaults' own row is a run folder passed with --defaults-captioner /
--defaults-vqa (e.g. a copy of the main run taken at the same epoch), so that the long run
is not trained twice. Runs resume; finished reports are kept.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

CAPTIONER_ROWS = {
    "cap_no_concepts": ["--concept-weight", "0"],
    "cap_image_first": ["--image-input", "first"],
    "cap_no_augment": ["--no-augment"],
    "cap_zero_padding_rf47": ["--backbone", "compact"],
    "cap_replicate_rf47": ["--backbone", "compact_replicate"],
    "cap_avg_pool": ["--pool", "avg"],
}
VQA_ROWS = {
    "vqa_no_concepts": ["--concept-weight", "0"],
    "vqa_max_pool": ["--pool", "max"],
    "vqa_no_augment": ["--no-augment"],
}
PATTERN = "synth_{image_id:06d}.png"
SINGLE_OBJECT = "what color is the,what shape is the"


def _vlcam(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "vlcam.cli", *args], check=True)


def evaluate_captioner(run: Path, world: Path, report: Path) -> None:
    """Write `report` (JSON) for captioner checkpoint `run` on the first 200 held-out scenes."""
    if not report.is_file():
        _vlcam("eval", "captions", "--checkpoint", str(run), "--captions", str(world / "captions_val.json"),
               "--instances", str(world / "instances_val.json"), "--images", str(world / "images"),
               "--limit", "200", "--out", str(report), "--json")


def evaluate_vqa(run: Path, world: Path, report: Path) -> None:
    """Write `report` (JSON) for VQA checkpoint `run` on the questions of the first 200 held-out scenes."""
    if not report.is_file():
        _vlcam("eval", "vqa", "--checkpoint", str(run), "--questions", str(world / "vqa_questions_val.json"),
               "--annotations", str(world / "vqa_annotations_val.json"), "--images", str(world / "images"),
               "--image-pattern", PATTERN, "--instances", str(world / "instances_val.json"),
               "--question-types", SINGLE_OBJECT, "--limit", "200", "--out", str(report), "--json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", required=True, help="the built-in world (seed 0) the defaults were chosen on")
    parser.add_argument("--runs", required=True, help="folder for the training runs")
    parser.add_argument("--out", required=True, help="folder for the reports")
    parser.add_argument("--epochs", type=int, default=6, help="the budget of every row")
    parser.add_argument("--rows", default=None, help="comma-separated row names (default: all)")
    parser.add_argument("--defaults-captioner", default=None, help="the defaults' captioner run at --epochs")
    parser.add_argument("--defaults-vqa", default=None, help="the defaults' VQA run at --epochs")
    args = parser.parse_args(argv)
    world, runs, out = Path(args.world), Path(args.runs), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = args.rows.split(",") if args.rows else [*CAPTIONER_ROWS, *VQA_ROWS]
    if args.defaults_captioner:
        evaluate_captioner(Path(args.defaults_captioner), world, out / "cap_defaults.json")
    if args.defaults_vqa:
        evaluate_vqa(Path(args.defaults_vqa), world, out / "vqa_defaults.json")
    for name in wanted:
        run = runs / name
        if name in CAPTIONER_ROWS:
            _vlcam("train", "captioner", "--captions", str(world / "captions_train.json"), "--images",
                   str(world / "images"), "--out", str(run), "--epochs", str(args.epochs), "--no-progress",
                   "--json", *CAPTIONER_ROWS[name])
            evaluate_captioner(run, world, out / f"{name}.json")
        elif name in VQA_ROWS:
            _vlcam("train", "vqa", "--questions", str(world / "vqa_questions_train.json"), "--annotations",
                   str(world / "vqa_annotations_train.json"), "--images", str(world / "images"),
                   "--image-pattern", PATTERN, "--out", str(run), "--epochs", str(args.epochs), "--no-progress",
                   "--json", *VQA_ROWS[name])
            evaluate_vqa(run, world, out / f"{name}.json")
        else:
            parser.error(f"unknown row {name!r}; rows: {', '.join([*CAPTIONER_ROWS, *VQA_ROWS])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
