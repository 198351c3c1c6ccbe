"""Tests of the ground-truth benchmark: a tiny end-to-end run (untrained model, never the reference
model) and the pieces whose numbers can be checked independently."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import benchmark_script
from reidbench import (
    BASELINE_METHODS,
    SIZES,
    BenchmarkSize,
    baseline_settings,
    evaluate_targets,
    get_size,
    method_label,
    render_markdown,
    run_benchmark,
    sample_pairs,
    to_json_ready,
)
from reidbench._amd import (
    agreement_summary,
    chance_explanation_scores,
    reweighted_retrieval,
)
from reidbench._attributes import shares_by_exclusivity
from reidbench._data import ProjectedLabels

from reidexplain.attributes import project_labels
from reidexplain.baselines import BASELINES
from reidexplain.explainer import MatrixExplanation
from reidexplain.metrics import evaluate_retrieval
from reidexplain.zoo import create_model

METHODS = ["amd_gray_box", "amd_black_box", "amd_shared_trunk", "integrated_gradients", "saliency", "occlusion", "grad_cam",
           "feature_ablation", "random"]


def _strict_json(path):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


def _tiny_model():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return create_model("reidnet_small").eval()


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Two tiny runs with the same seed; the reference model must never be loaded or trained."""

    def refuse(*args, **kwargs):
        raise AssertionError("the benchmark test must not load or train the reference model")

    folders = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("reidexplain.zoo.load_reference_model", refuse)
        for name in ("first", "second"):
            out = tmp_path_factory.mktemp(name)
            folder = run_benchmark(out, size="tiny", progress=False, seed=0, model=_tiny_model())
            assert folder == out
            folders.append(folder)
    return [(_strict_json(f / "results.json"), (f / "BENCHMARKS.md").read_text()) for f in folders]


def test_tiny_run_structure(tiny_runs):
    results, _ = tiny_runs[0]
    for key in ("machine", "command", "size", "fits", "methods", "amd", "cross_domain", "reweighting",
                "attributes", "scale", "stage_seconds", "total_seconds", "reference_model"):
        assert key in results, key
    machine = results["machine"]
    assert machine["cores"] >= 1 and machine["torch"] == torch.__version__ and machine["cpu_model"]
    assert results["size"]["name"] == "tiny"
    assert set(results["fits"]) == {"gray_box", "black_box", "shared_trunk", "cross_domain"}
    assert results["fits"]["gray_box"]["mode"] == "gray-box"
    assert results["fits"]["black_box"]["mode"] == "black-box"
    assert results["fits"]["cross_domain"]["attributes"] == 18
    assert results["num_pairs"] == SIZES["tiny"].pairs == len(results["pairs"])


def test_tiny_method_rows(tiny_runs):
    results, _ = tiny_runs[0]
    rows = {r["method"]: r for r in results["methods"]}
    assert list(rows) == METHODS
    for name, r in rows.items():
        assert 0.0 <= r["pointing_game"] <= 100.0, name
        assert 0.0 <= r["relevance_mass"] <= 100.0, name
        assert math.isfinite(r["deletion_auc"]) and math.isfinite(r["insertion_auc"]), name
        if name != "random":
            assert r["seconds_per_pair"] > 0, name


def test_tiny_amd_tables(tiny_runs):
    results, _ = tiny_runs[0]
    amd = results["amd"]
    for mode in ("gray_box", "black_box"):
        s = amd[mode]
        for key in ("x_map_e", "x_map_c", "rank1_target", "rank1_interpreter", "map_target", "map_interpreter"):
            assert 0.0 <= s[key] <= 100.0, (mode, key)
        assert s["adre"] >= 0.0
        causal = amd["causal_agreement"][mode]
        assert causal["pairs"] <= results["num_pairs"]
        assert all(v is None or -1.0 <= v <= 1.0 for v in causal["per_pair"])
    ceiling = amd["causal_ceiling"]
    assert ceiling["pairs"] <= results["num_pairs"]
    assert all(v is None or -1.0 <= v <= 1.0 for v in ceiling["per_pair"])
    # Each pair flips all its exclusive attributes plus `common_flips` common ones.
    assert amd["flips_per_pair"] >= 1 + SIZES["tiny"].common_flips - 1e-9
    assert 0.0 < amd["chance"]["x_map_e"] < 100.0 and 0.0 < amd["chance"]["x_map_c"] < 100.0
    cross = results["cross_domain"]
    assert cross["x_map_e_drop"] == pytest.approx(cross["market"]["x_map_e"] - cross["duke"]["x_map_e"])
    # The re-weighting at alpha = 0 is the target distance: the same Rank-1/mAP as the explainer's evaluation.
    rw = results["reweighting"]
    assert rw["alpha"] in SIZES["tiny"].alphas
    assert [r["alpha"] for r in rw["validation"]] == list(SIZES["tiny"].alphas)
    assert rw["test_before"]["rank1"] == pytest.approx(amd["gray_box"]["rank1_target"], abs=1e-6)
    assert rw["test_before"]["mAP"] == pytest.approx(amd["gray_box"]["map_target"], abs=1e-6)


