"""Quickstart: why does a ReID model find two persons far apart?

Steps: synthetic persons -> a trained ReID model -> ``Explainer(model).fit(loader)`` (an AMD interpreter
distilled from the model) -> the explanation of one pair of different persons: the model's distance
``d``, the interpreter's ``d_hat``, the three attributes that contribute most, and a figure with the
attribute maps and the shares of ``d_hat``.

By default the model is the zoo's reference model (``load_reference_model()``: loaded from the cache in
seconds, or trained once, a few minutes on a laptop CPU). ``--quick`` trains a tiny model on a tiny split
for a few seconds instead and fits the interpreter for a few epochs: the numbers then only show that
everything runs, not what a good explanation looks like.

Run::

    python examples/quickstart.py                  # reference model, about 2-3 minutes
    python examples/quickstart.py --quick          # a few seconds
    python examples/quickstart.py --quick --image-size 64 32 --out /tmp/quickstart
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch
from _common import example_parser, fit_explainer, model_and_data, prepare


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options of the example."""
    return example_parser(__doc__.splitlines()[0], "quickstart-output").parse_args(argv)


def pick_pair(query, gallery, fewest: int = 2, most: int = 5) -> tuple[int, int, list[str]]:
    """The first query/gallery pair of different persons whose labels differ in a few attributes."""
    qa, ga = query.attributes, gallery.attributes
    differ = (qa[:, None, :] != ga[None, :, :]).sum(-1)
    other = torch.as_tensor(query.pids)[:, None] != torch.as_tensor(gallery.pids)[None, :]
    ok = other & (differ >= fewest) & (differ <= most)
    if not ok.any():
        ok = other
    qi, gi = (int(v) for v in ok.nonzero()[0])
    exclusive = [query.schema.label(n) for n, x, y in zip(query.schema.names, qa[qi], ga[gi], strict=True)
                 if x != y]
    return qi, gi, exclusive


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the quickstart; returns the printed numbers (for tests)."""
    args = parse_args(argv)
    out = prepare(args)
    model, splits = model_and_data(args)
    train = splits["train"]
    print(f"data: {len(train)} synthetic training images of {len(set(train.pids))} persons, "
          f"{tuple(train[0]['image'].shape[1:])} pixels, {len(train.schema)} attributes")

    start = time.perf_counter()
    explainer = fit_explainer(model, train, args)
    last = explainer.history[-1]
    print(f"explainer: {explainer.mode} AMD fitted in {time.perf_counter() - start:.1f} s "
          f"({len(explainer.history)} epochs, training ADRE {last['adre']:.2f} %)")

    query, gallery = splits["query"], splits["gallery"]
    qi, gi, exclusive = pick_pair(query, gallery)
    print(f"pair: query {qi} (person {query.pids[qi]}) and gallery {gi} (person {gallery.pids[gi]}); "
          f"labels differ in: {', '.join(exclusive)}")
    attribution = explainer.explain((query[qi]["image"], gallery[gi]["image"]))
    d, d_hat = float(attribution.distance[0]), float(attribution.reconstructed[0])
    print(f"distance d = {d:.4f}, interpreter d_hat = {d_hat:.4f}")
    print("top 3 attributes (contribution, share of d_hat):")
    top = attribution.top(3)
    for label, contribution, share in top:
        print(f"  {label:<28s} {contribution:8.4f} {100 * share:6.2f} %")

    fig, _ = attribution.plot(top_k=3, title=f"d = {d:.3g}; labels differ in: {', '.join(exclusive)}")
    figure = out / "quickstart.png"
    fig.savefig(figure, dpi=110, bbox_inches="tight")
    explainer.save(out / "interpreter.pt")
    print(f"wrote {figure} and {out / 'interpreter.pt'}")
    return {"distance": d, "reconstructed": d_hat, "top": top, "figure": figure}


if __name__ == "__main__":
    main()
