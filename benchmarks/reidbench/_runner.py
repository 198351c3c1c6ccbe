"""The ground-truth benchmark run: data, fits, every table, ``results.json`` and ``BENCHMARKS.md``."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reidexplain.attributes import SHARED, AttributeSchema
from reidexplain.explainer import Explainer

from ._amd import (
    agreement_summary,
    chance_explanation_scores,
    cross_domain,
    evaluate_explainer,
    flip_effects,
    measurement_ceiling,
    reweighting,
)
from ._attributes import (
    amd_attribute_localization,
    attribute_table,
    model_sensitivity,
    shares_by_exclusivity,
)
from ._config import BenchmarkSize, get_size
from ._data import BenchmarkData, ProjectedLabels, pk_loader, prepare_data, stack_images
from ._machine import machine_description
from ._methods import (
    BASELINE_METHODS,
    baseline_settings,
    explain_pairs,
    make_baseline,
    random_maps,
    score_method,
)
from ._pairs import build_pair_set, sample_pairs
from ._report import render_markdown
from ._scale import time_matrix

__all__ = ["run_benchmark", "to_json_ready"]

log = logging.getLogger(__name__)


def to_json_ready(value: Any) -> Any:
    """``value`` with tensors as lists and non-finite floats as ``None`` (strict JSON).

    Examples:
        >>> import torch
        >>> to_json_ready({"a": float("nan"), "b": torch.tensor([1.0, 2.0]), "c": (1, 2)})
        {'a': None, 'b': [1.0, 2.0], 'c': [1, 2]}
    """
    if isinstance(value, torch.Tensor):
        return to_json_ready(value.detach().cpu().tolist())
    if isinstance(value, dict):
        return {str(k): to_json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_ready(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if hasattr(value, "item"):
        return to_json_ready(value.item())
    return str(value)


@contextmanager
def _stage(stages: dict[str, float], name: str, progress: bool) -> Iterator[None]:
    if progress:
        log.info("benchmark: %s ...", name)
    start = time.perf_counter()
    yield
    stages[name] = time.perf_counter() - start


def _reference_model(progress: bool) -> tuple[nn.Module, dict[str, Any]]:
    from reidexplain.zoo import load_reference_model

    start_wall, start = time.time(), time.perf_counter()
    model, info = load_reference_model("market", progress=progress, return_info=True)
    seconds = time.perf_counter() - start
    try:
        created = time.mktime(time.strptime(info["created"], "%Y-%m-%dT%H:%M:%S"))
        trained_now = created >= start_wall - 1
    except (KeyError, ValueError, TypeError):
        trained_now = seconds > 60
    return model, {"source": "trained now" if trained_now else "loaded from the cache", "seconds": seconds,
                   "train_seconds": info.get("train_seconds"), "retrieval": info.get("retrieval"),
                   "config": info.get("config"), "model": info.get("model")}


def _fit(model: nn.Module, items: Any, schema: AttributeSchema, feature_layer: str | None, budget: float,
         size: BenchmarkSize, seed: int, progress: bool, trunk: str | None = None) -> tuple[Explainer, dict[str, Any]]:
    explainer = Explainer(model, attributes=schema, feature_layer=feature_layer, trunk=trunk)
    start = time.perf_counter()
    explainer.fit(pk_loader(items, *size.pk, seed=seed), epochs=size.fit_epochs, progress=progress,
                  seed=seed, max_seconds=budget)
    last = explainer.history[-1] if explainer.history else {}
    return explainer, {"seconds": time.perf_counter() - start, "budget_seconds": budget,
                       "steps": last.get("steps"), "epochs": last.get("epoch"), "train_adre": last.get("adre"),
                       "mode": explainer.mode, "split": explainer.adapter.describe(), "attributes": len(schema)}


def _default_command(out: Path, quick: bool, size: BenchmarkSize) -> str:
    if size.name in ("full", "quick"):
        return f"python benchmarks/run_benchmark.py{' --quick' if quick or size.name == 'quick' else ''} --keep {out}"
    return (f"python -c 'import sys; sys.path.insert(0, \"benchmarks\"); from reidbench import run_benchmark; "
            f"run_benchmark(\"{out}\", size=\"{size.name}\")'")


def _method_table(gray: Explainer, black: Explainer, gray_shared: Explainer, model: nn.Module, metric: str,
                  data: BenchmarkData, size: BenchmarkSize, seed: int, progress: bool) -> tuple[list, list, Any, dict]:
    pairs = sample_pairs(data.query_set.pids, data.gallery_set.pids, torch.stack([it["attributes"] for it in data.query]),
                         torch.stack([it["attributes"] for it in data.gallery]), size.pairs, seed)
    pair_set = build_pair_set(data.query_set, data.gallery_set, pairs)
    runs = {"amd_gray_box": explain_pairs(gray.explain, pair_set, "amd_gray_box", progress),
            "amd_black_box": explain_pairs(black.explain, pair_set, "amd_black_box", progress),
            "amd_shared_trunk": explain_pairs(gray_shared.explain, pair_set, "amd_shared_trunk", progress)}
    for name in BASELINE_METHODS:
        runs[name] = explain_pairs(make_baseline(name, model, size, metric).explain, pair_set, name, progress)
    runs["random"] = random_maps(pair_set, seed)
    rows = [score_method(run, pair_set, model, metric, size) for run in runs.values()]
    return pairs, rows, pair_set, runs


def run_benchmark(out: str | os.PathLike[str] = "benchmark-results", quick: bool = False, progress: bool = True,
                  seed: int = 0, *, size: str | BenchmarkSize | None = None, model: nn.Module | None = None,
                  metric: str = "euclidean", threads: int | None = None, command: str | None = None) -> Path:
    """Run the ground-truth benchmark: AMD against every Captum baseline on the same synthetic pairs.

    On the synthetic market split with the cached reference model: fits AMD gray-box, black-box and an
    18-attribute interpreter (cross-domain) within time budgets; scores every method on the same pairs
    of different people (pointing game, relevance mass, deletion/insertion AUC, seconds per pair);
    AMD's X-mAP_e/c, ADRE, causal agreement and Rank-1/mAP with ``d`` and ``d_hat``; the Market -> Duke
    run; the re-weighted distance with ``alpha`` chosen on fresh validation identities; a table per
    attribute (the model's sensitivity, AMD's shares and per-attribute localisation); and the time to
    explain every query x gallery pair. Writes ``results.json`` and ``BENCHMARKS.md`` into ``out``.

    Args:
        out: Output folder (created).
        quick: Use the ``"quick"`` size (about 3 minutes on 2 cores) instead of ``"full"`` (about 16).
        progress: Show progress bars and stage logs.
        seed: Seed of the fits and of every draw (pairs, flips, permutations).
        size: A preset name (``"full"``, ``"quick"``, ``"tiny"``) or a :class:`BenchmarkSize`; overrides
            ``quick``.
        model: The target model (eval mode); default the cached reference model (trained once, about 3
            minutes, if not cached; that time is reported separately).
        metric: Distance of the target model.
        threads: ``torch.set_num_threads`` for the run (default: leave torch's setting).
        command: The command line to record as "reproduce" (default: the ``benchmarks/run_benchmark.py``
            call).

    Returns:
        The folder ``out``, holding ``results.json`` and ``BENCHMARKS.md``.

    Raises:
        ValueError: an unknown size name or inconsistent sizes.
        TypeError: ``model`` is not an ``nn.Module``.

    Examples:
        >>> import tempfile
        >>> from reidexplain.zoo import create_model
        >>> folder = run_benchmark(tempfile.mkdtemp(), size="tiny", progress=False,
        ...                        model=create_model("reidnet_small").eval())  # seconds: tiny images
        >>> sorted(p.name for p in folder.iterdir())
        ['BENCHMARKS.md', 'results.json']
    """
    size = get_size(size if size is not None else ("quick" if quick else "full"))
    if model is not None and not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module or None, got {type(model).__name__}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if threads is not None:
        torch.set_num_threads(int(threads))
    machine = machine_description()
    if model is None:
        model, reference = _reference_model(progress)
    else:
        reference = {"source": f"given ({type(model).__name__})", "seconds": 0.0}
    model.eval()
    stages: dict[str, float] = {}
    started = time.perf_counter()
    with _stage(stages, "data", progress):
        data = prepare_data(size, progress)
    fits: dict[str, dict] = {}
    with _stage(stages, "fits", progress):
        gray, fits["gray_box"] = _fit(model, data.amd_train, data.schema, "auto", size.gray_seconds, size, seed,
                                      progress)
        black, fits["black_box"] = _fit(model, data.amd_train, data.schema, None, size.black_seconds, size, seed,
                                        progress)
        # The gray box reading the target's own feature map (trunk="shared"): one trunk pass less per image.
        gray_shared, fits["shared_trunk"] = _fit(model, data.amd_train, data.schema, "auto", size.gray_seconds, size,
                                                 seed, progress, trunk="shared")
        shared, fits["cross_domain"] = _fit(model, ProjectedLabels(data.amd_train, data.schema, SHARED), SHARED,
                                            "auto", size.cross_seconds, size, seed, progress)
    with _stage(stages, "methods", progress):
        pairs, method_rows, pair_set, runs = _method_table(gray, black, gray_shared, model, metric, data, size, seed,
                                                                progress)
    with _stage(stages, "amd", progress):
        amd: dict[str, Any] = {"gray_box": evaluate_explainer(gray, data.query, data.gallery, progress),
                               "black_box": evaluate_explainer(black, data.query, data.gallery, progress)}
        effects, flipped = flip_effects(model, metric, data.query_set, pair_set, size.common_flips, seed,
                                        progress=progress)
        amd["causal_agreement"] = {mode: agreement_summary(runs[f"amd_{mode}"].contributions, effects)
                                   for mode in ("gray_box", "black_box")}
        amd["flips_per_pair"] = flipped.sum(dim=1).double().mean().item()
        # The same flips made to image b: how far two valid measurements of the model agree (a ceiling).
        amd["causal_ceiling"] = measurement_ceiling(model, metric, data, pair_set, effects, size.common_flips, seed,
                                                    progress=progress)["ceiling"]
        amd["chance"] = chance_explanation_scores(data.query, data.gallery, seed)
    with _stage(stages, "cross_domain", progress):
        cross = cross_domain(shared, data, progress)
    with _stage(stages, "scale", progress):
        scale, test_matrix = time_matrix(gray, stack_images(data.query), stack_images(data.gallery),
                                         size.scale_fractions, runs["amd_gray_box"].seconds_per_pair, seed)
    with _stage(stages, "reweighting", progress):
        if test_matrix is None:
            test_matrix = gray.explain_matrix(stack_images(data.query), stack_images(data.gallery))
        reweight = reweighting(gray, data, test_matrix, size.alphas)
    with _stage(stages, "attributes", progress):
        sensitivity = model_sensitivity(model, metric, data, size.sensitivity_persons, seed, progress)
        extra = sample_pairs(data.query_set.pids, data.gallery_set.pids,
                             torch.stack([it["attributes"] for it in data.query]),
                             torch.stack([it["attributes"] for it in data.gallery]),
                             size.localization_pairs, seed + 1, exclude=pairs)
        localization = amd_attribute_localization(gray, data, pairs + extra, progress=progress)
        attributes = attribute_table(data, sensitivity, localization,
                                     shares_by_exclusivity(test_matrix, data.query, data.gallery))
    results = {
        "benchmark": "ground-truth benchmark: AMD against the Captum baselines",
        "size": size.to_dict(), "seed": seed, "metric": metric,
        "command": command or _default_command(out, quick, size),
        "machine": machine, "reference_model": reference, "data": data.counts(),
        "settings": {"baselines": baseline_settings(size), "patch_size": size.patch_size,
                     "curve_steps": size.curve_steps, "common_flips": size.common_flips},
        "fits": fits, "num_pairs": len(pairs), "pairs": pairs, "methods": method_rows, "amd": amd,
        "cross_domain": cross, "reweighting": reweight, "attributes": attributes,
        "attribute_localization_pairs": len(pairs) + len(extra),
        "sensitivity_persons": sensitivity["persons"], "scale": scale,
        "stage_seconds": stages, "total_seconds": time.perf_counter() - started,
        "load_average_end": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    results = to_json_ready(results)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "BENCHMARKS.md").write_text(render_markdown(results))
    return out
