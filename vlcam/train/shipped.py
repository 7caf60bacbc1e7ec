"""Rebuilding the checkpoints shipped in ``vlcam/assets`` from nothing but this package.

Each shipped model is the trainer's defaults on the built-in world (3,000 scenes at 128²,
seed 0: 2,400 train, 600 held out), trained on the CPU with seed 0; only the best-validation
checkpoint (weights, config, vocabularies; no optimizer state) is copied into the package.
An interrupted rebuild resumes. On the same machine, with the same number of torch threads
(the shipped files: one, ``OMP_NUM_THREADS=1``), the same files come back bit for bit.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

WORLD = {"num_images": 3000, "image_size": 128, "seed": 0}
ASSETS = {"captioner": "show_and_tell_synthetic", "vqa": "vqa_lstm_cnn_synthetic"}
FILES = {"captioner": ("model.safetensors", "config.json", "vocab.json"),
         "vqa": ("model.safetensors", "config.json", "vocab.json", "answers.json")}
# What one rebuild takes on the CPU machine of benchmarks/RESULTS.md, one torch thread each, the
# two trained side by side on its 2 cores (OMP_NUM_THREADS=1; the shipped files were trained so).
# The captioner: its 35 epochs at the 143 s per epoch measured on 2026-12-03 (epoch 14 of a
# rebuild, one thread, nothing else running); with two threads an epoch took 102 s (about 60 min
# for the 35), but the files then need not equal the shipped ones bit for bit. The VQA model: measured.
MINUTES_ON_2_CPU_CORES = {"captioner": 83, "vqa": 22}


def reproduce_shipped(which: str, work: str | Path, dest: str | Path | None = None, *,
                      device: str = "cpu", progress: bool = True) -> dict[str, Any]:
    """Return the training metrics after rebuilding shipped model `which` ("captioner" or "vqa").

    The world and the run go under `work`; the checkpoint files are copied to `dest`
    (default: the installed package's ``vlcam/assets/<name>``).
    """
    if which not in ASSETS:
        raise ValueError(f"which must be one of {', '.join(map(repr, ASSETS))}, got {which!r}")
    from vlcam.data.synthetic import generate

    work = Path(work)
    world = work / "world"
    if not (world / "vqa_annotations_val.json").is_file():
        generate(world, **WORLD)
    run = work / which
    if which == "captioner":
        from vlcam.train.captioner import train_captioner

        metrics = train_captioner(world / "captions_train.json", world / "images", run, device=device,
                                  progress=progress)
    else:
        from vlcam.train.vqa import train_vqa

        metrics = train_vqa(world / "vqa_questions_train.json", world / "vqa_annotations_train.json",
                            world / "images", run, image_pattern="synth_{image_id:06d}.png", device=device,
                            progress=progress)
    target = Path(dest) if dest is not None else _package_assets() / ASSETS[which]
    target.mkdir(parents=True, exist_ok=True)
    for name in FILES[which]:
        shutil.copy2(run / name, target / name)
    return {**metrics, "copied_to": str(target)}


def _package_assets() -> Path:
    from importlib import resources

    return Path(str(resources.files("vlcam").joinpath("assets")))
