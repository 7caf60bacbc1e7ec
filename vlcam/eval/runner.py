"""Resumable, shardable evaluation runs: items are appended to JSON lines as they finish.

A run over a list of work units (images) writes one JSON line per result. On restart the
units whose results are already on disk are skipped, so an interrupted run ends with the
same results as an uninterrupted one. Under ``torchrun --nproc_per_node=N`` (any backend;
gloo on the CPU) the units are sharded by rank, each rank appends to its own file, and
rank 0 merges them into ``items.jsonl`` once every rank is done.

:func:`resumable_run` is that loop, written once: an evaluation supplies what one unit's
records are and how the merged records are summarised.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

ITEMS_FILE = "items.jsonl"
# Why an image is skipped (the keys of a summary's "skipped" counts).
MISSING_IMAGE = "missing image"
UNREADABLE_IMAGE = "unreadable image"
TOO_LARGE = "image too large to decode (over PIL's decompression-bomb limit)"
SIZE_DIFFERS = "image size differs from its annotation"


@dataclass(frozen=True)
class Shard:
    """This process's place in a (possibly distributed) run."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_shard() -> Shard:
    """Return this process's shard, joining torchrun's process group when there is one."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Shard()
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Shard(dist.get_rank(), dist.get_world_size())


def barrier(shard: Shard) -> None:
    """Wait for every rank (a no-op in a single process)."""
    if shard.world_size > 1:
        import torch.distributed as dist

        dist.barrier()


def shard_file(out_dir: Path, shard: Shard) -> Path:
    """Return the file this rank appends to: items.jsonl alone, or items.rank<R>.jsonl."""
    return out_dir / (ITEMS_FILE if shard.world_size == 1 else f"items.rank{shard.rank}.jsonl")


def read_records(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Return the JSON records of the given JSON-lines files; a torn last line is dropped."""
    records = []
    for path in paths:
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # the line an interrupted write left half-written
    return records


def existing_records(out_dir: Path) -> list[dict[str, Any]]:
    """Return every record already written under `out_dir` (merged file and rank files)."""
    return read_records([out_dir / ITEMS_FILE, *sorted(out_dir.glob("items.rank*.jsonl"))])


class Appender:
    """Appends records to a JSON-lines file, flushed after each, so a crash loses at most one."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _drop_torn_tail(path)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, sort_keys=True) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _drop_torn_tail(path: Path) -> None:
    """Cut a half-written last line, so the next record does not get glued onto it."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def merge(out_dir: Path, key: str, order: Callable[[dict[str, Any]], Any]) -> list[dict[str, Any]]:
    """Return all records, one per `key` value, sorted by `order`, after rewriting items.jsonl.

    `order` should put a work unit's completion record after its results, as appending does,
    so that a file cut anywhere still resumes correctly.
    """
    unique: dict[Any, dict[str, Any]] = {}
    for record in existing_records(out_dir):
        unique[json.dumps(record[key])] = record
    records = sorted(unique.values(), key=order)
    tmp = out_dir / (ITEMS_FILE + ".tmp")
    tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records), encoding="utf-8")
    tmp.replace(out_dir / ITEMS_FILE)
    for rank_file in out_dir.glob("items.rank*.jsonl"):
        rank_file.unlink()
    return records


def load_image(path: Path) -> tuple[np.ndarray | None, str | None]:
    """Return (RGB pixels H x W x 3, None), or (None, the reason it could not be read).

    The pixels are those :func:`vlcam.image.to_pil` reads, so an evaluation sees what
    ``explain_caption(model, path)`` sees (16-bit images scaled, transparency on white).
    An image whose header claims more pixels than PIL's decompression-bomb limit
    (``PIL.Image.MAX_IMAGE_PIXELS``) is not decoded.
    """
    from PIL import Image

    from vlcam.image import ImageTooLarge, to_pil

    if not path.is_file():
        return None, MISSING_IMAGE
    try:
        with warnings.catch_warnings():
            # PIL only warns below twice the limit, then decodes anyway.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return np.asarray(to_pil(path)), None
    except (ImageTooLarge, Image.DecompressionBombWarning):
        return None, TOO_LARGE
    except (ValueError, OSError):
        return None, UNREADABLE_IMAGE


