"""The scripts in ``examples/`` run with their ``--quick`` setting and print numbers that make sense.

Each script is loaded with :func:`runpy.run_path` (its ``__main__`` block does not run) and its
``main(argv)`` is called in-process, at 64x32 pixels, writing to ``tmp_path``; the printed lines are
parsed back.
"""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

from reidexplain import list_baselines
from reidexplain.visualization import method_label

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PNG = b"\x89PNG\r\n\x1a\n"
# Captum announces the hooks DeepLift and Guided Backprop set on the model; expected here.
pytestmark = pytest.mark.filterwarnings("ignore:Setting .*hooks:UserWarning")
NUMBER = r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?"


@pytest.fixture(autouse=True)
def _examples_importable(monkeypatch):
    """The examples import their shared ``_common`` module from their own folder, as ``python
    examples/<name>.py`` allows; ``runpy.run_path`` does not put that folder on ``sys.path``."""
    monkeypatch.syspath_prepend(str(EXAMPLES))


def load(name: str) -> dict:
    return runpy.run_path(str(EXAMPLES / f"{name}.py"))


def quick_args(tmp_path: Path) -> list[str]:
    return ["--quick", "--image-size", "64", "32", "--out", str(tmp_path / "out")]


@pytest.mark.parametrize("name", ["quickstart", "compare_with_captum", "market1501", "explain_ranking"])
def test_every_example_documents_itself(name, capsys):
    module = load(name)
    assert len(module["__doc__"].strip().splitlines()) > 3
    with pytest.raises(SystemExit) as exit_info:
        module["main"](["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert "--quick" in help_text and "--out" in help_text


def test_quickstart(tmp_path, capsys):
    result = load("quickstart")["main"](quick_args(tmp_path))
    text = capsys.readouterr().out
    out = tmp_path / "out"
    assert (out / "quickstart.png").read_bytes()[:8] == PNG
    assert (out / "interpreter.pt").stat().st_size > 0

    d, d_hat = (float(v) for v in re.search(rf"distance d = ({NUMBER}), interpreter d_hat = ({NUMBER})", text).groups())
    assert d > 0 and abs(d - d_hat) / d < 0.1  # the interpreter reproduces the model's distance
    assert (d, d_hat) == pytest.approx((result["distance"], result["reconstructed"]), abs=1e-4)
    top = re.findall(rf"^  (.+?)\s+({NUMBER})\s+({NUMBER}) %$", text, flags=re.M)
    assert len(top) == 3
    contributions = [float(c) for _, c, _ in top]
    shares = [float(s) for _, _, s in top]
    assert contributions == sorted(contributions, reverse=True)
    assert all(0 <= c <= d_hat for c in contributions) and all(0 < s <= 100 for s in shares)
    # Three attributes can never take less than three times the average share.
    assert sum(shares) >= 3 * 100 / 26 - 0.05
    assert [label for label, _, _ in result["top"]] == [label.strip() for label, _, _ in top]


def test_compare_with_captum(tmp_path, capsys):
    result = load("compare_with_captum")["main"](quick_args(tmp_path))
    text = capsys.readouterr().out
    assert (tmp_path / "out" / "compare_with_captum.png").read_bytes()[:8] == PNG
    rows = {label.strip(): (float(s), float(p), float(m)) for label, s, p, m in re.findall(
        rf"^(\S.*?)\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})$", text, flags=re.M)}
    expected = {"AMD"} | {method_label(name) for name in list_baselines()}
    assert set(rows) == expected
    for seconds, pointing, mass in rows.values():
        assert seconds > 0 and 0 <= pointing <= 1 and 0 <= mass <= 1
    chance = float(re.search(rf"^chance \(mask area\)\s+({NUMBER})\s+{NUMBER}$", text, flags=re.M).group(1))
    assert 0 < chance < 1 and chance == pytest.approx(result["chance"], abs=1e-3)
    assert rows["AMD"][2] == pytest.approx(result["scores"]["amd"]["relevance_mass"], abs=1e-3)


def test_market1501_on_the_synthetic_layout(tmp_path, capsys):
    metrics = load("market1501")["main"](quick_args(tmp_path))
    text = capsys.readouterr().out
    out = tmp_path / "out"
    root = out / "market1501-synthetic"
    train_files = sorted(p.name for p in (root / "bounding_box_train").iterdir())
    assert len(train_files) == 64 and (root / "market_attribute.mat").is_file()
    assert train_files[0].startswith("0001_c")  # pid_offset=1: no pid 0 (distractor) in training
    assert (out / "metrics.json").is_file() and (out / "interpreter.pt").is_file()

    printed = dict(re.findall(rf"^  (.+?)\s+({NUMBER})$", text, flags=re.M))
    assert len(printed) == 7
    values = {label.split(" (")[0]: float(v) for label, v in printed.items()}
    for value in values.values():
        assert 0 <= value <= 100
    assert values["X-mAP_e"] == pytest.approx(metrics["x_map_e"], abs=0.01)
    assert values["ADRE"] < 10
    assert int(re.search(r"evaluated (\d+) query x gallery pairs", text).group(1)) == 12 * 20


def test_explain_ranking(tmp_path, capsys):
    result = load("explain_ranking")["main"](quick_args(tmp_path))
    text = capsys.readouterr().out
    assert (tmp_path / "out" / "ranking.png").read_bytes()[:8] == PNG
    q, g = (int(v) for v in re.search(r"explain_matrix: (\d+) x (\d+) = \d+ pairs", text).groups())
    assert (q, g) == result["shape"] == (12, 20)
    lines = re.findall(rf"rank (\d+): gallery\s+(\d+) person\s+(\d+) (match|     ) d = ({NUMBER}) "
                       rf"d_hat = ({NUMBER}) \| (.*)$", text, flags=re.M)
    assert [int(r) for r, *_ in lines] == [1, 2, 3, 4, 5]
    distances = [float(d) for *_, d, _, _ in lines]
    assert distances == sorted(distances) and distances[0] > 0
    for *_, d, d_hat, attrs in lines:
        assert abs(float(d) - float(d_hat)) / float(d) < 0.1
        assert len(attrs.split(", ")) == 3
    query_pid = int(re.search(r"query 0 \(person (\d+)\)", text).group(1))
    assert all((m == "match") == (int(pid) == query_pid) for _, _, pid, m, *_ in lines)
    difference = float(re.search(rf"max \|difference\| of contributions ({NUMBER})", text).group(1))
    assert difference < 1e-4  # explain_matrix and explain agree


def getting_started_snippet() -> str:
    text = (EXAMPLES.parent / "docs" / "getting-started.md").read_text()
    return text.split("## In Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


def test_getting_started_snippet_imports_exist():
    code = getting_started_snippet()
    compile(code, "getting-started.md", "exec")
    imports = "\n".join(line for line in code.splitlines() if line.startswith(("from ", "import ")))
    namespace: dict = {}
    exec(imports, namespace)
    assert {"Explainer", "PKSampler", "load_reference_model", "reference_splits"} <= set(namespace)


@pytest.mark.slow
def test_getting_started_snippet_runs(tmp_path, monkeypatch, capsys):
    # Minutes: the reference model (trained once if not cached) and a two-minute fit.
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(getting_started_snippet(), "getting-started.md", "exec"), namespace)
    top = namespace["explanation"].top(3)
    assert len(top) == 3 and all(c >= 0 and 0 <= s <= 1 for _, c, s in top)
    assert (tmp_path / "explanation.png").read_bytes()[:8] == PNG
