"""Word-level pointing of a Show-and-Tell checkpoint with two word targets: log p (ours) or the logit.

Sec. 8.1.1 of the paper one-hot encodes a word at its time step and applies Eq. 1, whose y^c
is a pre-softmax score; `vlcam` explains log p(w_t | ...) (`WordLogProb`). This script scores
both on the same captions, by swapping the adapter's picked log-softmax for the picked logit.

    python benchmarks/word_target_check.py CHECKPOINT WORLD_DIR SCENES OUT.json
"""

from __future__ import annotations

import json
import sys

import torch

import vlcam.adapters.show_and_tell as show_and_tell
from vlcam.data.wordmap import WordMap
from vlcam.eval.pointing import caption_pointing_games
from vlcam.loading import load


def _picked_logit(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    targets = show_and_tell._tiled(tokens, logits.shape[0])[:, 1:]
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1).masked_fill(targets == show_and_tell.PAD, 0.0)


def main() -> None:
    checkpoint, world, scenes, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    model = load(checkpoint)
    log_softmax = show_and_tell.token_logprobs_from_logits
    report = {}
    for name, pick in (("log_prob", log_softmax), ("logit", _picked_logit)):
        show_and_tell.token_logprobs_from_logits = pick
        games = caption_pointing_games(model, f"{world}/captions_val.json", f"{world}/instances_val.json",
                                       f"{world}/images", WordMap.builtin(), limit=scenes)
        report[name] = {t: {k: game[k] for k in ("accuracy", "hits", "misses", "border")}
                        for t, game in games.items()}
        print(name, {t: round(r["accuracy"], 4) for t, r in report[name].items()})
    show_and_tell.token_logprobs_from_logits = log_softmax
    report["setup"] = {"checkpoint": checkpoint, "world": world, "scenes": scenes}
    with open(out, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
