"""Make ``docs/assets/recipes.png``: the paper's recipe and the default recipe side by side on the same pairs.

Both interpreters are fitted to the zoo's cached reference model (``reidexplain.zoo.load_reference_model``)
on its synthetic training persons with the same loader, seed and time budget; the pairs are the demo's
(``reidexplain.demo.choose_pairs``: a fixed rule that does not look at any explanation): the same person
seen by another camera, two people who differ in the fewest attributes, and two who differ in the most.
Each pair is one figure of ``reidexplain.compare`` (a row per recipe); the three are stacked.

Run from the repository root (about 8 minutes on a shared 2-core machine, one thread)::

    .venv/bin/python docs/scripts/make_recipes_figure.py
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from reidexplain import Explainer, PKSampler, compare, load_reference_model
from reidexplain.demo import choose_pairs
from reidexplain.zoo import reference_splits

RECIPES = {"AMD, the paper's recipe (amd)": "amd", "AMD, the default (amd-subspace)": "amd-subspace"}


def _png(fig: plt.Figure, dpi: int) -> np.ndarray:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/assets/recipes.png")
    parser.add_argument("--fit-seconds", type=float, default=150.0, help="time budget of each fit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dpi", type=int, default=80)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    model = load_reference_model()
    splits = reference_splits()
    train, query, gallery = splits["train"], splits["query"], splits["gallery"]
    explainers = {}
    for label, recipe in RECIPES.items():
        loader = DataLoader(train, batch_sampler=PKSampler(train.pids, p=6, k=4, seed=args.seed))
        t0 = time.perf_counter()
        explainers[label] = Explainer(model, attributes=train.schema, recipe=recipe).fit(
            loader, seed=args.seed, max_seconds=args.fit_seconds, progress=False)
        print(f"{label}: {explainers[label].history[-1].get('steps', 0):.0f} steps in "
              f"{time.perf_counter() - t0:.0f} s")
    panels = []
    for kind, qi, gi in choose_pairs(query, gallery):
        pair = (query[qi]["image"], gallery[gi]["image"])
        rows = {label: explainer.explain(pair) for label, explainer in explainers.items()}
        for label, row in rows.items():
            print(f"{kind} | {label}: d = {float(row.distance[0]):.3f}; {row.summary(k=3)}")
        fig, _ = compare(rows, top_k=3, n_bars=8, title=kind)
        panels.append(_png(fig, args.dpi))
    width = max(p.shape[1] for p in panels)
    padded = [np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0)), constant_values=255) for p in panels]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(padded, axis=0)).save(out)
    print(f"wrote {out} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
