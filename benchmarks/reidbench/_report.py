"""Markdown tables of a benchmark results dict."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ._methods import method_label
from ._targets import (
    PAPER_XMAP_E_MARKET,
    PAPER_XMAP_E_MARKET_TO_DUKE,
    diagnostics,
    evaluate_targets,
)

__all__ = ["markdown_table", "fmt", "render_markdown"]


def fmt(value: Any, digits: int = 1) -> str:
    """Format a number for a table: ``digits`` decimals, ``-`` for missing or NaN, text as is.

    Examples:
        >>> fmt(3.14159, 2), fmt(float("nan")), fmt(None), fmt(True), fmt(12)
        ('3.14', '-', '-', 'yes', '12')
    """
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "-" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 1) -> str:
    """A GitHub markdown table; numbers formatted with :func:`fmt`.

    Examples:
        >>> print(markdown_table(["a", "b"], [[1, 2.345]]))
        | a | b |
        |---|---|
        | 1 | 2.3 |
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v, digits) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _status(met: bool | None) -> str:
    return "not measured" if met is None else ("met" if met else "**missed**")


def _methods_section(results: dict[str, Any]) -> list[str]:
    methods = results.get("methods", [])
    amd = next((r for r in methods if r["method"] == "amd_gray_box"), {})
    rows = []
    for r in methods:
        timed = r["method"] != "random"
        cells = []
        for key in ("seconds_per_pair", "cpu_seconds_per_pair"):
            v, ref = r.get(key), amd.get(key)
            ok = timed and isinstance(v, (int, float)) and isinstance(ref, (int, float)) and ref > 0
            cells += [fmt(v, 4) if timed else "-", f"{v / ref:.1f}x" if ok else "-"]
        rows.append([method_label(r["method"]), r.get("pointing_game"), r.get("relevance_mass"),
                     fmt(r.get("deletion_auc"), 3), fmt(r.get("insertion_auc"), 3), *cells])
    s = results.get("settings", {})
    return [
        f"## Methods on the same {results.get('num_pairs', '?')} pairs", "",
        "Pointing game and relevance mass: of each method's heat map (AMD: the share-weighted sum of its "
        "attribute maps), in both images of each pair, on the union of the masks of the attributes in which "
        "the two persons differ (AMD-SPEC section 10). Deletion/insertion AUC: patches of "
        f"{s.get('patch_size', '?')}x{s.get('patch_size', '?')} pixels swapped with the partner's, most "
        f"relevant first, {s.get('curve_steps', '?')} steps, distance normalised by d(a, b) (deletion: lower "
        "is better; insertion: higher). Seconds per pair: one pair per call, after a warm-up call, in "
        "wall-clock and in process CPU time (all threads), each also as a multiple of AMD gray-box's.", "",
        markdown_table(["method", "pointing game %", "relevance mass %", "deletion AUC", "insertion AUC",
                        "s / pair", "/ AMD", "CPU s / pair", "CPU / AMD"], rows),
        "", f"Baseline settings: {s.get('baselines', {})}.", "",
    ]


def _amd_section(results: dict[str, Any]) -> list[str]:
    amd = results.get("amd", {})
    fits = results.get("fits", {})
    causal = amd.get("causal_agreement", {})
    rows = []
    for mode in ("gray_box", "black_box"):
        s = amd.get(mode)
        if not s:
            continue
        fit = fits.get(mode, {})
        rows.append([mode.replace("_", "-"), fit.get("seconds"), fit.get("steps"), s.get("x_map_e"), s.get("x_map_c"),
                     fmt(s.get("adre"), 2), fmt(causal.get(mode, {}).get("mean"), 2), s.get("rank1_target"),
                     s.get("rank1_interpreter"), s.get("map_target"), s.get("map_interpreter")])
    chance = amd.get("chance")
    if chance:
        rows.append(["random shares (chance)", None, None, chance.get("x_map_e"), chance.get("x_map_c"),
                     None, None, None, None, None, None])
    return [
        "## AMD explanation metrics (in-domain: synthetic market test, all query x gallery pairs)", "",
        "Causal agreement: per sampled pair, Spearman correlation between AMD's contributions and the "
        "change of the target distance when image a is re-rendered with one attribute flipped (every "
        "exclusive attribute and a few common ones), averaged over pairs.", "",
        markdown_table(["interpreter", "fit s", "steps", "X-mAP_e", "X-mAP_c", "ADRE %", "causal agreement",
                        "R1 d", "R1 d_hat", "mAP d", "mAP d_hat"], rows), "",
    ]


