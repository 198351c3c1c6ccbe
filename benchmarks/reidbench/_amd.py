"""AMD-only figures: explanation metrics, causal agreement, the cross-domain run and the re-weighting."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from reidexplain.attributes import SHARED
from reidexplain.data import SyntheticPersons
from reidexplain.distance import pair_distance
from reidexplain.explainer import Explainer, MatrixExplanation
from reidexplain.metrics import (
    causal_agreement,
    counterfactual_effects,
    evaluate_retrieval,
    partner_distance_fn,
    x_map_common,
    x_map_exclusive,
)

from ._data import BenchmarkData, ProjectedLabels, eval_loader, stack_images
from ._pairs import PairSet

__all__ = ["flip_effects", "align_effects", "swapped", "measurement_ceiling", "averaged_flip_effects", "agreement_summary", "evaluate_explainer", "chance_explanation_scores",
           "cross_domain", "reweighting", "reweighted_retrieval"]

_SCORE_KEYS = ("x_map_e", "x_map_c", "adre", "rank1_target", "map_target", "rank1_interpreter",
               "map_interpreter", "num_pairs")


def flip_effects(model: nn.Module, metric: str, query_set: SyntheticPersons, pairs: PairSet,
                 common_flips: int, seed: int = 0, chunk: int = 8,
                 progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Counterfactual distance changes of each pair when one attribute of image ``a`` is flipped.

    Flipped: every exclusive attribute of the pair and ``common_flips`` random common ones (seeded),
    so that the ranking also has to put attributes the two persons share below those they do not.

    Args:
        model: The target model (eval mode).
        metric: Its distance.
        query_set: The dataset ``a`` comes from (renders the counterfactuals).
        pairs: The pairs.
        common_flips: Common attributes flipped per pair.
        seed: Seed of the choice of common attributes.
        chunk: Pairs rendered at once (bounds the memory of the flipped images).
        progress: Show a progress bar.

    Returns:
        ``(effects, valid)``: ``(P,M)`` ``|d(a^(k), b) - d(a, b)|`` (``NaN`` where not flipped), and the
        bool ``(P,M)`` flipped attributes.
    """
    names = query_set.schema.names
    exclusive = pairs.exclusive
    valid = exclusive.clone()
    rng = np.random.default_rng(seed)
    for i in range(len(pairs)):
        common = (~exclusive[i]).nonzero()[:, 0].numpy()
        if len(common):
            valid[i, rng.choice(common, size=min(common_flips, len(common)), replace=False)] = True
    effects = torch.full(valid.shape, float("nan"))
    with torch.no_grad():
        partner = model(pairs.images_b).detach()
    for start in tqdm(range(0, len(pairs), chunk), desc="counterfactuals", disable=not progress, leave=False):
        stop = min(start + chunk, len(pairs))
        flipped = torch.zeros(stop - start, len(names), *pairs.images_a.shape[1:])
        for i in range(start, stop):
            q = pairs.pairs[i][0]
            for k in valid[i].nonzero()[:, 0].tolist():
                flipped[i - start, k] = query_set.counterfactual(q, names[k])["image"]
        fn = partner_distance_fn(model, partner[start:stop], metric)
        effects[start:stop] = counterfactual_effects(fn, pairs.images_a[start:stop], flipped,
                                                     valid[start:stop])
    return effects, valid


