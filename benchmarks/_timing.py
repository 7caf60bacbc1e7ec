"""Timing helpers shared by the benchmark scripts (run them as `python benchmarks/NAME.py`)."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

import torch


def timed(
    impls: dict[str, Callable[[], object]], device: torch.device, repeats: int, warmup: int = 2
) -> dict[str, float]:
    """Return the median wall time in seconds of each implementation.

    The runs are interleaved (one of each per round), so that drifts of the machine
    (clock speed, other load, allocator warm-up) touch every implementation alike.
    CUDA is synchronised around each run.
    """
    for _ in range(warmup):
        for fn in impls.values():
            fn()
    times: dict[str, list[float]] = {label: [] for label in impls}
    for _ in range(repeats):
        for label, fn in impls.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[label].append(time.perf_counter() - start)
    return {label: statistics.median(t) for label, t in times.items()}


def machine(device: torch.device) -> str:
    """Return a short description of where the benchmark runs."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def print_ratios(times: dict[str, float], base: str, peer: str | None = None, ours: str | None = None) -> None:
    """Print each median in ms and as a multiple of `times[base]` (a forward); then, when
    both ran, how many times faster `ours` is than `peer`."""
    width = max(len(label) for label in times) + 2
    for label, t in times.items():
        print(f"{label:<{width}}{t * 1e3:>10.1f} ms{t / times[base]:>9.2f}x forward")
    if peer in times and ours in times:
        print(f"{ours} is {times[peer] / times[ours]:.1f}x faster than {peer}")

