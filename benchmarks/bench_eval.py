"""Pointing-game throughput against a plain captioning forward over the same captions.

In one process, on the shipped built-in-world captioner and freshly rendered held-out
scenes: (a) a teacher-forced caption forward (no grad) for every caption, one caption per
call as the evaluation batches them, images decoded from disk each time; (b) the full
pointing-game run (`run_pointing_game`: image decoding, masks, one explanation per
caption, JSON lines). Prints captions per second for both and their ratio.

    python benchmarks/bench_eval.py [--images 40] [--device cpu]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import vlcam
from _timing import machine
from vlcam.data.coco import load_coco
from vlcam.data.synthetic import generate
from vlcam.data.wordmap import WordMap
from vlcam.demo import shipped_checkpoint
from vlcam.eval.pointing import run_pointing_game


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp())
    generate(work, num_images=args.images, image_size=128, seed=99, val_fraction=1.0, workers=1)
    model = vlcam.load(shipped_checkpoint(), map_location=args.device)
    coco = load_coco(work / "captions_val.json")
    anns = coco.loadAnns(coco.getAnnIds())

    start = time.perf_counter()
    with torch.no_grad():
        for ann in anns:
            info = coco.loadImgs([ann["image_id"]])[0]
            x = model.preprocess(work / "images" / info["file_name"])
            model.word_logprobs(x, model.encode_captions([ann["caption"]]))
    forward = len(anns) / (time.perf_counter() - start)

    start = time.perf_counter()
    summary = run_pointing_game(work / "run", model, work / "captions_val.json", work / "instances_val.json",
                                work / "images", WordMap.builtin("synthetic"), num_workers=0, progress=False,
                                examples=0)
    evaluation = summary["captions"] / (time.perf_counter() - start)

    print(f"{args.images} scenes, {len(anns)} captions, {summary['hits'] + summary['misses']} visual words, "
          f"on {machine(torch.device(args.device))}; torch {torch.__version__}")
    print(f"plain caption forward   {forward:8.1f} captions/s")
    print(f"pointing-game run       {evaluation:8.1f} captions/s   {evaluation / forward:.2f}x the forward")


if __name__ == "__main__":
    main()
