"""Tests of reidexplain.visualization: one figure for AMD and the baselines."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from helpers import baseline_images, baseline_toy_net  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402

from reidexplain import visualization  # noqa: E402
from reidexplain.attribution import PairAttribution  # noqa: E402
from reidexplain.baselines import IntegratedGradientsPair, SaliencyPair  # noqa: E402
from reidexplain.visualization import compare, method_label, plot_attribution  # noqa: E402

NAMES = ("hat", "backpack", "upred", "upblue", "downblack", "downwhite")


def _images(n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    x = baseline_images(2 * n, seed=3)
    return x[:n], x[n:]


def _amd(n: int = 2) -> PairAttribution:
    gen = torch.Generator().manual_seed(0)
    contributions = torch.tensor([[0.9, 0.1, 0.5, 0.05, 0.3, 0.15]] * n)
    return PairAttribution(
        method="amd",
        images=_images(n),
        distance=torch.full((n,), 2.1),
        maps=tuple(torch.rand(n, len(NAMES), 32, 16, generator=gen) for _ in range(2)),
        attribute_names=NAMES,
        reconstructed=contributions.sum(1),
        contributions=contributions,
    )


def _signed(method: str = "integrated_gradients", n: int = 2) -> PairAttribution:
    gen = torch.Generator().manual_seed(1)
    return PairAttribution(
        method=method, images=_images(n), distance=torch.full((n,), 2.1),
        maps=tuple(torch.randn(n, 1, 32, 16, generator=gen) for _ in range(2)),
    )


def _pixels(fig) -> np.ndarray:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].astype(float)


def _axis_pixels(fig, ax) -> np.ndarray:
    rgb = _pixels(fig)
    box = ax.get_window_extent()
    height = rgb.shape[0]
    return rgb[int(height - box.y1) + 1 : int(height - box.y0) - 1, int(box.x0) + 1 : int(box.x1) - 1]


def test_baseline_plot_has_four_titled_panels_and_is_not_blank():
    fig, axes = plot_attribution(_signed(), pair=1)
    assert len(fig.axes) == 4 and axes.shape == (4,)
    titles = [ax.get_title() for ax in axes]
    assert titles == ["image a", "map of a", "image b", "map of b"]
    assert axes[0].get_ylabel() == "Integrated Gradients\nd = 2.1"
    assert _pixels(fig).std() > 20
    for ax in axes:
        assert _axis_pixels(fig, ax).std() > 5  # every panel shows something


def test_amd_plot_has_attribute_maps_and_bar_chart():
    amd = _amd()
    fig, axes = amd.plot(top_k=2)
    assert len(fig.axes) == 4 + 2 * 2 + 1
    titles = [ax.get_title() for ax in axes]
    # Shares: 0.9 / 2.0 = 45 %, 0.5 / 2.0 = 25 %.
    assert titles[4:8] == ["a: hat\n45%", "a: upred\n25%", "b: hat\n45%", "b: upred\n25%"]
    bars = axes[-1]
    assert bars.get_title() == "d = 2.1, d_hat = 2\nmostly hat (45 %) and upred (25 %)"
    assert [t.get_text() for t in bars.get_yticklabels()] == list(
        ("hat", "upred", "downblack", "downwhite", "backpack", "upblue")
    )
    widths = [p.get_width() for p in bars.patches]
    np.testing.assert_allclose(widths, [45, 25, 15, 7.5, 5, 2.5], rtol=1e-5)
    assert [t.get_text() for t in bars.texts] == [" 45%", " 25%", " 15%", " 7.5%", " 5.0%", " 2.5%"]
    assert _axis_pixels(fig, axes[5]).std() > 5


def test_bar_chart_sums_the_smallest_attributes_in_the_label():
    fig, axes = plot_attribution(_amd(), top_k=1, n_bars=3)
    labels = [t.get_text() for t in axes[-1].get_yticklabels()]
    assert labels == ["hat", "upred", "downblack"]
    assert len(axes[-1].patches) == 3
    assert axes[-1].get_xlabel().splitlines()[1] == "3 others: 15% together"
    assert axes[-1].get_xlim()[1] == pytest.approx(45 * 1.35)


def test_the_chart_shows_the_unexplained_part_and_negative_contributions_in_words_and_bars():
    amd = _amd()
    contributions = torch.tensor([[0.9, -0.2, 0.5, 0.05, 0.3, 0.15]] * 2)  # signed (amd-linear)
    linear = PairAttribution(method="amd-linear", images=amd.images, distance=amd.distance, maps=amd.maps,
                             attribute_names=NAMES, reconstructed=amd.distance, contributions=contributions,
                             unexplained=amd.distance - contributions.sum(1))
    fig, axes = linear.plot(top_k=2)
    bars = axes[-1]
    names = [t.get_text() for t in bars.get_yticklabels()]
    assert names[-1] == "unexplained" and names[:2] == ["hat", "upred"]
    widths = [p.get_width() for p in bars.patches]
    # Of d = 2.1: the attributes' shares, then the unexplained 0.4 / 2.1, with backpack below zero.
    np.testing.assert_allclose(widths[-1], 100 * 0.4 / 2.1, rtol=1e-4)
    assert min(widths) == pytest.approx(-100 * 0.2 / 2.1, rel=1e-4) and bars.get_xlim()[0] < min(widths)
    assert bars.get_xlabel().startswith("share of d (%)")
    assert bars.get_title().splitlines() == ["d = 2.1", "mostly hat (43 %) and upred (24 %)", "19 % unexplained"]


def test_compare_one_row_per_method():
    fig, axes = compare({"AMD": _amd(), "IG": _signed(), "Saliency": _signed("saliency")}, pair=0, top_k=3)
    assert axes.shape == (3, 4 + 6 + 1)
    assert len(fig.axes) == 11 + 4 + 4
    assert axes[1, 4] is None and axes[2, -1] is None
    assert [axes[r, 0].get_ylabel().split("\n")[0] for r in range(3)] == ["AMD", "IG", "Saliency"]
    assert axes[1, 3].get_title() == "map of b"
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=60)
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _pixels(fig).std() > 20


def test_maps_go_through_captum_with_the_sign_of_the_method(monkeypatch):
    calls = []
    original = visualization.captum_viz.visualize_image_attr

    def spy(attr, original_image=None, **kwargs):
        calls.append((attr.shape, original_image.shape, kwargs["sign"], kwargs["method"], kwargs["use_pyplot"]))
        return original(attr, original_image, **kwargs)

    monkeypatch.setattr(visualization.captum_viz, "visualize_image_attr", spy)
    compare([_amd(), _signed()], top_k=1)
    assert len(calls) == 2 + 2 + 2  # AMD: heat a, heat b, one attribute map per image; IG: two maps
    assert all(c[0] == (32, 16, 1) and c[1] == (32, 16, 3) for c in calls)
    assert all(c[3] == "blended_heat_map" and c[4] is False for c in calls)
    assert [c[2] for c in calls] == ["absolute_value"] * 4 + ["all"] * 2
    calls.clear()
    compare([_signed()], sign="positive")
    assert [c[2] for c in calls] == ["positive", "positive"]


def test_real_baselines_plot_and_open_no_window():
    before = plt.get_fignums()
    model = baseline_toy_net().eval()
    pair = _images(1)
    results = [SaliencyPair(model).explain(pair), IntegratedGradientsPair(model, n_steps=8).explain(pair)]
    fig, axes = compare(results)
    assert axes.shape == (2, 4)
    assert [axes[r, 0].get_ylabel().split("\n")[0] for r in range(2)] == ["Saliency", "Integrated Gradients"]
    assert plt.get_fignums() == before


def test_all_zero_map_still_draws_the_image():
    zero = PairAttribution("saliency", _images(1), torch.tensor([0.0]),
                           (torch.zeros(1, 1, 32, 16), torch.zeros(1, 1, 32, 16)))
    fig, axes = plot_attribution(zero)
    assert _axis_pixels(fig, axes[1]).std() > 5


def test_method_labels_and_errors():
    assert method_label("grad_cam") == "Grad-CAM"
    assert method_label("deep_lift_shap") == "Deep Lift Shap"
    with pytest.raises(IndexError, match="pair"):
        plot_attribution(_signed(n=2), pair=2)
    with pytest.raises(ValueError, match="attributions"):
        compare([])
    with pytest.raises(TypeError, match="attribution"):
        compare([torch.zeros(1)])
    with pytest.raises(ValueError, match="top_k"):
        compare([_amd()], top_k=-1)
