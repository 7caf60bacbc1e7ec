"""Caption quality: the COCO caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D) and exact match.

The metrics are computed by ``pycocoevalcap``, the official COCO caption evaluation, so the
numbers are the ones captioning papers report. Its tokenizer (Stanford PTBTokenizer) and
METEOR 1.5 are Java programs: without ``java`` on PATH, vlcam's own tokenizer stands in for
the first and METEOR is skipped, and the result says so.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vlcam.adapters.protocol import Captioner
from vlcam.data.wordmap import WordMap

PTB_TOKENIZER = "PTBTokenizer (Stanford CoreNLP 3.4.1, as in the COCO caption evaluation)"
VLCAM_TOKENIZER = "vlcam.text.tokenize (java is not on PATH, so not the COCO evaluation's PTBTokenizer)"
METEOR_WITHOUT_JAVA = "java is not on PATH; METEOR 1.5 is a Java program"


def exact_match(hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]]) -> float:
    """Return the share of hypotheses equal, token for token, to one of their references."""
    if len(hypotheses) != len(references) or not hypotheses:
        raise ValueError(f"need as many reference sets as hypotheses, got {len(hypotheses)} and {len(references)}")
    hits = sum(any(list(h) == list(r) for r in refs) for h, refs in zip(hypotheses, references))
    return hits / len(hypotheses)


def caption_scores(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Return the COCO caption metrics of one caption per image against that image's references.

    Keys, CIDEr-D first: ``cider``, ``bleu1``..``bleu4``, ``meteor`` (None without Java, the
    reason in ``meteor_skipped``), ``rouge_l``, ``exact_match``, and ``tokenizer``, which names
    the tokenizer the scores were computed on. BLEU is corpus-level with the closest reference
    length; ROUGE-L and CIDEr-D are means over the images, CIDEr-D's idf taken from these
    references, as in the COCO evaluation. Scores are in [0, 1] except CIDEr-D (in [0, 10]).
    """
    if len(hypotheses) != len(references) or not hypotheses:
        raise ValueError(f"need as many reference sets as hypotheses, got {len(hypotheses)} and {len(references)}")
    empty = [i for i, refs in enumerate(references) if not refs]
    if empty:
        raise ValueError(f"every hypothesis needs at least one reference; image {empty[0]} has none")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    java = shutil.which("java") is not None
    res, gts = _tokenized(hypotheses, references, java)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores: dict[str, Any] = {"cider": float(Cider().compute_score(gts, res)[0])}
    scores.update({f"bleu{n}": float(b) for n, b in enumerate(bleu, start=1)})
    scores["meteor"] = None
    scores["meteor_skipped"] = METEOR_WITHOUT_JAVA
    if java:
        with _meteor() as meteor:
            scores["meteor"] = float(meteor.compute_score(gts, res)[0])
        scores["meteor_skipped"] = None
    scores["rouge_l"] = float(Rouge().compute_score(gts, res)[0])
    scores["exact_match"] = exact_match([res[i][0].split() for i in res], [[r.split() for r in gts[i]] for i in res])
    scores["tokenizer"] = PTB_TOKENIZER if java else VLCAM_TOKENIZER
    return scores


def _tokenized(hypotheses: Sequence[str], references: Sequence[Sequence[str]], java: bool
               ) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """Return (hypotheses, references) keyed by image index, as space-joined lowercase tokens."""
    if java:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        # One call, so one Java start: key -1 - i holds hypothesis i, key i its references.
        captions = {-1 - i: [{"caption": h}] for i, h in enumerate(hypotheses)}
        captions.update({i: [{"caption": r} for r in refs] for i, refs in enumerate(references)})
        tokens = PTBTokenizer().tokenize(captions)
        return {i: tokens[-1 - i] for i in range(len(hypotheses))}, {i: tokens[i] for i in range(len(references))}
    from vlcam.text import tokenize

    return ({i: [" ".join(tokenize(h))] for i, h in enumerate(hypotheses)},
            {i: [" ".join(tokenize(r)) for r in refs] for i, refs in enumerate(references)})


@contextmanager
def _meteor() -> Iterator[Any]:
    """Yield pycocoevalcap's METEOR scorer; its Java process is ended on exit, not left to the GC."""
    from pycocoevalcap.meteor.meteor import Meteor

    meteor = Meteor()
    try:
        yield meteor
    finally:
        meteor.meteor_p.stdin.close()
        meteor.meteor_p.kill()
        meteor.meteor_p.wait()


def caption_quality(
    model: Captioner,
    captions_json: str | Path,
    images_dir: str | Path,
    *,
    baseline_captions: Sequence[str] = (),
    beam_size: int = 1,
    limit: int | None = None,
    batch_size: int = 32,
    instances_json: str | Path | None = None,
    word_map: WordMap | None = None,
) -> dict[str, Any]:
    """Return the COCO caption metrics (:func:`caption_scores`) of the model's captions.

    With `baseline_captions` (e.g. the training captions), the trivial baseline, which
    answers every image with the most frequent of them, is scored on the same images.
    With `instances_json` and `word_map`, ``objects`` says whether the objects the captions
    name are in the images, and in the colour said (:func:`vlcam.eval.mentions.object_mentions`).
    """
    from vlcam.data.coco import load_coco
    from vlcam.text import tokenize

    coco = load_coco(captions_json)
    image_ids = sorted(coco.getImgIds())[:limit]
    references = [[a["caption"] for a in coco.loadAnns(coco.getAnnIds(imgIds=[i]))] for i in image_ids]
    paths = [Path(images_dir) / coco.loadImgs([i])[0]["file_name"] for i in image_ids]
    hypotheses: list[str] = []
    for start in range(0, len(paths), batch_size):
        batch = model.preprocess(paths[start:start + batch_size])
        hypotheses += model.caption(batch, beam_size=beam_size)
    result: dict[str, Any] = {
        "images": len(image_ids),
        "model": caption_scores(hypotheses, references),
        "examples": [{"image_id": i, "caption": h} for i, h in list(zip(image_ids, hypotheses))[:10]],
    }
    if instances_json is not None and word_map is not None:
        from vlcam.eval.mentions import color_vocabulary, image_objects, object_mentions

        instances = load_coco(instances_json)
        result["objects"] = object_mentions([tokenize(h) for h in hypotheses],
                                            [image_objects(instances, i) for i in image_ids], word_map,
                                            color_vocabulary(instances))
    if baseline_captions:
        frequent = Counter(" ".join(tokenize(c)) for c in baseline_captions).most_common(1)[0][0]
        result["most_frequent_caption"] = frequent
        result["baseline_most_frequent"] = caption_scores([frequent] * len(references), references)
    return result
