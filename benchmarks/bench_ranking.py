"""Benchmark of ranked-list explanations at gallery scale (issue 16): 1,000 queries x 10,000 gallery images.

Fits an AMD explainer to the zoo's reference model (a short fit: the speed of ranking does not depend
on how well the interpreter is fitted), builds a :class:`~reidexplain.ranking.GalleryIndex` of the
gallery (images streamed in batches, maps stored), then explains every query's top-k
(:meth:`~reidexplain.Explainer.explain_ranking`, Market-1501 exclusion) and reports, separately, the
embedding time (gallery and queries) and the time of the arithmetic after embedding (block-wise top-k
and the contributions of the top-k pairs). As a baseline in the same process, the brute-force
arithmetic (the full ``Q x G x M`` decomposition, :func:`reidexplain.decomposition.matrix_decomposition`)
is timed on a few queries and compared per query.

Images: the reference split's recipe (``reference_splits``) with more test identities, so that every
gallery image is a distinct rendered person (no duplicates); the queries are images of the query split,
which are also in the gallery (the Market-1501 rule then excludes each query itself and its
same-camera views). Images are kept as ``uint8`` and converted per batch, so that the measured memory
is that of the method rather than of a 1 GB float tensor of images.

Peak memory is the process's peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``).
The fit and the rendering come first and are not part of what is measured: once they are done, their
data is freed (``gc`` and glibc's ``malloc_trim``) and, on Linux, the peak is reset (``/proc/self/clear_refs``)
before the gallery is indexed, so that ``peak_rss_mb`` is the peak of indexing and ranking; it still
counts everything resident: Python, torch, the model, the uint8 images, the queries and the index.
``process_peak_rss_mb`` is the peak before the reset (fit and rendering included). The speed baseline,
in the same process, is the target model's own forward pass over the first 1,024 gallery images.

Usage::

    .venv/bin/python benchmarks/bench_ranking.py                 # 1000 x 10000, trunk copy, ~6 min on 2 cores
    .venv/bin/python benchmarks/bench_ranking.py --trunk shared  # the other row, merged into the JSON
    .venv/bin/python benchmarks/bench_ranking.py --quick      # 16 x 96, untrained model, seconds (tests)
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

from reidexplain.decomposition import matrix_decomposition
from reidexplain.explainer import Explainer
from reidexplain.zoo import create_model, load_reference_model
from reidexplain.zoo.reference import reference_splits

RESULTS = Path(__file__).resolve().parent / "results" / "ranking.json"
TARGETS = {"end_to_end_seconds": 60.0, "arithmetic_seconds": 15.0, "peak_rss_mb": 3072.0}


def peak_rss_mb() -> float:
    """The process's peak resident set size so far, in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def reset_peak_rss() -> bool:
    """Free what can be freed and reset the peak RSS (Linux ``/proc/self/clear_refs``); ``False`` if not reset."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _images(split: Any, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``count`` rendered images of ``split`` as uint8, with pids and camids."""
    images = torch.empty(count, 3, *split[0]["image"].shape[-2:], dtype=torch.uint8)
    pids, camids = torch.empty(count, dtype=torch.long), torch.empty(count, dtype=torch.long)
    for i in range(count):
        item = split[i]
        images[i] = (item["image"].clamp(0, 1) * 255).round().to(torch.uint8)
        pids[i], camids[i] = item["pid"], item["camid"]
    return images, pids, camids


def _batches(images: torch.Tensor, pids: torch.Tensor, camids: torch.Tensor, size: int) -> Any:
    for start in range(0, images.shape[0], size):
        yield {"image": images[start:start + size].float() / 255, "pid": pids[start:start + size],
               "camid": camids[start:start + size]}


