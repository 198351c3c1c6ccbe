"""The method comparison: AMD and the Captum baselines on the same pairs, against the ground truth.

Every method gives one heat map per image (AMD: its share-weighted heat map, AMD-SPEC section 10), scored
on the union of the masks of the pair's exclusive attributes in that image (pointing game, relevance
mass), and by how fast the partner distance falls (deletion) or rises (insertion) when the image's
patches are swapped with the partner's in the map's order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from reidexplain.attribution import PairAttribution
from reidexplain.baselines import BASELINES, create_baseline
from reidexplain.metrics import (
    deletion_auc,
    deletion_curve,
    exclusive_union_mask,
    insertion_auc,
    insertion_curve,
    partner_distance_fn,
    pointing_game,
    reduce_scores,
    relevance_mass,
)
from reidexplain.visualization import method_label as library_label

from ._config import BenchmarkSize
from ._pairs import PairSet

__all__ = ["BASELINE_METHODS", "METHODS", "OWN_LABELS", "method_label", "MethodRun", "baseline_settings",
           "explain_pairs", "random_maps", "localization_scores", "faithfulness_scores", "score_method"]

#: The Captum baselines of the comparison, in table order. Their labels and settings are their entries in
#: :data:`reidexplain.baselines.BASELINES` (``label``, ``defaults``).
BASELINE_METHODS = ("integrated_gradients", "saliency", "occlusion", "grad_cam", "feature_ablation")

#: Labels of the benchmark's own rows: AMD's two interpreters and the chance level.
OWN_LABELS = {"amd_gray_box": "AMD gray-box", "amd_black_box": "AMD black-box",
              "amd_shared_trunk": "AMD gray-box, shared trunk", "random": "random maps (chance)"}

#: Every row of the method table, in order.
METHODS = ("amd_gray_box", "amd_black_box", "amd_shared_trunk", *BASELINE_METHODS, "random")


def method_label(name: str) -> str:
    """The display label of a method row: the benchmark's own, else the library's (a baseline's entry).

    Examples:
        >>> method_label("amd_gray_box"), method_label("grad_cam"), method_label("integrated_gradients")
        ('AMD gray-box', 'Grad-CAM', 'Integrated Gradients')
    """
    return OWN_LABELS.get(name) or library_label(name)


def baseline_settings(size: BenchmarkSize) -> dict[str, dict[str, Any]]:
    """Keyword arguments of every baseline (``create_baseline(name, model, **kwargs)``) for ``size``.

    The registered ``defaults`` of each baseline (:data:`reidexplain.baselines.BASELINES`), updated
    with the size's ``baseline_overrides``: the full size runs the defaults (Occlusion and Feature
    Ablation evaluate 32 perturbed copies per forward call, the usual Captum setting for speed;
    Integrated Gradients runs all its 50 steps in one batch), the tiny one fewer steps and a smaller window.

    Examples:
        >>> from reidbench import get_size
        >>> baseline_settings(get_size("full"))["integrated_gradients"]
        {'n_steps': 50}
        >>> baseline_settings(get_size("tiny"))["occlusion"]
        {'window': 8, 'stride': 8, 'perturbations_per_eval': 32}
    """
    return {name: {**BASELINES.entry(name).metadata.get("defaults", {}), **size.baseline_overrides.get(name, {})}
            for name in BASELINE_METHODS}


@dataclass
class MethodRun:
    """The explanations of one method on a :class:`PairSet`, one pair per call.

    Attributes:
        name: Method name (``"amd_gray_box"``, ``"integrated_gradients"``, ...).
        heat_a, heat_b: ``(P,1,H,W)`` one heat map per image.
        seconds: Wall-clock seconds of each pair's ``explain`` call.
        cpu_seconds: Process CPU seconds of each call (all threads; robust to other processes taking
            turns on the CPU, which inflates wall-clock times of many small operations the most).
        contributions: ``(P,M)`` AMD contributions (``None`` for a baseline).
        maps_a, maps_b: ``(P,M,H,W)`` AMD attribute maps (``None`` for a baseline).
        distance, reconstructed: ``(P,)`` target distance and AMD's ``d_hat`` (``reconstructed`` AMD only).
    """

    name: str
    heat_a: torch.Tensor
    heat_b: torch.Tensor
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    contributions: torch.Tensor | None = None
    maps_a: torch.Tensor | None = None
    maps_b: torch.Tensor | None = None
    distance: torch.Tensor | None = None
    reconstructed: torch.Tensor | None = None

    @property
    def seconds_per_pair(self) -> float:
        """Mean seconds of one pair's explanation."""
        return sum(self.seconds) / max(1, len(self.seconds))

    @property
    def cpu_seconds_per_pair(self) -> float:
        """Mean process CPU seconds of one pair's explanation."""
        return sum(self.cpu_seconds) / max(1, len(self.cpu_seconds))