def test_tiny_attribute_and_scale_tables(tiny_runs):
    results, _ = tiny_runs[0]
    rows = results["attributes"]["rows"]
    assert len(rows) == 26 and rows[0]["attribute"] == "backpack"
    for r in rows:
        assert r["sensitivity_ratio"] >= 0.0
        assert r["model_uses_it"] == (r["sensitivity_ratio"] > 1.0)
        assert 0.0 <= r["positive_percent"] <= 100.0
        if r["localization_count"] == 0:
            assert r["pointing_game"] is None
        else:
            assert 0.0 <= r["pointing_game"] <= 100.0
    scale = results["scale"]
    assert [r["gallery_fraction"] for r in scale] == list(SIZES["tiny"].scale_fractions)
    assert scale[-1]["gallery"] == results["data"]["gallery"]
    assert all(r["pairs"] == r["queries"] * r["gallery"] for r in scale)


def test_tiny_markdown_has_every_row(tiny_runs):
    results, markdown = tiny_runs[0]
    for section in ("## Targets", "## Methods on the same", "## AMD explanation metrics", "## Cross-domain",
                    "## By-product", "## Per attribute", "## Scale"):
        assert section in markdown, section
    for name in METHODS:
        assert f"| {method_label(name)} |" in markdown, name
    for row in ("| gray-box |", "| black-box |", "| random shares (chance) |", "| market -> duke |"):
        assert row in markdown, row
    for r in results["attributes"]["rows"]:
        assert f"| {r['attribute']} |" in markdown
    targets = evaluate_targets(results)
    assert len(targets) == 10
    for t in targets:
        status = "not measured" if t["met"] is None else ("met" if t["met"] else "**missed**")
        assert f"| {t['target']} |" in markdown and status in markdown
    assert render_markdown(results) == markdown  # the report is a function of the JSON alone


def test_tiny_run_is_deterministic(tiny_runs):
    (first, _), (second, _) = tiny_runs
    keys = ("pointing_game", "relevance_mass", "deletion_auc", "insertion_auc")
    assert [[r[k] for k in keys] for r in first["methods"]] == [[r[k] for k in keys] for r in second["methods"]]
    assert first["pairs"] == second["pairs"]
    assert first["amd"]["gray_box"] == second["amd"]["gray_box"]
    assert first["attributes"]["rows"] == second["attributes"]["rows"]


def _results(amd_pg=60.0, amd_rm=40.0, amd_spp=0.01, ig_spp=0.6, occ_spp=0.05, xmap=90.0, adre=3.0, drop=10.0):
    def row(name, pg, rm, spp):
        return {"method": name, "pointing_game": pg, "relevance_mass": rm, "seconds_per_pair": spp}

    return {
        "methods": [row("amd_gray_box", amd_pg, amd_rm, amd_spp), row("amd_black_box", 10.0, 10.0, 0.01),
                    row("integrated_gradients", 50.0, 45.0, ig_spp), row("occlusion", 20.0, 20.0, occ_spp),
                    row("random", 99.0, 99.0, 0.0)],
        "amd": {"gray_box": {"x_map_e": xmap, "adre": adre}},
        "cross_domain": {"x_map_e_drop": drop},
    }


