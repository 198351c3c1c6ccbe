"""The result object every explainer returns: :class:`PairAttribution`.

AMD and the Captum baselines return the same object, so that one figure and one metrics table can hold
them side by side. For AMD every field is filled; a baseline has maps but no per-attribute contributions
(``contributions``, ``reconstructed`` and ``attribute_names`` are ``None``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch

from .decomposition import shares_of

__all__ = ["PairAttribution", "MatrixExplanation", "normalize_maps", "summary_text"]


def normalize_maps(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Scale each map of a ``(B,K,H,W)`` tensor so that its maximum absolute value is 1."""
    peak = maps.abs().flatten(2).amax(dim=2).clamp_min(eps)
    return maps / peak[:, :, None, None]


def summary_text(leading: Sequence[tuple[str, float]], unexplained_share: float | None = None) -> str:
    """The one-line summary of an explanation from its leading ``(label, share)`` and unexplained share.

    Only attributes with a positive share are named; an unexplained part of half the distance or more
    comes first.

    Examples:
        >>> summary_text([("upper red", 0.41), ("backpack", 0.18)], 0.22)
        'mostly upper red (41 %) and backpack (18 %); 22 % unexplained'
        >>> summary_text([("hat", 0.05)], 0.8)
        'mostly unexplained (80 %); then hat (5 %)'
    """
    words = " and ".join(f"{label} ({100 * share:.0f} %)" for label, share in leading if share > 0)
    if unexplained_share is not None and unexplained_share >= 0.5:
        return f"mostly unexplained ({100 * unexplained_share:.0f} %)" + (f"; then {words}" if words else "")
    text = f"mostly {words}" if words else "no attribute adds to the distance"
    if unexplained_share is not None:
        text += f"; {100 * unexplained_share:.0f} % unexplained"
    return text


