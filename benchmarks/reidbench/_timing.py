"""Timing and result-writing helpers of the benchmark scripts."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["interleaved_medians", "write_results"]


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int, threads: int = 1) -> dict[str, float]:
    """Median seconds of each function, timed in alternation so that load changes hit all alike.

    Timed on ``threads`` torch threads (default one: on a CPU shared with other processes, two threads
    on tiny batches measure the contention, not the work); the thread count is restored afterwards.

    Examples:
        >>> sorted(interleaved_medians({"a": lambda: None, "b": lambda: None}, repeats=3))
        ['a', 'b']
    """
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for fn in fns.values():
            fn()  # warm-up
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(repeats):
            for key, fn in fns.items():
                start = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
    return {k: statistics.median(v) for k, v in times.items()}


def write_results(path: Path, result: dict[str, Any]) -> None:
    """Write a benchmark's results as indented JSON (creating the folder) and say where.

    Examples:
        >>> import json, tempfile
        >>> out = Path(tempfile.mkdtemp()) / "results" / "toy.json"
        >>> write_results(out, {"benchmark": "toy"})
        written to ...
        >>> json.loads(out.read_text())["benchmark"]
        'toy'
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {path}")
