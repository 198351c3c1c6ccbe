"""Assemble the root ``BENCHMARKS.md`` from every JSON file in ``benchmarks/results/``.

Known files get a section with their own table: ``benchmark*.json`` (the ground-truth benchmark, rendered
by :func:`reidbench.render_markdown`), ``data.json`` (rendering speed of the synthetic persons),
``zoo*.json`` (the reference model), ``explainer*.json`` (the AMD explainer) and ``ranking*.json`` (ranked
lists at gallery scale); any other file is rendered
generically (its scalars as a list, each list of records as a table). Every section names the command that
reproduces it.

Usage (from the repository root)::

    .venv/bin/python benchmarks/make_report.py                      # writes BENCHMARKS.md
    .venv/bin/python benchmarks/make_report.py --output /tmp/B.md
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reidbench import machine_description, markdown_table, render_markdown
from reidbench._report import fmt

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PYTHON = ".venv/bin/python"


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalars of a nested dict as ``"a.b": value`` (lists of scalars joined as text)."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if _scalar(value):
            out[name] = value
        elif isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)) and all(_scalar(v) for v in value) and len(value) <= 8:
            out[name] = ", ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in value)
    return out


def _records_table(records: list[dict[str, Any]], columns: list[tuple[str, str]] | None = None) -> str:
    """A table of a list of dicts: the given ``(key, header)`` columns, else every scalar key."""
    flat = [_flatten(r) for r in records]
    if columns is None:
        keys: list[str] = []
        for r in flat:
            keys += [k for k in r if k not in keys]
        columns = [(k, k) for k in keys]
    columns = [(k, h) for k, h in columns if any(k in r for r in flat)]
    return markdown_table([h for _, h in columns], [[r.get(k) for k, _ in columns] for r in flat], digits=2)


def _generic(data: dict[str, Any], skip: tuple[str, ...] = ()) -> list[str]:
    lines: list[str] = []
    scalars = _flatten({k: v for k, v in data.items() if k not in skip})
    if scalars:
        # Folded: the configuration and machine fields are for the record, the tables are the result.
        lines += ["<details><summary>Recorded fields</summary>", "",
                  markdown_table(["field", "value"], [[k, v] for k, v in scalars.items()], digits=2), "",
                  "</details>", ""]
    for key, value in data.items():
        if key in skip:
            continue
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines += [f"**{key}**", "", _records_table(value), ""]
    return lines


def _data_section(data: dict[str, Any]) -> list[str]:
    cols = [("domain", "domain"), ("height", "H"), ("width", "W"), ("masks", "masks"), ("images", "images"),
            ("items_per_s_cpu", "items/s (CPU time)"), ("items_per_s_wall", "items/s (wall)"),
            ("render_per_s_cpu", "counterfactual renders/s (CPU)"),
            ("label_identities_per_s_cpu", "identity labels/s (CPU)")]
    return [data.get("benchmark", ""), "", _records_table(data.get("rows", []), cols), "",
            *_generic(data, skip=("rows", "benchmark"))]


def _zoo_section(data: dict[str, Any]) -> list[str]:
    cols = [("test", "test domain"), ("features", "features"), ("rank1", "Rank-1"), ("rank5", "Rank-5"),
            ("rank10", "Rank-10"), ("mAP", "mAP")]
    return [f"Model {data.get('model', '?')}, trained in {data.get('train_seconds', '?')} s "
            f"({data.get('threads', '?')} threads).", "", _records_table(data.get("rows", []), cols), "",
            *_generic(data, skip=("rows", "model", "train_seconds"))]


def _explainer_section(data: dict[str, Any]) -> list[str]:
    cols = [("mode", "mode"), ("fit_seconds", "fit s"), ("steps", "steps"), ("adre", "ADRE %"),
            ("x_map_e", "X-mAP_e"), ("x_map_c", "X-mAP_c"), ("rank1_target", "R1 target"),
            ("rank1_interpreter", "R1 d_hat"), ("map_target", "mAP target"), ("map_interpreter", "mAP d_hat"),
            ("explain_ms", "explain ms"), ("explain_over_forward", "explain / forward")]
    return [_records_table(data.get("results", []), cols), "", *_generic(data, skip=("results",))]


def _seed_rows(data: dict[str, Any], figures: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """One row per variant: each figure as ``mean ± std`` over the fit seeds (``-`` when missing)."""
    rows = []
    for row in data.get("variants", []):
        cells = {"variant": row.get("variant"), "seeds": row.get("seeds", 1)}
        for key, _ in figures:
            mean, std = row.get(key), row.get(f"{key}_std")
            cells[key] = "-" if not isinstance(mean, (int, float)) or mean != mean else (
                f"{mean:.2f}" + (f" ± {std:.2f}" if isinstance(std, (int, float)) and std == std else ""))
        rows.append(cells)
    return rows


def _subspace_fit_section(data: dict[str, Any]) -> list[str]:
    figures = [("x_map_e", "X-mAP_e"), ("x_map_e_used", "X-mAP_e (used)"),
               ("differing_share_percent", "differing attributes' part %"), ("attribute_agreement", "attribute agr."),
               ("share_ignored_percent", "share ignored %"), ("unexplained_different_percent", "unexplained, different %"),
               ("unexplained_same_percent", "unexplained, same person %")]
    rows = _seed_rows(data, figures)
    note = (f"Target: {data.get('target', 'reference model')}; the split of the default recipe refitted on "
            f"{data.get('training_embeddings', '?')} training embeddings ({data.get('steps', '?')} steps) and "
            f"scored on every pair of {data.get('query', '?')} query x {data.get('gallery', '?')} gallery images, "
            "without the maps (which do not change it); mean ± standard deviation over the fit seeds. 'usage "
            "from directions': `model_aware_prior=True, usage_measure=\"directions\"`; the norms of the "
            "attributes' regression directions rank them as the model's sensitivity does with Spearman "
            f"{fmt(data.get('direction_usage_spearman_sensitivity'), 2)} (the contrast usage of the model-aware "
            f"prior's default: {fmt(data.get('contrast_usage_spearman_sensitivity'), 2)}).")
    return [note, "", _records_table(rows, [("variant", "variant"), ("seeds", "fit seeds"), *figures]), ""]


def _maps_section(data: dict[str, Any]) -> list[str]:
    figures = [("pointing_used", "pointing used %"), ("pointing_used_wide", "pointing used %, wide"),
               ("relevance_mass_used", "relevance mass used %"), ("relevance_mass_used_wide", "relevance mass used %, wide"),
               ("fit_seconds", "fit s"), ("explain_ms", "explain ms")]
    rows = _seed_rows(data, figures)
    for row, source in zip(rows, data.get("variants", []), strict=True):
        row["seeds"] = ", ".join(str(s) for s in source.get("seed_ids", [])) or row["seeds"]
    note = ("Target: reference model (reidnet_small); `amd-subspace` fitted with its default steps and the "
            "variant's options, mean ± standard deviation over the fit seeds. The maps only locate (the split "
            "of the distance does not depend on them), so they are scored on localisation alone: the pointing "
            "game and relevance mass of each attribute's map inside that attribute's mask, in both images of "
            f"every pair where the attribute differs, averaged over the attributes the model uses; on "
            f"`bench_truthful.py`'s {data.get('pairs', '?')} pairs (its ablation tables' figure) and, 'wide', on "
            f"{data.get('wide_pairs', '?')} further pairs drawn the same way. Fit and explain times are wall-clock "
            "times of runs that shared the 2 cores two at a time.")
    return [note, "", _records_table(rows, [("variant", "variant"), ("seeds", "fit seeds"), *figures]), ""]


def _architectures_section(data: dict[str, Any]) -> list[str]:
    cols = [("architecture", "architecture"), ("adapter", "adapter"), ("layer", "layer"), ("grid", "grid C x h x w"),
            ("parameters_m", "params M"), ("fit_step_s", "fit step s (16 images)"), ("explain_ms", "explain ms"),
            ("explain_forwards", "explain / forward"), ("explain_shared_forwards", "shared trunk: explain / forward"),
            ("ig50_ms", "IG-50 ms"), ("ig_over_amd", "IG-50 / AMD"), ("ig_over_amd_shared", "IG-50 / AMD shared"),
            ("ig_over_two_forwards", "IG-50 / two forwards")]
    rows = [dict(r) for r in data.get("results", [])]
    for r in rows:  # derived: what no interpreter that runs a second trunk per image can beat
        if isinstance(r.get("ig50_ms"), (int, float)) and isinstance(r.get("forward_ms"), (int, float)) \
                and r["forward_ms"] > 0:
            r["ig_over_two_forwards"] = round(r["ig50_ms"] / (2 * r["forward_ms"]), 1)
    return ["Random-initialised targets at 128x64, one torch thread; one pair per explanation, timed in "
            "alternation with a forward pass of the pair and Captum's Integrated Gradients (50 steps). "
            "'IG-50 / two forwards' is computed from the columns before it: the ratio an interpreter with "
            "its own copy of the trunk (the default, `trunk=\"copy\"`) could reach if nothing but the "
            "target's and the copy's forward passes cost time. Below 50 it rules out the 50x target for the "
            "copy on that architecture; the shared trunk runs one trunk pass per image.", "",
            _records_table(rows, cols), "", *_generic(data, skip=("results",))]


def _linear_section(data: dict[str, Any]) -> list[str]:
    cols = [("variant", "variant"), ("steps", "steps"), ("adre", "ADRE %"), ("x_map_e", "X-mAP_e"),
            ("x_map_e_used", "X-mAP_e (used)"), ("differing_share_percent", "differing attributes' part %"),
            ("top_share_percent", "top attribute %"), ("unexplained_different_percent", "unexplained, different %"),
            ("unexplained_same_percent", "unexplained, same person %"), ("attribute_agreement", "attribute agr."),
            ("causal_agreement_aligned", "causal agr. aligned"), ("pointing_used", "pointing used %")]
    target = str(data.get("target", "reference model"))
    note = (f"Target: {target}; one fit seed, 48 pairs; the same run fits every row. 'Differing attributes' "
            "part': over pairs of different people, the part of the distance given to attributes that the "
            "attributes whose labels differ carry. Unexplained: d minus the attributes' contributions, over d. "
            "'absent xN': amd-linear with absent_weight=N, a term on the area of the maps of the attributes "
            "an image lacks (label 0).")
    return [note, "", _records_table(data.get("variants", []), cols), ""]


def _seeds_section(data: dict[str, Any]) -> list[str]:
    figures = [("x_map_e", "X-mAP_e"), ("adre", "ADRE %"), ("differing_share_percent", "differing attributes' part %"),
               ("attribute_agreement", "attribute agr."), ("pointing_used", "pointing used %"),
               ("unexplained_different_percent", "unexplained, different %"),
               ("unexplained_same_percent", "unexplained, same person %")]
    rows = []
    for row in data.get("variants", []):
        cells = {"variant": row.get("variant"), "seeds": row.get("seeds")}
        for key, _ in figures:
            mean, std = row.get(key), row.get(f"{key}_std")
            cells[key] = "-" if not isinstance(mean, (int, float)) else (
                f"{mean:.2f}" + (f" ± {std:.2f}" if isinstance(std, (int, float)) and std == std else ""))
        rows.append(cells)
    cols = [("variant", "variant"), ("seeds", "fit seeds"), *figures]
    note = (f"Target: {data.get('target', 'reference model')}; mean ± standard deviation over the fit seeds "
            f"{data.get('seeds')}, the same data and {data.get('pairs', '?')} pairs (columns as in the section above).")
    return [note, "", _records_table(rows, cols), ""]


def _subspace_section(data: dict[str, Any]) -> list[str]:
    figures = [("x_map_e", "X-mAP_e"), ("x_map_c", "X-mAP_c"), ("adre", "ADRE %"), ("pointing_used", "pointing used %"),
               ("differing_share_percent", "differing attributes' part %"), ("top_share_percent", "top attribute %"),
               ("attribute_agreement", "attribute agr."), ("share_exclusive_unused_percent", "share ignored %"),
               ("unexplained_different_percent", "unexplained, different %"),
               ("unexplained_same_percent", "unexplained, same person %"),
               ("causal_agreement_aligned", "causal agr. aligned")]
    rows = _seed_rows(data, figures)
    cols = [("variant", "variant"), ("seeds", "fit seeds"), *figures]
    fair = data.get("variants", [{}])[0].get("fair_share_percent")
    note = (f"Target: {data.get('target', 'reference model (reidnet_small)')}; mean ± standard deviation over the fit "
            f"seeds (a row without ± is one seed), the same data and {data.get('pairs', '?')} pairs; "
            + (f"every fit runs {data['fit_steps']} optimiser steps" if data.get("fit_steps") else
               "every fit has its default number of steps"
               + (f", at most {fmt(data.get('fit_budget_seconds'), 0)} s" if data.get("fit_budget_seconds") else ""))
            + ". 'Differing attributes' part': over pairs of different people, the part "
            "of the distance given to attributes that the attributes whose labels differ carry; 'share ignored': "
            "the mean share, when exclusive, of the attributes the model does not use "
            f"(1/M = {fmt(fair)} %); unexplained: d minus the attributes' contributions, over d.")
    return [note, "", _records_table(rows, cols), ""]


def _arch_quality_section(data: dict[str, Any]) -> list[str]:
    cols = [("architecture", "architecture"), ("recipe", "recipe"), ("adapter", "adapter"),
            ("train_epochs", "target epochs"), ("rank1_target", "R1 target"), ("map_target", "mAP target"), ("fit_steps", "AMD steps"),
            ("adre", "ADRE %"), ("x_map_e", "X-mAP_e"), ("x_map_c", "X-mAP_c"), ("rank1_interpreter", "R1 d_hat")]
    sizes = data.get("sizes", {})
    return [f"Targets trained by the zoo's trainer on {sizes.get('num_train_ids', '?')} synthetic identities "
            f"({sizes.get('images_per_id', '?')} images each, 128x64), then the default explainer fit (the "
            f"recipe column); all query x gallery pairs of {sizes.get('num_test_ids', '?')} test identities.", "",
            _records_table(data.get("results", []), cols), ""]


def _truthful_section(data: dict[str, Any]) -> list[str]:
    cols = [("variant", "variant"), ("steps", "steps"), ("x_map_e", "X-mAP_e"), ("x_map_e_std", "± X-mAP_e"),
            ("x_map_e_used", "X-mAP_e (used)"), ("adre", "ADRE %"), ("adre_std", "± ADRE"),
            ("causal_agreement", "causal agr."),
            ("causal_agreement_used", "causal agr. (used)"),
            ("causal_agreement_aligned", "causal agr. aligned"),
            ("causal_agreement_aligned_used", "causal agr. aligned (used)"),
            ("causal_agreement_averaged", "causal agr. averaged"),
            ("causal_agreement_averaged_used", "causal agr. averaged (used)"),
            ("attribute_agreement", "attribute agr."),
            ("pointing_used", "pointing used %"), ("pointing_unused", "pointing ignored %"),
            ("share_exclusive_used_percent", "share used %"),
            ("share_exclusive_unused_percent", "share ignored %"), ("fair_share_percent", "1/M %")]
    budget = data.get("fit_budget_seconds", "?")
    intro = (f"{data.get('attributes_used', '?')} of {len(data.get('attributes', []))} attributes move the "
             f"model's distance more than a new photo of the same person; every variant is fitted with its "
             f"default number of steps (at most {budget} s); every figure is the mean over "
             f"{len(data.get('seeds', [0]))} fit seed(s) (\"±\": their standard deviation), "
             f"{data.get('pairs', '?')} pairs for the causal "
             "agreement and the pointing game. \"causal agr.\": per-pair Spearman between contributions "
             "and the change of the distance when one attribute of image a is flipped (every exclusive "
             "attribute and 3 common ones); \"aligned\": the decrease of the distance when one difference "
             "is removed instead (a redrawn with b's value of the attribute: b's colour for a garment; 0 for "
             "a common attribute); \"averaged\": the toggles measured on "
             f"{data.get('photos', '?')} x {data.get('photos', '?')} photo pairs of the two persons, in both "
             "directions, and averaged; \"(used)\": over the attributes the model uses only (X-mAP_e (used) ranks "
             "those attributes only). \"attribute agr.\": Spearman, over the attributes, between the model's "
             "sensitivity to each attribute (mean distance change of a flip over same-person noise) and the "
             "mean share the explainer gives it when it is exclusive.")
    notes = []
    if "measurement_ceiling" in data:
        notes = [
            "How reliable is the reference itself? The same flips made to image b instead of image a agree "
            f"with the flips in image a at a mean Spearman of {fmt(data['measurement_ceiling'], 2)} "
            f"({fmt(data.get('measurement_ceiling_used'), 2)} over used attributes); the averaged effects "
            f"have a split-half reliability of {fmt(data.get('averaged_split_half'), 2)} "
            f"({fmt(data.get('averaged_split_half_used'), 2)} over used attributes). Removing each difference "
            f"in image b instead of image a agrees with removing it in image a at "
            f"{fmt(data.get('measurement_ceiling_aligned'), 2)} "
            f"({fmt(data.get('measurement_ceiling_aligned_used'), 2)} over used attributes). An explainer cannot be "
            "expected to agree with a measurement much better than the measurement agrees with itself.",
        ]
    per_attribute = []
    variants = [v for v in data.get("variants", []) if "pointing_per_attribute" in v]
    names, uses = data.get("attributes", []), data.get("model_uses", [])
    if variants and names:
        rows = [[name, "yes" if used else "no", *[fmt(v["pointing_per_attribute"][k]) for v in variants]]
                for k, (name, used) in enumerate(zip(names, uses, strict=False))]
        per_attribute = ["Pointing game per attribute (%), in images where it is exclusive to the pair:", "",
                         markdown_table(["attribute", "model uses it", *[v["variant"] for v in variants]], rows), ""]
    return [intro, "", _records_table(data.get("variants", []), cols), "", *notes, "", *per_attribute,
            *_generic(data, skip=("variants", "attributes", "model_uses", "sensitivity_ratio"))]


def _ranking_section(data: dict[str, Any]) -> list[str]:
    cols = [("trunk", "trunk"), ("queries", "queries"), ("gallery", "gallery"), ("top_k", "top-k"),
            ("embedding_seconds", "embedding s"), ("arithmetic_seconds", "arithmetic s"),
            ("end_to_end_seconds", "end to end s"), ("images_per_second", "images/s"),
            ("embedding_over_target_forward", "embedding / target forward"),
            ("peak_rss_mb", "peak RSS MB"), ("index_mb", "index MB"),
            ("brute_force_over_topk", "brute force / top-k (per query)")]
    targets = data.get("targets", {})
    verdicts = []
    for row in data.get("results", []):
        met = row.get("targets_met", {})
        verdicts.append(
            f"* trunk `{row.get('trunk')}`: end to end under {fmt(targets.get('end_to_end_seconds'), 0)} s: "
            f"{'met' if met.get('end_to_end_under_60s') else 'not met'}; arithmetic under "
            f"{fmt(targets.get('arithmetic_seconds'), 0)} s: {'met' if met.get('arithmetic_under_15s') else 'not met'}; "
            f"peak memory under {fmt(targets.get('peak_rss_mb', 0) / 1024, 0)} GB: "
            f"{'met' if met.get('peak_memory_under_3gb') else 'not met'}.")
    intro = (f"Model: {data.get('model', '?')}, {data.get('torch_threads', '?')} torch threads. "
             "Embedding: the gallery index and the queries (target and interpreter forward passes); arithmetic: "
             "the block-wise top-k and the contributions of the top-k pairs after embedding. Memory: "
             f"{data.get('memory', '?')}. \"embedding / target forward\": embedding time per image over the "
             "target model's own forward pass per image, in the same process. \"brute force / top-k\": the "
             "full Q x G x M decomposition per query, timed on a few queries in the same process, over the "
             "top-k arithmetic per query.")
    return [intro, "", _records_table(data.get("results", []), cols), "", "Targets of issue 16:", "", *verdicts, "",
            *_generic(data, skip=("results",))]


# stem prefix -> (title, script, section renderer); the first matching prefix wins.
KNOWN: list[tuple[str, str, str, Callable[[dict[str, Any]], list[str]] | None]] = [
    ("benchmark", "Ground-truth benchmark: AMD against the Captum baselines", "run_benchmark.py", None),
    ("data", "Synthetic persons: rendering speed", "bench_data.py", _data_section),
    ("zoo", "Reference ReID model", "bench_zoo.py", _zoo_section),
    ("explainer", "AMD explainer on the reference model", "bench_explainer.py", _explainer_section),
    ("architectures", "The architectures practitioners run: cost of an explanation", "bench_architectures.py",
     _architectures_section),
    ("arch_quality", "The architectures practitioners run: quality after the default fit", "bench_arch_quality.py",
     _arch_quality_section),
    ("truthful", "AMD+ ablation: explanations true to the model (issue 8)", "bench_truthful.py",
     _truthful_section),
    ("linear_bot_resnet18", "The linear decomposition on a second architecture, BoT ResNet-18 (issue 15)",
     "bench_truthful.py", _linear_section),
    ("linear_seeds", "amd-linear and its absent-attribute lever over 3 fit seeds (issue 15)", "bench_truthful.py",
     _seeds_section),
    ("linear_shared", "amd-linear with AMD+'s shared maps, located by recognition (issue 15)", "bench_truthful.py",
     _linear_section),
    ("linear", "The linear decomposition against the paper's recipe (issue 15)", "bench_truthful.py",
     _linear_section),
    ("ranking", "Ranked lists at gallery scale (issue 16)", "bench_ranking.py", _ranking_section),
    ("subspace_bot_resnet18_region_prior", "The regions' learned prior on a second architecture, BoT ResNet-18 "
     "(issue 15)", "bench_truthful.py", _subspace_section),
    ("subspace_bot_resnet18", "The default recipe (amd-subspace) on a second architecture, BoT ResNet-18 "
     "(issue 15)", "bench_truthful.py", _subspace_section),
    ("maps", "The maps of the default recipe alone: localisation over fit seeds (issue 15)", "bench_maps.py",
     _maps_section),
    ("subspace_fit", "The subspace fit alone: truer to the model, or more concentrated (issue 15)",
     "bench_subspace_fit.py", _subspace_fit_section),
    ("subspace", "The default recipe (amd-subspace) and its levers against the paper's recipe (issue 15)",
     "bench_truthful.py", _subspace_section),
]


def _command(stem: str, data: dict[str, Any], script: str | None) -> str:
    if isinstance(data.get("command"), str):
        return data["command"]
    if script and (ROOT / "benchmarks" / script).exists():
        quick = " --quick" if data.get("quick") else ""
        return f"{PYTHON} benchmarks/{script}{quick}"
    guess = ROOT / "benchmarks" / f"bench_{stem}.py"
    return f"{PYTHON} benchmarks/{guess.name}" if guess.exists() else "(unknown: no matching script)"


def section(path: Path) -> list[str]:
    """The markdown section of one results file."""
    data = json.loads(path.read_text())
    stem = path.stem
    title, script, render = f"{stem}", None, None
    for prefix, known_title, known_script, renderer in KNOWN:
        if stem.startswith(prefix):
            title, script, render = known_title, known_script, renderer
            break
    if stem.startswith("benchmark"):
        text = render_markdown(data, heading_level=2).strip().splitlines()
        body = text[1:]  # the benchmark's own title is replaced by this file's section title
    else:
        body = render(data) if render else _generic(data)
    try:
        shown = path.resolve().relative_to(ROOT)
    except ValueError:
        shown = path
    head = [f"## {title} (`{shown}`)", ""]
    if not stem.startswith("benchmark"):  # the benchmark's own text names its command
        head += [f"Reproduce: `{_command(stem, data, script)}`", ""]
    return head + [line for line in body] + [""]


def build_report(results_dir: Path = RESULTS) -> str:
    """The whole ``BENCHMARKS.md`` text from every ``*.json`` file of ``results_dir``."""
    files = sorted(results_dir.glob("*.json"))
    order = {prefix: i for i, (prefix, *_rest) in enumerate(KNOWN)}

    def rank(p: Path) -> tuple[int, str]:
        return (next((i for prefix, i in order.items() if p.stem.startswith(prefix)), len(order)), p.stem)

    machine = machine_description()
    lines = [
        "# reidexplain benchmarks", "",
        "Generated by `benchmarks/make_report.py` from the JSON files in `benchmarks/results/`; do not edit "
        "by hand. Each section names the machine it ran on (when its script recorded it) and the command "
        "that reproduces it. All timings are CPU timings; on a machine shared with other processes they are "
        "pessimistic.", "",
        f"Report assembled on: {machine['cpu_model']}, {machine['cores']} cores, torch {machine['torch']}, "
        f"captum {machine['captum']}, Python {machine['python']}, {machine['date']}.", "",
        "Reproduce everything (from the repository root):", "", "```bash",
    ]
    commands = [_command(p.stem, json.loads(p.read_text()), next(
        (s for prefix, _t, s, _r in KNOWN if p.stem.startswith(prefix)), None)) for p in sorted(files, key=rank)]
    lines += [c for c in dict.fromkeys(commands) if not c.startswith("(unknown")]
    lines += [f"{PYTHON} benchmarks/make_report.py", "```", ""]
    for path in sorted(files, key=rank):
        lines += section(path)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> Path:
    """Write the report; returns its path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the JSON files")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    args.output.write_text(build_report(args.results))
    print(f"written {args.output}")
    return args.output


if __name__ == "__main__":
    main()
