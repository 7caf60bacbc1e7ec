"""Each map's deletion and insertion AUC minus the random order's, paired per word.

    python paired.py items.jsonl.gz
"""

import gzip
import json
import sys

import numpy as np


def main(path: str) -> None:
    with (gzip.open(path, "rt") if path.endswith(".gz") else open(path)) as f:
        targets = [t for line in f for t in json.loads(line).get("targets", [])]
    print(f"{len(targets)} words")
    for method in ("gradcam", "guided_gradcam", "occlusion"):
        for kind in ("deletion", "insertion"):
            diff = np.array([t["auc"][method][kind] - t["auc"]["random"][kind] for t in targets])
            better = np.mean(diff < 0) if kind == "deletion" else np.mean(diff > 0)
            error = diff.std(ddof=1) / np.sqrt(len(diff))
            print(f"{method:>15} {kind:<9} {diff.mean():+.4f} ± {error:.4f}, better than random on {better:.0%}")


if __name__ == "__main__":
    main(sys.argv[1])
