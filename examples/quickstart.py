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
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from reidexplain import Explainer, PKSampler, create_model, load_reference_model, synthetic_splits
from reidexplain.zoo import reference_splits, train_reid_model


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options of the example."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model and data: seconds, not minutes")
    parser.add_argument("--out", default="quickstart-output", help="output folder (default: ./quickstart-output)")
    parser.add_argument("--image-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="image size (default: 128 64, the reference model's)")
    parser.add_argument("--fit-seconds", type=float, default=120.0,
                        help="time budget of the interpreter fit (ignored with --quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return parser.parse_args(argv)


def model_and_data(args: argparse.Namespace) -> tuple[torch.nn.Module, dict]:
    """The target model and the synthetic train/query/gallery splits it is explained on."""
    size = tuple(args.image_size) if args.image_size else (128, 64)
    if args.quick:
        splits = synthetic_splits(16, 8, 4, image_size=size, seed=args.seed)
        start = time.perf_counter()
        torch.manual_seed(args.seed)
        model = train_reid_model(create_model("reidnet_small"), splits["train"], epochs=3, p=8, k=4,
                                 seed=args.seed, progress=False, cache_images=True)
        print(f"model: reidnet_small trained for 3 epochs on 16 persons in {time.perf_counter() - start:.1f} s")
    else:
        print("model: the zoo's reference model (trained once on first use, then cached)")
        model = load_reference_model()
        splits = reference_splits(image_size=size)
    return model.eval(), splits


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
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, splits = model_and_data(args)
    train = splits["train"]
    print(f"data: {len(train)} synthetic training images of {len(set(train.pids))} persons, "
          f"{tuple(train[0]['image'].shape[1:])} pixels, {len(train.schema)} attributes")

    # Identity-balanced batches: pairs of the same person as well as of different persons.
    loader = DataLoader(train, batch_sampler=PKSampler(train.pids, p=6, k=4, seed=args.seed))
    start = time.perf_counter()
    explainer = Explainer(model, attributes=train.schema)
    if args.quick:
        explainer.fit(loader, epochs=3, progress=False, seed=args.seed)
    else:
        explainer.fit(loader, seed=args.seed, max_seconds=args.fit_seconds)
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