def _cross_section(results: dict[str, Any]) -> list[str]:
    cross = results.get("cross_domain", {})
    if not cross.get("market") or not cross.get("duke"):
        return []
    rows = [[f"market -> {dom}", s.get("x_map_e"), s.get("x_map_c"), fmt(s.get("adre"), 2), s.get("rank1_target"),
             s.get("rank1_interpreter"), s.get("map_target"), s.get("map_interpreter")]
            for dom, s in (("market", cross.get("market")), ("duke", cross.get("duke")))]
    return [
        "## Cross-domain (the paper's Market -> Duke row, 18 shared attributes)", "",
        "One gray-box interpreter fitted on the market training identities with labels projected on the 18 "
        "attributes both schemas share, scored on the market test (in-domain) and the duke test.", "",
        markdown_table(["fitted -> tested", "X-mAP_e", "X-mAP_c", "ADRE %", "R1 d", "R1 d_hat", "mAP d",
                        "mAP d_hat"], rows), "",
        f"X-mAP_e drop: {fmt(cross['x_map_e_drop'])} points ({fmt(cross['x_map_e_drop_percent'])} %); "
        f"paper (ResNet-50): {PAPER_XMAP_E_MARKET} -> {PAPER_XMAP_E_MARKET_TO_DUKE}, "
        f"{PAPER_XMAP_E_MARKET - PAPER_XMAP_E_MARKET_TO_DUKE:.1f} points.", "",
    ]


def _reweight_section(results: dict[str, Any]) -> list[str]:
    rw = results.get("reweighting")
    if not rw or "validation" not in rw:
        return []
    val = [[r["alpha"], r["rank1"], r["mAP"]] for r in rw["validation"]]
    b, a = rw["test_before"], rw["test_after"]
    return [
        "## By-product: re-weighted distance (1 + alpha * max_k p_k) * d", "",
        "alpha chosen on a validation split of fresh identities the model never saw (by mAP, then Rank-1), never on "
        "the test set.", "",
        markdown_table(["alpha", "val Rank-1", "val mAP"], val, digits=2), "",
        markdown_table(["test", "Rank-1", "mAP"], [["d (alpha = 0)", b["rank1"], b["mAP"]],
                                                   [f"re-weighted (alpha = {rw['alpha']:g})", a["rank1"], a["mAP"]]],
                       digits=2), "",
    ]


def _attribute_section(results: dict[str, Any]) -> list[str]:
    table = results.get("attributes")
    if not table or "rows" not in table:
        return []
    rows = [[r["attribute"], r["positive_percent"], fmt(r["sensitivity_ratio"], 2), r["model_uses_it"],
             r["share_exclusive_percent"], r["share_common_percent"], r["pointing_game"], r["relevance_mass"],
             r["localization_count"]] for r in table["rows"]]
    causal = results.get("amd", {}).get("causal_agreement", {}).get("gray_box", {})
    lines = [
        "## Per attribute (measure first)", "",
        "Sensitivity: mean target distance between a render and the same render with only that attribute "
        "flipped, over the distance between two photos of the same person (noise floor "
        f"{fmt(table['summary']['noise_floor'], 3)}); the model uses it if the ratio is above 1. Shares: AMD "
        "gray-box, over all test query x gallery pairs of different people. Pointing game / relevance mass: "
        "AMD's map of that attribute on that attribute's mask, in images where it is exclusive to the pair "
        "(n images).", "",
        markdown_table(["attribute", "positive %", "sensitivity", "model uses it", "share excl. %",
                        "share common %", "pointing %", "rel. mass %", "n"], rows), "",
    ]
    if causal.get("pairs"):
        lines += [
            "Per-pair rank agreement (Spearman) between AMD gray-box contributions and counterfactual "
            f"changes, {causal['pairs']} pairs: mean {fmt(causal['mean'], 2)}, median {fmt(causal['median'], 2)}, "
            f"quartiles {fmt(causal['q25'], 2)} / {fmt(causal['q75'], 2)}, positive for "
            f"{fmt(causal['positive_percent'], 0)} % of pairs.", "",
        ]
    ceiling = results.get("amd", {}).get("causal_ceiling", {})
    if ceiling.get("pairs"):
        lines += [
            "Ceiling of that measurement: the same attributes flipped in image b instead of image a (an equally "
            f"valid measurement of the model) agree with the flips in image a at a mean Spearman of "
            f"{fmt(ceiling['mean'], 2)} over {ceiling['pairs']} pairs; no explainer can be expected to agree with "
            "either measurement much better.", "",
        ]
    return lines