def run(queries: int, gallery: int, top_k: int, fit_seconds: float, trunk: str, quick: bool,
        batch_size: int, max_memory_mb: float | None, seed: int) -> dict[str, Any]:
    """Fit, index, rank; returns the measurements."""
    per_id = 8
    test_ids = -(-gallery // per_id)
    clock = time.perf_counter()
    if quick:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model, model_name = create_model("reidnet_small").eval(), "reidnet_small (random init)"
        splits = reference_splits(with_masks=False, num_train_ids=8, num_test_ids=test_ids, images_per_id=per_id)
    else:
        model, model_name = load_reference_model(progress=False), "reference model (reidnet_small, trained)"
        splits = reference_splits(with_masks=False, num_test_ids=test_ids, images_per_id=per_id)
    pool = torch.utils.data.ConcatDataset([splits["query"], splits["gallery"]])
    g_images, g_pids, g_cams = _images(pool, gallery)
    q_images, q_pids, q_cams = _images(splits["query"], queries)
    train = [splits["train"][i] for i in range(len(splits["train"]))]
    render_seconds = time.perf_counter() - clock
    loader = [{k: torch.stack([torch.as_tensor(it[k]) for it in train[i:i + 32]]) for k in ("image", "attributes")}
              for i in range(0, len(train), 32)]
    explainer = Explainer(model, attributes="market1501", trunk=trunk)
    clock = time.perf_counter()
    explainer.fit(loader, progress=False, seed=seed, max_seconds=fit_seconds, epochs=1 if quick else None)
    fit_took = time.perf_counter() - clock
    query = q_images.float() / 255
    del train, loader, splits, pool
    process_peak = peak_rss_mb()
    reset = reset_peak_rss()
    rss_before = peak_rss_mb()

    clock = time.perf_counter()
    index = explainer.index_gallery(_batches(g_images, g_pids, g_cams, 256), batch_size=batch_size, progress=False)
    embed_gallery = time.perf_counter() - clock
    rss_index = peak_rss_mb()
    clock = time.perf_counter()
    ranking = explainer.explain_ranking(query, index, top_k=top_k, query_ids=q_pids, query_camids=q_cams,
                                        max_memory_mb=max_memory_mb, batch_size=batch_size, progress=False)
    explain_total = time.perf_counter() - clock
    seconds = ranking.extras["seconds"]
    rss_after = peak_rss_mb()
    arithmetic = seconds["ranking"] + seconds["maps"]
    end_to_end = embed_gallery + explain_total

    # Baselines in the same process: the target's own forward pass, and the brute-force Q x G x M
    # decomposition on a few queries.
    sample = g_images[:min(gallery, 1024)]
    target = explainer.adapter.target
    clock = time.perf_counter()
    with torch.no_grad():
        for start in range(0, sample.shape[0], batch_size):
            target(sample[start:start + batch_size].float() / 255)
    target_per_image = (time.perf_counter() - clock) / sample.shape[0]
    embed_per_image = (embed_gallery + seconds["embed_queries"]) / (queries + gallery)
    few = min(queries, 16)
    q = explainer.embed(query[:few], batch_size)
    clock = time.perf_counter()
    full = matrix_decomposition(q.embeddings, q.components, index.embeddings, index.components, index.metric)
    torch.sort(full.distance, dim=1)
    brute_per_query = (time.perf_counter() - clock) / few
    del full
    topk_per_query = seconds["ranking"] / queries
    rank1 = float(ranking.correct[:, 0].float().mean()) * 100
    row = {
        "trunk": trunk, "split": explainer.adapter.describe().split(";")[0],
        "queries": queries, "gallery": gallery, "top_k": top_k, "attributes": len(explainer.attribute_names),
        "embed_gallery_seconds": round(embed_gallery, 2), "embed_queries_seconds": round(seconds["embed_queries"], 2),
        "embedding_seconds": round(embed_gallery + seconds["embed_queries"], 2),
        "arithmetic_seconds": round(arithmetic, 2), "end_to_end_seconds": round(end_to_end, 2),
        "images_per_second": round((queries + gallery) / (embed_gallery + seconds["embed_queries"]), 1),
        "target_images_per_second": round(1.0 / target_per_image, 1),
        "embedding_over_target_forward": round(embed_per_image / target_per_image, 2),
        "brute_force_ms_per_query": round(brute_per_query * 1e3, 2),
        "topk_ms_per_query": round(topk_per_query * 1e3, 3),
        "brute_force_over_topk": round(brute_per_query / max(topk_per_query, 1e-12), 1),
        "index_mb": round(index.nbytes / 2**20, 1), "peak_rss_mb": round(rss_after, 1),
        "rss_before_index_mb": round(rss_before, 1), "rss_after_index_mb": round(rss_index, 1),
        "process_peak_rss_mb": round(process_peak, 1), "peak_reset": reset,
        "rank1_target_percent": round(rank1, 1), "fit_seconds": round(fit_took, 1),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    row["targets_met"] = {
        "end_to_end_under_60s": row["end_to_end_seconds"] < TARGETS["end_to_end_seconds"],
        "arithmetic_under_15s": row["arithmetic_seconds"] < TARGETS["arithmetic_seconds"],
        "peak_memory_under_3gb": row["peak_rss_mb"] < TARGETS["peak_rss_mb"],
    }
    return {"row": row, "model": model_name, "render_seconds": round(render_seconds, 1)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns what it writes to ``benchmarks/results/ranking.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 queries x 96 gallery images, untrained model")
    parser.add_argument("--queries", type=int, default=None)
    parser.add_argument("--gallery", type=int, default=None)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--trunk", default="copy", choices=["copy", "shared"],
                        help="the interpreter's trunk (one per run: rows of the other are kept in the JSON)")
    parser.add_argument("--fit-seconds", type=float, default=None, help="fit budget (default 30 s, quick: 2 s)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the issue's target: 2 cores)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-memory-mb", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    queries = args.queries or (16 if args.quick else 1000)
    gallery = args.gallery or (96 if args.quick else 10000)
    fit_seconds = args.fit_seconds or (2.0 if args.quick else 30.0)
    measured = run(queries, gallery, args.top_k, fit_seconds, args.trunk, args.quick, args.batch_size,
                   args.max_memory_mb, args.seed)
    rows = [measured["row"]]
    if args.out.is_file():  # keep the row of the other trunk, measured by an earlier run of the same size
        previous = json.loads(args.out.read_text())
        if previous.get("quick") == args.quick:
            rows += [r for r in previous.get("results", []) if r.get("trunk") != args.trunk
                     and (r.get("queries"), r.get("gallery")) == (queries, gallery)]
    rows.sort(key=lambda r: r["trunk"])
    quick = " --quick" if args.quick else ""
    command = " && ".join(f".venv/bin/python benchmarks/bench_ranking.py{quick}"
                          + ("" if r["trunk"] == "copy" else f" --trunk {r['trunk']}") for r in rows)
    result = {
        "benchmark": "ranking", "quick": args.quick, "command": command,
        "model": measured["model"], "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "machine": platform.machine(), "max_memory_mb": args.max_memory_mb,
        "targets": TARGETS, "render_seconds": measured["render_seconds"],
        "memory": ("peak resident set size (resource.getrusage ru_maxrss) of indexing and ranking: reset "
                   "after the fit and the rendering; everything resident counts (model, uint8 images, index)"),
        "note": ("fit kept short (speed does not depend on the fit); images distinct renders of the reference "
                 "split's recipe with more test identities; CPU timings on a machine shared with other "
                 "processes are pessimistic"),
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for r in result["results"]:
        print(json.dumps(r))
    print(f"written to {args.out}")
    return result


if __name__ == "__main__":
    main()
