"""Fit and evaluate an explainer on Market-1501 as it lies on disk.

With ``--root /path/to/Market-1501-v15.09.15`` (``bounding_box_train/``, ``query/``,
``bounding_box_test/`` and ``market_attribute.mat``) the real dataset is read with
:class:`~reidexplain.Market1501`. Without ``--root`` the synthetic persons are first written in exactly
that layout with :func:`~reidexplain.write_market1501` (JPEG files named ``PPPP_cCsS_FFFFFF_NN.jpg`` and
a ``market_attribute.mat``; ``pid_offset=1`` because pid 0 means "distractor" on disk) and read back
the same way, so the script runs anywhere. An AMD explainer is fitted on the training split and
evaluated on all query x gallery pairs: X-mAP_e, X-mAP_c, ADRE and the retrieval scores with the
model's distance ``d`` and with the interpreter's ``d_hat``.

The model is ``--model MODULE:FACTORY`` (a function returning your ``nn.Module``), else the zoo's
reference model (trained on synthetic persons: on real images it is only a stand-in), or with
``--quick`` a tiny model trained for seconds on the training split just read.

Run::

    python examples/market1501.py --root ~/data/Market-1501-v15.09.15 --model mypkg.models:build
    python examples/market1501.py                   # synthetic persons in the Market-1501 layout
    python examples/market1501.py --quick           # tiny: seconds
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from reidexplain import (
    Explainer,
    Market1501,
    PKSampler,
    create_model,
    load_reference_model,
    synthetic_splits,
    write_market1501,
)
from reidexplain.zoo import reference_splits, train_reid_model


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options of the example."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="Market-1501 folder (default: write synthetic persons)")
    parser.add_argument("--model", default=None, help="MODULE:FACTORY returning the target nn.Module")
    parser.add_argument("--quick", action="store_true", help="tiny model and data: seconds, not minutes")
    parser.add_argument("--out", default="market1501-output", help="output folder (default: ./market1501-output)")
    parser.add_argument("--image-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="resize images to this size (default: 128 64, Market-1501's own)")
    parser.add_argument("--fit-seconds", type=float, default=120.0,
                        help="time budget of the interpreter fit (ignored with --quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return parser.parse_args(argv)


def load_factory_model(spec: str) -> torch.nn.Module:
    """Call ``package.module:factory`` and check that it returns a module."""
    module_name, _, name = spec.partition(":")
    if not name:
        raise SystemExit(f"--model: expected MODULE:FACTORY, got {spec!r}")
    model = getattr(importlib.import_module(module_name), name)()
    if not isinstance(model, torch.nn.Module):
        raise SystemExit(f"--model: {spec}() returned {type(model).__name__}, not a torch.nn.Module")
    return model


def synthetic_root(args: argparse.Namespace, size: tuple[int, int]) -> Path:
    """Write synthetic persons in the Market-1501 layout under ``--out``; returns the folder."""
    root = Path(args.out) / "market1501-synthetic"
    if args.quick:
        splits = synthetic_splits(16, 8, 4, image_size=size, seed=args.seed, with_masks=False)
    else:
        splits = reference_splits(image_size=size, with_masks=False)
    start = time.perf_counter()
    # Synthetic pids start at 0, which Market-1501's file names reserve for distractors.
    write_market1501(splits, root, progress=not args.quick, pid_offset=1, overwrite=True)
    count = sum(len(s) for s in splits.values())
    print(f"wrote {count} synthetic images in the Market-1501 layout to {root} in "
          f"{time.perf_counter() - start:.1f} s")
    return root


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the example; returns the metrics (for tests)."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    size = tuple(args.image_size) if args.image_size else (128, 64)
    root = Path(args.root).expanduser() if args.root else synthetic_root(args, size)

    train, query, gallery = (Market1501(root, split, image_size=size) for split in ("train", "query", "gallery"))
    for split in (train, query, gallery):
        print(f"read {split!r}")

    if args.model:
        model = load_factory_model(args.model)
        print(f"model: {args.model}")
    elif args.quick:
        torch.manual_seed(args.seed)
        model = train_reid_model(create_model("reidnet_small"), train, epochs=3, p=8, k=4, seed=args.seed,
                                 progress=False, cache_images=True)
        print("model: reidnet_small trained for 3 epochs on the training split (--quick)")
    else:
        model = load_reference_model()
        print("model: the zoo's reference model (trained on synthetic persons)")
    model.eval()

    loader = DataLoader(train, batch_sampler=PKSampler(train.pids, p=6, k=4, seed=args.seed))
    explainer = Explainer(model, attributes=train.schema)
    start = time.perf_counter()
    if args.quick:
        explainer.fit(loader, epochs=2, progress=False, seed=args.seed)
    else:
        explainer.fit(loader, seed=args.seed, max_seconds=args.fit_seconds)
    print(f"explainer: fitted in {time.perf_counter() - start:.1f} s ({len(explainer.history)} epochs)")

    start = time.perf_counter()
    metrics = explainer.evaluate(DataLoader(query, batch_size=64), DataLoader(gallery, batch_size=64),
                                 progress=not args.quick)
    print(f"evaluated {int(metrics['num_pairs'])} query x gallery pairs in {time.perf_counter() - start:.1f} s:")
    names = {
        "x_map_e": "X-mAP_e (exclusive attributes ranked first, %)",
        "x_map_c": "X-mAP_c (common attributes ranked last, %)",
        "adre": "ADRE (|d - d_hat| / d, %)",
        "rank1_target": "Rank-1 with the model's d (%)",
        "rank1_interpreter": "Rank-1 with the interpreter's d_hat (%)",
        "map_target": "mAP with d (%)",
        "map_interpreter": "mAP with d_hat (%)",
    }
    for key, label in names.items():
        if key in metrics:
            print(f"  {label:<48s} {metrics[key]:8.2f}")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    explainer.save(out / "interpreter.pt")
    print(f"wrote {out / 'metrics.json'} and {out / 'interpreter.pt'}")
    return metrics


if __name__ == "__main__":
    main()
