"""One self-contained HTML page per evaluation run: what people look at.

:func:`write_report` reads a run folder (``summary.json``, ``items.jsonl`` and the figures
the run wrote: per-category bars, sanity and deletion plots, example overlays) and writes
``report.html`` beside them with every image embedded, so the file can be mailed or
attached as it is. Words of a pointing run are listed best, worst and at random.
:func:`write_summary_report` does the same for the one-file reports of ``vlcam eval captions``
and ``vlcam eval vqa`` (``X.json`` -> ``X.html``), with their pointing words or answers.
"""

from __future__ import annotations

import base64
import html
import json
import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from vlcam.eval.runner import existing_records

REPORT_FILE = "report.html"
GALLERY = 8  # words per list (best, worst, random)
# Plots first, in this order; example overlays after them.
PLOTS = ("per_category.png", "sanity.png", "deletion.png")


def flat_scalars(value: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield (dotted key, value) for every scalar of a nested summary; lists are left out."""
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, Mapping):
            yield from flat_scalars(item, name + ".")
        elif item is None or isinstance(item, (str, int, float, bool)):
            yield name, item


def write_report(run_dir: str | Path, *, title: str | None = None, seed: int = 0) -> Path:
    """Return the path of ``report.html`` after writing it into the run folder `run_dir`.

    FileNotFoundError when the folder holds no ``summary.json`` (the run has not finished).
    """
    run = Path(run_dir)
    summary_file = run / "summary.json"
    if not summary_file.is_file():
        raise FileNotFoundError(f"{run} holds no summary.json: not a finished vlcam evaluation run")
    summary = json.loads(summary_file.read_text(encoding="utf-8"))
    if not isinstance(summary, Mapping):
        raise ValueError(f"{summary_file} is not a JSON object")
    plots = [run / name for name in PLOTS if (run / name).is_file()]
    examples = sorted(p for p in run.glob("example_*.png"))
    items = [r for r in existing_records(run) if r.get("type") == "word"]
    page = report_page(title or f"vlcam report: {run.resolve().name}", summary, plots=plots, items=items,
                       examples=examples, seed=seed)
    out = run / REPORT_FILE
    out.write_text(page, encoding="utf-8")
    return out


def write_summary_report(report_file: str | Path, summary: Mapping[str, Any], *,
                         items: Sequence[Mapping[str, Any]] = (), plots: Sequence[Path] = (),
                         title: str | None = None, seed: int = 0) -> Path:
    """Return the path of the HTML page written beside a one-file report (``X.json`` -> ``X.html``)
    of `summary`, with `plots` embedded and `items` (pointing words or answers) listed."""
    out = Path(report_file).with_suffix(".html")
    out.parent.mkdir(parents=True, exist_ok=True)
    page = report_page(title or f"vlcam report: {out.stem}", summary, plots=plots, items=items, seed=seed)
    out.write_text(page, encoding="utf-8")
    return out


def report_page(title: str, summary: Mapping[str, Any], *, plots: Sequence[Path] = (),
                items: Sequence[Mapping[str, Any]] = (), examples: Sequence[Path] = (), seed: int = 0) -> str:
    """Return one self-contained HTML page: the summary's scalars, the plots, the best, worst
    and random `items` (words or answers of a pointing game) and the example figures."""
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        "<h2>Summary</h2>", _table(["entry", "value"], [[k, _format(v)] for k, v in flat_scalars(summary)]),
    ]
    if plots:
        sections += ["<h2>Plots</h2>", *(_figure(p) for p in plots)]
    if items:
        answers = "answer" in items[0]
        sections += ["<h2>Answers</h2>" if answers else "<h2>Words</h2>", *_item_lists(items, seed)]
    if examples:
        sections += ["<h2>Examples</h2>", *(_figure(p) for p in examples)]
    return _PAGE.format(title=html.escape(title), body="\n".join(sections))


# Columns of the item lists: a pointing word (caption runs) or a pointing answer (VQA runs).
_WORD_COLUMNS = ("word", "category", "image_id", "peak", "hit", "box_iou")
_ANSWER_COLUMNS = ("question", "answer", "predicted", "image_id", "peak", "hit")
_WORD_IOU_COLUMNS = ("word", "kind", "category", "image_id", "peak", "hit", "iou")


def _item_lists(items: Sequence[Mapping[str, Any]], seed: int) -> list[str]:
    """Return tables of the best, the worst and random items of a pointing game."""
    columns = _ANSWER_COLUMNS if "answer" in items[0] else _WORD_IOU_COLUMNS if "kind" in items[0] else _WORD_COLUMNS

    def cell(item: Mapping[str, Any], column: str) -> str:
        value = item.get(column)
        if column == "peak" and value is not None:
            return str(tuple(value))
        if column == "hit":
            return "yes" if value else "no"
        return _format(value)

    def rows(chosen: Sequence[Mapping[str, Any]]) -> list[list[str]]:
        return [[cell(i, c) for c in columns] for i in chosen]

    def order(item: Mapping[str, Any]) -> tuple[Any, ...]:
        key = item.get("key", [item.get("image_id"), item.get("caption_id", item.get("question_id")),
                               item.get("word_index", 0)])
        return (not item["hit"], -(item.get("box_iou") or item.get("iou") or 0.0), json.dumps(key))

    ranked = sorted(items, key=order)
    picked = random.Random(seed).sample(list(items), min(GALLERY, len(items)))
    header = [c.replace("_", " ") for c in columns]
    return ["<h3>Best</h3>", _table(header, rows(ranked[:GALLERY])),
            "<h3>Worst</h3>", _table(header, rows(ranked[::-1][:GALLERY])),
            "<h3>At random</h3>", _table(header, rows(picked))]


def _figure(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    name = html.escape(path.name)
    return (f'<figure><img alt="{name}" src="data:image/png;base64,{data}"/>'
            f"<figcaption>{name}</figcaption></figure>")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


# The script writes how many images decoded into the title: what a browser test reads back.
_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 70em; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
td, th {{ border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }}
figure {{ display: inline-block; margin: 0.5em; }} img {{ max-width: 100%; }}
</style></head>
<body>
{body}
<script>
window.addEventListener("load", () => {{
  const images = Array.from(document.images);
  const shown = images.filter((i) => i.complete && i.naturalWidth > 0).length;
  document.title += ` [${{shown}}/${{images.length}} images shown]`;
}});
</script>
</body></html>
"""
