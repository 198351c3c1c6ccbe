"""The object that owns a fitted AMD interpreter: :class:`AMDModel`.

It holds what every AMD quantity depends on, and nothing else: the target's feature adapter
(:mod:`reidexplain.adapters`), the interpreter network, the target's distance, the attribute schema, the
recipe that trained it and what that recipe prepared (usage weights, say). Pairs, matrices, the
evaluation and the training loop take it instead of four loose arguments, and all of them decompose
distances with :func:`reidexplain.decomposition.decompose`.

Examples:
    >>> import torch
    >>> from torch import nn
    >>> from reidexplain.adapters import adapt_model
    >>> from reidexplain.attributes import get_schema
    >>> from reidexplain.interpreter.recipes import PaperAMD
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    >>> adapter = adapt_model(net, torch.rand(2, 3, 8, 4))
    >>> model = AMDModel(adapter, PaperAMD(hidden=8), get_schema(["hat", "bag"]), "euclidean")
    >>> out = model.embed(torch.rand(3, 3, 8, 4))
    >>> out.components.shape  # maps start at 1: every e_k is the embedding
    torch.Size([3, 2, 4])
    >>> torch.allclose(out.components[:, 0], out.embeddings, atol=1e-6)
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import nn

from ..adapters import FeatureAdapter
from ..attributes import AttributeSchema
from ..decomposition import (
    Decomposition,
    linear_matrix_decomposition,
    linear_pair_decomposition,
    matrix_decomposition,
    pair_decomposition,
)

if TYPE_CHECKING:
    from .recipes import Recipe

__all__ = ["AMDModel", "Components"]


class Components(NamedTuple):
    """Per-image quantities from which every pairwise AMD quantity follows.

    Attributes:
        embeddings: ``(B,D)`` the target's embeddings.
        components: ``(B,M,D')`` component embeddings ``e_k``.
        maps: ``(B,M,h,w)`` attribute maps on the feature grid.
        recognised: ``(B,2,M)`` attribute recognition logits of shared maps (AMD+), else ``None``.
        rest: ``(B,D)`` the part of the embedding that the rest of the image (the last of ``M + 1``
            maps that sum to 1) accounts for, in the linear decomposition; else ``None``. There the
            ``components`` are the attributes' parts ``u_k`` of the embedding, not embeddings.
    """

    embeddings: torch.Tensor
    components: torch.Tensor
    maps: torch.Tensor
    recognised: torch.Tensor | None = None
    rest: torch.Tensor | None = None

    def __getitem__(self, index: Any) -> Any:  # type: ignore[override]
        if isinstance(index, int):
            return tuple.__getitem__(self, index)
        return Components(*(None if t is None else t[index] for t in self))

    @staticmethod
    def cat(parts: list[Components]) -> Components:
        """Concatenate along the batch axis."""
        return Components(*(None if t[0] is None else torch.cat(t) for t in zip(*parts, strict=True)))


class AMDModel(nn.Module):
    """A target adapter, an interpreter network, a distance and a schema: one fitted AMD interpreter.

    Args:
        adapter: The target's feature adapter (holds the frozen copy of the target).
        recipe: The recipe that builds (and trains) the network.
        schema: The ``M`` attributes.
        metric: ``"euclidean"`` or ``"cosine"``.
        network: The interpreter network; default: ``recipe.build_network(adapter, schema)``.
        prepared: What the recipe prepared from the training data (saved with the model).
        side_fields: For a target with per-image side inputs (``adapter.side_names``), the batch field
            each comes from (``"camid"`` or ``"pid"``), in the same order.
    """

    def __init__(self, adapter: FeatureAdapter, recipe: Recipe, schema: AttributeSchema, metric: str,
                 network: nn.Module | None = None, prepared: dict[str, Any] | None = None,
                 side_fields: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.adapter = adapter
        self.recipe = recipe
        self.schema = schema
        self.metric = metric
        self.network = network if network is not None else recipe.build_network(adapter, schema)
        self.network.to(adapter.device)
        self.prepared: dict[str, Any] = dict(prepared or {})
        if len(side_fields) != len(adapter.side_names):
            raise ValueError(f"side_fields: the target takes {list(adapter.side_names)}, got fields {list(side_fields)}")
        self.side_fields = tuple(side_fields)

    def side_from_batch(self, batch: Any) -> tuple[torch.Tensor, ...]:
        """The side inputs of a batch (its ``camid``/``pid`` fields, as :attr:`side_fields` says)."""
        out = []
        for field in self.side_fields:
            value = getattr(batch, f"{field}s", None)
            if value is None:
                raise ValueError(f"loader: the target needs the batches' {field!r} for its side input "
                                 f"{self.adapter.side_names[len(out)]!r}, and a batch has none")
            out.append(value.to(self.device))
        return tuple(out)

    @property
    def device(self) -> torch.device:
        """Where the target copy and the network run."""
        return self.adapter.device

    @property
    def num_attributes(self) -> int:
        """``M``."""
        return len(self.schema)

    @property
    def gray_box(self) -> bool:
        """Whether the component embeddings use the target's own head."""
        return self.adapter.gray_box

    def train(self, mode: bool = True) -> AMDModel:
        """Switch the network (never the frozen target) between training and eval mode."""
        self.training = mode
        self.network.train(mode)
        return self

    def forward(self, images: torch.Tensor, side: tuple[torch.Tensor, ...] = ()) -> Components:
        """:class:`Components` of ``images`` (on :attr:`device`); gradients flow into the network.

        ``side``: the images' side inputs, for a target that takes some (see :attr:`side_fields`).
        """
        with self.adapter.bind(side):
            return self._forward(images)

    def _forward(self, images: torch.Tensor) -> Components:
        feats, emb = self.adapter.embed(images)
        grid = None if feats is None else self.adapter.to_grid(feats)
        # Under torchrun the fit puts a DistributedDataParallel wrapper of the network here.
        decompose = self.__dict__.get("_decomposer") or self.network.decompose
        maps, own, recognised = decompose(images, grid)
        subspaces = getattr(self.network, "subspaces", None)
        if subspaces is not None:  # the split is in the embedding space; the maps only locate
            parts, rest = subspaces(emb)
            return Components(emb, parts, maps, recognised, rest)
        if self.linear:
            parts = self._linear_parts(images, feats, grid, emb, maps)
            m = self.num_attributes
            return Components(emb, parts[:, :m], maps[:, :m], recognised, parts[:, m])
        if not self.gray_box:
            b, m = maps.shape[:2]
            masked = (own.unsqueeze(1) * maps.unsqueeze(2)).flatten(0, 1)
            comps = self.network.embedding_head(masked).reshape(b, m, -1)
        else:
            if maps.shape[-2:] != grid.shape[-2:]:
                raise RuntimeError(f"interpreter maps {tuple(maps.shape[-2:])} and the target's feature grid "
                                   f"{tuple(grid.shape[-2:])} differ in size")
            comps = self.adapter.masked_embeddings(images, feats, maps)
        return Components(emb, comps, maps, recognised)

    @property
    def linear(self) -> bool:
        """Whether the network's maps sum to 1 and distances are decomposed linearly (AMD-SPEC 11)."""
        return (bool(getattr(self.network.decomposition, "partition", False))
                or getattr(self.network, "subspaces", None) is not None)

    def _linear_parts(self, images: torch.Tensor, feats: torch.Tensor, grid: torch.Tensor, emb: torch.Tensor,
                      maps: torch.Tensor) -> torch.Tensor:
        """``(B,M+1,D)`` parts ``u_k = J_head(F) (F * A_k)`` of the embedding, one per map.

        The head's directional derivative along each masked grid, by a forward difference: exact for a
        head that is affine after the grid (average pooling, BNNeck, a linear layer), and first-order for
        one that pools positively homogeneously (max, GeM), for which ``sum_k u_k = J F = e - b`` still
        holds by Euler's theorem. What remains is the decomposition's ``offset``. The ``B*(M+1)``
        evaluations of the head are one call.
        """
        b, k = maps.shape[:2]
        eps = float(getattr(self.recipe, "step", 1e-2))  # LinearAMD.step; 1e-2 for other partition recipes
        masked = (grid.unsqueeze(1) * maps.unsqueeze(2)).flatten(0, 1)
        moved = grid.repeat_interleave(k, dim=0) + eps * masked
        repeated = None if self.adapter.fast_head else images.repeat_interleave(k, dim=0)
        with self.adapter.repeated(k):
            out = self.adapter.head(self.adapter.with_grid(feats, moved, k), repeated)
        return ((out - emb.repeat_interleave(k, dim=0)) / eps).reshape(b, k, -1)

    def embed(self, images: torch.Tensor, batch_size: int = 64, side: tuple[torch.Tensor, ...] = ()) -> Components:
        """:class:`Components` of ``images`` in batches, in eval mode, under ``torch.inference_mode``
        (no autograd bookkeeping at all: the outputs cannot be differentiated); ``side``: their side
        inputs (see :meth:`forward`)."""
        # Switching modes walks every module (1.5 ms a call on the reference model's copy): only when needed.
        was_training = self.training or self.network.training
        if was_training:
            self.train(False)
        side = tuple(torch.as_tensor(t).to(self.device) for t in side)
        try:
            with torch.inference_mode():
                parts = [self(chunk.to(self.device), tuple(t[i:i + batch_size] for t in side))
                         for i, chunk in zip(range(0, len(images), batch_size), images.split(batch_size),
                                             strict=True)]
        finally:
            if was_training:
                self.train(True)
        return Components.cat(parts)

    def decompose_pairs(self, a: Components, b: Components) -> Decomposition:
        """The decomposition of pair ``i`` = ``(a[i], b[i])``."""
        if a.rest is not None and b.rest is not None:
            return linear_pair_decomposition(a.embeddings, a.components, a.rest, b.embeddings, b.components,
                                             b.rest, self.metric)
        return pair_decomposition(a.embeddings, a.components, b.embeddings, b.components, self.metric)

    def decompose_matrix(self, query: Components, gallery: Components) -> Decomposition:
        """The decomposition of every query x gallery pair: ``(Q,G)`` and ``(Q,G,M)``."""
        if query.rest is not None and gallery.rest is not None:
            return linear_matrix_decomposition(query.embeddings, query.components, query.rest,
                                               gallery.embeddings, gallery.components, gallery.rest, self.metric)
        return matrix_decomposition(query.embeddings, query.components, gallery.embeddings,
                                    gallery.components, self.metric)

    def maps_to_image(self, maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Attribute maps on the grid brought to image size (the adapter knows the geometry)."""
        return self.adapter.grid_to_image(maps, size)

    def describe(self) -> str:
        """One line: the recipe and how the target was split."""
        return f"{self.recipe.name}: {self.adapter.describe()}"