def test_evaluate_targets_judges_the_figures():
    met = {t["target"]: t["met"] for t in evaluate_targets(_results())}
    assert met["AMD gray-box: pointing game ahead of every Captum baseline"] is True  # 60 > 50; random ignored
    assert met["AMD gray-box: relevance mass ahead of every Captum baseline"] is False  # 40 < 45
    assert met["AMD black-box: pointing game ahead of every Captum baseline"] is False
    assert met["AMD (gray-box) faster per pair than Integrated Gradients (wall-clock time)"] is True  # 60x
    assert met["AMD (gray-box) faster per pair than Occlusion (wall-clock time)"] is False  # 5x
    assert met["X-mAP_e in-domain (gray-box)"] is True
    assert met["ADRE in-domain (gray-box)"] is False
    assert met["cross-domain X-mAP_e drop (market -> duke, 18 attributes)"] is True
    ratios = {t["target"]: t["measured"] for t in evaluate_targets(_results())}
    assert ratios["AMD (gray-box) faster per pair than Integrated Gradients (wall-clock time)"] == pytest.approx(60.0)
    # With CPU times recorded, the speed targets are judged on them.
    results = _results()
    for row, cpu in zip(results["methods"], (0.002, 0.002, 0.05, 0.03, 0.0), strict=True):
        row["cpu_seconds_per_pair"] = cpu
    cpu_ratios = {t["target"]: (t["measured"], t["met"]) for t in evaluate_targets(results)}
    assert cpu_ratios["AMD (gray-box) faster per pair than Integrated Gradients (CPU time)"] == (pytest.approx(25.0), False)
    assert cpu_ratios["AMD (gray-box) faster per pair than Occlusion (CPU time)"] == (pytest.approx(15.0), True)
    flipped = {t["target"]: t["met"] for t in evaluate_targets(_results(xmap=84.9, adre=2.0, drop=15.3))}
    assert flipped["X-mAP_e in-domain (gray-box)"] is False
    assert flipped["ADRE in-domain (gray-box)"] is True
    assert flipped["cross-domain X-mAP_e drop (market -> duke, 18 attributes)"] is False


def test_evaluate_targets_missing_figures_are_not_judged():
    results = to_json_ready(_results(xmap=float("nan"), amd_pg=float("nan")))
    met = {t["target"]: t["met"] for t in evaluate_targets(results)}
    assert met["X-mAP_e in-domain (gray-box)"] is None
    assert met["AMD gray-box: pointing game ahead of every Captum baseline"] is None
    assert "not measured" in render_markdown(results)


def test_sample_pairs_are_different_people_with_an_exclusive_attribute():
    gen = torch.Generator().manual_seed(3)
    q_attrs = torch.randint(0, 2, (12, 5), generator=gen).float()
    g_attrs = torch.randint(0, 2, (15, 5), generator=gen).float()
    q_attrs[1] = g_attrs[0]  # a pair of different people with identical labels: never eligible
    q_pids, g_pids = [i % 4 for i in range(12)], [i % 5 for i in range(15)]
    pairs = sample_pairs(q_pids, g_pids, q_attrs, g_attrs, 20, seed=1)
    assert len(pairs) == 20 == len(set(pairs))
    for q, g in pairs:
        assert q_pids[q] != g_pids[g]
        assert bool((q_attrs[q] != g_attrs[g]).any())
    assert pairs == sample_pairs(q_pids, g_pids, q_attrs, g_attrs, 20, seed=1)
    assert len({q for q, _ in pairs[:12]}) == 12  # one pass over the queries before any repeats
    more = sample_pairs(q_pids, g_pids, q_attrs, g_attrs, 10, seed=2, exclude=pairs)
    assert not set(more) & set(pairs)


def test_sample_pairs_errors():
    attrs = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="num_pairs"):
        sample_pairs([0, 1], [0, 1], attrs, attrs, 0)
    with pytest.raises(ValueError, match="attributes"):
        sample_pairs([0, 1, 2], [0, 1], attrs, attrs, 1)
    assert sample_pairs([0, 1], [0, 1], attrs, attrs, 3) == []  # identical labels: nothing eligible


def test_projected_labels_match_project_labels():
    gen = torch.Generator().manual_seed(0)
    items = [{"image": torch.zeros(3, 4, 2), "pid": i, "camid": 0,
              "attributes": torch.randint(0, 2, (23,), generator=gen).float()} for i in range(3)]
    projected = ProjectedLabels(items, "duke", "shared")
    for i, item in enumerate(items):
        assert torch.equal(projected[i]["attributes"], project_labels(item["attributes"], "duke", "shared"))
    assert items[0]["attributes"].shape == (23,)  # the source items are not modified
    with pytest.raises(ValueError, match="lacks"):
        ProjectedLabels(items, "shared", "market1501")


