"""Rebuild the shipped built-in-world captioner (vlcam/assets/show_and_tell_synthetic).

    python scripts/reproduce_shipped_captioner.py [--work runs/shipped] [--device cpu]

Renders the built-in world (3,000 scenes at 128², seed 0: 2,400 train, 600 held out),
trains Show-and-Tell with the compact CNN and global max pooling (which localises far
better than average pooling here; see benchmarks/RESULTS.md) on the training captions,
and copies the
best-validation checkpoint (weights, config, vocabulary; no optimizer state) into the
package. Interrupted runs resume. The settings here are the ones the shipped files
came from; RESULTS are in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

SETTINGS = {
    "num_images": 3000,
    "image_size": 128,
    "seed": 0,
    "backbone": "compact",
    "pool": "max",
    "embed_dim": 128,
    "hidden_dim": 256,
    "batch_size": 64,
    "epochs": 10,
    "lr": 1e-3,
}
CHECKPOINT_FILES = ("model.safetensors", "config.json", "vocab.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="runs/shipped", help="folder for the world and the training run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=SETTINGS["epochs"])
    parser.add_argument(
        "--dest", default=str(Path(__file__).resolve().parents[1] / "vlcam/assets/show_and_tell_synthetic")
    )
    args = parser.parse_args(argv)

    from vlcam.data.synthetic import generate
    from vlcam.train.captioner import train_captioner

    work = Path(args.work)
    world = work / "world"
    if not (world / "captions_val.json").is_file():
        generate(world, num_images=SETTINGS["num_images"], image_size=SETTINGS["image_size"], seed=SETTINGS["seed"])
    run = work / "captioner"
    metrics = train_captioner(
        world / "captions_train.json", world / "images", run,
        backbone=SETTINGS["backbone"], image_size=SETTINGS["image_size"], embed_dim=SETTINGS["embed_dim"],
        hidden_dim=SETTINGS["hidden_dim"], pool=SETTINGS["pool"], epochs=args.epochs,
        batch_size=SETTINGS["batch_size"], lr=SETTINGS["lr"], device=args.device, seed=SETTINGS["seed"],
    )
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in CHECKPOINT_FILES:
        shutil.copy2(run / name, dest / name)
    print(f"best val loss {metrics['best_val_loss']:.4f} at epoch {metrics['best_epoch']}; copied to {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