@dataclass
class PairAttribution:
    """Explanation of the distances between ``B`` pairs of images ``(a_i, b_i)``.

    Attributes:
        method: Name of the method that produced it (``"amd"``, ``"integrated_gradients"``, ...).
        images: ``(images_a, images_b)``, each ``(B,3,H,W)``.
        distance: ``(B,)`` the target model's distance between ``a_i`` and ``b_i``.
        maps: ``(maps_a, maps_b)``. AMD: ``(B,M,H,W)`` non-negative attribute maps at input
            resolution; baselines: ``(B,1,H,W)`` attribution summed over colour channels (may be signed).
        attribute_names: Names of the ``M`` attributes (AMD only).
        reconstructed: ``(B,)`` the interpreter's distance ``d_hat`` (AMD only).
        contributions: ``(B,M)`` per-attribute contributions, non-negative, summing to ``reconstructed``
            (AMD only).
        attribute_labels: Readable labels for plots; default: the names.
        extras: Anything else a method wants to keep (raw Captum attributions, timings, ...).
        unexplained: ``(B,)`` the part of the distance no attribute accounts for, for decompositions that
            have one (the linear recipe: ``distance = contributions.sum(1) + unexplained`` exactly, and
            contributions may be negative: an attribute that makes the two images more alike); ``None``
            for AMD's, whose contributions sum to ``reconstructed``.

    Examples:
        >>> import torch
        >>> a = PairAttribution(
        ...     method="toy", images=(torch.zeros(1, 3, 4, 2), torch.ones(1, 3, 4, 2)),
        ...     distance=torch.tensor([2.0]), maps=(torch.rand(1, 2, 4, 2), torch.rand(1, 2, 4, 2)),
        ...     attribute_names=("hat", "bag"), reconstructed=torch.tensor([1.9]),
        ...     contributions=torch.tensor([[1.5, 0.4]]))
        >>> [name for name, _, _ in a.top(1)]
        ['hat']
        >>> round(float(a.shares.sum()), 4)
        1.0
    """

    method: str
    images: tuple[torch.Tensor, torch.Tensor]
    distance: torch.Tensor
    maps: tuple[torch.Tensor, torch.Tensor]
    attribute_names: tuple[str, ...] | None = None
    reconstructed: torch.Tensor | None = None
    contributions: torch.Tensor | None = None
    attribute_labels: tuple[str, ...] | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    unexplained: torch.Tensor | None = None

    def __post_init__(self) -> None:
        a, b = self.images
        batch = a.shape[0]
        if self.distance.shape != (batch,):
            raise ValueError(f"distance: expected shape ({batch},), got {tuple(self.distance.shape)}")
        for side, m in zip("ab", self.maps, strict=True):
            if m.dim() != 4 or m.shape[0] != batch or m.shape[-2:] != a.shape[-2:]:
                raise ValueError(
                    f"maps_{side}: expected shape ({batch}, K, {a.shape[-2]}, {a.shape[-1]}), got {tuple(m.shape)}"
                )
        if self.contributions is not None:
            m = self.contributions.shape[-1]
            if self.contributions.shape != (batch, m):
                raise ValueError(f"contributions: expected shape ({batch}, M), got {tuple(self.contributions.shape)}")
            if self.attribute_names is not None and len(self.attribute_names) != m:
                raise ValueError(f"attribute_names: expected {m} names, got {len(self.attribute_names)}")
        if self.attribute_names is not None:
            self.attribute_names = tuple(self.attribute_names)
            if self.attribute_labels is None:
                self.attribute_labels = self.attribute_names

    # ------------------------------------------------------------------ derived quantities
    def __len__(self) -> int:
        return int(self.distance.shape[0])

    @property
    def has_contributions(self) -> bool:
        """Whether the method decomposes the distance into attributes (AMD) or only gives maps."""
        return self.contributions is not None

    @property
    def shares(self) -> torch.Tensor | None:
        """``(B,M)`` fraction of the distance carried by each attribute: rows sum to 1 (AMD), or to 1
        with :attr:`unexplained_share` (decompositions with an unexplained part; signed)."""
        if self.contributions is None:
            return None
        if self.unexplained is None:
            return shares_of(self.contributions)
        return self.contributions / self.distance.clamp_min(1e-12).unsqueeze(1)

    @property
    def unexplained_share(self) -> torch.Tensor | None:
        """``(B,)`` :attr:`unexplained` over the distance (``None`` without an unexplained part)."""
        if self.unexplained is None:
            return None
        return self.unexplained / self.distance.clamp_min(1e-12)

    def summary(self, pair: int = 0, k: int = 2) -> str:
        """One line in words: the leading attributes and their shares, and the unexplained part.

        Examples:
            >>> import torch
            >>> a = PairAttribution(
            ...     method="toy", images=(torch.zeros(1, 3, 4, 2), torch.ones(1, 3, 4, 2)),
            ...     distance=torch.tensor([2.0]), maps=(torch.rand(1, 2, 4, 2), torch.rand(1, 2, 4, 2)),
            ...     attribute_names=("upper red", "backpack"), reconstructed=torch.tensor([2.0]),
            ...     contributions=torch.tensor([[0.8, 0.4]]), unexplained=torch.tensor([0.8]))
            >>> a.summary()
            'mostly upper red (40 %) and backpack (20 %); 40 % unexplained'

            When the unexplained part carries half the distance or more (two photos of one person, say:
            pose, light and camera), it comes first (see :func:`summary_text`).
        """
        rest = None if self.unexplained is None else float(self.unexplained_share[pair])
        return summary_text([(label, share) for label, _, share in self.top(k, pair)], rest)

    @property
    def heatmaps(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(heat_a, heat_b)``, each ``(B,1,H,W)``: one map per image for every method.

        For AMD, the share-weighted sum of the attribute maps, each first scaled to a maximum of 1;
        for a baseline, its (single) map.
        """
        if self.shares is None:
            return self.maps
        w = self.shares[:, :, None, None]
        return tuple((w * normalize_maps(m)).sum(dim=1, keepdim=True) for m in self.maps)  # type: ignore[return-value]

    # ------------------------------------------------------------------ access
    def top(self, k: int = 3, pair: int = 0) -> list[tuple[str, float, float]]:
        """The ``k`` attributes with the largest contributions to pair ``pair``.

        Returns:
            A list of ``(attribute_label, contribution, share)`` sorted by contribution, descending.

        Raises:
            ValueError: the method has no per-attribute contributions.
        """
        if self.contributions is None or self.attribute_labels is None:
            raise ValueError(f"method {self.method!r} gives maps only; it has no attribute contributions")
        if not 0 <= pair < len(self):
            raise IndexError(f"pair: expected 0 <= pair < {len(self)}, got {pair}")
        shares = self.shares[pair]
        contrib = self.contributions[pair]
        order = torch.argsort(contrib, descending=True)[: max(int(k), 0)]
        return [(self.attribute_labels[i], float(contrib[i]), float(shares[i])) for i in order.tolist()]

    def __getitem__(self, index: int | slice | Sequence[int] | torch.Tensor) -> PairAttribution:
        """The explanations of a subset of the pairs, as a new :class:`PairAttribution`."""
        if isinstance(index, int):
            index = [index]

        def pick(t: Any) -> Any:
            if isinstance(t, torch.Tensor):
                return t[index]
            if isinstance(t, tuple) and t and isinstance(t[0], torch.Tensor):
                return tuple(x[index] for x in t)
            return t

        return replace(self, **{f.name: pick(getattr(self, f.name)) for f in fields(self)
                                if f.name not in ("method", "attribute_names", "attribute_labels", "extras")})

    def to(self, device: torch.device | str) -> PairAttribution:
        """Move every tensor to ``device``."""

        def move(t: Any) -> Any:
            if isinstance(t, torch.Tensor):
                return t.to(device)
            if isinstance(t, tuple) and t and isinstance(t[0], torch.Tensor):
                return tuple(x.to(device) for x in t)
            return t

        return replace(self, **{f.name: move(getattr(self, f.name)) for f in fields(self) if f.name != "extras"})

    def cpu(self) -> PairAttribution:
        """Move every tensor to the CPU."""
        return self.to("cpu")

    def to_dict(self, include_maps: bool = False) -> dict[str, Any]:
        """A JSON-serialisable summary (lists of floats).

        Args:
            include_maps: Also include the maps (large).
        """
        out: dict[str, Any] = {
            "method": self.method,
            "distance": self.distance.detach().cpu().tolist(),
        }
        if self.contributions is not None:
            out.update(
                attribute_names=list(self.attribute_names or ()),
                attribute_labels=list(self.attribute_labels or ()),
                reconstructed=self.reconstructed.detach().cpu().tolist()
                if self.reconstructed is not None else None,
                contributions=self.contributions.detach().cpu().tolist(),
                shares=self.shares.detach().cpu().tolist(),
            )
        if self.unexplained is not None:
            out.update(unexplained=self.unexplained.detach().cpu().tolist(),
                       unexplained_share=self.unexplained_share.detach().cpu().tolist())
        if include_maps:
            out["maps"] = [m.detach().cpu().tolist() for m in self.maps]
        return out

    def plot(self, pair: int = 0, **kwargs: Any) -> tuple[Any, Any]:
        """Draw the explanation of pair ``pair``; see :func:`reidexplain.visualization.plot_attribution`.

        Returns:
            ``(fig, axes)``: a matplotlib ``Figure`` and an array of its axes; no window is opened.
        """
        from .visualization import plot_attribution

        return plot_attribution(self, pair=pair, **kwargs)


@dataclass
class MatrixExplanation:
    """AMD quantities for every query x gallery pair.

    Attributes:
        distance: ``(Q,G)`` target distances.
        reconstructed: ``(Q,G)`` interpreter distances ``d_hat``.
        contributions: ``(Q,G,M)`` per-attribute contributions ``c_k`` (sum: ``d_hat``).
        attribute_names: The ``M`` names.
        unexplained: ``(Q,G)`` the part no attribute accounts for (decompositions that have one).

    Examples:
        >>> import torch
        >>> m = MatrixExplanation(torch.ones(1, 2), torch.ones(1, 2), torch.full((1, 2, 4), 0.25), ("a",) * 4)
        >>> m.shares.sum(-1)
        tensor([[1., 1.]])
    """

    distance: torch.Tensor
    reconstructed: torch.Tensor
    contributions: torch.Tensor
    attribute_names: tuple[str, ...]
    unexplained: torch.Tensor | None = None

    @property
    def shares(self) -> torch.Tensor:
        """``(Q,G,M)`` shares per attribute: of ``d_hat`` summing to 1 over ``M`` (AMD), or of the
        distance, summing to 1 with the unexplained share (signed)."""
        if self.unexplained is None:
            return shares_of(self.contributions)
        return self.contributions / self.distance.clamp_min(1e-12).unsqueeze(-1)
