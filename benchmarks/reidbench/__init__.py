"""The ground-truth benchmark: AMD against every Captum baseline on synthetic persons whose truth is known.

Synthetic persons know which attributes differ between two people, which pixels carry them, and what
re-rendering a person with one attribute flipped does to the model's distance. :func:`run_benchmark`
uses all three to score AMD (gray-box and black-box) and the Captum baselines on the same pairs, and
writes ``results.json`` and ``BENCHMARKS.md``; ``python benchmarks/run_benchmark.py [--quick]`` calls it.

This is experiment code, not part of the installed ``reidexplain`` package: a plain package of the
repository's ``benchmarks/`` folder, imported by the scripts next to it (which Python finds because a
script's own folder is on ``sys.path``) and by the tests (``tests/helpers.py`` puts ``benchmarks/`` on
``sys.path``).

Examples:
    >>> from reidbench import SIZES, render_markdown
    >>> sorted(SIZES)
    ['full', 'quick', 'tiny']
    >>> render_markdown({"size": {"name": "tiny"}}).startswith("# Ground-truth benchmark")
    True
"""

from __future__ import annotations

from ._config import SIZES, BenchmarkSize, get_size
from ._machine import cpu_model, machine_description
from ._methods import BASELINE_METHODS, METHODS, baseline_settings, method_label
from ._pairs import PairSet, build_pair_set, sample_pairs
from ._report import markdown_table, render_markdown
from ._runner import run_benchmark, to_json_ready
from ._targets import diagnostics, evaluate_targets

__all__ = [
    "run_benchmark",
    "BenchmarkSize",
    "SIZES",
    "get_size",
    "METHODS",
    "BASELINE_METHODS",
    "method_label",
    "baseline_settings",
    "render_markdown",
    "markdown_table",
    "evaluate_targets",
    "diagnostics",
    "machine_description",
    "cpu_model",
    "sample_pairs",
    "build_pair_set",
    "PairSet",
    "to_json_ready",
]
