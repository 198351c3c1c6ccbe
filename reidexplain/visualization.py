"""One figure for every method: AMD and the Captum baselines, drawn the same way.

Every map is drawn with Captum's :func:`~captum.attr.visualization.visualize_image_attr` as a heat map
blended over the greyscale image, so that AMD and Captum maps share colour maps and normalisation
(each map scaled to its own 98th percentile of absolute values, ``outlier_perc=2``). Non-negative maps
(AMD, absolute saliency) use ``sign="absolute_value"`` (white to blue); signed maps use ``sign="all"``
(red: pulls the pair together, green: pushes it apart).

Nothing here opens a window: figures are :class:`matplotlib.figure.Figure` objects built without pyplot;
save them with ``fig.savefig(path)``.

Examples:
    >>> import torch
    >>> from reidexplain.attribution import PairAttribution
    >>> images = (torch.rand(1, 3, 32, 16), torch.rand(1, 3, 32, 16))
    >>> saliency = PairAttribution("saliency", images, torch.tensor([1.2]),
    ...                            (torch.rand(1, 1, 32, 16), torch.rand(1, 1, 32, 16)))
    >>> fig, axes = compare([saliency, saliency])
    >>> axes.shape
    (2, 4)
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from captum.attr import visualization as captum_viz
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .attribution import PairAttribution
from .baselines import BASELINES

__all__ = ["plot_attribution", "compare", "method_label"]

# Labels of the methods that are not baselines of the registry (whose labels are the entries' ``label``):
# AMD's own, and Captum names reached through ``create_baseline`` whose title case reads wrong.
_LABELS = {
    "amd": "AMD",
    "amd+": "AMD+",
    "amd-linear": "AMD (linear)",
    "layer_grad_cam": "Grad-CAM",
    "lrp": "LRP",
}
_PANEL = (1.15, 2.3)  # inches per image panel: person crops are twice as tall as wide
_BAR_WIDTH = 2.6


def method_label(method: str) -> str:
    """A readable name for a method id (``"grad_cam"`` -> ``"Grad-CAM"``).

    A registered baseline's label is its entry's ``label`` in :data:`reidexplain.baselines.BASELINES`;
    AMD's methods have their own (``"amd+"`` -> ``"AMD+"``); any other id is shown in title case.

    Examples:
        >>> method_label("integrated_gradients"), method_label("amd"), method_label("deep_lift_shap")
        ('Integrated Gradients', 'AMD', 'Deep Lift Shap')
    """
    if method in BASELINES:
        label = BASELINES.entry(method).metadata.get("label")
        if isinstance(label, str) and label:
            return label
    return _LABELS.get(method, method.replace("_", " ").title())


def _percent(share: float) -> str:
    # One decimal below 10 %, so that near-equal small shares stay distinguishable.
    value = 100.0 * share
    return f"{value:.1f}%" if value < 9.95 else f"{value:.0f}%"


def _image(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()


def _map(t: torch.Tensor) -> np.ndarray:
    # Captum's visualisation wants (H,W,C); a 2-D map fails on some captum versions.
    return t.detach().float().cpu().numpy()[:, :, None].astype(np.float64)


def _check_pair_index(attribution: PairAttribution, pair: int) -> None:
    if not isinstance(attribution, PairAttribution):
        raise TypeError(f"attribution: expected a PairAttribution, got {type(attribution).__name__}")
    if not 0 <= pair < len(attribution):
        raise IndexError(f"pair: expected 0 <= pair < {len(attribution)}, got {pair}")


def _draw_map(
    ax: Axes, heat: torch.Tensor, image: torch.Tensor, sign: str, title: str, style: dict[str, Any]
) -> None:
    fig = ax.figure
    if float(heat.abs().max()) == 0.0:
        # An all-zero map has nothing to normalise; show the greyscale image only.
        ax.imshow(_image(image).mean(axis=2), cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        captum_viz.visualize_image_attr(
            _map(heat), _image(image), method="blended_heat_map", sign=sign, plt_fig_axis=(fig, ax),
            use_pyplot=False, outlier_perc=style["outlier_perc"], alpha_overlay=style["alpha_overlay"],
            cmap=style["cmap"],
        )
    ax.set_title(title, fontsize=style["fontsize"])


def _draw_image(ax: Axes, image: torch.Tensor, title: str, fontsize: float) -> None:
    ax.imshow(_image(image))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=fontsize)


def _draw_bars(ax: Axes, attribution: PairAttribution, pair: int, top_k: int, n_bars: int, fontsize: float) -> None:
    shares = attribution.shares[pair].detach().cpu()
    labels = attribution.attribute_labels or tuple(str(i) for i in range(shares.numel()))
    order = torch.argsort(shares, descending=True).tolist()
    shown = order[:n_bars]
    names = [labels[i] for i in shown]
    values = [100.0 * float(shares[i]) for i in shown]
    colours = ["#1f77b4" if i < top_k else "#9db9d3" for i in range(len(values))]
    unexplained = attribution.unexplained_share
    if unexplained is not None:  # the part no attribute accounts for, as a bar of its own
        names.append("unexplained")
        values.append(100.0 * float(unexplained[pair]))
        colours.append("#8c8c8c")
    y = np.arange(len(values))
    ax.barh(y, values, color=colours)
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=fontsize)
    ax.invert_yaxis()
    low, high = min([0.0, *values]), max([0.0, *values])
    ax.set_xlim(low * 1.35, high * 1.35 if high > 0 else 1)
    if low < 0:
        ax.axvline(0, color="black", linewidth=0.6)
    for yi, v in zip(y, values, strict=True):
        # A negative share's label goes right of zero, clear of the attribute names.
        ax.text(max(v, 0.0), yi, " " + _percent(v / 100.0), va="center", fontsize=fontsize * 0.9)
    xlabel = "share of d_hat (%)" if unexplained is None else "share of d (%)"
    rest = order[n_bars:]
    if rest:
        # The remainder as text, not as a bar: a long bar would squash the bars that matter.
        xlabel += f"\n{len(rest)} others: {_percent(float(shares[rest].sum()))} together"
    ax.set_xlabel(xlabel, fontsize=fontsize)
    ax.tick_params(axis="x", labelsize=fontsize * 0.9)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    d = float(attribution.distance[pair])
    d_hat = float(attribution.reconstructed[pair]) if attribution.reconstructed is not None else float("nan")
    # The explanation in words above the chart: "mostly X (41 %) and Y (18 %); 22 % unexplained".
    words = "\n".join(textwrap.fill(part, 36) for part in attribution.summary(pair).split("; "))
    # With an unexplained part d_hat is d itself (every part is included): say it once.
    head = f"d = {d:.3g}" if unexplained is not None else f"d = {d:.3g}, d_hat = {d_hat:.3g}"
    ax.set_title(f"{head}\n{words}", fontsize=fontsize)


def _sign_for(attribution: PairAttribution, pair: int, sign: str | None) -> str:
    if sign is not None:
        return sign
    if attribution.has_contributions:
        return "absolute_value"
    smallest = min(float(m[pair].min()) for m in attribution.maps)
    return "absolute_value" if smallest >= 0 else "all"


def _draw_row(
    fig: Figure, axes: np.ndarray, row: int, attribution: PairAttribution, label: str, pair: int,
    top_k: int, n_bars: int, sign: str | None, style: dict[str, Any],
) -> None:
    fs = style["fontsize"]
    sign_used = _sign_for(attribution, pair, sign)
    images = [img[pair] for img in attribution.images]
    heats = [h[pair, 0] for h in attribution.heatmaps]
    d = float(attribution.distance[pair])
    _draw_image(axes[row, 0], images[0], "image a", fs)
    _draw_map(axes[row, 1], heats[0], images[0], sign_used, "map of a", style)
    _draw_image(axes[row, 2], images[1], "image b", fs)
    _draw_map(axes[row, 3], heats[1], images[1], sign_used, "map of b", style)
    axes[row, 0].set_ylabel(f"{label}\nd = {d:.3g}", fontsize=fs * 1.15)
    if not attribution.has_contributions:
        return
    shares = attribution.shares[pair]
    labels = attribution.attribute_labels or ()
    top = torch.argsort(attribution.contributions[pair], descending=True)[:top_k].tolist()
    for side in range(2):
        for j, k in enumerate(top):
            ax = axes[row, 4 + side * top_k + j]
            # Two short lines: long attribute labels would run into the next panel's title.
            title = f"{'ab'[side]}: {textwrap.shorten(labels[k], 16, placeholder='.')}\n{_percent(float(shares[k]))}"
            _draw_map(ax, attribution.maps[side][pair, k], images[side], "absolute_value", title, style)
    _draw_bars(axes[row, 4 + 2 * top_k], attribution, pair, top_k, n_bars, fs)


def compare(
    attributions: Sequence[PairAttribution] | Mapping[str, PairAttribution],
    pair: int = 0,
    top_k: int = 3,
    *,
    n_bars: int = 8,
    sign: str | None = None,
    outlier_perc: float = 2,
    alpha_overlay: float = 0.55,
    cmap: str | None = None,
    fontsize: float = 8,
    title: str | None = None,
) -> tuple[Figure, np.ndarray]:
    """Draw several explanations of the same pair, one row per method.

    Every row shows image ``a``, its map, image ``b`` and its map, labelled on the left with the
    method and the target distance ``d``. A method with per-attribute
    contributions (AMD) also gets its ``top_k`` attribute maps for both images and a horizontal bar chart
    of the shares of ``d_hat``, titled with the target distance ``d`` and ``d_hat``.

    Args:
        attributions: The explanations; a mapping gives each row its label (default: the method name).
        pair: Which pair of each attribution to draw.
        top_k: Number of attribute maps per image for AMD rows.
        n_bars: Number of attributes in the bar chart; the share of the rest is given in the axis label.
        sign: Captum's ``sign`` for the maps; ``None`` picks ``"absolute_value"`` for non-negative
            maps and ``"all"`` for signed ones.
        outlier_perc: Captum's ``outlier_perc``: the top percent of absolute values saturates the colours.
        alpha_overlay: Opacity of the heat map over the greyscale image.
        cmap: Colour map passed to Captum (``None``: Captum's default for the sign).
        fontsize: Base font size.
        title: Figure title.

    Returns:
        ``(fig, axes)``: a :class:`~matplotlib.figure.Figure` and a ``(rows, columns)`` object array of
        axes, with ``None`` where a row has no panel.

    Raises:
        ValueError: no attributions, or ``top_k`` / ``n_bars`` negative.
        IndexError: ``pair`` out of range for one of the attributions.
        TypeError: an item is not a :class:`~reidexplain.attribution.PairAttribution`.

    Examples:
        >>> import torch
        >>> from reidexplain.attribution import PairAttribution
        >>> images = (torch.rand(1, 3, 32, 16), torch.rand(1, 3, 32, 16))
        >>> amd = PairAttribution("amd", images, torch.tensor([2.0]),
        ...                       (torch.rand(1, 4, 32, 16), torch.rand(1, 4, 32, 16)),
        ...                       attribute_names=("hat", "bag", "upred", "downblue"),
        ...                       reconstructed=torch.tensor([1.9]),
        ...                       contributions=torch.tensor([[0.9, 0.5, 0.3, 0.2]]))
        >>> fig, axes = compare({"AMD": amd}, top_k=2)
        >>> len(fig.axes)
        9
    """
    items = list(attributions.items()) if isinstance(attributions, Mapping) else [
        (None, a) for a in attributions
    ]
    if not items:
        raise ValueError("attributions: expected at least one PairAttribution, got none")
    if top_k < 0 or n_bars < 0:
        raise ValueError(f"top_k and n_bars: expected >= 0, got {top_k} and {n_bars}")
    for _, attribution in items:
        _check_pair_index(attribution, pair)
    any_amd = any(a.has_contributions for _, a in items)
    top_k = min(top_k, min((a.contributions.shape[1] for _, a in items if a.has_contributions), default=0))
    n_image_cols = 4 + (2 * top_k if any_amd else 0)
    n_cols = n_image_cols + (1 if any_amd else 0)
    width_ratios = [1.0] * n_image_cols + ([_BAR_WIDTH / _PANEL[0]] if any_amd else [])
    fig = Figure(figsize=(_PANEL[0] * sum(width_ratios), _PANEL[1] * len(items) + (0.4 if title else 0.1)),
                 layout="constrained")
    grid = fig.add_gridspec(len(items), n_cols, width_ratios=width_ratios)
    axes = np.empty((len(items), n_cols), dtype=object)
    style = {"outlier_perc": outlier_perc, "alpha_overlay": alpha_overlay, "cmap": cmap, "fontsize": fontsize}
    for row, (label, attribution) in enumerate(items):
        used = n_cols if attribution.has_contributions else 4
        for col in range(used):
            axes[row, col] = fig.add_subplot(grid[row, col])
        _draw_row(fig, axes, row, attribution, label or method_label(attribution.method), pair, top_k,
                  n_bars, sign, style)
    if title:
        fig.suptitle(title, fontsize=fontsize * 1.3)
    return fig, axes


def plot_attribution(
    attribution: PairAttribution, pair: int = 0, top_k: int = 3, **kwargs: Any
) -> tuple[Figure, np.ndarray]:
    """Draw one explanation of one pair: the single-row form of :func:`compare`.

    Called by :meth:`PairAttribution.plot() <reidexplain.attribution.PairAttribution.plot>`.

    Args:
        attribution: The explanation.
        pair: Which pair to draw.
        top_k: Number of attribute maps per image (AMD only).
        **kwargs: Passed to :func:`compare` (``sign``, ``n_bars``, ``title``, ...).

    Returns:
        ``(fig, axes)``: the figure and a 1-D array of its axes (image a, map a, image b, map b, then,
        for AMD, the attribute maps of a, those of b, and the bar chart).

    Raises:
        IndexError: ``pair`` out of range.
        TypeError: ``attribution`` is not a :class:`~reidexplain.attribution.PairAttribution`.

    Examples:
        >>> import torch
        >>> from reidexplain.attribution import PairAttribution
        >>> images = (torch.rand(2, 3, 32, 16), torch.rand(2, 3, 32, 16))
        >>> ig = PairAttribution("integrated_gradients", images, torch.tensor([1.0, 2.0]),
        ...                      (torch.randn(2, 1, 32, 16), torch.randn(2, 1, 32, 16)))
        >>> fig, axes = ig.plot(pair=1)
        >>> titles = [ax.get_title() for ax in axes]
        >>> titles[:2], axes[0].get_ylabel().splitlines()
        (['image a', 'map of a'], ['Integrated Gradients', 'd = 2'])
    """
    _check_pair_index(attribution, pair)
    fig, axes = compare([attribution], pair=pair, top_k=top_k, **kwargs)
    return fig, axes[0]
