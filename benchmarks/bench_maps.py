"""The maps of ``amd-subspace`` alone: where each attribute is, scored under fit options and seeds.

Under the default recipe the maps only locate: how much each attribute contributes comes from the
subspace fit (``benchmarks/bench_subspace_fit.py``), so the maps' levers (the trunk, the head's width, the number of
steps, the regions' learned prior of where they lie) can be measured on localisation alone. Each variant is fitted on the reference model as
``bench_truthful.py`` fits it, then scored with the pointing game and relevance mass of each
attribute's map inside that attribute's mask:

- on ``bench_truthful.py``'s 48 pairs (the figure of its ablation tables; few images per attribute);
- on ``--wide`` pairs drawn the same way (the same measure, over about ten times more images).

"pointing used" is the mean over the attributes the model uses (its measured sensitivity), as in
``bench_truthful.py``. Explain time per pair is timed on the same pairs, one torch thread.

Run::

    # one fit seed, the built-in variants (a fit of about 430 s per variant, then its scoring)
    .venv/bin/python benchmarks/bench_maps.py --seed 0 --out benchmarks/results/seeds/maps_seed0.json
    # each variant averaged over the runs that fitted it (the command of BENCHMARKS.md lists them all)
    .venv/bin/python benchmarks/bench_maps.py --merge benchmarks/results/seeds/maps_*.json
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from reidbench import build_pair_set, get_size, sample_pairs, to_json_ready
from reidbench._attributes import amd_attribute_localization, model_sensitivity
from reidbench._data import pk_loader, prepare_data

from reidexplain.explainer import Explainer
from reidexplain.zoo import load_reference_model

RESULTS = Path(__file__).parent / "results" / "maps.json"

# Options written out in full, so that a row keeps its meaning when a default changes.
VARIANTS: dict[str, dict[str, Any]] = {
    "default (region prior)": {"map_position": True},
    "no region prior": {"map_position": False},
    "no region prior, shared trunk": {"trunk": "shared", "map_position": False},
}
FIGURES = ("pointing_used", "relevance_mass_used", "pointing_used_wide", "relevance_mass_used_wide",
           "fit_seconds", "explain_ms")


def _mean_used(values: list[float], uses: list[bool]) -> float:
    kept = [v for v, u in zip(values, uses, strict=True) if u and v is not None and math.isfinite(v)]
    return float(np.mean(kept)) if kept else float("nan")


def _explain_ms(explainer: Explainer, data: Any, pairs: list[tuple[int, int]], repeats: int = 3) -> float:
    """Median time of one pair's explanation over ``pairs``, in milliseconds."""
    ps = build_pair_set(data.query_set, data.gallery_set, pairs)
    times = []
    for _ in range(repeats):
        for i in range(len(pairs)):
            t0 = time.perf_counter()
            explainer.explain((ps.images_a[i], ps.images_b[i]))
            times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    size = get_size("quick")
    data = prepare_data(size, progress=False)
    model = load_reference_model("market", progress=False).eval()
    sens = model_sensitivity(model, "euclidean", data, persons=24, seed=0)
    uses = [bool(u) for u in sens["uses"]]
    qa = torch.stack([it["attributes"] for it in data.query])
    ga = torch.stack([it["attributes"] for it in data.gallery])
    pairs = sample_pairs(data.query_set.pids, data.gallery_set.pids, qa, ga, args.pairs, seed=0)
    wide = sample_pairs(data.query_set.pids, data.gallery_set.pids, qa, ga, args.wide, seed=1, exclude=pairs)
    rows = []
    for name in args.variants:
        options = VARIANTS[name]
        explainer = Explainer(model, attributes=data.schema, recipe="amd-subspace")
        t0 = time.perf_counter()
        explainer.fit(pk_loader(data.amd_train, *size.pk, seed=args.seed), progress=False, seed=args.seed,
                      max_seconds=args.seconds, **({"target_steps": args.steps} if args.steps else {}), **options)
        fit_seconds = time.perf_counter() - t0
        loc = amd_attribute_localization(explainer, data, pairs)
        loc_wide = amd_attribute_localization(explainer, data, wide)
        row = {"variant": name, "options": options, "fit_seconds": fit_seconds,
               "steps": explainer.history[-1].get("steps"),
               "pointing_used": _mean_used(loc["pointing"], uses),
               "relevance_mass_used": _mean_used(loc["relevance_mass"], uses),
               "pointing_used_wide": _mean_used(loc_wide["pointing"], uses),
               "relevance_mass_used_wide": _mean_used(loc_wide["relevance_mass"], uses),
               "pointing_per_attribute": loc["pointing"], "pointing_per_attribute_wide": loc_wide["pointing"],
               "count_wide": loc_wide["count"],
               "explain_ms": _explain_ms(explainer, data, pairs[:16])}
        print(f"{name}: pointing used {row['pointing_used']:.1f} (wide {row['pointing_used_wide']:.1f}), "
              f"relevance mass {row['relevance_mass_used']:.1f} (wide {row['relevance_mass_used_wide']:.1f}), "
              f"fit {fit_seconds:.0f} s, explain {row['explain_ms']:.1f} ms", flush=True)
        rows.append(row)
    return {"benchmark": "maps", "command": "python benchmarks/bench_maps.py " + shlex.join(sys.argv[1:]),
            "seed": args.seed, "pairs": len(pairs), "wide_pairs": len(wide),
            "steps": args.steps, "attributes": list(data.schema.names), "model_uses": uses, "variants": rows}


