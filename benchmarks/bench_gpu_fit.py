"""AMD fit at Market-1501 scale on a GPU: steps per second, memory, time to ADRE <= 3 %.

Sized like Market-1501's training split (12,936 images of 751 identities, 256x128) with reid-strong-
baseline's ResNet-50 BNNeck as the target, on synthetic persons (no dataset is downloaded). The target
is first trained by the zoo's trainer for ``--train-epochs`` epochs, then the paper's recipe is fitted
with PK batches of 6 x 4 for ``--steps`` steps. Reported: optimiser steps per second of the AMD fit,
peak GPU memory (``torch.cuda.max_memory_allocated``) and the fit's wall-clock time until its running
ADRE over an epoch's training pairs first reaches 3 % (``null`` if it does not).

Usage::

    python benchmarks/bench_gpu_fit.py --device cuda                      # Market-1501 size
    python benchmarks/bench_gpu_fit.py --device cuda --precision bfloat16 --channels-last
    python benchmarks/bench_gpu_fit.py --tiny                             # seconds on the CPU (tests)
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from reidexplain import Explainer
from reidexplain.data import PKSampler, synthetic_splits
from reidexplain.zoo import create_model, train_reid_model

RESULTS = Path(__file__).resolve().parent / "results" / "gpu_fit.json"
MARKET = {"num_train_ids": 751, "images_per_id": 17, "image_size": (256, 128)}  # 12,767 images ~ 12,936
TINY = {"num_train_ids": 8, "images_per_id": 4, "image_size": (64, 32)}


def _items(dataset: Any) -> list[dict[str, Any]]:
    keys = ("image", "pid", "attributes")
    return [{k: dataset[i][k] for k in keys} for i in range(len(dataset))]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns what it writes to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a few images on the CPU (for the tests)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default=None, help="zoo target (default bot_resnet50; tiny: bot_resnet18)")
    parser.add_argument("--train-epochs", type=int, default=None, help="target training (default 10; tiny 1)")
    parser.add_argument("--steps", type=int, default=None, help="AMD fit steps (default 2000; tiny 2)")
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    sizes = TINY if args.tiny else MARKET
    name = args.model or ("bot_resnet18" if args.tiny else "bot_resnet50")
    train_epochs = args.train_epochs or (1 if args.tiny else 10)
    steps = args.steps or (2 if args.tiny else 2000)

    started = time.perf_counter()
    splits = synthetic_splits(num_train_ids=sizes["num_train_ids"], num_test_ids=2,
                              images_per_id=sizes["images_per_id"], image_size=sizes["image_size"], seed=0,
                              with_masks=False)
    train = _items(splits["train"])
    data_seconds = time.perf_counter() - started

    torch.manual_seed(args.seed)
    target = create_model(name).to(device)
    start = time.perf_counter()
    target = train_reid_model(target, [(it["image"], it["pid"]) for it in train], epochs=train_epochs,
                              p=16 if not args.tiny else 4, k=4 if not args.tiny else 2, seed=args.seed,
                              progress=False, device=device)
    train_seconds = time.perf_counter() - start

    loader = DataLoader(train, batch_sampler=PKSampler([it["pid"] for it in train], p=6 if not args.tiny else 4,
                                                       k=4 if not args.tiny else 2, seed=args.seed))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    explainer = Explainer(target, attributes="market1501", device=device)
    start = time.perf_counter()
    explainer.fit(loader, progress=False, seed=args.seed, target_steps=steps, max_epochs=10_000,
                  precision=args.precision, channels_last=args.channels_last)
    fit_seconds = time.perf_counter() - start
    history = explainer.history
    done = int(history[-1]["steps"])
    reached = next((h["seconds"] for h in history if h["adre"] <= 3.0), None)
    row = {
        "model": name, "device": str(device), "precision": args.precision, "channels_last": args.channels_last,
        "train_images": len(train), "image_size": list(sizes["image_size"]), "target_train_epochs": train_epochs,
        "target_train_seconds": round(train_seconds, 1), "fit_steps": done, "fit_seconds": round(fit_seconds, 1),
        "steps_per_second": round(done / max(fit_seconds, 1e-9), 3),
        "peak_memory_gb": (round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda"
                           else None),
        "seconds_to_adre_3": None if reached is None else round(reached, 1),
        "final_epoch_adre": round(history[-1]["adre"], 2), "data_seconds": round(data_seconds, 1),
    }
    result = {"benchmark": "gpu_fit", "tiny": args.tiny, "torch": torch.__version__, "machine": platform.machine(),
              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None, "results": [row]}
    print(json.dumps(row))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
