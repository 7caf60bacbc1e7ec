"""What the subcommands share: parent parsers for the common options, model loading, and the
one-screen summary table every command ends with."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from typing import Any

Command = Callable[[argparse.Namespace], int]
METHODS = ("gradcam", "guided-gradcam", "counterfactual")
TABLE_ROWS = 30


def parent(*options: str) -> argparse.ArgumentParser:
    """Return a parent parser holding the named shared options (e.g. "checkpoint", "device")."""
    p = argparse.ArgumentParser(add_help=False)
    for option in options:
        _OPTIONS[option](p)
    return p


_OPTIONS: dict[str, Callable[[argparse.ArgumentParser], Any]] = {
    "checkpoint": lambda p: p.add_argument(
        "--checkpoint", default=None,
        help="vlcam checkpoint folder, transformers folder, hub id or file.py:factory (default: the shipped model)"),
    "images": lambda p: p.add_argument("--images", required=True, help="folder holding the images"),
    "out": lambda p: p.add_argument("--out", required=True, help="output folder (a resumed run if it holds one)"),
    "limit": lambda p: p.add_argument("--limit", type=int, default=None, help="the first N items only"),
    "device": lambda p: p.add_argument(
        "--device", default="auto", help="cpu, cuda, cuda:N or auto (default: CUDA when there is one)"),
    "layer": lambda p: p.add_argument("--layer", default=None, help="dotted layer name (default: the model's)"),
    "method": lambda p: p.add_argument("--method", default="gradcam", choices=METHODS),
    "json": lambda p: p.add_argument("--json", action="store_true",
                                     help="print the result as JSON instead of a table"),
    "html": lambda p: p.add_argument("--html", action="store_true",
                                     help="also write a self-contained HTML report (report.html in a run folder, "
                                     "X.html beside a one-file report X.json)"),
}


def load_model(spec: str | None, device: str) -> Any:
    """Return the model `spec` names (None: the shipped captioner) on `device` ("auto" resolved)."""
    from vlcam import loading
    from vlcam.demo import shipped_checkpoint
    from vlcam.devices import resolve_device

    where = resolve_device(device)
    spec = spec or str(shipped_checkpoint())
    if loading.is_factory(spec):
        return loading.from_factory(spec).to(where)
    return loading.load(spec, map_location=where)


def finish(result: Mapping[str, Any], args: argparse.Namespace, title: str) -> int:
    """Print `result` to stdout as JSON (``--json``) or as a one-screen table; return exit status 0."""
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(summary_table(result, title))
    return 0


def summary_table(result: Mapping[str, Any], title: str) -> str:
    """Return the scalar entries of `result` (nested dicts as dotted keys) as an aligned table,
    at most TABLE_ROWS rows; lists (items, figures) are left to the files."""
    from vlcam.eval.report import flat_scalars

    rows = list(flat_scalars(result))
    shown = rows[:TABLE_ROWS]
    width = max((len(k) for k, _ in shown), default=0)
    lines = [title, "-" * max(len(title), 20)]
    lines += [f"{k:<{width}}  {_format(v)}" for k, v in shown]
    if len(rows) > TABLE_ROWS:
        lines.append(f"... {len(rows) - TABLE_ROWS} more entries (--json shows all)")
    return "\n".join(lines)


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)