def align_effects(model: nn.Module, metric: str, query_set: SyntheticPersons, pairs: PairSet,
                  valid: torch.Tensor, chunk: int = 8, progress: bool = False) -> torch.Tensor:
    """How much of each pair's distance goes away when one difference between the two persons is removed.

    For an exclusive attribute ``k`` of pair ``(a, b)``, image ``a`` is re-drawn with ``k`` set to
    ``b``'s value (same pose, camera, light and noise) and the effect is the signed
    ``d(a, b) - d(a^(k<-b), b)``. For a one-hot group (a garment's colour) that means giving ``a`` the
    colour ``b`` wears, one intervention that removes both exclusive members of the group, so they share
    its effect. :func:`flip_effects` instead *toggles* ``k``: switching ``a``'s red top off draws it in
    the group's most frequent other colour, not in ``b``'s, which changes the difference rather than
    removing it. A common attribute has no difference to remove: its effect is 0 (no render).

    Args:
        model: The target (eval mode).
        metric: Its distance.
        query_set: The dataset ``a`` comes from (renders the counterfactuals).
        pairs: The pairs.
        valid: Bool ``(P,M)`` attributes to measure (as returned by :func:`flip_effects`).
        chunk: Pairs rendered at once.
        progress: Show a progress bar.

    Returns:
        ``(P,M)`` signed effects, ``NaN`` where not ``valid``. Higher: the model's distance owes more
        to that difference.
    """
    schema = query_set.schema
    names = schema.names
    member = {k: (schema.groups[schema.group_of(name)] if schema.group_of(name) in schema.one_hot_groups else None)
              for k, name in enumerate(names)}
    exclusive = pairs.exclusive
    effects = torch.full(valid.shape, float("nan"))
    effects[valid & ~exclusive] = 0.0
    with torch.no_grad():
        partner = model(pairs.images_b)
        base = pair_distance(model(pairs.images_a), partner, metric)
        for start in tqdm(range(0, len(pairs), chunk), desc="aligned counterfactuals", disable=not progress,
                          leave=False):
            images, owners = [], []
            for i in range(start, min(start + chunk, len(pairs))):
                q = pairs.pairs[i][0]
                done: dict[str, int] = {}
                for k in (valid[i] & exclusive[i]).nonzero()[:, 0].tolist():
                    group = member[k]
                    # b's member of the group (switching it on recolours a's garment), else k itself.
                    worn = [n for n in group if pairs.attrs_b[i, schema.index(n)] > 0] if group else []
                    flip = worn[0] if worn else names[k]
                    if flip not in done:
                        done[flip] = len(images)
                        images.append(query_set.counterfactual(q, flip)["image"])
                    owners.append((i, k, done[flip]))
            if not images:
                continue
            moved = model(torch.stack(images))
            rows = torch.tensor([i for i, _, _ in owners])
            d = pair_distance(moved[[j for _, _, j in owners]], partner[rows], metric)
            effects[rows, torch.tensor([k for _, k, _ in owners])] = (base[rows] - d).float()
    return effects


def swapped(pairs: PairSet) -> PairSet:
    """The same pairs with the roles of ``a`` and ``b`` exchanged (``pairs`` then index gallery, query)."""
    return PairSet([(g, q) for q, g in pairs.pairs], pairs.images_b, pairs.images_a, pairs.attrs_b,
                   pairs.attrs_a, pairs.masks_b, pairs.masks_a)


