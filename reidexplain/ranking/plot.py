"""The figure of a ranking: :func:`plot_ranking`."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from .result import RankingExplanation

__all__ = ["plot_ranking"]

# ---------------------------------------------------------------------------------------- figure
def plot_ranking(ranking: RankingExplanation, query_index: int = 0, *, query_images: torch.Tensor | None = None,
                 gallery_images: torch.Tensor | None = None, alpha_overlay: float = 0.5,
                 fontsize: float = 7, title: str | None = None) -> tuple[Any, np.ndarray]:
    """The query and its top-k matches in a row, each match with its leading attribute's map.

    The query is drawn first (with the map of the attribute that leads its best match); every match
    shows its rank, distance, leading attribute and share, with that attribute's map blended over it
    (Captum's blended heat map, as :func:`reidexplain.visualization.compare` draws AMD maps). A ranking
    with an unexplained part (``amd-subspace``, ``amd-linear``) also gives each match's unexplained share of the
    distance ("22% unexplained"), as the pair chart's grey bar does. With identities, a green frame marks
    a correct match and a red one a wrong match.

    Args:
        ranking: The ranking.
        query_index: Which query.
        query_images: Query images to draw when the ranking does not hold them.
        gallery_images: Gallery images to draw when the ranking does not hold them (a ranking against
            a gallery index reloaded without its images).
        alpha_overlay: Opacity of the maps.
        fontsize: Font size of the titles.
        title: Figure title.

    Returns:
        ``(fig, axes)``: a :class:`~matplotlib.figure.Figure` (no window is opened) and a 1-D array of
        ``K + 1`` axes (the query, then the matches).

    Raises:
        ValueError: no images to draw.
        IndexError: ``query_index`` out of range.
    """
    from captum.attr import visualization as captum_viz
    from matplotlib.figure import Figure

    ranking._check(query_index)
    q_images = query_images if query_images is not None else ranking.query_images
    g_images = gallery_images if gallery_images is not None else ranking.gallery_images
    if q_images is None or g_images is None:
        raise ValueError("plot: the ranking holds no images (a gallery index has none); pass "
                         "query_images= and gallery_images=")
    k = ranking.top_k
    fig = Figure(figsize=(1.05 * (k + 1), 2.6), layout="constrained")
    axes = np.array([fig.add_subplot(1, k + 1, i + 1) for i in range(k + 1)], dtype=object)
    have_maps = ranking.has_maps and ranking.query_maps is not None
    if have_maps:
        top, q_maps, g_maps = ranking.maps(query_index, n=1)

    def draw(ax: Any, image: torch.Tensor, heat: torch.Tensor | None) -> None:
        img = image.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()
        if heat is None or float(heat.abs().max()) == 0.0:
            ax.imshow(img)
        else:
            captum_viz.visualize_image_attr(heat.detach().float().cpu().numpy()[:, :, None].astype(np.float64),
                                            img, method="blended_heat_map", sign="absolute_value",
                                            plt_fig_axis=(fig, ax), use_pyplot=False, outlier_perc=2,
                                            alpha_overlay=alpha_overlay)
        ax.set_xticks([])
        ax.set_yticks([])

    qid = "" if ranking.query_ids is None else f"\nid {int(ranking.query_ids[query_index])}"
    first = ranking.valid[query_index, 0]
    draw(axes[0], q_images[query_index], q_maps[0, 0] if have_maps and first else None)
    lead = ""
    if have_maps and first:
        lead = "\n" + textwrap.shorten(ranking.attribute_labels[int(top[0, 0])], 14, placeholder=".")
    axes[0].set_title(f"query{qid}{lead}", fontsize=fontsize)
    for spine in axes[0].spines.values():
        spine.set_edgecolor("#1f77b4")
        spine.set_linewidth(2.5)
    for r in range(k):
        ax = axes[r + 1]
        if not ranking.valid[query_index, r]:
            ax.axis("off")
            continue
        gi = int(ranking.indices[query_index, r])
        label, _, share = ranking.top_attributes(query_index, r, 1)[0]
        draw(ax, g_images[gi], g_maps[r, 0] if have_maps else None)
        unexplained = ranking.unexplained_share
        left = "" if unexplained is None else f"\n{100 * float(unexplained[query_index, r]):.0f}% unexplained"
        ax.set_title(f"#{r + 1} d={float(ranking.distance[query_index, r]):.3g}\n"
                     f"{textwrap.shorten(label, 14, placeholder='.')}\n{100 * share:.0f}%{left}", fontsize=fontsize)
        if ranking.correct is not None:
            colour = "#2ca02c" if bool(ranking.correct[query_index, r]) else "#d62728"
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(3)
    if not have_maps:
        fig.supxlabel("no maps stored for the matches", fontsize=fontsize)
    if title:
        fig.suptitle(title, fontsize=fontsize * 1.3)
    return fig, axes
