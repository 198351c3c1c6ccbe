"""AMD next to every Captum baseline on the same pair distance, scored against ground-truth masks.

Every method explains the same number, the model's distance ``d(a, b)`` between two synthetic persons,
and returns the same :class:`~reidexplain.PairAttribution`; :func:`~reidexplain.compare` draws them one
row per method. The synthetic persons come with a pixel mask per attribute, so each method's map (AMD's
share-weighted heat map included) is also scored on the union of the masks of the attributes the two
persons differ in: the pointing game (is the peak inside?) and the relevance mass (which fraction of the
positive map is inside?). A map that ignores the image scores the mask's area fraction, printed as
"chance".

Run::

    python examples/compare_with_captum.py                  # reference model, a few minutes
    python examples/compare_with_captum.py --quick          # tiny model, seconds
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch
from _common import example_parser, fit_explainer, model_and_data, prepare

from reidexplain import (
    compare,
    create_baseline,
    list_baselines,
)
from reidexplain.metrics import exclusive_union_mask, pointing_game, relevance_mass
from reidexplain.visualization import method_label

#: Settings per baseline; the rest use their defaults. ``--quick`` lowers the integration steps.
SETTINGS = {
    "integrated_gradients": {"n_steps": 50, "internal_batch_size": 50},
    "occlusion": {"perturbations_per_eval": 16},
    "feature_ablation": {"perturbations_per_eval": 16},
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options of the example."""
    parser = example_parser(__doc__.splitlines()[0], "compare-output")
    parser.add_argument("--pairs", type=int, default=None,
                        help="pairs the scores are averaged over (default: 20, 2 with --quick)")
    return parser.parse_args(argv)


def different_pairs(query, gallery, count: int) -> list[tuple[int, int]]:
    """``count`` query/gallery pairs of different persons whose labels differ, in a fixed order."""
    differ = (query.attributes[:, None, :] != gallery.attributes[None, :, :]).any(-1)
    other = torch.as_tensor(query.pids)[:, None] != torch.as_tensor(gallery.pids)[None, :]
    candidates = (differ & other).nonzero().tolist()
    # Spread over the whole split rather than the first query's gallery.
    step = max(1, len(candidates) // max(count, 1))
    return [tuple(c) for c in candidates[::step][:count]]


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the comparison; returns the per-method scores (for tests)."""
    args = parse_args(argv)
    out = prepare(args)
    model, splits = model_and_data(args)
    train, query, gallery = splits["train"], splits["query"], splits["gallery"]

    explainer = fit_explainer(model, train, args)
    print(f"AMD: fitted, {len(explainer.history)} epochs")

    pairs = different_pairs(query, gallery, args.pairs or (2 if args.quick else 20))
    qa = torch.stack([query[i]["image"] for i, _ in pairs])
    gb = torch.stack([gallery[j]["image"] for _, j in pairs])
    masks_a = torch.stack([query[i]["masks"] for i, _ in pairs])
    masks_b = torch.stack([gallery[j]["masks"] for _, j in pairs])
    attrs_a = query.attributes[[i for i, _ in pairs]]
    attrs_b = gallery.attributes[[j for _, j in pairs]]
    truth = (exclusive_union_mask(attrs_a, attrs_b, masks_a), exclusive_union_mask(attrs_b, attrs_a, masks_b))
    chance = float(torch.cat([t.flatten(1).float().mean(1) for t in truth]).mean())
    print(f"pairs: {len(pairs)} of different persons; ground truth: the masks of the attributes they differ in")

    methods: dict[str, object] = {"amd": explainer}
    for name in list_baselines():
        options = dict(SETTINGS.get(name, {}))
        if args.quick and name == "integrated_gradients":
            options["n_steps"] = 8
        methods[name] = create_baseline(name, model, **options)

    results, scores = {}, {}
    print(f"{'method':<22s} {'seconds/pair':>12s} {'pointing game':>14s} {'relevance mass':>15s}")
    for name, method in methods.items():
        start = time.perf_counter()
        attribution = method.explain((qa, gb))
        seconds = (time.perf_counter() - start) / len(pairs)
        heat = attribution.heatmaps
        hits = torch.cat([pointing_game(h, t, ties="expected") for h, t in zip(heat, truth, strict=True)])
        mass = torch.cat([relevance_mass(h, t) for h, t in zip(heat, truth, strict=True)])
        scores[name] = {"seconds": seconds, "pointing_game": float(hits.nanmean()),
                        "relevance_mass": float(mass.nanmean())}
        results[method_label(name)] = attribution[0]
        print(f"{method_label(name):<22s} {seconds:12.3f} {scores[name]['pointing_game']:14.3f} "
              f"{scores[name]['relevance_mass']:15.3f}")
    print(f"{'chance (mask area)':<22s} {'':>12s} {chance:14.3f} {chance:15.3f}")

    exclusive = [train.schema.label(n) for n, x, y in zip(train.schema.names, attrs_a[0], attrs_b[0], strict=True)
                 if x != y]
    fig, _ = compare(results, top_k=3, title=f"labels differ in: {', '.join(exclusive)}")
    figure = out / "compare_with_captum.png"
    fig.savefig(figure, dpi=100, bbox_inches="tight")
    print(f"wrote {figure}")
    return {"scores": scores, "chance": chance, "figure": figure}


if __name__ == "__main__":
    main()
