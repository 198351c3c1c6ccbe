"""Per-attribute figures: what the model uses, what AMD says, and where AMD's attribute maps look."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from reidexplain.distance import pair_distance
from reidexplain.explainer import Explainer, MatrixExplanation
from reidexplain.metrics import (
    attribute_sensitivity,
    per_attribute_localization,
    spearman_correlation,
)

from ._data import BenchmarkData
from ._pairs import build_pair_set

__all__ = ["model_sensitivity", "amd_attribute_localization", "shares_by_exclusivity", "attribute_table"]


def model_sensitivity(model: nn.Module, metric: str, data: BenchmarkData, persons: int, seed: int = 0,
                      progress: bool = False) -> dict[str, Any]:
    """How much the target reacts to each attribute: one-attribute flips against the same-person floor.

    ``persons`` test identities are drawn (seeded); for each, its first query image is re-rendered once
    per attribute with only that attribute flipped, and compared with a gallery photo of the same person
    (the noise floor of :func:`~reidexplain.metrics.attribute_sensitivity`).

    Returns:
        ``{"ratio", "effect", "count"}`` lists over attributes, ``"uses"`` bools, ``"noise_floor"``.
    """
    query_pids = data.query_set.pids
    first: dict[int, int] = {}
    for i, pid in enumerate(query_pids):
        first.setdefault(int(pid), i)
    gallery_of: dict[int, int] = {}
    for j, pid in enumerate(data.gallery_set.pids):
        gallery_of.setdefault(int(pid), j)
    pids = sorted(p for p in first if p in gallery_of)
    rng = np.random.default_rng(seed)
    chosen = [pids[i] for i in rng.permutation(len(pids))[:persons]]
    names = data.query_set.schema.names
    flips = torch.zeros(len(chosen), len(names))
    same = torch.zeros(len(chosen))
    with torch.no_grad():
        for n, pid in enumerate(tqdm(chosen, desc="sensitivity", disable=not progress, leave=False)):
            i = first[pid]
            images = [data.query[i]["image"], data.gallery[gallery_of[pid]]["image"]]
            images += [data.query_set.counterfactual(i, name)["image"] for name in names]
            emb = model(torch.stack(images))
            same[n] = pair_distance(emb[:1], emb[1:2], metric)[0]
            flips[n] = pair_distance(emb[:1].expand(len(names), -1), emb[2:], metric)
    out = attribute_sensitivity(flips, same)
    return {"ratio": out.ratio.tolist(), "effect": out.effect.tolist(), "uses": out.uses.tolist(),
            "count": out.count.tolist(), "noise_floor": float(out.noise_floor), "persons": len(chosen)}


def amd_attribute_localization(explainer: Explainer, data: BenchmarkData, pairs: Sequence[tuple[int, int]],
                               chunk: int = 16, progress: bool = False) -> dict[str, list]:
    """Pointing game and relevance mass (percent) of AMD's map of each attribute, on that attribute's mask.

    Scored in both images of every pair where the attribute is exclusive to the pair (AMD-SPEC 10).

    Returns:
        ``{"pointing", "relevance_mass", "count"}``, each a list over attributes (``NaN`` where no image
        counted).
    """
    num = len(data.schema)
    sums = {"pointing": torch.zeros(num, dtype=torch.float64),
            "relevance_mass": torch.zeros(num, dtype=torch.float64)}
    count = torch.zeros(num, dtype=torch.long)
    for start in tqdm(range(0, len(pairs), chunk), desc="attribute maps", disable=not progress, leave=False):
        ps = build_pair_set(data.query_set, data.gallery_set, pairs[start : start + chunk])
        att = explainer.explain((ps.images_a, ps.images_b))
        maps = torch.cat([att.maps[0], att.maps[1]]).detach().cpu()
        exclusive = torch.cat([ps.exclusive, ps.exclusive])
        out = per_attribute_localization(maps, torch.cat([ps.masks_a, ps.masks_b]), select=exclusive)
        for key in sums:
            sums[key] += torch.nan_to_num(out[key].double()) * out["count"]
        count += out["count"]
    result = {key: (100.0 * value / count.clamp_min(1)).where(count > 0, float("nan")).tolist()
              for key, value in sums.items()}
    result["count"] = count.tolist()
    return result


def shares_by_exclusivity(matrix: MatrixExplanation, query: Sequence[dict],
                          gallery: Sequence[dict]) -> dict[str, list[float]]:
    """Mean share of each attribute over the query x gallery pairs where it is exclusive, and where common.

    Only pairs of different people count in the "common" mean (same-person pairs share everything).

    Examples:
        >>> import torch
        >>> m = MatrixExplanation(torch.ones(1, 1), torch.ones(1, 1), torch.tensor([[[3.0, 1.0]]]), ("a", "b"))
        >>> q = [{"pid": 0, "attributes": torch.tensor([1.0, 0.0])}]
        >>> g = [{"pid": 1, "attributes": torch.tensor([0.0, 0.0])}]
        >>> shares_by_exclusivity(m, q, g)["exclusive"]
        [0.75, nan]
    """
    qa = torch.stack([it["attributes"] for it in query]).bool()
    ga = torch.stack([it["attributes"] for it in gallery]).bool()
    qp = torch.tensor([int(it["pid"]) for it in query])
    gp = torch.tensor([int(it["pid"]) for it in gallery])
    exclusive = qa[:, None, :] != ga[None, :, :]
    common = ~exclusive & (qp[:, None] != gp[None, :])[..., None]
    shares = matrix.shares.double()

    def mean(select: torch.Tensor) -> list[float]:
        n = select.sum(dim=(0, 1))
        total = (shares * select).sum(dim=(0, 1))
        return (total / n.clamp_min(1)).where(n > 0, float("nan")).tolist()

    return {"exclusive": mean(exclusive), "common": mean(common),
            "exclusive_pairs": exclusive.sum(dim=(0, 1)).tolist()}


def attribute_table(data: BenchmarkData, sensitivity: dict[str, Any], localization: dict[str, list],
                    shares: dict[str, list]) -> dict[str, Any]:
    """Rows per attribute and a summary that tells "the model ignores it" from "AMD is wrong about it"."""
    schema = data.schema
    positive = torch.stack([it["attributes"] for it in data.query]).mean(dim=0).tolist()
    rows = []
    for k, name in enumerate(schema.names):
        rows.append({
            "attribute": name, "label": schema.labels[k], "positive_percent": 100.0 * positive[k],
            "sensitivity_ratio": sensitivity["ratio"][k], "flip_effect": sensitivity["effect"][k],
            "model_uses_it": bool(sensitivity["uses"][k]),
            "share_exclusive_percent": 100.0 * shares["exclusive"][k],
            "share_common_percent": 100.0 * shares["common"][k],
            "pointing_game": localization["pointing"][k], "relevance_mass": localization["relevance_mass"][k],
            "localization_count": int(localization["count"][k]),
        })
    ratio = torch.tensor([r["sensitivity_ratio"] for r in rows], dtype=torch.float64)
    share = torch.tensor([r["share_exclusive_percent"] for r in rows], dtype=torch.float64)
    rho = spearman_correlation(ratio[None], share[None])[0]

    def mean_over(key: str, used: bool) -> float:
        vals = [r[key] for r in rows if r["model_uses_it"] == used and not math.isnan(r[key])]
        return float(np.mean(vals)) if vals else float("nan")

    summary = {
        "attributes_used": int(sum(r["model_uses_it"] for r in rows)),
        "attributes": len(rows),
        "noise_floor": sensitivity["noise_floor"],
        "spearman_sensitivity_vs_share": float(rho),
        **{f"{key}_{'used' if used else 'unused'}": mean_over(key, used)
           for key in ("pointing_game", "relevance_mass", "share_exclusive_percent") for used in (True, False)},
    }
    return {"rows": rows, "summary": summary}
