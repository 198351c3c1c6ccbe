"""Explanation quality after the default fit on practitioner layouts trained on synthetic persons.

For each architecture: train it with the zoo's trainer on the synthetic Market split (128x64), fit the
default explainer (the default recipe, default steps) and evaluate on all query x gallery pairs: ADRE,
X-mAP_e, X-mAP_c and Rank-1/mAP with the target's distance and with ``d_hat``.

Usage::

    python benchmarks/bench_arch_quality.py                       # bot_resnet18 and vit_reid_tiny
    python benchmarks/bench_arch_quality.py --quick               # tiny sizes, seconds
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch
from reidbench._timing import write_results
from torch.utils.data import DataLoader

from reidexplain import Explainer
from reidexplain.data import PKSampler
from reidexplain.zoo import create_model, reference_splits, train_reid_model

RESULTS = Path(__file__).resolve().parent / "results" / "arch_quality.json"


def _materialise(dataset: Any) -> list[dict[str, Any]]:
    keys = ("image", "pid", "camid", "attributes")
    return [{k: dataset[i][k] for k in keys} for i in range(len(dataset))]


def run(name: str, splits: dict[str, list], epochs: int | None, steps: int | None, seed: int) -> dict[str, Any]:
    """Train ``name``, fit the default explainer and evaluate it."""
    torch.manual_seed(seed)
    train, query, gallery = splits["train"], splits["query"], splits["gallery"]
    start = time.perf_counter()
    model = create_model(name)
    if epochs is None:  # the model's own recipe (the zoo's transformers: 40 epochs), else 8
        epochs = int(getattr(model, "training_defaults", {}).get("epochs", 8))
    model = train_reid_model(model, [(it["image"], it["pid"]) for it in train], epochs=epochs,
                             p=16, k=4, seed=seed, progress=False)
    train_seconds = time.perf_counter() - start
    loader = DataLoader(train, batch_sampler=PKSampler([it["pid"] for it in train], p=6, k=4, seed=seed))
    explainer = Explainer(model, attributes="market1501")
    start = time.perf_counter()
    options = {} if steps is None else {"target_steps": steps}
    explainer.fit(loader, progress=False, seed=seed, **options)
    fit_seconds = time.perf_counter() - start
    scores = explainer.evaluate(DataLoader(query, batch_size=64), DataLoader(gallery, batch_size=64),
                                progress=False)
    return {"architecture": name, "recipe": explainer.recipe.name, "adapter": explainer.adapter.kind, "layer": explainer.adapter.layer,
            "train_epochs": epochs, "train_seconds": round(train_seconds, 1),
            "fit_steps": int(explainer.history[-1]["steps"]), "fit_seconds": round(fit_seconds, 1),
            **{k: round(float(v), 2) for k, v in scores.items()}}


def _earlier_rows(path: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of an earlier run in ``path`` for (architecture, recipe) pairs this run did not measure
    (a row written before rows named their recipe was the paper's, the default then)."""
    if not path.exists():
        return []
    done = {(r["architecture"], r["recipe"]) for r in rows}
    earlier = json.loads(path.read_text()).get("results", [])
    return [r for r in ({"recipe": "amd", **r} for r in earlier) if (r["architecture"], r["recipe"]) not in done]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns what it writes to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny data, one epoch, a few steps")
    parser.add_argument("--architectures", nargs="+", default=["bot_resnet18", "vit_reid_tiny"])
    parser.add_argument("--epochs", type=int, default=None,
                        help="target training epochs (default: the model's training_defaults, else 8)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = (dict(num_train_ids=16, num_test_ids=6, images_per_id=4) if args.quick
             else dict(num_train_ids=200, num_test_ids=100, images_per_id=8))
    raw = reference_splits(with_masks=False, **sizes)
    splits = {k: _materialise(raw[k]) for k in ("train", "query", "gallery")}
    epochs = args.epochs or (1 if args.quick else None)
    steps = 4 if args.quick else None
    rows = []
    for name in args.architectures:
        row = run(name, splits, epochs, steps, args.seed)
        rows.append(row)
        print(json.dumps(row), flush=True)
    note = "targets trained on synthetic persons by the zoo's trainer; CPU timings on a shared machine"
    kept = _earlier_rows(args.out, rows) if not args.quick else []
    if kept:
        note += "; kept from an earlier run: " + ", ".join(f"{r['architecture']} ({r['recipe']})" for r in kept)
    result = {"benchmark": "arch_quality", "quick": args.quick, "sizes": sizes, "threads": args.threads,
              "torch": torch.__version__, "machine": platform.machine(), "results": rows + kept, "note": note}
    write_results(args.out, result)
    return result


if __name__ == "__main__":
    main()