def test_shares_by_exclusivity_against_a_loop():
    gen = torch.Generator().manual_seed(1)
    contributions = torch.rand(3, 4, 5, generator=gen)
    matrix = MatrixExplanation(torch.ones(3, 4), contributions.sum(-1), contributions, tuple("abcde"))
    query = [{"pid": i, "attributes": torch.randint(0, 2, (5,), generator=gen).float()} for i in range(3)]
    gallery = [{"pid": i % 2, "attributes": torch.randint(0, 2, (5,), generator=gen).float()} for i in range(4)]
    out = shares_by_exclusivity(matrix, query, gallery)
    shares = contributions / contributions.sum(-1, keepdim=True)
    for k in range(5):
        excl = [float(shares[i, j, k]) for i in range(3) for j in range(4)
                if query[i]["attributes"][k] != gallery[j]["attributes"][k]]
        common = [float(shares[i, j, k]) for i in range(3) for j in range(4)
                  if query[i]["attributes"][k] == gallery[j]["attributes"][k] and query[i]["pid"] != gallery[j]["pid"]]
        for got, want in ((out["exclusive"][k], excl), (out["common"][k], common)):
            if want:
                assert got == pytest.approx(sum(want) / len(want), rel=1e-6)
            else:
                assert math.isnan(got)


def test_reweighted_retrieval_at_zero_is_plain_retrieval_and_alpha_reorders():
    gen = torch.Generator().manual_seed(2)
    dist = torch.rand(4, 6, generator=gen) + 0.5
    contributions = torch.rand(4, 6, 3, generator=gen)
    matrix = MatrixExplanation(dist, contributions.sum(-1), contributions, ("a", "b", "c"))
    query = [{"pid": i, "camid": 0} for i in range(4)]
    gallery = [{"pid": j % 4, "camid": 1} for j in range(6)]
    plain = evaluate_retrieval(dist, [0, 1, 2, 3], [j % 4 for j in range(6)], [0] * 4, [1] * 6, ranks=(1,))
    assert reweighted_retrieval(matrix, 0.0, query, gallery) == {"rank1": plain["rank1"], "mAP": plain["mAP"]}
    boost = (contributions / contributions.sum(-1, keepdim=True)).max(-1).values
    weighted = evaluate_retrieval((1 + 2.0 * boost) * dist, [0, 1, 2, 3], [j % 4 for j in range(6)], [0] * 4,
                                  [1] * 6, ranks=(1,))
    assert reweighted_retrieval(matrix, 2.0, query, gallery)["mAP"] == pytest.approx(weighted["mAP"])


def test_agreement_summary_values():
    contributions = torch.tensor([[0.1, 0.2, 0.7], [0.3, 0.2, 0.1], [0.5, 0.5, 0.5]])
    effects = torch.tensor([[0.0, 0.3, 0.2], [0.3, 0.2, 0.1], [0.1, float("nan"), 0.3]])
    out = agreement_summary(contributions, effects)
    assert out["pairs"] == 2  # the constant third row has no defined correlation
    assert out["per_pair"][:2] == [0.5, 1.0] and out["per_pair"][2] is None
    assert out["mean"] == pytest.approx(0.75) and out["positive_percent"] == pytest.approx(100.0)


def test_chance_scores_match_the_expected_average_precision_of_a_random_ranking():
    # One exclusive attribute of M = 4 ranked uniformly at random: E[AP] = E[1/rank] = (1 + 1/2 + 1/3 + 1/4) / 4.
    query = [{"attributes": torch.tensor([1.0, 0.0, 0.0, 0.0])}] * 5
    gallery = [{"attributes": torch.zeros(4)}] * 400
    out = chance_explanation_scores(query, gallery, seed=0)
    assert out["x_map_e"] == pytest.approx(100 * (1 + 1 / 2 + 1 / 3 + 1 / 4) / 4, abs=2.0)
    assert out == chance_explanation_scores(query, gallery, seed=0)