def explain_pairs(explain: Callable[[tuple[torch.Tensor, torch.Tensor]], PairAttribution], pairs: PairSet,
                  name: str, progress: bool = False, keep_maps: bool = False) -> MethodRun:
    """Explain every pair with one call each, timing each call (after one untimed warm-up call).

    Args:
        explain: ``explain((a, b)) -> PairAttribution`` for ``(1,3,H,W)`` images.
        pairs: The pairs.
        name: Name of the method in the results.
        progress: Show a progress bar.
        keep_maps: Keep AMD's per-attribute maps (needed for the per-attribute localisation).

    Returns:
        A :class:`MethodRun` (tensors on the CPU).

    Examples:
        >>> import torch
        >>> from reidexplain.attribution import PairAttribution
        >>> def toy(pair):
        ...     a, b = pair
        ...     return PairAttribution("toy", (a, b), torch.ones(1), (a[:, :1], b[:, :1]))
        >>> from reidbench._pairs import PairSet
        >>> imgs = torch.rand(2, 3, 8, 4); attrs = torch.eye(2); masks = torch.ones(2, 2, 8, 4, dtype=torch.bool)
        >>> run = explain_pairs(toy, PairSet([(0, 1), (1, 0)], imgs, imgs, attrs, attrs, masks, masks), "toy")
        >>> run.heat_a.shape, len(run.seconds)
        (torch.Size([2, 1, 8, 4]), 2)
    """
    explain((pairs.images_a[:1], pairs.images_b[:1]))  # warm-up: lazy set-up, allocator, caches
    results: list[PairAttribution] = []
    seconds: list[float] = []
    cpu: list[float] = []
    for i in tqdm(range(len(pairs)), desc=name, disable=not progress, leave=False):
        a, b = pairs.images_a[i : i + 1], pairs.images_b[i : i + 1]
        start, start_cpu = time.perf_counter(), time.process_time()
        out = explain((a, b))
        seconds.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        results.append(out.cpu())
    heat = [torch.cat([r.heatmaps[side] for r in results]).detach().float() for side in (0, 1)]
    run = MethodRun(name, heat[0], heat[1], seconds, cpu,
                    distance=torch.cat([r.distance for r in results]).detach())
    if results[0].contributions is not None:
        run.contributions = torch.cat([r.contributions for r in results]).detach()
        run.reconstructed = torch.cat([r.reconstructed for r in results]).detach()
        if keep_maps:
            run.maps_a = torch.cat([r.maps[0] for r in results]).detach()
            run.maps_b = torch.cat([r.maps[1] for r in results]).detach()
    return run


def random_maps(pairs: PairSet, seed: int = 0) -> MethodRun:
    """A chance-level "method": uniform random heat maps (seeded), timed at zero.

    Examples:
        >>> import torch
        >>> from reidbench._pairs import PairSet
        >>> imgs = torch.rand(1, 3, 8, 4); m = torch.ones(1, 2, 8, 4, dtype=torch.bool)
        >>> random_maps(PairSet([(0, 0)], imgs, imgs, torch.eye(2)[:1], torch.eye(2)[1:], m, m)).heat_b.shape
        torch.Size([1, 1, 8, 4])
    """
    gen = torch.Generator().manual_seed(seed)
    shape = (len(pairs), 1, *pairs.images_a.shape[-2:])
    return MethodRun("random", torch.rand(shape, generator=gen), torch.rand(shape, generator=gen), [0.0], [0.0])


