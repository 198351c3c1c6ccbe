"""Make ``docs/assets/home.png``: AMD's explanation of one pair next to two Captum baselines.

Everything comes from the project's own code: the zoo's cached reference model
(``reidexplain.zoo.load_reference_model``; trained once if not cached), its synthetic persons
(``reidexplain.zoo.reference_splits``), an AMD interpreter fitted with the library's defaults
(``reidexplain.Explainer``; only the time budget is set here), Integrated Gradients and Grad-CAM on the
same pair distance (``reidexplain.create_baseline``) and the figure (``reidexplain.compare``).

The pair is chosen by a fixed rule that does not look at any explanation: the first query (in split
order) and gallery image of two different test persons whose labels differ in 2 to 4 attributes, one of
them an upper-body colour (visible at a glance).

Run from the repository root (about 3 minutes on a shared 2-core machine, one thread)::

    .venv/bin/python docs/scripts/make_home_figure.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from reidexplain import Explainer, PKSampler, compare, create_baseline, load_reference_model
from reidexplain.zoo import reference_splits


def pick_pair(query, gallery) -> tuple[int, int, list[str]]:
    """The first pair of different persons differing in 2-4 attributes, one an upper-body colour."""
    names = query.schema.names
    qa, ga = query.attributes, gallery.attributes
    for i in range(len(query)):
        for j in range(len(gallery)):
            if query.pids[i] == gallery.pids[j]:
                continue
            exclusive = [n for n, x, y in zip(names, qa[i], ga[j], strict=True) if x != y]
            if 2 <= len(exclusive) <= 4 and any(n.startswith("up") and n != "up" for n in exclusive):
                return i, j, exclusive
    raise RuntimeError("no pair matches the rule")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/assets/home.png")
    parser.add_argument("--fit-seconds", type=float, default=150.0, help="time budget of the AMD fit")
    parser.add_argument("--epochs", type=int, default=None,
                        help="fixed epochs instead of the library's default (then capped by --fit-seconds)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()

    model = load_reference_model()
    splits = reference_splits()
    train, query, gallery = splits["train"], splits["query"], splits["gallery"]
    loader = DataLoader(train, batch_sampler=PKSampler(train.pids, p=6, k=4, seed=args.seed))
    t0 = time.perf_counter()
    explainer = Explainer(model, attributes=train.schema).fit(
        loader, epochs=args.epochs, seed=args.seed, max_seconds=args.fit_seconds, progress=False)
    steps = int(explainer.history[-1].get("steps", 0))  # cumulative over epochs
    print(f"AMD: {explainer.mode}, {len(explainer.history)} epochs, {steps} steps in "
          f"{time.perf_counter() - t0:.0f} s; last epoch ADRE {explainer.history[-1]['adre']:.2f} %")

    i, j, exclusive = pick_pair(query, gallery)
    labels = [train.schema.label(n) for n in exclusive]
    print(f"pair: query {i} (person {query.pids[i]}), gallery {j} (person {gallery.pids[j]}); "
          f"labels differ in {labels}")
    pair = (query[i]["image"], gallery[j]["image"])
    rows = {
        "AMD": explainer.explain(pair),
        "Integrated Gradients": create_baseline("integrated_gradients", model, n_steps=50,
                                                internal_batch_size=50).explain(pair),
        "Grad-CAM": create_baseline("grad_cam", model).explain(pair),
    }
    amd = rows["AMD"]
    shares = amd.shares[0]
    on_exclusive = float(sum(shares[train.schema.index(n)] for n in exclusive))
    print(f"d = {float(amd.distance[0]):.3f}, d_hat = {float(amd.reconstructed[0]):.3f}; top 5: "
          + ", ".join(f"{label} {100 * s:.1f} %" for label, _, s in amd.top(5)))
    print(f"share of d_hat on the {len(exclusive)} exclusive attributes: {100 * on_exclusive:.1f} % "
          f"(uniform shares would give {100 * len(exclusive) / len(shares):.1f} %); "
          f"spread of the shares: {100 * float(shares.min()):.2f} .. {100 * float(shares.max()):.2f} %")

    fig, _ = compare(rows, top_k=3, n_bars=8,
                     title=f"Why are these two persons far apart? Their labels differ in: {', '.join(labels)}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90, bbox_inches="tight")
    print(f"wrote {out} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
