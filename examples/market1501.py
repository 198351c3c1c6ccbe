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
from _common import example_parser, fit_explainer, image_size, prepare, quick_model
from torch.utils.data import DataLoader

from reidexplain import (
    Market1501,
    load_reference_model,
    synthetic_splits,
    write_market1501,
)
from reidexplain.zoo import reference_splits


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options of the example."""
    parser = example_parser(__doc__.splitlines()[0], "market1501-output",
                            size_help="resize images to this size (default: 128 64, Market-1501's own)")
    parser.add_argument("--root", default=None, help="Market-1501 folder (default: write synthetic persons)")
    parser.add_argument("--model", default=None, help="MODULE:FACTORY returning the target nn.Module")
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
    out = prepare(args)
    size = image_size(args)
    root = Path(args.root).expanduser() if args.root else synthetic_root(args, size)

    train, query, gallery = (Market1501(root, split, image_size=size) for split in ("train", "query", "gallery"))
    for split in (train, query, gallery):
        print(f"read {split!r}")

    if args.model:
        model = load_factory_model(args.model)
        print(f"model: {args.model}")
    elif args.quick:
        model = quick_model(train, args.seed)
        print("model: reidnet_small trained for 3 epochs on the training split (--quick)")
    else:
        model = load_reference_model()
        print("model: the zoo's reference model (trained on synthetic persons)")
    model.eval()

    start = time.perf_counter()
    explainer = fit_explainer(model, train, args, quick_epochs=2)
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