def measurement_ceiling(model: nn.Module, metric: str, data: BenchmarkData, pairs: PairSet, effects: torch.Tensor,
                        common_flips: int, seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """How well two equally valid measurements of the same counterfactual effects agree with each other.

    :func:`flip_effects` flips attributes of image ``a``; flipping the same attributes of image ``b``
    instead measures the same thing ("what does the model do when the pair's attribute ``k`` changes").
    Their per-pair Spearman agreement is the ceiling that any explainer's causal agreement with either
    measurement can be expected to reach.

    Returns:
        ``{"effects_b": (P,M) tensor, "ceiling": agreement_summary of effects vs effects_b}``.
    """
    effects_b, _ = flip_effects(model, metric, data.gallery_set, swapped(pairs), common_flips, seed,
                                progress=progress)
    return {"effects_b": effects_b, "ceiling": agreement_summary(effects, effects_b)}


def averaged_flip_effects(model: nn.Module, metric: str, data: BenchmarkData, pairs: PairSet,
                          valid: torch.Tensor, photos: int = 4, seed: int = 0,
                          progress: bool = False) -> dict[str, Any]:
    """Flip effects of each pair's two *persons*, averaged over several photos of each.

    One photo pair measures a flip's effect with the noise of that pose, camera and light (see
    :func:`measurement_ceiling`). Here, for pair ``(a, b)``, up to ``photos`` test photos of person
    ``a`` and of person ``b`` are drawn (seeded; the pair's own photos first); for every photo ``x`` of
    ``a``, every photo ``y`` of ``b`` and every flipped attribute ``k``, ``|d(x^(k), y) - d(x, y)|`` is
    measured, and symmetrically with the flip made to ``y``. The mean is the pair's effect of ``k``; the
    means over two disjoint halves of the photo pairs give a split-half reliability.

    Args:
        model: The target (eval mode).
        metric: Its distance.
        data: The benchmark data (query and gallery sets with counterfactual renders).
        pairs: The pairs.
        valid: Bool ``(P,M)`` attributes to flip (as returned by :func:`flip_effects`).
        photos: Photos per person.
        seed: Seed of the choice of photos.
        progress: Show a progress bar.

    Returns:
        ``{"effects": (P,M), "half_a": (P,M), "half_b": (P,M), "reliability": agreement_summary of the
        halves}``; ``NaN`` where not flipped.
    """
    names = data.query_set.schema.names
    where: dict[int, list[tuple[SyntheticPersons, int]]] = {}
    for dataset in (data.query_set, data.gallery_set):
        for index, pid in enumerate(dataset.pids):
            where.setdefault(int(pid), []).append((dataset, index))
    rng = np.random.default_rng(seed)

    def photos_of(dataset: SyntheticPersons, index: int) -> list[tuple[SyntheticPersons, int]]:
        others = [w for w in where[int(dataset.pids[index])] if w != (dataset, index)]
        pick = rng.permutation(len(others))[: photos - 1]
        return [(dataset, index)] + [others[i] for i in pick]

    num = len(pairs)
    sums = torch.zeros(2, num, len(names), dtype=torch.float64)
    counts = torch.zeros(2, num, 1, dtype=torch.float64)
    with torch.no_grad():
        for i in tqdm(range(num), desc="averaged counterfactuals", disable=not progress, leave=False):
            q, g = pairs.pairs[i]
            flips = valid[i].nonzero()[:, 0].tolist()
            sides = [photos_of(data.query_set, q), photos_of(data.gallery_set, g)]
            embedded = []
            for side in sides:
                images = []
                for dataset, index in side:
                    images.append(dataset[index]["image"])
                    images += [dataset.counterfactual(index, names[k])["image"] for k in flips]
                emb = model(torch.stack(images))
                embedded.append(emb.reshape(len(side), 1 + len(flips), -1))
            n = 0
            for x in range(len(sides[0])):
                for y in range(len(sides[1])):
                    for flipped_side, fixed in ((embedded[0][x], embedded[1][y, 0]), (embedded[1][y], embedded[0][x, 0])):
                        base = pair_distance(flipped_side[:1], fixed[None], metric)
                        moved = pair_distance(flipped_side[1:], fixed[None].expand(len(flips), -1), metric)
                        sums[n % 2, i, flips] += (moved - base).abs().double()
                        counts[n % 2, i] += 1
                        n += 1
    halves = sums / counts.clamp_min(1)
    effects = sums.sum(0) / counts.sum(0).clamp_min(1)
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    effects, halves = effects.where(valid, nan).float(), halves.where(valid[None], nan).float()
    return {"effects": effects, "half_a": halves[0], "half_b": halves[1],
            "reliability": agreement_summary(halves[0], halves[1])}


def agreement_summary(contributions: torch.Tensor, effects: torch.Tensor) -> dict[str, Any]:
    """Per-pair Spearman agreement of contributions with counterfactual effects, and its distribution.

    Examples:
        >>> import torch
        >>> out = agreement_summary(torch.tensor([[0.1, 0.2, 0.7]]), torch.tensor([[0.0, 0.3, 0.2]]))
        >>> out["mean"], out["pairs"]
        (0.5, 1)
    """
    rho = causal_agreement(contributions.float(), effects.float())
    kept = rho[~torch.isnan(rho)]
    if kept.numel() == 0:
        return {"mean": float("nan"), "median": float("nan"), "q25": float("nan"), "q75": float("nan"),
                "positive_percent": float("nan"), "pairs": 0, "per_pair": rho.tolist()}
    q = torch.quantile(kept.double(), torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)).tolist()
    return {
        "mean": float(kept.mean()), "median": q[1], "q25": q[0], "q75": q[2],
        "positive_percent": 100.0 * float((kept > 0).double().mean()), "pairs": int(kept.numel()),
        "per_pair": [None if np.isnan(v) else round(float(v), 4) for v in rho.tolist()],
    }


def evaluate_explainer(explainer: Explainer, query: Sequence[dict] | ProjectedLabels,
                       gallery: Sequence[dict] | ProjectedLabels, progress: bool = False) -> dict[str, float]:
    """``Explainer.evaluate`` on query x gallery items: X-mAP_e/c, ADRE, Rank-1/mAP with ``d`` and ``d_hat``."""
    scores = explainer.evaluate(eval_loader(query), eval_loader(gallery), progress=progress)
    return {k: float(scores[k]) for k in _SCORE_KEYS if k in scores}