def test_sizes_and_errors(tmp_path):
    assert get_size("full") is SIZES["full"] and get_size(SIZES["quick"]) is SIZES["quick"]
    assert SIZES["full"].pairs == 48 and SIZES["quick"].pairs == 8
    with pytest.raises(ValueError, match="expected one of"):
        get_size("huge")
    with pytest.raises(TypeError, match="preset name"):
        get_size(3)
    with pytest.raises(ValueError, match="pairs"):
        BenchmarkSize(pairs=0)
    with pytest.raises(ValueError, match="scale_fractions"):
        BenchmarkSize(scale_fractions=(0.0, 1.0))
    with pytest.raises(ValueError, match="amd_train_ids"):
        run_benchmark(tmp_path / "bad", size=BenchmarkSize(name="bad", num_train_ids=5, amd_train_ids=1,
                                                                image_size=(64, 32)),
                      model=_tiny_model(), progress=False)
    with pytest.raises(TypeError, match="model"):
        run_benchmark(tmp_path / "bad2", size="tiny", model="not a model", progress=False)


def test_methods_take_labels_and_settings_from_the_baseline_registry():
    import reidbench

    assert list(reidbench.METHODS) == METHODS == ["amd_gray_box", "amd_black_box", "amd_shared_trunk", *BASELINE_METHODS,
                                                  "random"]
    for name in BASELINE_METHODS:
        entry = BASELINES.entry(name)
        assert method_label(name) == entry.metadata["label"]
        # The full size runs every baseline with its registered defaults.
        assert baseline_settings(SIZES["full"])[name] == entry.metadata["defaults"]
    assert baseline_settings(SIZES["full"])["integrated_gradients"] == {"n_steps": 50}
    tiny = baseline_settings(SIZES["tiny"])
    assert tiny["integrated_gradients"] == {"n_steps": 4}
    assert tiny["occlusion"] == {**BASELINES.entry("occlusion").metadata["defaults"], "window": 8, "stride": 8}
    assert method_label("amd_gray_box") == "AMD gray-box" and method_label("random") == "random maps (chance)"
    # A label changed in the registry (for a block only) is what the report shows.
    entry = BASELINES.entry("saliency")
    with BASELINES.registered("saliency", entry.obj, label="Plain gradients", defaults=entry.metadata["defaults"]):
        table = render_markdown({"methods": [{"method": "saliency", "pointing_game": 1.0}]})
        assert "| Plain gradients |" in table
    assert method_label("saliency") == "Saliency"


def test_size_baseline_overrides_are_checked_and_copied():
    overrides = {"integrated_gradients": {"n_steps": 7}}
    size = BenchmarkSize(name="mine", baseline_overrides=overrides)
    overrides["integrated_gradients"]["n_steps"] = 9
    assert baseline_settings(size)["integrated_gradients"] == {"n_steps": 7}
    assert size.to_dict()["baseline_overrides"] == {"integrated_gradients": {"n_steps": 7}}
    with pytest.raises(ValueError, match="unknown baseline 'no_such'"):
        BenchmarkSize(baseline_overrides={"no_such": {}})
    with pytest.raises(ValueError, match="mapping"):
        BenchmarkSize(baseline_overrides={"saliency": 3})


def test_make_report_renders_known_and_unknown_files(tiny_runs, tmp_path):
    results, _ = tiny_runs[0]
    (tmp_path / "benchmark.json").write_text(json.dumps(results))
    (tmp_path / "zoo.json").write_text(json.dumps(
        {"model": "reidnet_small", "train_seconds": 12.5, "rows": [
            {"test": "market", "features": "trained", "rank1": 90.0, "rank5": 99.0, "rank10": 99.5, "mAP": 88.0}]}))
    (tmp_path / "mystery.json").write_text(json.dumps({"answer": 42, "rows": [{"x": 1.5, "y": "b"}]}))
    text = benchmark_script("make_report").build_report(tmp_path)
    assert text.startswith("# reidexplain benchmarks")
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert [h.split(" (")[0] for h in headings] == [
        "## Ground-truth benchmark: AMD against the Captum baselines", "## Reference ReID model", "## mystery"]
    assert "### Targets" in text and "| market | trained | 90.00 | 99.00 | 99.50 | 88.00 |" in text
    assert "| answer | 42 |" in text and "| 1.50 | b |" in text
    assert results["command"] in text


