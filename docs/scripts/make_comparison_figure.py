"""Make ``docs/assets/comparison.png``: AMD next to the Captum baselines on one synthetic pair.

Everything comes from the project's own code: synthetic persons (``reidexplain.data.synthetic_splits``),
a small ReID model trained for a few epochs (``reidexplain.zoo``), an AMD interpreter fitted on the
training persons' attribute labels (``reidexplain.explainer.Explainer``), the baselines
(``reidexplain.baselines``) and the figure (``reidexplain.visualization.compare``). The pair is two test
persons (never seen in training) who differ in a few attributes.

Run from the repository root (a few minutes on 2 CPU cores; one thread)::

    .venv/bin/python docs/scripts/make_comparison_figure.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from reidexplain.baselines import create_baseline
from reidexplain.data import PKSampler, synthetic_splits
from reidexplain.explainer import Explainer
from reidexplain.visualization import compare, method_label
from reidexplain.zoo import create_model, train_reid_model

BASELINES = {
    "integrated_gradients": {"n_steps": 50, "internal_batch_size": 50},
    "saliency": {},
    "occlusion": {"window": (3, 16, 16), "stride": (3, 8, 8), "perturbations_per_eval": 16},
    "grad_cam": {"layer": "auto"},
    "feature_ablation": {"cell": 8, "perturbations_per_eval": 16},
}


def pick_pair(query, gallery, min_exclusive: int, max_exclusive: int) -> tuple[int, int]:
    """The first query/gallery pair of different persons with a few exclusive attributes."""
    for i in range(len(query)):
        a = query[i]
        for j in range(len(gallery)):
            if gallery.pids[j] == a["pid"]:
                continue
            differ = int((gallery[j]["attributes"] != a["attributes"]).sum())
            if min_exclusive <= differ <= max_exclusive:
                return i, j
    raise RuntimeError("no pair with the requested number of exclusive attributes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/assets/comparison.png")
    # Fixed epochs rather than time budgets, so that the figure is the same on every machine.
    parser.add_argument("--train-ids", type=int, default=64, help="training persons")
    parser.add_argument("--reid-epochs", type=int, default=12, help="ReID model training epochs")
    parser.add_argument("--amd-epochs", type=int, default=25, help="AMD interpreter fitting epochs")
    parser.add_argument("--amd-lr", type=float, default=1e-4, help="AMD trunk learning rate")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--reference", action="store_true",
                        help="explain the zoo's cached reference model (trained on first use: slow)")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    start = time.perf_counter()

    if args.reference:
        from reidexplain.zoo import load_reference_model, reference_splits

        splits = reference_splits()
        model = load_reference_model(progress=True).eval()
        print("model: the zoo's reference model (reidnet_small)")
    else:
        splits = synthetic_splits(args.train_ids, 16, 6, domain="market", seed=0)
    schema = splits["train"].schema
    # AMD is fitted on the first `train_ids` training persons (items are grouped by person).
    n_train = sum(1 for pid in splits["train"].pids if pid < args.train_ids)
    train_pids = splits["train"].pids[:n_train]
    train = Subset(splits["train"], range(n_train))
    print(f"data: synthetic persons, {n_train} training images, {len(schema)} attributes")
    if not args.reference:
        t0 = time.perf_counter()
        model = create_model("reidnet_small")
        model = train_reid_model(model, splits["train"], epochs=args.reid_epochs, p=16, k=4, progress=False)
        model.eval()
        print(f"model: reidnet_small, {args.reid_epochs} epochs in {time.perf_counter() - t0:.0f} s")

    t0 = time.perf_counter()
    loader = DataLoader(train, batch_sampler=PKSampler(train_pids, p=8, k=4, seed=0))
    explainer = Explainer(model, attributes=schema).fit(
        loader, epochs=args.amd_epochs, lr=args.amd_lr, progress=False)
    last = explainer.history[-1] if explainer.history else {}
    print(f"AMD: {args.amd_epochs} epochs in {time.perf_counter() - t0:.0f} s; last epoch "
          + ", ".join(f"{k} {v:.3g}" for k, v in last.items()))

    i, j = pick_pair(splits["query"], splits["gallery"], 3, 6)
    a, b = splits["query"][i], splits["gallery"][j]
    exclusive = [n for n, x, y in zip(schema.names, a["attributes"], b["attributes"], strict=True) if x != y]
    print(f"pair: query {i} (pid {a['pid']}) and gallery {j} (pid {b['pid']}), exclusive: {exclusive}")
    pair = (a["image"], b["image"])

    results = {"AMD": explainer.explain(pair)}
    for name, kwargs in BASELINES.items():
        t0 = time.perf_counter()
        results[method_label(name)] = create_baseline(name, model, **kwargs).explain(pair)
        print(f"{name}: {time.perf_counter() - t0:.2f} s")
    amd = results["AMD"]
    print("AMD top attributes: " + ", ".join(f"{n} {100 * s:.0f}%" for n, _, s in amd.top(5)))
    print(f"d = {float(amd.distance[0]):.3f}, d_hat = {float(amd.reconstructed[0]):.3f}")

    fig, _ = compare(results, top_k=args.top_k,
                     title=f"Why are these two persons far apart? Exclusive attributes: {', '.join(exclusive)}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    print(f"wrote {out} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
