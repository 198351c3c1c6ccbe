"""Benchmark of the AMD Explainer on the zoo's reference model and the synthetic Market split.

Fits the interpreter in gray-box mode (own trunk copy, and ``trunk="shared"``) and black-box mode with
the library's defaults (PK batches of 6 x 4),
scores it on the held-out query x gallery pairs (ADRE, X-mAP_e, X-mAP_c, Rank-1/mAP with the target's
distance and with ``d_hat``), and times ``explain`` of one pair against one target forward pass of the
same pair, in the same process, alternating the two, on one thread. Prints a markdown table and writes ``benchmarks/results/explainer.json``.

Usage::

    .venv/bin/python benchmarks/bench_explainer.py --modes gray-box    # reference model, ~5 min
    .venv/bin/python benchmarks/bench_explainer.py --modes black-box   # the other modes, merged into the JSON
    .venv/bin/python benchmarks/bench_explainer.py --modes gray-box-shared
    .venv/bin/python benchmarks/bench_explainer.py --quick             # small data and budget, ~2 min

Timings depend on the machine and on whatever else runs on it: on a CPU shared with other processes
they are pessimistic.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch
from reidbench._timing import interleaved_medians, write_results
from torch.utils.data import DataLoader

from reidexplain.data import PKSampler
from reidexplain.explainer import Explainer
from reidexplain.zoo import load_reference_model
from reidexplain.zoo.reference import reference_splits

RESULTS = Path(__file__).resolve().parent / "results" / "explainer.json"


def _materialise(dataset: Any) -> list[dict[str, Any]]:
    """Render the synthetic images once so that every epoch reads tensors."""
    keys = ("image", "pid", "camid", "attributes")
    return [{k: dataset[i][k] for k in keys} for i in range(len(dataset))]


MODES = {"gray-box": {"feature_layer": "auto"}, "gray-box-shared": {"feature_layer": "auto", "trunk": "shared"},
         "black-box": {"feature_layer": None}}


def run_mode(mode: str, model: torch.nn.Module, train: list, query: list, gallery: list,
             max_seconds: float, seed: int) -> dict[str, Any]:
    """Fit one explainer and measure it."""
    loader = DataLoader(train, batch_sampler=PKSampler([it["pid"] for it in train], p=6, k=4, seed=seed))
    explainer = Explainer(model, attributes="market1501", **MODES[mode])
    start = time.perf_counter()
    explainer.fit(loader, progress=False, seed=seed, max_seconds=max_seconds)
    fit_seconds = time.perf_counter() - start
    scores = explainer.evaluate(DataLoader(query, batch_size=64), DataLoader(gallery, batch_size=64),
                                progress=False)
    a, b = query[0]["image"], gallery[0]["image"]
    target = explainer.adapter.target  # the frozen eval copy: the same computation as the user's model
    pair = torch.stack([a, b]).to(explainer.device)

    def forward() -> None:
        with torch.no_grad():
            target(pair)

    timing = interleaved_medians({"forward": forward, "explain": lambda: explainer.explain((a, b))}, 200)
    forward_s, explain_s = timing["forward"], timing["explain"]
    last = explainer.history[-1]
    return {
        "mode": mode, "split": explainer.adapter.describe(), "fit_seconds": round(fit_seconds, 1),
        "fit_threads": torch.get_num_threads(),
        "steps": int(last["steps"]), "epochs": int(last["epoch"]),
        **{k: round(float(v), 2) for k, v in scores.items()},
        "explain_ms": round(explain_s * 1e3, 2), "target_forward_ms": round(forward_s * 1e3, 2),
        "explain_over_forward": round(explain_s / forward_s, 2), "timing_threads": 1,
    }


def _table(rows: list[dict[str, Any]]) -> str:
    cols = [("mode", "mode"), ("fit_seconds", "fit s"), ("steps", "steps"), ("adre", "ADRE %"),
            ("x_map_e", "X-mAP_e"), ("x_map_c", "X-mAP_c"), ("rank1_target", "R1 target"),
            ("rank1_interpreter", "R1 d_hat"), ("map_target", "mAP target"), ("map_interpreter", "mAP d_hat"),
            ("explain_over_forward", "explain / forward")]
    lines = ["| " + " | ".join(c[1] for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c[0], "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the results written to ``benchmarks/results/explainer.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data and a 60 s fit budget")
    parser.add_argument("--max-seconds", type=float, default=None, help="fit budget per mode")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes: dict[str, Any] = {}
    if args.quick:
        sizes = dict(num_train_ids=60, num_test_ids=30, images_per_id=6)
    budget = args.max_seconds or (60.0 if args.quick else 270.0)
    model = load_reference_model(progress=False, **(dict(sizes, epochs=6) if args.quick else {}))
    splits = reference_splits(with_masks=False, **sizes)
    train, query, gallery = (_materialise(splits[k]) for k in ("train", "query", "gallery"))
    rows = [run_mode(mode, model, train, query, gallery, budget, args.seed) for mode in args.modes]
    print(_table(rows))
    if args.out.is_file():  # keep the rows of modes measured in an earlier run (one mode per run)
        previous = json.loads(args.out.read_text())
        if previous.get("quick") == args.quick:
            rows += [r for r in previous.get("results", []) if r["mode"] not in args.modes]
    result = {
        "benchmark": "explainer", "quick": args.quick, "fit_budget_seconds": budget,
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.machine(),
        "data": {"train": len(train), "query": len(query), "gallery": len(gallery)}, "results": rows,
        "note": "CPU timings on a machine shared with other processes are pessimistic",
    }
    write_results(args.out, result)
    return result


if __name__ == "__main__":
    main()
