"""The subspace fit of ``amd-subspace`` alone: its levers scored without the maps, over fit seeds.

How much each attribute contributes under the default recipe depends only on the target's embeddings
(:func:`reidexplain.interpreter.fit_subspaces` on the training embeddings); the maps only locate. So
the split can be refitted under other options in seconds and scored on every query x gallery pair of
the test split: X-mAP_e (all attributes, and those the model uses), the differing attributes' part,
attribute agreement with the model's measured sensitivity (the figure of ``bench_truthful.py``), the
share of ignored attributes when exclusive, and the unexplained part. The training embeddings are
those of one pass of the fit's identity-balanced loader, as ``Explainer.fit`` sees them.

Run::

    .venv/bin/python benchmarks/bench_subspace_fit.py            # about 2.5 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from reidbench import get_size, to_json_ready
from reidbench._attributes import model_sensitivity
from reidbench._data import pk_loader, prepare_data, stack_images

from reidexplain.decomposition import linear_matrix_decomposition
from reidexplain.interpreter import AttributeSubspaces, SubspaceAMD, direction_usage, fit_subspaces
from reidexplain.interpreter.model_aware import attribute_usage
from reidexplain.metrics import spearman_correlation, x_map_exclusive
from reidexplain.zoo import load_reference_model

RESULTS = Path(__file__).parent / "results" / "subspace_fit.json"

VARIANTS: dict[str, dict[str, Any]] = {
    "default (amd-subspace)": {},
    "usage from directions, concentration weight 10": {"usage": "directions", "concentration_weight": 10.0},
    "usage from directions": {"usage": "directions"},
}
FIGURES = ("x_map_e", "x_map_e_used", "differing_share_percent", "attribute_agreement",
           "share_ignored_percent", "unexplained_different_percent", "unexplained_same_percent")


def _embed(model: torch.nn.Module, items: list[dict]) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(stack_images(items[i:i + 64])) for i in range(0, len(items), 64)])


def _spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman correlation over attributes (NaN when either side is constant)."""
    return float(spearman_correlation(x.float()[None], y.float()[None])[0])


def score(spaces: AttributeSubspaces, test: dict[str, torch.Tensor], sensitivity: torch.Tensor,
          uses: torch.Tensor) -> dict[str, float]:
    """The figures of one fitted split on every query x gallery pair."""
    qp, qr = spaces(test["q"])
    gp, gr = spaces(test["g"])
    dec = linear_matrix_decomposition(test["q"], qp, qr, test["g"], gp, gr, "euclidean")
    shares = dec.contributions / dec.distance.clamp_min(1e-12)[..., None]
    exclusive = test["qa"].bool()[:, None] != test["ga"].bool()[None]
    other = test["qpid"][:, None] != test["gpid"][None]
    selected = exclusive & other[..., None]
    count = selected.sum((0, 1))
    mean_exclusive = (shares * selected).sum((0, 1)) / count.clamp_min(1)
    seen = count > 0  # an attribute no test pair differs in has no share when exclusive
    attributes = shares.sum(-1)
    differing = (shares * exclusive).sum(-1) / attributes.clamp_min(1e-12)
    same = test["qpid"][:, None] == test["gpid"][None]
    return {
        "x_map_e": float(x_map_exclusive(shares, exclusive, valid=other)),
        "x_map_e_used": float(x_map_exclusive(shares[..., uses], exclusive[..., uses], valid=other)),
        "differing_share_percent": 100 * float(differing[other & exclusive.any(-1)].mean()),
        "attribute_agreement": _spearman(sensitivity[seen], mean_exclusive[seen]),
        "share_ignored_percent": 100 * float(mean_exclusive[~uses & seen].mean()),
        "unexplained_different_percent": 100 * float((1 - attributes)[other].mean()),
        "unexplained_same_percent": 100 * float((1 - attributes)[same].mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None,
                        help="optimiser steps of each fit (default: the recipe's, 2 per training image, at most 1500)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    size = get_size("quick")
    data = prepare_data(size, progress=False)
    model = load_reference_model("market", progress=False).eval()
    emb, labels, pids = [], [], []
    with torch.no_grad():
        for batch in pk_loader(data.amd_train, *size.pk, seed=0):
            emb.append(model(batch["image"]))
            labels.append(batch["attributes"])
            pids.append(batch["pid"])
    train = torch.cat(emb), torch.cat(labels), torch.cat(pids)
    test = {"q": _embed(model, data.query), "g": _embed(model, data.gallery),
            "qa": torch.stack([it["attributes"] for it in data.query]),
            "ga": torch.stack([it["attributes"] for it in data.gallery]),
            "qpid": torch.tensor([int(it["pid"]) for it in data.query]),
            "gpid": torch.tensor([int(it["pid"]) for it in data.gallery])}
    sens = model_sensitivity(model, "euclidean", data, persons=24, seed=0)
    sensitivity, uses = torch.tensor(sens["ratio"]), torch.tensor(sens["uses"], dtype=torch.bool)
    m = train[1].shape[1]
    steps = args.steps or SubspaceAMD().fit_steps(train[0].shape[0])
    usage = direction_usage(*train)
    rows = []
    for name, options in VARIANTS.items():
        options = dict(options)
        if options.pop("usage", None) == "directions":
            options["usage"] = usage
        runs = []
        for seed in args.seeds:
            spaces = AttributeSubspaces(train[0].shape[1], m)
            fit_subspaces(spaces, train[0], train[1], "euclidean", pids=train[2], steps=steps, seed=seed, **options)
            runs.append(score(spaces, test, sensitivity, uses))
        row: dict[str, Any] = {"variant": name, "seeds": len(runs)}
        for key in FIGURES:
            values = [r[key] for r in runs]
            row[key] = float(np.mean(values))
            row[f"{key}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
        rows.append(row)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    results = {
        "benchmark": "the subspace fit alone",
        "command": "python benchmarks/bench_subspace_fit.py"
                   + (f" --seeds {' '.join(map(str, args.seeds))}" if args.seeds != [0, 1, 2] else "")
                   + (f" --steps {args.steps}" if args.steps else ""),
        "target": "reference model (reidnet_small)", "threads": 1, "steps": steps,
        "training_embeddings": int(train[0].shape[0]), "query": len(data.query), "gallery": len(data.gallery),
        "sensitivity_ratio": sens["ratio"], "model_uses": sens["uses"],
        "direction_usage": [round(float(w), 4) for w in usage],
        "direction_usage_spearman_sensitivity": _spearman(usage, sensitivity),
        "contrast_usage_spearman_sensitivity": _spearman(attribute_usage(*train[:2], "euclidean", train[2]).float(),
                                                         sensitivity),
        "variants": rows, "total_seconds": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(to_json_ready(results), indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
