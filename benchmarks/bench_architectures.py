"""Cost of explaining the architectures practitioners run: AMD against Integrated Gradients, per family.

For every architecture of the zoo's practitioner layouts (random-initialised: the cost of a forward pass
does not depend on the weights) at 128x64, one process, one torch thread:

* how the target is split (adapter family, layer, grid);
* an AMD fit of ``--steps`` optimiser steps on PK batches of 16 synthetic persons: seconds per step;
* ``explain`` of one pair, in milliseconds and in target forwards (one forward of the two images);
* the same with ``trunk="shared"`` (the interpreter reads the target's own feature grid);
* Captum's Integrated Gradients (50 steps) on the same pair, and its time over AMD's.

Explanation quality after the default fit (ADRE, X-mAP_e) needs trained targets and 600-step fits; it is
measured on the reference model by ``bench_explainer.py`` and is not part of this script.

Usage::

    python benchmarks/bench_architectures.py            # all architectures (about 10 minutes on 2 cores)
    python benchmarks/bench_architectures.py --quick    # two small ones, a few seconds
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch
from reidbench._timing import interleaved_medians, write_results

from reidexplain import Explainer
from reidexplain.baselines import IntegratedGradientsPair
from reidexplain.data import PKSampler
from reidexplain.zoo import create_model, reference_splits

RESULTS = Path(__file__).resolve().parent / "results" / "architectures.json"

ARCHITECTURES = {
    "reidnet_small": "the reference model's layout (timm-style forward_features/forward_head)",
    "bot_resnet50": "reid-strong-baseline: ResNet-50, last stride 1, BNNeck",
    "osnet_x1_0": "OSNet x1.0 (torchreid's layout)",
    "vit_reid_small": "ViT-S/16 with a BNNeck on the class token",
    "transreid_tiny": "TransReID-style overlapping patches (16x16 every 12 px)",
    "clip_vit_reid_tiny": "CLIP's visual transformer layout (sequence-first blocks, projection)",
}
QUICK = ("reidnet_small", "clip_vit_reid_tiny")


def measure(name: str, train: list[dict[str, Any]], steps: int, repeats: int, seed: int = 0) -> dict[str, Any]:
    """Split, fit for ``steps`` steps and time one architecture."""
    torch.manual_seed(seed)
    model = create_model(name).eval()
    loader = torch.utils.data.DataLoader(
        train, batch_sampler=PKSampler([item["pid"] for item in train], p=4, k=4, seed=seed))
    explainer = Explainer(model, attributes="market1501")
    start = time.perf_counter()
    explainer.fit(loader, progress=False, seed=seed, target_steps=steps, max_epochs=steps)
    fit_seconds = time.perf_counter() - start
    # The same with the target's own trunk shared (no trunk of the interpreter's own): one pass less.
    shared = Explainer(model, attributes="market1501", trunk="shared")
    shared.fit(loader, progress=False, seed=seed, target_steps=1, max_epochs=1)
    done = int(explainer.history[-1]["steps"])
    a, b = train[0]["image"], train[5]["image"]
    pair = torch.stack([a, b])
    integrated = IntegratedGradientsPair(model, n_steps=50)

    def forward() -> None:
        with torch.no_grad():
            model(pair)

    timing = interleaved_medians({"forward": forward, "amd": lambda: explainer.explain((a, b)),
                       "shared": lambda: shared.explain((a, b)), "ig": lambda: integrated.explain((a, b))},
                      repeats)
    adapter = explainer.adapter
    return {
        "architecture": name, "layout": ARCHITECTURES[name], "adapter": adapter.kind, "layer": adapter.layer,
        "grid": "x".join(str(s) for s in adapter.grid_shape or ()),
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "fit_steps": done, "fit_step_s": round(fit_seconds / max(done, 1), 3),
        "forward_ms": round(timing["forward"] * 1e3, 2), "explain_ms": round(timing["amd"] * 1e3, 2),
        "explain_forwards": round(timing["amd"] / timing["forward"], 2),
        "explain_shared_forwards": round(timing["shared"] / timing["forward"], 2),
        "ig50_ms": round(timing["ig"] * 1e3, 1), "ig_over_amd": round(timing["ig"] / timing["amd"], 1),
        "ig_over_amd_shared": round(timing["ig"] / timing["shared"], 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns what it writes to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two small architectures, tiny fits")
    parser.add_argument("--architectures", nargs="+", default=None, choices=list(ARCHITECTURES))
    parser.add_argument("--steps", type=int, default=None, help="AMD fit steps per architecture (default 20)")
    parser.add_argument("--repeats", type=int, default=None, help="timing repeats (default 10)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    names = args.architectures or (list(QUICK) if args.quick else list(ARCHITECTURES))
    steps = args.steps or (2 if args.quick else 20)
    repeats = args.repeats or (2 if args.quick else 10)
    splits = reference_splits(num_train_ids=8 if args.quick else 24, num_test_ids=2, images_per_id=4,
                              with_masks=False)
    train = [{k: splits["train"][i][k] for k in ("image", "pid", "attributes")} for i in range(len(splits["train"]))]
    rows = []
    for name in names:
        row = measure(name, train, steps, repeats)
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {"benchmark": "architectures", "quick": args.quick, "image_size": [128, 64], "torch_threads": 1,
              "torch": torch.__version__, "machine": platform.machine(), "results": rows,
              "note": "random-initialised targets; CPU timings on a machine shared with other processes"}
    write_results(args.out, result)
    return result


if __name__ == "__main__":
    main()