def merge(files: list[str], out: Path) -> None:
    """Average each variant over the runs that fitted it (one fit seed each) into ``out``, with
    ``<figure>_std`` the spread over seeds."""
    runs = [json.loads(Path(f).read_text()) for f in files]
    for key in ("pairs", "wide_pairs", "model_uses"):
        if any(run[key] != runs[0][key] for run in runs):
            raise SystemExit(f"--merge: the runs differ in {key!r}; merge only runs on the same data and pairs")
    names = list(dict.fromkeys(row["variant"] for run in runs for row in run["variants"]))
    rows = []
    for name in names:
        found = [(run["seed"], row) for run in runs for row in run["variants"] if row["variant"] == name]
        row = {"variant": name, "options": found[0][1]["options"], "seeds": len(found),
               "seed_ids": [seed for seed, _ in found]}
        found = [r for _, r in found]
        for key in FIGURES:
            values = [float(r[key]) for r in found]
            row[key] = float(np.mean(values))
            row[f"{key}_std"] = float(np.std(values))
        rows.append(row)
    merged = {key: runs[0][key] for key in ("benchmark", "pairs", "wide_pairs", "steps", "attributes", "model_uses")}
    merge_command = "python benchmarks/bench_maps.py --merge " + " ".join(files) + f" --out {out}"
    commands = [run["command"] for run in runs if run.get("command")]
    merged.update({"seeds": sorted({run["seed"] for run in runs}), "sources": files, "variants": rows,
                   "command": " && ".join([*commands, merge_command])})
    out.write_text(json.dumps(to_json_ready(merged), indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3000.0, help="fit budget per variant")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps of every fit (default: the fit's own)")
    parser.add_argument("--pairs", type=int, default=48, help="pairs of bench_truthful.py's figure")
    parser.add_argument("--wide", type=int, default=480, help="further pairs of the wide figure")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fits (data and pairs stay fixed)")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--custom", nargs=2, action="append", default=[], metavar=("NAME", "JSON"),
                        help="an extra variant: its name and fit options as JSON (repeatable)")
    parser.add_argument("--merge", nargs="+", metavar="JSON", help="instead of running: merge seeds' runs")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    if args.merge:
        merge(args.merge, Path(args.out))
        return
    for name, options in args.custom:
        VARIANTS[name] = json.loads(options)
        args.variants.append(name)
    unknown = [name for name in args.variants if name not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {unknown}; built in: {sorted(VARIANTS)} (or add one with --custom)")
    result = run(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(to_json_ready(result), indent=1) + "\n")


if __name__ == "__main__":
    main()