def image_file_size(path: Path) -> tuple[int, int] | None:
    """Return the (height, width) an image file's header gives, or None if it cannot be read."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return im.height, im.width
    except (Image.DecompressionBombError, ValueError, OSError):
        return None


class _ImageFiles:
    """(key, pixels or None, reason) per image file; decoded in DataLoader workers."""

    def __init__(self, keys: list[Any], paths: list[Path]) -> None:
        self.keys, self.paths = keys, paths

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> tuple[Any, np.ndarray | None, str | None]:
        pixels, reason = load_image(self.paths[i])
        return self.keys[i], pixels, reason


def _as_is(item: Any) -> Any:
    return item


# linux/prctl.h
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int, _worker_id: int = 0) -> None:
    """Make this process exit when the process `parent` dies (a DataLoader `worker_init_fn`).

    A worker whose parent is killed (``kill -9``) can block for ever flushing results into
    a pipe its siblings still hold open. On Linux the kernel sends it SIGKILL
    (``prctl(PR_SET_PDEATHSIG)``, which fires when the thread that started it ends; the
    loader is iterated from the thread that creates its workers); elsewhere a thread
    watches for the parent to go.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
                if os.getppid() != parent:  # the parent died before prctl took effect
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()


def _exit_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def image_loader(keys: list[Any], paths: list[Path], num_workers: int = 2) -> Any:
    """Return a DataLoader yielding (key, pixels or None, reason), images decoded in workers.

    The workers die with the process that iterates the loader, even when it is killed.
    """
    from torch.utils.data import DataLoader, Dataset

    # A map-style dataset by protocol (__len__, __getitem__): Dataset is not imported at module load.
    files = cast("Dataset[Any]", _ImageFiles(keys, paths))
    return DataLoader(files, batch_size=None, num_workers=num_workers if keys else 0,
                      collate_fn=_as_is, worker_init_fn=functools.partial(die_with_parent, os.getpid()))


class Run:
    """One rank's part of a resumable run over keyed work units.

    Use as a context manager: inside, :meth:`pending` yields the units not done yet with
    their decoded images and :meth:`write` appends records; after it, :meth:`finish` merges
    on rank 0 and :meth:`write_summary` writes `summary.json`.
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.shard = init_shard()
        self._done = {json.dumps(r["key"]) for r in existing_records(self.out)}
        self.computed = 0  # results computed in this session, for items_per_second
        self._start = time.perf_counter()
        self._seconds = 0.0
        self._writer: Appender | None = None

    def __enter__(self) -> Run:
        self._writer = Appender(shard_file(self.out, self.shard))
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._writer is not None
        self._writer.close()
        self._seconds = time.perf_counter() - self._start

    def is_done(self, key: Any) -> bool:
        """Whether a record with `key` was written by an earlier session."""
        return json.dumps(key) in self._done

    def write(self, record: dict[str, Any]) -> None:
        assert self._writer is not None, "write inside `with run:`"
        self._writer.write(record)

    def pending(self, units: list[Any], key: Callable[[Any], Any], path_of: Callable[[Any], Path],
                num_workers: int, desc: str,
                progress: bool = True) -> Iterator[tuple[Any, np.ndarray | None, str | None]]:
        """Yield (unit, pixels or None, reason) for this rank's units whose key is not done.

        Images are decoded in DataLoader workers; rank 0 shows a progress bar.
        """
        from tqdm.auto import tqdm

        mine = [u for u in units[self.shard.rank::self.shard.world_size] if not self.is_done(key(u))]
        loader = image_loader(list(range(len(mine))), [path_of(u) for u in mine], num_workers)
        # An iterator, not the loader: tqdm.auto's asyncio flavour calls iter() on what it is
        # given and again when iterated, which would start a second, idle set of workers.
        for i, pixels, reason in tqdm(iter(loader), total=len(mine),
                                      disable=not progress or not self.shard.is_main, desc=desc):
            yield mine[i], pixels, reason

    def finish(self, order: Callable[[dict[str, Any]], Any]) -> list[dict[str, Any]] | None:
        """Return every rank's records merged (on rank 0, after all ranks end; None elsewhere)."""
        barrier(self.shard)
        return merge(self.out, key="key", order=order) if self.shard.is_main else None

    @property
    def items_per_second(self) -> float | None:
        if not self.computed or self._seconds <= 0:
            return None
        return self.computed * self.shard.world_size / self._seconds

    def write_summary(self, summary: dict[str, Any]) -> dict[str, Any]:
        """Return `summary` after writing it, with items_per_second, to `summary.json`."""
        summary["items_per_second"] = self.items_per_second
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n",
                                               encoding="utf-8")
        return summary


