"""What the examples share: their common options, the target model and data, and the AMD fit.

Each example (``quickstart.py``, ``compare_with_captum.py``, ``explain_ranking.py``, ``market1501.py``)
imports this module from its own folder; run them from anywhere as ``python examples/<name>.py``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from reidexplain import Explainer, PKSampler, create_model, load_reference_model, synthetic_splits
from reidexplain.zoo import reference_splits, train_reid_model

DEFAULT_SIZE = (128, 64)


def example_parser(description: str, out: str,
                   size_help: str = "image size (default: 128 64, the reference model's)") -> argparse.ArgumentParser:
    """A parser with the options every example has: ``--quick``, ``--out``, ``--image-size``,
    ``--fit-seconds``, ``--seed`` and ``--threads``; the example adds its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny model and data: seconds, not minutes")
    parser.add_argument("--out", default=out, help=f"output folder (default: ./{out})")
    parser.add_argument("--image-size", type=int, nargs=2, default=None, metavar=("H", "W"), help=size_help)
    parser.add_argument("--fit-seconds", type=float, default=120.0,
                        help="time budget of the interpreter fit (ignored with --quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return parser


def prepare(args: argparse.Namespace) -> Path:
    """Apply ``--threads`` and create the output folder; returns it."""
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def image_size(args: argparse.Namespace) -> tuple[int, int]:
    """``--image-size`` or the default 128 x 64."""
    return tuple(args.image_size) if args.image_size else DEFAULT_SIZE


def quick_model(train: Any, seed: int) -> torch.nn.Module:
    """A ``reidnet_small`` trained for 3 epochs on ``train`` (seconds on a CPU)."""
    torch.manual_seed(seed)
    return train_reid_model(create_model("reidnet_small"), train, epochs=3, p=8, k=4, seed=seed,
                            progress=False, cache_images=True)


def model_and_data(args: argparse.Namespace, **split_options: Any) -> tuple[torch.nn.Module, dict]:
    """The target model and the synthetic train/query/gallery splits it is explained on.

    ``--quick``: 16 persons and a model trained on them here; otherwise the zoo's reference model and
    its splits. ``split_options`` go to the split factories (e.g. ``with_masks=False``).
    """
    size = image_size(args)
    if args.quick:
        splits = synthetic_splits(16, 8, 4, image_size=size, seed=args.seed, **split_options)
        start = time.perf_counter()
        model = quick_model(splits["train"], args.seed)
        print(f"model: reidnet_small trained for 3 epochs on 16 persons in {time.perf_counter() - start:.1f} s")
    else:
        print("model: the zoo's reference model (trained once on first use, then cached)")
        model = load_reference_model()
        splits = reference_splits(image_size=size, **split_options)
    return model.eval(), splits


def fit_explainer(model: torch.nn.Module, train: Any, args: argparse.Namespace, quick_epochs: int = 3,
                  **options: Any) -> Explainer:
    """Fit AMD on identity-balanced batches of ``train``: ``quick_epochs`` with ``--quick``, else within
    ``--fit-seconds``. ``options`` go to :class:`~reidexplain.Explainer`."""
    # Identity-balanced batches: pairs of the same person as well as of different persons.
    loader = DataLoader(train, batch_sampler=PKSampler(train.pids, p=6, k=4, seed=args.seed))
    explainer = Explainer(model, attributes=train.schema, **options)
    if args.quick:
        explainer.fit(loader, epochs=quick_epochs, progress=False, seed=args.seed)
    else:
        explainer.fit(loader, seed=args.seed, max_seconds=args.fit_seconds)
    return explainer