def _union_masks(pairs: PairSet) -> torch.Tensor:
    mask_a = exclusive_union_mask(pairs.attrs_a, pairs.attrs_b, pairs.masks_a)
    mask_b = exclusive_union_mask(pairs.attrs_b, pairs.attrs_a, pairs.masks_b)
    return torch.cat([mask_a, mask_b])


def localization_scores(run: MethodRun, pairs: PairSet) -> dict[str, float]:
    """Pointing game and relevance mass (percent) of both images' heat maps on the exclusive-attribute union.

    Examples:
        >>> import torch
        >>> from reidbench._pairs import PairSet
        >>> imgs = torch.rand(1, 3, 4, 2); m = torch.zeros(1, 2, 4, 2, dtype=torch.bool); m[0, 0, 0] = True
        >>> ps = PairSet([(0, 0)], imgs, imgs, torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]]), m, m)
        >>> heat = torch.zeros(1, 1, 4, 2); heat[0, 0, 0, 0] = 1.0
        >>> localization_scores(MethodRun("x", heat, heat), ps)["pointing_game"]
        100.0
    """
    masks = _union_masks(pairs)
    heat = torch.cat([run.heat_a, run.heat_b])[:, 0]
    return {
        "pointing_game": 100.0 * float(reduce_scores(pointing_game(heat, masks))),
        "relevance_mass": 100.0 * float(reduce_scores(relevance_mass(heat, masks))),
    }


def faithfulness_scores(run: MethodRun, pairs: PairSet, model: nn.Module, metric: str, steps: int,
                        patch_size: int) -> dict[str, float]:
    """Mean deletion and insertion AUC (partner baseline) over both images of every pair.

    The map of ``a`` is tested against the fixed partner ``b`` and the other way round; patches of
    ``patch_size`` pixels are swapped with the partner's, in the order of their mean map value.

    Returns:
        ``{"deletion_auc", "insertion_auc"}``: deletion lower is better, insertion higher is better.
    """
    images = torch.cat([pairs.images_a, pairs.images_b])
    partners = torch.cat([pairs.images_b, pairs.images_a])
    with torch.no_grad():
        partner_emb = model(partners).detach()
    fn = partner_distance_fn(model, partner_emb, metric)
    heat = torch.cat([run.heat_a, run.heat_b])
    options = dict(partner=partners, steps=steps, patch_size=patch_size)
    deletion = deletion_auc(deletion_curve(fn, images, heat, **options))
    insertion = insertion_auc(insertion_curve(fn, images, heat, **options))
    return {"deletion_auc": float(torch.nanmean(deletion)), "insertion_auc": float(torch.nanmean(insertion))}


def score_method(run: MethodRun, pairs: PairSet, model: nn.Module, metric: str,
                 size: BenchmarkSize) -> dict[str, Any]:
    """One row of the method table: localisation, faithfulness, wall-clock and CPU seconds per pair."""
    row: dict[str, Any] = {"method": run.name}
    row.update(localization_scores(run, pairs))
    row.update(faithfulness_scores(run, pairs, model, metric, size.curve_steps, size.patch_size))
    row["seconds_per_pair"] = run.seconds_per_pair
    row["cpu_seconds_per_pair"] = run.cpu_seconds_per_pair
    return row


def make_baseline(name: str, model: nn.Module, size: BenchmarkSize, metric: str = "euclidean") -> Any:
    """Build baseline ``name`` with the benchmark's settings (see :func:`baseline_settings`)."""
    return create_baseline(name, model, metric=metric, **baseline_settings(size)[name])
