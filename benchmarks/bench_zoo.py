"""Benchmark of the reference ReID model: training time and retrieval on the synthetic persons.

Trains (or loads) the reference model with :func:`reidexplain.zoo.load_reference_model` and reports,
on the synthetic query/gallery splits of :data:`reidexplain.zoo.REFERENCE_CONFIG`:

* the trained model on its own domain (market) and across domains (trained on market, tested on duke);
* the same untrained network, and raw-pixel Euclidean retrieval, as floors.

Prints a markdown table and writes ``benchmarks/results/zoo.json``. Targets (not asserted anywhere): the
default ``reidnet_small`` trains in at most 3 minutes on 2 CPU cores and reaches Rank-1 >= 85 % and
mAP >= 65 % on market; raw pixels stay far below.

Usage::

    python benchmarks/bench_zoo.py                 # train afresh (timed) and evaluate
    python benchmarks/bench_zoo.py --no-retrain    # evaluate the cached model
    python benchmarks/bench_zoo.py --quick         # tiny configuration, a smoke test of the script
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from reidexplain.distance import distance_matrix
from reidexplain.metrics import evaluate_retrieval, extract_features
from reidexplain.zoo import REFERENCE_CONFIG, create_model, load_reference_model, reference_splits

QUICK = {"num_train_ids": 16, "num_test_ids": 8, "images_per_id": 4, "epochs": 2, "p": 4, "k": 4}
RESULTS = Path(__file__).resolve().parent / "results" / "zoo.json"


def _retrieval(features: dict[str, tuple[torch.Tensor, ...]], metric: str = "euclidean") -> dict[str, float]:
    qf, qp, qc = features["query"]
    gf, gp, gc = features["gallery"]
    return evaluate_retrieval(distance_matrix(qf, gf, metric), qp, gp, qc, gc)


def _model_features(model: torch.nn.Module, splits: dict[str, Any]) -> dict[str, tuple[torch.Tensor, ...]]:
    return {name: extract_features(model, splits[name], batch_size=128) for name in ("query", "gallery")}


def _pixel_features(splits: dict[str, Any]) -> dict[str, tuple[torch.Tensor, ...]]:
    out = {}
    for name in ("query", "gallery"):
        data = splits[name]
        images = torch.stack([data[i]["image"].flatten() for i in range(len(data))])
        out[name] = (images, torch.tensor(data.pids), torch.tensor(data.camids))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="small")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--no-retrain", action="store_true", help="load the cached model if present")
    parser.add_argument("--quick", action="store_true", help="tiny configuration (smoke test)")
    parser.add_argument("--cache-dir", default=None, help="default: the reidexplain cache")
    parser.add_argument("--output", type=Path, default=None,
                        help=f"default {RESULTS} (with --quick: zoo_quick.json next to it)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    overrides = dict(QUICK) if args.quick else {}
    data_sizes = {k: v for k, v in overrides.items() if k in ("num_train_ids", "num_test_ids", "images_per_id")}
    load_before = os.getloadavg()

    model, info = load_reference_model(
        backbone=args.backbone, cache_dir=args.cache_dir, retrain=not args.no_retrain,
        progress=True, return_info=True, **overrides,
    )
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for domain in ("market", "duke"):
        splits = reference_splits(domain, with_masks=False, **data_sizes)
        trained = _retrieval(_model_features(model, splits))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(REFERENCE_CONFIG["seed"])
            untrained = create_model(f"reidnet_{args.backbone}").eval()
        rows.append({"test": domain, "features": f"reidnet_{args.backbone} (trained on market)", **trained})
        rows.append({"test": domain, "features": f"reidnet_{args.backbone} (untrained)",
                     **_retrieval(_model_features(untrained, splits))})
        pixels = _pixel_features(splits)
        rows.append({"test": domain, "features": "raw pixels, Euclidean", **_retrieval(pixels)})
        rows.append({"test": domain, "features": "raw pixels, cosine", **_retrieval(pixels, "cosine")})
    eval_seconds = time.perf_counter() - started

    print(f"\nreidnet_{args.backbone}: trained in {info.get('train_seconds', float('nan')):.0f} s wall, "
          f"{info.get('train_cpu_seconds', float('nan')):.0f} s CPU ({info.get('torch_threads', '?')} "
          f"threads; load average before {load_before[0]:.1f}); config {info['config']}\n")
    print("| test domain | features | Rank-1 | Rank-5 | Rank-10 | mAP |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['test']} | {row['features']} | {row['rank1']:.1f} | {row['rank5']:.1f} | "
              f"{row['rank10']:.1f} | {row['mAP']:.1f} |")

    result = {
        "command": " ".join([".venv/bin/python", "benchmarks/bench_zoo.py", *sys.argv[1:]]),
        "model": f"reidnet_{args.backbone}",
        "config": info["config"],
        "train_seconds": info.get("train_seconds"),
        "train_cpu_seconds": info.get("train_cpu_seconds"),
        "trained_now": not args.no_retrain,
        "eval_seconds": round(eval_seconds, 1),
        "threads": args.threads,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "quick": args.quick,
        "rows": rows,
    }
    output = args.output or (RESULTS.with_name("zoo_quick.json") if args.quick else RESULTS)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2, default=list))
    print(f"\nwrote {output}")


if __name__ == "__main__":
    main()
