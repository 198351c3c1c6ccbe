"""The ground-truth benchmark: AMD against every Captum baseline on synthetic persons (the headline table).

Runs :func:`reidbench.run_benchmark` (full size: about 16 minutes on 2 CPU cores, plus
about 3 minutes to train the reference model once if it is not cached) and writes
``benchmarks/results/benchmark.json``; ``benchmarks/make_report.py`` then assembles ``BENCHMARKS.md``.

Usage (from the repository root)::

    .venv/bin/python benchmarks/run_benchmark.py                # full run -> results/benchmark.json
    .venv/bin/python benchmarks/run_benchmark.py --quick        # ~3 min -> results/benchmark_quick.json
    .venv/bin/python benchmarks/make_report.py                  # -> BENCHMARKS.md

Timings depend on the machine and on whatever else runs on it: on a CPU shared with other processes the
fits (stopped by wall-clock budgets) make fewer steps and every time is pessimistic.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
from pathlib import Path

import torch
from reidbench import run_benchmark

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> Path:
    """Run the benchmark; returns the JSON file written."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the ~3 minute size (8 pairs, short fits)")
    # One thread by default: on a CPU shared with other processes, two threads that wait for each other
    # inflate the wall-clock time of many small operations (AMD's explain) far more than of big batches.
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None,
                        help=f"JSON file (default {RESULTS / 'benchmark.json'}, --quick: benchmark_quick.json)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="also keep the run folder (results.json and its BENCHMARKS.md) here")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    output = args.output or RESULTS / ("benchmark_quick.json" if args.quick else "benchmark.json")
    # The options that change the figures (not where they are kept or how the progress is shown).
    command = ".venv/bin/python benchmarks/run_benchmark.py" + (" --quick" if args.quick else "")
    command += (f" --threads {args.threads}" if args.threads != 1 else "") + (f" --seed {args.seed}" if args.seed else "")
    with tempfile.TemporaryDirectory() as tmp:
        folder = run_benchmark(args.keep or Path(tmp) / "run", quick=args.quick, progress=not args.no_progress,
                               seed=args.seed, threads=args.threads, command=command)
        output.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / "results.json", output)
        print((folder / "BENCHMARKS.md").read_text())
    results = json.loads(output.read_text())
    print(f"written to {output} in {results['total_seconds']:.0f} s; "
          "run benchmarks/make_report.py to update BENCHMARKS.md")
    return output


if __name__ == "__main__":
    main()