def test_averaged_flip_effects_and_ceiling_on_a_tiny_split():
    """Averaged effects: NaN exactly where not flipped, the halves average to the whole, finite ceiling."""
    from reidbench import build_pair_set
    from reidbench._amd import averaged_flip_effects, flip_effects, measurement_ceiling
    from reidbench._data import prepare_data

    torch.manual_seed(0)
    data = prepare_data(get_size("tiny"), progress=False)
    model = _tiny_model().eval()
    qa = torch.stack([it["attributes"] for it in data.query])
    ga = torch.stack([it["attributes"] for it in data.gallery])
    pairs = sample_pairs(data.query_set.pids, data.gallery_set.pids, qa, ga, 3, seed=0)
    pair_set = build_pair_set(data.query_set, data.gallery_set, pairs)
    effects, valid = flip_effects(model, "euclidean", data.query_set, pair_set, common_flips=1, seed=0)
    out = averaged_flip_effects(model, "euclidean", data, pair_set, valid, photos=2, seed=0)
    assert torch.equal(torch.isnan(out["effects"]), ~valid)
    assert (out["effects"][valid] >= 0).all()
    halves = (out["half_a"] + out["half_b"]) / 2
    assert torch.allclose(halves[valid], out["effects"][valid], atol=1e-5)  # equal-sized halves
    ceiling = measurement_ceiling(model, "euclidean", data, pair_set, effects, common_flips=1, seed=0)
    assert ceiling["effects_b"].shape == effects.shape
    assert torch.equal(torch.isnan(ceiling["effects_b"]), torch.isnan(effects))


def test_bench_truthful_merges_seeds_and_refuses_different_data(tmp_path):
    module = benchmark_script("bench_truthful")

    def run(seed, x_map_e, adre, shares):
        row = {"variant": "amd+", "method": "amd+", "options": {}, "x_map_e": x_map_e, "x_map_e_used": 80.0,
               "adre": adre, "causal_agreement": 0.3, "pointing_used": 90.0,
               "share_exclusive_unused_percent": 3.0, "attribute_agreement": 0.5,
               "share_exclusive_per_attribute": shares, "steps": 600}
        return {"pairs": 4, "attributes": ["a", "b"], "model_uses": [True, False], "measurement_ceiling": 0.4,
                "variants": [row], "seeds": [seed], "command": f"run {seed}", "total_seconds": 10.0}

    out = tmp_path / "merged.json"
    module._merge([run(0, 70.0, 3.0, [0.1, 0.3]), run(1, 74.0, 4.0, [0.2, None])], out)
    merged = json.loads(out.read_text())
    row = merged["variants"][0]
    assert row["x_map_e"] == pytest.approx(72.0) and row["adre"] == pytest.approx(3.5)
    assert row["x_map_e_std"] == pytest.approx(2.0 ** 1.5) and row["seeds"] == 2
    assert row["share_exclusive_per_attribute"] == pytest.approx([0.15, 0.3])  # None (NaN) is skipped
    assert merged["seeds"] == [0, 1] and merged["total_seconds"] == pytest.approx(20.0)
    other = run(1, 74.0, 4.0, [0.2, 0.5])
    other["pairs"] = 5
    with pytest.raises(SystemExit, match="pairs"):
        module._merge([run(0, 70.0, 3.0, [0.1, 0.3]), other], out)


