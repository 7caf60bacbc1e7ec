"""The word-level pointing game (paper Sec. 8.1.1) as a resumable, shardable run.

    python scripts/eval_pointing.py --captions C.json --instances I.json --images DIR \
        [--checkpoint CKPT_DIR] [--word-map MAP.json] [--method gradcam] [--layer NAME] [--tolerance PX] \
        [--limit N] [--seed S] [--workers W] --out OUT_DIR
    torchrun --nproc_per_node=N scripts/eval_pointing.py ...   (one process per GPU, or gloo on CPUs)

Without --checkpoint it uses the shipped built-in-world captioner; without --word-map, the
built-in world's map when the instances' categories are the built-in ones, else COCO's.
Rerunning with the same OUT_DIR resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", required=True)
    parser.add_argument("--instances", required=True)
    parser.add_argument("--images", required=True)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--word-map", default=None)
    parser.add_argument("--method", default="gradcam", choices=["gradcam", "guided-gradcam", "counterfactual"])
    parser.add_argument("--layer", default=None, help="dotted name of the explained layer (default: the model's)")
    parser.add_argument("--tolerance", type=int, default=0, help="pixels (0: the paper; 15: Zhang et al.)")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0, help="seeds the random-point baseline, per item")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers decoding images")
    parser.add_argument("--device", default=None, help="default: cuda:LOCAL_RANK when there is a GPU, else cpu")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    import os

    import torch

    import vlcam
    from vlcam.data.wordmap import WordMap
    from vlcam.demo import shipped_checkpoint
    from vlcam.eval.pointing import run_pointing_game

    device = args.device or (f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu")
    model = vlcam.load(args.checkpoint or shipped_checkpoint(), map_location=device)
    if args.word_map:
        word_map = WordMap.from_file(args.word_map)
    else:
        names = {c["name"] for c in json.loads(Path(args.instances).read_text(encoding="utf-8"))["categories"]}
        synthetic = WordMap.builtin("synthetic")
        word_map = synthetic if names <= {c["name"] for c in synthetic.categories} else WordMap.builtin("coco")
    summary = run_pointing_game(
        args.out, model, args.captions, args.instances, args.images, word_map, method=args.method,
        layer=args.layer, tolerance=args.tolerance, limit=args.limit, seed=args.seed, num_workers=args.workers,
    )
    if summary is not None:
        print(json.dumps({k: v for k, v in summary.items() if k != "per_category"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
