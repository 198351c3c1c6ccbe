"""Explain a whole ranking list at matrix speed.

A ReID system answers a query with a ranked gallery. AMD's contributions come from per-image component
embeddings, so the contributions of every attribute to every query x gallery distance cost one embedding
pass over the query and gallery images plus a distance computation: ``Explainer.explain_matrix``. This
example ranks the gallery for one query by the model's distance, prints the top entries with the
attributes that contribute most to each distance, checks the matrix against the per-pair ``explain``,
and saves a figure of the ranking with a bar chart of contributions under every gallery image.

Run::

    python examples/explain_ranking.py                  # reference model, a few minutes
    python examples/explain_ranking.py --quick          # tiny model, seconds
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch
from _common import example_parser, fit_explainer, model_and_data, prepare
from matplotlib.figure import Figure


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options of the example."""
    parser = example_parser(__doc__.splitlines()[0], "ranking-output")
    parser.add_argument("--query", type=int, default=0, help="index of the query image to rank for")
    parser.add_argument("--top-k", type=int, default=5, help="gallery entries to show")
    parser.add_argument("--attributes", type=int, default=3, help="attributes to show per entry")
    return parser.parse_args(argv)


def ranking_figure(query_image: torch.Tensor, gallery_images: torch.Tensor, matches: list[bool],
                   distances: list[float], bars: list[list[tuple[str, float]]]) -> Figure:
    """Query, then the ranked gallery images (green frame: same person), each above its top shares."""
    n = len(gallery_images)
    fig = Figure(figsize=(1.9 * (n + 1), 5.2), layout="constrained")
    grid = fig.add_gridspec(2, n + 1, height_ratios=[2.2, 1.0])
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(query_image.permute(1, 2, 0).clamp(0, 1).numpy())
    ax.set_title("query", fontsize=9)
    ax.set_axis_off()
    for r in range(n):
        ax = fig.add_subplot(grid[0, r + 1])
        ax.imshow(gallery_images[r].permute(1, 2, 0).clamp(0, 1).numpy())
        ax.set_xticks([])
        ax.set_yticks([])
        colour = "#2ca02c" if matches[r] else "#d62728"
        for spine in ax.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(3)
        ax.set_title(f"rank {r + 1}\nd = {distances[r]:.3g}", fontsize=9)
        bar = fig.add_subplot(grid[1, r + 1])
        labels = [label for label, _ in bars[r]]
        values = [100 * share for _, share in bars[r]]
        bar.barh(range(len(values)), values, color="#1f77b4")
        for y, v in enumerate(values):
            bar.text(v, y, f" {v:.1f}", va="center", fontsize=7)
        bar.set_xlim(0, 1.35 * max(values, default=1.0))
        bar.set_yticks(range(len(values)))
        bar.set_yticklabels(labels, fontsize=7)
        bar.invert_yaxis()
        bar.tick_params(axis="x", labelsize=7)
        bar.set_xlabel("share of d_hat (%)", fontsize=7)
        for side in ("top", "right"):
            bar.spines[side].set_visible(False)
    fig.suptitle("gallery ranked by the model's distance d (green frame: same person as the query)", fontsize=10)
    return fig


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the example; returns the ranking and the printed numbers (for tests)."""
    args = parse_args(argv)
    out = prepare(args)
    model, splits = model_and_data(args, with_masks=False)
    train, query, gallery = splits["train"], splits["query"], splits["gallery"]

    explainer = fit_explainer(model, train, args)

    query_images = torch.stack([query[i]["image"] for i in range(len(query))])
    gallery_images = torch.stack([gallery[j]["image"] for j in range(len(gallery))])
    start = time.perf_counter()
    matrix = explainer.explain_matrix(query_images, gallery_images)
    seconds = time.perf_counter() - start
    q, g = matrix.distance.shape
    print(f"explain_matrix: {q} x {g} = {q * g} pairs x {len(explainer.attribute_names)} attributes "
          f"in {seconds:.2f} s ({1e3 * seconds / (q * g):.3f} ms per pair)")
    same_top1 = (matrix.distance.argmin(1) == matrix.reconstructed.argmin(1)).float().mean()
    print(f"d_hat ranks the same gallery image first as d for {100 * float(same_top1):.1f} % of the queries")

    qi = args.query
    if not 0 <= qi < q:
        raise SystemExit(f"--query: expected 0 <= query < {q}, got {qi}")
    order = matrix.distance[qi].argsort()[: args.top_k].tolist()
    shares = matrix.shares[qi]
    labels = [train.schema.label(n) for n in matrix.attribute_names]
    print(f"query {qi} (person {query.pids[qi]}): top {len(order)} of {g} gallery images")
    rows, bars = [], []
    for rank, j in enumerate(order, start=1):
        top = shares[j].argsort(descending=True)[: args.attributes].tolist()
        bars.append([(labels[k], float(shares[j, k])) for k in top])
        match = gallery.pids[j] == query.pids[qi]
        rows.append({"rank": rank, "gallery": j, "pid": gallery.pids[j], "match": match,
                     "distance": float(matrix.distance[qi, j]), "reconstructed": float(matrix.reconstructed[qi, j]),
                     "top": bars[-1]})
        attrs = ", ".join(f"{label} {100 * s:.1f} %" for label, s in bars[-1])
        print(f"  rank {rank}: gallery {j:4d} person {gallery.pids[j]:4d} {'match' if match else '     '} "
              f"d = {rows[-1]['distance']:.4f} d_hat = {rows[-1]['reconstructed']:.4f} | {attrs}")

    # The matrix API and the per-pair API compute the same numbers.
    start = time.perf_counter()
    pairwise = explainer.explain((query_images[qi].expand(len(order), -1, -1, -1), gallery_images[order]))
    per_pair = (time.perf_counter() - start) / len(order)
    diff = float((pairwise.contributions - matrix.contributions[qi, order]).abs().max())
    print(f"check: explain() on the same {len(order)} pairs: max |difference| of contributions {diff:.2e} "
          f"({1e3 * per_pair:.1f} ms per pair with maps)")

    fig = ranking_figure(query_images[qi], gallery_images[order], [r["match"] for r in rows],
                         [r["distance"] for r in rows], bars)
    figure = out / "ranking.png"
    fig.savefig(figure, dpi=110)
    print(f"wrote {figure}")
    return {"rows": rows, "max_difference": diff, "figure": figure, "shape": (q, g)}


if __name__ == "__main__":
    main()