def test_align_effects_remove_each_difference_once_per_group():
    """Aligned effects: NaN where not measured, 0 on common attributes, one shared value per colour group."""
    from reidbench import build_pair_set
    from reidbench._amd import align_effects, flip_effects, swapped
    from reidbench._data import prepare_data

    from reidexplain.distance import pair_distance

    torch.manual_seed(0)
    data = prepare_data(get_size("tiny"), progress=False)
    model = _tiny_model().eval()
    schema = data.query_set.schema
    qa = torch.stack([it["attributes"] for it in data.query])
    ga = torch.stack([it["attributes"] for it in data.gallery])
    pairs = sample_pairs(data.query_set.pids, data.gallery_set.pids, qa, ga, 4, seed=0)
    pair_set = build_pair_set(data.query_set, data.gallery_set, pairs)
    _, valid = flip_effects(model, "euclidean", data.query_set, pair_set, common_flips=2, seed=0)
    effects = align_effects(model, "euclidean", data.query_set, pair_set, valid)
    assert torch.equal(torch.isnan(effects), ~valid)
    common = effects[valid & ~pair_set.exclusive]
    torch.testing.assert_close(common, torch.zeros_like(common), rtol=0.0, atol=1e-6)
    upper = [schema.index(n) for n in schema.groups["upper_color"]]
    checked = 0
    for i in range(len(pair_set)):
        differing = [k for k in upper if pair_set.exclusive[i, k]]
        if differing:  # a's colour and b's colour: one recolouring, one effect
            assert len(differing) == 2 and effects[i, differing[0]] == effects[i, differing[1]]
            q, _ = pair_set.pairs[i]
            worn = next(schema.names[k] for k in differing if pair_set.attrs_b[i, k] > 0)
            with torch.no_grad():
                moved = model(data.query_set.counterfactual(q, worn)["image"][None])
                expected = (pair_distance(model(pair_set.images_a[i:i + 1]), model(pair_set.images_b[i:i + 1]), "euclidean")
                            - pair_distance(moved, model(pair_set.images_b[i:i + 1]), "euclidean"))
            assert float(effects[i, differing[0]]) == pytest.approx(float(expected), abs=1e-4)
            checked += 1
    assert checked > 0
    # Aligning b to a instead measures the same differences: same NaN pattern.
    other = align_effects(model, "euclidean", data.gallery_set, swapped(pair_set), valid)
    assert torch.equal(torch.isnan(other), ~valid)


def test_bench_truthful_attribute_agreement_skips_missing_shares():
    spearman = benchmark_script("bench_truthful")._spearman
    assert spearman([1.0, 2.0, 3.0, 4.0], [0.1, 0.2, float("nan"), 0.4]) == pytest.approx(1.0)
    assert spearman([1.0, 2.0, 3.0], [0.3, 0.2, 0.1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1.0, 2.0], [1.0, 2.0]))  # fewer than 3 attributes: undefined


def test_bench_architectures_quick_rows_and_report(tmp_path):
    module = benchmark_script("bench_architectures")
    result = module.main(["--quick", "--architectures", "reidnet_small", "--steps", "1", "--repeats", "1",
                          "--out", str(tmp_path / "architectures.json")])
    (row,) = result["results"]
    assert row["architecture"] == "reidnet_small" and row["adapter"] == "forward_features"
    assert row["fit_steps"] >= 1 and row["explain_forwards"] > 0 and row["ig_over_amd"] > 0
    text = benchmark_script("make_report").build_report(tmp_path)
    assert "| reidnet_small | forward_features |" in text


def test_bench_ranking_quick_writes_its_results_and_report_section(tmp_path):
    """The ranking benchmark's quick mode (untrained small model, 16 x 96) end to end, then its section."""
    module = benchmark_script("bench_ranking")
    out = tmp_path / "ranking.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(module, "load_reference_model", lambda *a, **k: pytest.fail("quick mode loads no reference"))
        result = module.main(["--quick", "--out", str(out), "--threads", "1"])
    saved = _strict_json(out)
    assert saved["quick"] is True and saved["results"] == result["results"]
    row = saved["results"][0]
    assert (row["queries"], row["gallery"], row["top_k"]) == (16, 96, 10)
    assert row["embedding_seconds"] == pytest.approx(row["embed_gallery_seconds"] + row["embed_queries_seconds"],
                                                     abs=0.02)
    assert row["peak_rss_mb"] >= row["rss_before_index_mb"] > 0
    assert set(row["targets_met"]) == {"end_to_end_under_60s", "arithmetic_under_15s", "peak_memory_under_3gb"}
    text = benchmark_script("make_report").build_report(tmp_path)
    assert "## Ranked lists at gallery scale" in text and "| copy | 16 | 96 |" in text


def test_bench_arch_quality_quick(tmp_path):
    module = benchmark_script("bench_arch_quality")
    result = module.main(["--quick", "--architectures", "vit_reid_tiny", "--out", str(tmp_path / "arch_quality.json")])
    (row,) = result["results"]
    assert row["adapter"] == "tokens" and row["fit_steps"] >= 1
    assert 0 <= row["adre"] and 0 <= row["x_map_e"] <= 100


