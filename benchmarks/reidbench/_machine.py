"""Description of the machine a benchmark ran on (for the results file)."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["machine_description", "cpu_model"]


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU model name from ``/proc/cpuinfo`` (Linux), else what :mod:`platform` knows.

    Examples:
        >>> isinstance(cpu_model(), str)
        True
    """
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine_description() -> dict[str, Any]:
    """CPU model, cores, memory, torch/captum/python versions, torch threads and the load average now.

    Examples:
        >>> info = machine_description()
        >>> info["cores"] >= 1, "torch" in info
        (True, True)
    """
    try:
        import captum

        captum_version = captum.__version__
    except (ImportError, AttributeError):
        captum_version = None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "captum": captum_version,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