def chance_explanation_scores(query: Sequence[dict], gallery: Sequence[dict], seed: int = 0) -> dict[str, float]:
    """X-mAP_e and X-mAP_c of random shares on the same query x gallery pairs: the chance level.

    Example:
        >>> import torch
        >>> q = [{"attributes": torch.tensor([1.0, 0.0, 0.0, 0.0])}]
        >>> g = [{"attributes": torch.tensor([0.0, 0.0, 0.0, 0.0])}] * 200
        >>> round(chance_explanation_scores(q, g)["x_map_e"] / 10)  # one relevant of 4: about 52 %
        5
    """
    qa = torch.stack([it["attributes"] for it in query]).bool()
    ga = torch.stack([it["attributes"] for it in gallery]).bool()
    exclusive = qa[:, None, :] != ga[None, :, :]
    shares = torch.rand(exclusive.shape, generator=torch.Generator().manual_seed(seed))
    shares = shares / shares.sum(dim=-1, keepdim=True)
    return {"x_map_e": float(x_map_exclusive(shares, exclusive)), "x_map_c": float(x_map_common(shares, exclusive))}


def cross_domain(explainer: Explainer, data: BenchmarkData, progress: bool = False) -> dict[str, Any]:
    """The paper's Market -> Duke row: an 18-attribute interpreter fitted on market, scored on both domains.

    Returns:
        ``{"market": scores, "duke": scores, "x_map_e_drop": points, "x_map_e_drop_percent": percent}``.
    """
    market = evaluate_explainer(explainer, ProjectedLabels(data.query, data.schema, SHARED),
                                ProjectedLabels(data.gallery, data.schema, SHARED), progress)
    duke = evaluate_explainer(explainer, ProjectedLabels(data.duke_query, data.duke_schema, SHARED),
                              ProjectedLabels(data.duke_gallery, data.duke_schema, SHARED), progress)
    drop = market["x_map_e"] - duke["x_map_e"]
    relative = 100.0 * drop / market["x_map_e"] if market["x_map_e"] else float("nan")
    return {"market": market, "duke": duke, "x_map_e_drop": drop, "x_map_e_drop_percent": relative}


def reweighted_retrieval(matrix: MatrixExplanation, alpha: float, query: Sequence[dict],
                         gallery: Sequence[dict]) -> dict[str, float]:
    """Rank-1 and mAP of ``(1 + alpha * max_k p_k) * d`` (AMD-SPEC section 7).

    Examples:
        >>> import torch
        >>> m = MatrixExplanation(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 2.0]]),
        ...                       torch.tensor([[[0.5, 0.5], [1.0, 1.0]]]), ("a", "b"))
        >>> items = [{"pid": 0, "camid": 0}]
        >>> reweighted_retrieval(m, 0.5, items, [{"pid": 1, "camid": 1}, {"pid": 0, "camid": 1}])["rank1"]
        0.0
    """
    boost = matrix.shares.max(dim=-1).values
    dist = (1.0 + float(alpha) * boost) * matrix.distance
    r = evaluate_retrieval(dist, [int(it["pid"]) for it in query], [int(it["pid"]) for it in gallery],
                           [int(it["camid"]) for it in query], [int(it["camid"]) for it in gallery], ranks=(1,))
    return {"rank1": r["rank1"], "mAP": r["mAP"]}


def reweighting(explainer: Explainer, data: BenchmarkData, test_matrix: MatrixExplanation,
                alphas: Sequence[float]) -> dict[str, Any]:
    """Choose ``alpha`` on the validation identities (by mAP, then Rank-1, then the smaller alpha: mAP
    tells weights apart where Rank-1 saturates), then report test Rank-1/mAP before (``alpha = 0``) and
    after.

    Returns:
        ``{"validation": [rows], "alpha": chosen, "test_before": {...}, "test_after": {...}}``.
    """
    val_matrix = explainer.explain_matrix(stack_images(data.val_query), stack_images(data.val_gallery))
    rows = [{"alpha": float(a), **reweighted_retrieval(val_matrix, a, data.val_query, data.val_gallery)}
            for a in alphas]
    best = max(rows, key=lambda r: (r["mAP"], r["rank1"], -r["alpha"]))
    return {
        "validation": rows,
        "alpha": best["alpha"],
        "test_before": reweighted_retrieval(test_matrix, 0.0, data.query, data.gallery),
        "test_after": reweighted_retrieval(test_matrix, best["alpha"], data.query, data.gallery),
    }