def test_bench_gpu_fit_tiny_on_the_cpu(tmp_path):
    module = benchmark_script("bench_gpu_fit")
    result = module.main(["--tiny", "--device", "cpu", "--out", str(tmp_path / "gpu_fit.json")])
    (row,) = result["results"]
    assert row["fit_steps"] >= 2 and row["steps_per_second"] > 0 and row["peak_memory_gb"] is None
    assert row["seconds_to_adre_3"] is None or row["seconds_to_adre_3"] >= 0


def test_bench_subspace_fit_scores_a_planted_split():
    module = benchmark_script("bench_subspace_fit")
    from reidexplain.interpreter import AttributeSubspaces

    g = torch.Generator().manual_seed(0)
    people = torch.tensor([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], dtype=torch.float32)

    def photos(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        labels = people.repeat(n, 1)
        emb = torch.cat([labels * torch.tensor([3.0, 2.0, 1.0]), 0.1 * torch.randn(len(labels), 2, generator=g)], 1)
        return emb, labels, torch.arange(len(people)).repeat(n)

    q, qa, qpid = photos(1)
    gal, ga, gpid = photos(2)
    test = {"q": q, "g": gal, "qa": qa, "ga": ga, "qpid": qpid, "gpid": gpid}
    spaces = AttributeSubspaces(5, 3, rank=3)  # direction k is attribute k's alone; the rest: the noise
    assignment = torch.zeros(3, 4)
    assignment[torch.arange(3), torch.arange(3)] = 1.0
    spaces.assignment.copy_(assignment)
    out = module.score(spaces, test, torch.tensor([3.0, 2.0, 1.0]), torch.tensor([True, True, False]))
    assert out["x_map_e"] == pytest.approx(100.0)
    assert out["differing_share_percent"] == pytest.approx(100.0)
    assert out["attribute_agreement"] == pytest.approx(1.0)
    assert out["unexplained_same_percent"] == pytest.approx(100.0)  # same person: only the noise differs
    assert 0.0 < out["unexplained_different_percent"] < 5.0
    assert 0.0 < out["share_ignored_percent"] < 100.0
    # An assignment that gives the distance to the rest alone leaves nothing to the attributes.
    spaces.assignment.copy_(torch.tensor([[0.0, 0.0, 0.0, 1.0]] * 3))
    none = module.score(spaces, test, torch.tensor([3.0, 2.0, 1.0]), torch.tensor([True, True, False]))
    assert none["unexplained_different_percent"] == pytest.approx(100.0)
    assert math.isnan(none["attribute_agreement"])  # equal shares: no order to compare


def test_bench_maps_merges_each_variant_over_the_seeds_that_fitted_it(tmp_path):
    module = benchmark_script("bench_maps")

    def run(seed, variants):
        rows = [{"variant": name, "options": {}, "pointing_used": value, "relevance_mass_used": 60.0,
                 "pointing_used_wide": value - 1, "relevance_mass_used_wide": 61.0, "fit_seconds": 100.0,
                 "explain_ms": 20.0} for name, value in variants]
        return {"benchmark": "maps", "command": f"run {seed}", "seed": seed, "pairs": 4, "wide_pairs": 8,
                "steps": None, "attributes": ["a", "b"], "model_uses": [True, False], "variants": rows}

    files = []
    for seed, variants in [(0, [("default", 80.0), ("prior", 90.0)]), (1, [("default", 84.0)])]:
        files.append(str(tmp_path / f"seed{seed}.json"))
        (tmp_path / f"seed{seed}.json").write_text(json.dumps(run(seed, variants)))
    out = tmp_path / "maps.json"
    module.merge(files, out)
    merged = json.loads(out.read_text())
    default, prior = merged["variants"]
    assert (default["variant"], default["seeds"], prior["seeds"], default["seed_ids"]) == ("default", 2, 1, [0, 1])
    assert default["pointing_used"] == pytest.approx(82.0) and default["pointing_used_std"] == pytest.approx(2.0)
    assert default["pointing_used_wide"] == pytest.approx(81.0) and prior["pointing_used"] == pytest.approx(90.0)
    assert merged["command"].startswith("run 0 && run 1 && python benchmarks/bench_maps.py --merge")
    text = benchmark_script("make_report").build_report(tmp_path)
    assert "localisation over fit seeds" in text and "82.00 ± 2.00" in text
    other = run(2, [("default", 1.0)])
    other["wide_pairs"] = 9
    (tmp_path / "seed1.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="wide_pairs"):
        module.merge(files, out)
