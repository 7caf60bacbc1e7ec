"""Caption quality: corpus BLEU (Papineni et al. 2002) and exact match against references."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlcam.adapters.protocol import Captioner


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def corpus_bleu(
    hypotheses: Sequence[Sequence[str]],
    references: Sequence[Sequence[Sequence[str]]],
    max_n: int = 4,
) -> float:
    """Return corpus-level BLEU-`max_n` in [0, 1]: clipped n-gram precisions pooled over the
    corpus, their geometric mean, times the brevity penalty against the closest reference
    length (ties to the shorter), as in Papineni et al. and the COCO caption evaluation."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference sets")
    if not hypotheses:
        raise ValueError("no hypotheses to score")
    matched, total = [0] * max_n, [0] * max_n
    hyp_len = ref_len = 0
    for hyp, refs in zip(hypotheses, references):
        if not refs:
            raise ValueError("every hypothesis needs at least one reference")
        hyp_len += len(hyp)
        ref_len += min((abs(len(r) - len(hyp)), len(r)) for r in refs)[1]
        for n in range(1, max_n + 1):
            counts = _ngrams(hyp, n)
            best: Counter[tuple[str, ...]] = Counter()
            for ref in refs:
                best |= _ngrams(ref, n)
            matched[n - 1] += sum(min(c, best[g]) for g, c in counts.items())
            total[n - 1] += max(len(hyp) - n + 1, 0)
    if min(matched) == 0:
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matched, total)) / max_n
    brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / max(hyp_len, 1))
    return brevity * math.exp(log_precision)


def exact_match(hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]]) -> float:
    """Return the share of hypotheses equal, token for token, to one of their references."""
    if len(hypotheses) != len(references) or not hypotheses:
        raise ValueError(f"need as many reference sets as hypotheses, got {len(hypotheses)} and {len(references)}")
    hits = sum(any(list(h) == list(r) for r in refs) for h, refs in zip(hypotheses, references))
    return hits / len(hypotheses)


def caption_quality(
    model: Captioner,
    captions_json: str | Path,
    images_dir: str | Path,
    *,
    baseline_captions: Sequence[str] = (),
    beam_size: int = 1,
    limit: int | None = None,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Return BLEU-1..4 and exact match of the model's captions against each image's references.

    With `baseline_captions` (e.g. the training captions), the trivial baseline, which
    answers every image with the most frequent of them, is scored on the same images.
    """
    from vlcam.data.coco import load_coco
    from vlcam.text import tokenize

    coco = load_coco(captions_json)
    image_ids = sorted(coco.getImgIds())[:limit]
    references = [[tokenize(a["caption"]) for a in coco.loadAnns(coco.getAnnIds(imgIds=[i]))] for i in image_ids]
    paths = [Path(images_dir) / coco.loadImgs([i])[0]["file_name"] for i in image_ids]
    hypotheses: list[list[str]] = []
    for start in range(0, len(paths), batch_size):
        batch = model.preprocess(paths[start:start + batch_size])
        hypotheses += [tokenize(c) for c in model.caption(batch, beam_size=beam_size)]
    result: dict[str, Any] = {
        "images": len(image_ids),
        "model": _scores(hypotheses, references),
        "examples": [{"image_id": i, "caption": " ".join(h)} for i, h in list(zip(image_ids, hypotheses))[:10]],
    }
    if baseline_captions:
        frequent = Counter(" ".join(tokenize(c)) for c in baseline_captions).most_common(1)[0][0]
        result["most_frequent_caption"] = frequent
        result["baseline_most_frequent"] = _scores([frequent.split()] * len(references), references)
    return result


def _scores(hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]]) -> dict[str, float]:
    scores = {f"bleu{n}": corpus_bleu(hypotheses, references, max_n=n) for n in (1, 2, 3, 4)}
    scores["exact_match"] = exact_match(hypotheses, references)
    return scores