def _scale_section(results: dict[str, Any]) -> list[str]:
    rows = results.get("scale")
    if not rows:
        return []
    body = [[f"{100 * r['gallery_fraction']:.0f} %", r["queries"], r["gallery"], r["pairs"],
             fmt(r["seconds"], 2), fmt(r.get("cpu_seconds"), 2), fmt(r["ms_per_pair"], 4),
             f"{fmt(r['speedup_vs_single_pair'], 0)}x"] for r in rows]
    return [
        "## Scale: every query x gallery pair of the test split (matrix API, all attributes)", "",
        markdown_table(["gallery", "queries", "gallery images", "pairs", "seconds", "CPU seconds", "ms / pair",
                        "speed-up per pair vs single-pair explain"], body), "",
        "Per-image embeddings are computed once; every pair then costs M distance computations, so the time "
        "per pair falls as the gallery grows.", "",
    ]


def render_markdown(results: dict[str, Any], heading_level: int = 1) -> str:
    """The markdown report of a results dict (what ``BENCHMARKS.md`` shows for the benchmark).

    Args:
        results: The dict written to ``results.json`` by :func:`~reidbench.run_benchmark`.
        heading_level: Level of the top heading (sections are one level below).

    Returns:
        Markdown text.

    Examples:
        >>> text = render_markdown({"size": {"name": "tiny"}, "machine": {}, "methods": []})
        >>> text.splitlines()[0]
        '# Ground-truth benchmark: AMD against the Captum baselines (size: tiny)'
    """
    m = results.get("machine", {})
    size = results.get("size", {}).get("name", "?")
    model = results.get("reference_model", {})
    lines = [
        f"# Ground-truth benchmark: AMD against the Captum baselines (size: {size})", "",
        f"Machine: {m.get('cpu_model', '?')}, {m.get('cores', '?')} cores, torch {m.get('torch', '?')} "
        f"({m.get('torch_threads', '?')} threads), captum {m.get('captum', '?')}, load average at the start "
        f"{m.get('load_average', '?')}, at the end {results.get('load_average_end', '?')}; {m.get('date', '')}.",
        f"Reproduce: `{results.get('command', '?')}`. Benchmark time {fmt(results.get('total_seconds'), 0)} s "
        f"(stages: {', '.join(f'{k} {v:.0f} s' for k, v in results.get('stage_seconds', {}).items())}); "
        f"reference model {model.get('source', '?')} in {fmt(model.get('seconds'), 0)} s, not counted.", "",
        "## Targets", "",
        markdown_table(["target", "measured", "required", "status"],
                       [[t["target"], f"{fmt(t['measured'])} {t['unit']}".strip(), t["required"], _status(t["met"])]
                        for t in evaluate_targets(results)]), "",
    ]
    lines += _methods_section(results)
    lines += _amd_section(results)
    lines += _cross_section(results)
    lines += _reweight_section(results)
    lines += _attribute_section(results)
    lines += _scale_section(results)
    notes = diagnostics(results)
    if notes:
        lines += ["## Findings (computed from the figures above)", ""] + [f"- {n}" for n in notes] + [""]
    text = "\n".join(lines)
    if heading_level > 1:
        text = "\n".join("#" * (heading_level - 1) + ln if ln.startswith("#") else ln for ln in text.splitlines())
    return text + "\n"
