"""Rendering speed of the synthetic persons on one CPU thread.

Prints one markdown table row per configuration (domain, image size, masks on/off): images per second
of ``dataset[i]`` (identity and nuisance draws included), of ``render`` alone (the counterfactual path),
and identities per second for labels without rendering (``dataset.attributes``); then images per second
of ``dataset.__getitems__`` on batches of 32 indices (what ``DataLoader`` calls; it draws
``SyntheticPersons.BATCH`` persons together). Rates are measured in process CPU time (robust to other
processes taking turns on the CPU, not to them sharing its caches) and in wall time; the load average
is recorded next to them. Results go to ``benchmarks/results/data.json``.

Run from the repository root (about 30 seconds)::

    .venv/bin/python benchmarks/bench_data.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from reidexplain.data import SyntheticPersons

CONFIGS = [
    ("market", (128, 64), True),
    ("market", (128, 64), False),
    ("duke", (128, 64), True),
    ("duke", (128, 64), False),
    ("market", (64, 32), True),
]
BATCH = 32  # indices per __getitems__ call, as a DataLoader with batch_size=32 passes them


def _rate(fn, count: int, repeats: int) -> tuple[float, float]:
    """Best items/s over ``repeats`` runs of ``fn`` (which handles ``count`` items), CPU and wall."""
    best_cpu = best_wall = 0.0
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        c1, w1 = time.process_time(), time.perf_counter()
        best_cpu = max(best_cpu, count / max(c1 - c0, 1e-9))
        best_wall = max(best_wall, count / max(w1 - w0, 1e-9))
    return best_cpu, best_wall


def bench(domain: str, size: tuple[int, int], masks: bool, n_ids: int, per_id: int,
          repeats: int) -> dict:
    data = SyntheticPersons(n_ids, per_id, domain=domain, seed=0, image_size=size, with_masks=masks)
    n = len(data)
    for camid in range(len(data.cameras)):  # build the cached camera backgrounds outside the timing
        data.render(data.identity(0), data.nuisance(0).__class__(camid=camid))
    draws = [(data.identity(i), data.nuisance(i)) for i in range(n)]
    item_cpu, item_wall = _rate(lambda: [data[i] for i in range(n)], n, repeats)
    render_cpu, render_wall = _rate(lambda: [data.render(p, q) for p, q in draws], n, repeats)
    batches = [list(range(s, min(n, s + BATCH))) for s in range(0, n, BATCH)]
    batch_cpu, batch_wall = _rate(lambda: [data.__getitems__(b) for b in batches], n, repeats)

    def labels() -> None:
        fresh = SyntheticPersons(2000, 1, domain=domain, seed=1)
        fresh.attributes  # noqa: B018  (the property draws every identity)

    label_cpu, _ = _rate(labels, 2000, 1)
    return {
        "domain": domain, "height": size[0], "width": size[1], "masks": masks, "images": n,
        "items_per_s_cpu": round(item_cpu), "items_per_s_wall": round(item_wall),
        "render_per_s_cpu": round(render_cpu), "render_per_s_wall": round(render_wall),
        "label_identities_per_s_cpu": round(label_cpu),
        "getitems_per_s_cpu": round(batch_cpu), "getitems_per_s_wall": round(batch_wall),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=100, help="identities per configuration")
    parser.add_argument("--per-id", type=int, default=4, help="images per identity")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/data.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    rows = [bench(d, s, m, args.ids, args.per_id, args.repeats) for d, s, m in CONFIGS]
    print("| domain | size | masks | items/s (CPU) | items/s (wall) | render/s (CPU) | labels: ids/s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['domain']} | {r['height']}x{r['width']} | {'yes' if r['masks'] else 'no'} | "
              f"{r['items_per_s_cpu']} | {r['items_per_s_wall']} | {r['render_per_s_cpu']} | "
              f"{r['label_identities_per_s_cpu']} |")
    result = {
        "benchmark": "synthetic persons rendering, 1 torch thread",
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "load_average_before": round(load_before, 2),
                    "load_average_after": round(os.getloadavg()[0], 2)},
        "torch": torch.__version__,
        "rows": [{k: v for k, v in r.items() if not k.startswith("getitems")} for r in rows],
        # Batched rendering, a table of its own (the rows above keep their columns).
        "getitems_batches_of_32": [
            {"domain": r["domain"], "size": f"{r['height']}x{r['width']}", "masks": r["masks"],
             "items_per_s_cpu": r["getitems_per_s_cpu"], "items_per_s_wall": r["getitems_per_s_wall"],
             "vs_getitem_cpu": round(r["getitems_per_s_cpu"] / max(r["items_per_s_cpu"], 1), 2)}
            for r in rows],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("\n| domain | size | masks | __getitems__ items/s (CPU) | (wall) |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['domain']} | {r['height']}x{r['width']} | {'yes' if r['masks'] else 'no'} | "
              f"{r['getitems_per_s_cpu']} | {r['getitems_per_s_wall']} |")
    print(f"load average {load_before:.2f} -> {os.getloadavg()[0]:.2f}; wrote {args.out}")


if __name__ == "__main__":
    main()