def resumable_run(
    out_dir: str | Path,
    units: list[Any],
    *,
    unit_record: Callable[[Any], dict[str, Any]],
    path_of: Callable[[Any], Path],
    process: Callable[[Run, Any, np.ndarray], Iterable[dict[str, Any]]],
    order: Callable[[dict[str, Any]], Any],
    summarize: Callable[[list[dict[str, Any]]], dict[str, Any]],
    desc: str,
    num_workers: int = 2,
    progress: bool = True,
    skip_reason: Callable[[Any], str | None] | None = None,
    annotated_size: Callable[[Any], tuple[int, int] | None] | None = None,
) -> dict[str, Any] | None:
    """Return the summary (on rank 0; None on other ranks) of a resumable run over `units`.

    `unit_record(unit)` is the unit's own record, without results; its "key" marks the
    unit done once written. For each pending unit whose image (at `path_of(unit)`) reads,
    `process(run, unit, pixels)` returns or yields the records to write, the unit's own
    last. A unit whose image is missing, unreadable or too large to decode, for which
    `skip_reason(unit)` (checked first) gives a reason, or whose image is not of the
    (height, width) that `annotated_size(unit)` gives, is written as its own record with
    "skipped": the reason.
    After every rank ends, the records merged and sorted by `order` go to `summarize`,
    whose summary is written to `summary.json` with items_per_second.
    """

    def key(unit: Any) -> Any:
        return unit_record(unit)["key"]

    with Run(out_dir) as run:
        for unit, pixels, reason in run.pending(units, key, path_of, num_workers, desc, progress):
            reason = (skip_reason(unit) if skip_reason is not None else None) or reason
            if not reason and pixels is not None and annotated_size is not None:
                size = annotated_size(unit)
                if size is not None and tuple(pixels.shape[:2]) != tuple(size):
                    reason = SIZE_DIFFERS
            if reason or pixels is None:
                run.write({**unit_record(unit), "skipped": reason})
                continue
            for record in process(run, unit, pixels):
                run.write(record)
    records = run.finish(order=order)
    if records is None:
        return None
    return run.write_summary(summarize(records))


Units = tuple[list[dict[str, Any]], Callable[[dict[str, Any]], Path]]


def caption_units(captions_json: str | Path, images_dir: str | Path, limit: int | None) -> Units:
    """Return (the first `limit` captions of a COCO captions file by id, caption -> its image's path)."""
    from vlcam.data.coco import load_coco

    captions = load_coco(captions_json)
    anns: list[dict[str, Any]] = sorted(captions.loadAnns(captions.getAnnIds()), key=lambda a: a["id"])[:limit]

    def path_of(ann: dict[str, Any]) -> Path:
        name: str = captions.loadImgs([ann["image_id"]])[0]["file_name"]
        return Path(images_dir) / name

    return anns, path_of


def question_units(questions_json: str | Path, images_dir: str | Path, image_pattern: str,
                   limit: int | None) -> Units:
    """Return (the first `limit` questions of a VQA questions file by id, question -> its image's path)."""
    from vlcam.data.vqa import format_image_name

    data = json.loads(Path(questions_json).read_text(encoding="utf-8"))
    subtype = str(data.get("data_subtype", ""))
    split = subtype.rstrip("0123456789")
    questions: list[dict[str, Any]] = sorted(data["questions"], key=lambda q: q["question_id"])[:limit]

    def path_of(q: dict[str, Any]) -> Path:
        return Path(images_dir) / format_image_name(image_pattern, q["image_id"], split, subtype)

    return questions, path_of


def mean_and_error(values: Iterable[float], name: str = "mean") -> dict[str, float | None]:
    """Return {name: the mean, "standard_error": its standard error} (None where undefined)."""
    array = np.asarray(list(values), dtype=float)
    return {
        name: float(array.mean()) if array.size else None,
        "standard_error": float(array.std(ddof=1) / np.sqrt(array.size)) if array.size > 1 else None,
    }


def count_skip(counts: dict[str, Any], reason: str) -> None:
    """Add one to `counts["skipped"][reason]`, the per-reason skip counts of an in-memory evaluation."""
    skipped = counts.setdefault("skipped", {})
    skipped[reason] = skipped.get(reason, 0) + 1


def skip_counts(records: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Return how many records were skipped, per reason."""
    counts: dict[str, int] = {}
    for r in records:
        if r.get("skipped"):
            counts[r["skipped"]] = counts.get(r["skipped"], 0) + 1
    return dict(sorted(counts.items()))
