"""Token models (ViT, DeiT, TransReID-style, CLIP's visual transformer): the patch-token grid.

The feature grid of a vision transformer is its patch tokens laid out on the patch grid, taken where
they enter the last transformer block (the last block, the final norm and the pooling or class-token
read-out form the head). For a class-token read-out they are taken after that block's first layer
norm, where a mask reaches the embedding (see :mod:`~reidexplain.adapters._readout`). The class, distillation
and register tokens (the *prefix*) are not on the grid: they are handed to the head unmasked, each
image its own.

The blocks are found by a probe forward pass: the last container (``nn.ModuleList`` or
``nn.Sequential``) of two or more blocks of one class that take a token tensor, ``(B,T,C)`` or
sequence-first ``(T,B,C)`` (CLIP's blocks). The patch grid ``(gh,gw)`` is the image-grid output of the
patch embedding; the ``T - gh*gw`` tokens before the patches are the prefix. The model's traced graph
is then cut at the last block's input (:func:`~reidexplain.adapters.families.cut_graph`), so the head
runs alone, as for a CNN. When the head reads only the prefix (a class-token read-out), its last block
is computed for the prefix rows only (:class:`~reidexplain.adapters._readout.ReadoutBlock`), and the
``M`` masked grids of an image share one key and value projection: the head on them costs a small
part of one block instead of ``M`` whole blocks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
from torch import nn

from .._model import preserved_model_state
from ._layers import feature_layers
from ._readout import NormedTrunk, ReadoutBlock, readout_head
from .base import FeatureAdapter, outputs_match
from .families import GraphAdapter, cut_graph, side_count, side_probe, trace

__all__ = ["TokenAdapter", "TokenLayout", "find_token_blocks"]

logger = logging.getLogger(__name__)

_MAX_PREFIX = 16  # class + distillation + register tokens


@dataclass(frozen=True)
class TokenLayout:
    """Where the patch tokens are in a token tensor.

    Attributes:
        prefix: Tokens before the patch tokens (class, distillation, register tokens).
        grid: ``(gh, gw)`` of the patch tokens (row-major).
        sequence_first: ``(T,B,C)`` tensors instead of ``(B,T,C)``.
    """

    prefix: int
    grid: tuple[int, int]
    sequence_first: bool

    def to_grid(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B,T,C)`` (or ``(T,B,C)``) -> ``(B,C,gh,gw)`` patch tokens."""
        if self.sequence_first:
            tokens = tokens.transpose(0, 1)
        patches = tokens[:, self.prefix:]
        b, n, c = patches.shape
        return patches.transpose(1, 2).reshape(b, c, *self.grid)

    def with_grid(self, tokens: torch.Tensor, grid: torch.Tensor, repeats: int = 1) -> torch.Tensor:
        """The prefix tokens of ``tokens`` (each repeated ``repeats`` times) followed by ``grid``'s."""
        batch_dim = 1 if self.sequence_first else 0
        prefix = tokens.narrow(1 - batch_dim, 0, self.prefix)
        if repeats > 1:
            prefix = prefix.repeat_interleave(repeats, dim=batch_dim)
        patches = grid.flatten(2).transpose(1, 2)  # (N, gh*gw, C)
        if self.sequence_first:
            patches = patches.transpose(0, 1)
        return torch.cat([prefix, patches], dim=1 - batch_dim)


def find_token_blocks(model: nn.Module, probe: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """``(name, input shape)`` of the blocks of the last transformer stack of ``model``, in order.

    A stack is a ``ModuleList``/``Sequential`` of two or more children of one class, each called once,
    each taking a 3-D tensor with the probe's batch size on its first or second axis.
    """
    stacks = [(name, module) for name, module in model.named_modules()
              if isinstance(module, (nn.ModuleList, nn.Sequential)) and len(module) >= 2
              and len({type(child) for child in module}) == 1]
    if not stacks:
        return []
    seen: dict[str, list[tuple[int, ...]]] = {}
    handles = []

    def make_hook(name: str) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict | None = None) -> None:
            first = args[0] if args else next(iter((kwargs or {}).values()), None)
            if isinstance(first, torch.Tensor):
                seen.setdefault(name, []).append(tuple(first.shape))

        return hook

    for stack_name, stack in stacks:
        for child_name, child in stack.named_children():
            full = f"{stack_name}.{child_name}" if stack_name else child_name
            handles.append(child.register_forward_pre_hook(make_hook(full), with_kwargs=True))
    try:
        with preserved_model_state(model), torch.no_grad():
            model(probe.clone())
    finally:
        for handle in handles:
            handle.remove()
    batch = probe.shape[0]
    found: list[tuple[str, tuple[int, ...]]] = []
    for stack_name, stack in stacks:
        names = [f"{stack_name}.{c}" if stack_name else c for c, _ in stack.named_children()]
        shapes = [seen.get(n) for n in names]
        if all(s is not None and len(s) == 1 and len(s[0]) == 3 and batch in s[0][:2] for s in shapes):
            found = [(n, s[0]) for n, s in zip(names, shapes, strict=True)]  # type: ignore[index]
    return found


def _layout(target: nn.Module, probe: torch.Tensor, shape: tuple[int, ...]) -> TokenLayout | None:
    batch = probe.shape[0]
    # (B,T,C) unless the batch sits on the second axis only (CLIP's sequence-first blocks).
    sequence_first = shape[1] == batch and shape[0] != batch
    tokens = shape[0] if sequence_first else shape[1]
    for layer in feature_layers(target, probe):  # the patch embedding is the first image grid
        _, gh, gw = layer.shape
        if 0 <= tokens - gh * gw <= _MAX_PREFIX:
            return TokenLayout(tokens - gh * gw, (gh, gw), sequence_first)
    return None


class TokenAdapter(GraphAdapter):
    """Vision transformers: the patch tokens entering the last block (normalised by its first layer norm
    for a class-token read-out), on their grid.

    A graph cut like :class:`~reidexplain.adapters.families.GraphAdapter`'s, at a token tensor: the
    trunk's output is the tokens, and :meth:`to_grid` / :meth:`with_grid` lay their patch part out on
    the patch grid and back.
    """

    kind = "tokens"

    def __init__(self, target: nn.Module, trunk: torch.fx.GraphModule, head: torch.fx.GraphModule,
                 layer: str, layout: TokenLayout, channels: int, embedding_dim: int, reason: str = "") -> None:
        super().__init__(target, trunk, head, layer, (channels, *layout.grid), embedding_dim, reason)
        self.layout = layout
        #: Whether the grid is the normalised patch tokens (a class-token read-out, see ``_readout``).
        self.normalised = False
        #: The head's read-out block, when masked grids can skip their key and value projections.
        self.readout: ReadoutBlock | None = None

    @classmethod
    def build(cls, target: nn.Module, probe: torch.Tensor, layer: str | None,
              reference: torch.Tensor) -> FeatureAdapter | None:
        blocks = find_token_blocks(target, probe)
        if not blocks:
            return None
        names = [name for name, _ in blocks]
        if layer is not None and layer not in names:
            return None  # not a block: another family may take the layer
        name, shape = blocks[names.index(layer)] if layer is not None else blocks[-1]
        layout = _layout(target, probe, shape)
        if layout is None:
            logger.info("tokens: no patch grid matches the %d tokens entering %r", shape[1], name)
            return None
        try:
            traced = trace(target, {name})
        except Exception as err:
            logger.info("torch.fx cannot trace %s (%s)", type(target).__name__, err)
            return None
        calls = [n for n in traced.graph.nodes if n.op == "call_module" and n.target == name]
        if len(calls) != 1 or not calls[0].args or not isinstance(calls[0].args[0], torch.fx.Node):
            return None
        parts = cut_graph(traced, calls[0].args[0], side_count(target))
        if parts is None:
            return None
        trunk, head = parts
        side = side_probe(target)
        try:
            with torch.no_grad():
                tokens = trunk(probe.clone(), *side)
                ok = outputs_match(head(tokens.clone(), *side), reference)
        except Exception as err:
            logger.debug("tokens: the cut at %r failed on the probe: %s", name, err)
            return None
        if not ok:
            return None
        channels = int(tokens.shape[-1])
        patch_norm = readout_head(head, name, layout.prefix, layout.sequence_first, tokens, side)
        where = (f"normalised patch tokens entering the attention of {name!r}" if patch_norm is not None
                 else f"patch tokens at the input of {name!r}")
        why = (f"{where} ({layout.prefix} prefix token{'s' if layout.prefix != 1 else ''} kept unmasked"
               f"{', sequence-first' if layout.sequence_first else ''}"
               f"{'; the head computes that block for the prefix only' if patch_norm is not None else ''})")
        if patch_norm is not None:
            trunk = NormedTrunk(trunk, patch_norm)  # type: ignore[assignment]
        adapter = cls(target, trunk, head, name, layout, channels, int(reference.shape[1]), why)
        adapter.normalised = patch_norm is not None
        if patch_norm is not None:
            adapter.readout = head.get_submodule(name)
            if not adapter._masked_readout_matches(probe, side):
                adapter.readout = None
        return adapter

    def _masked_readout_matches(self, probe: torch.Tensor, side: tuple[torch.Tensor, ...]) -> bool:
        """Whether the masked read-out gives the component embeddings of the masked grids on the probe."""
        try:
            with torch.no_grad(), self.bind(side):
                features = self._features(probe.clone())
                grid = self.to_grid(features)
                maps = torch.rand(grid.shape[0], 3, *grid.shape[-2:], generator=torch.Generator().manual_seed(1))
                maps = maps.to(grid)
                fast = self._masked_chunk(probe, features, grid, maps)
                readout, self.readout = self.readout, None
                try:
                    full = self._masked_chunk(probe, features, grid, maps)
                finally:
                    self.readout = readout
            return outputs_match(fast.flatten(0, 1), full.flatten(0, 1))
        except Exception as err:  # noqa: BLE001 - any failure keeps the plain masked grids
            logger.debug("tokens: the masked read-out failed on the probe: %s", err)
            return False

    def _masked_chunk(self, images: torch.Tensor, features: torch.Tensor, grid: torch.Tensor,
                      maps: torch.Tensor) -> torch.Tensor:
        if self.readout is None:
            return super()._masked_chunk(images, features, grid, maps)
        # Keys and values are linear in the normalised patches: one projection per image serves every
        # map (ReadoutBlock.masking), and the rest of the head runs on the B*M read-outs.
        b, m = maps.shape[:2]
        with self.readout.masking(maps.flatten(2)), self.repeated(m):
            return self.head(features, None).reshape(b, m, -1)

    def to_grid(self, features: torch.Tensor) -> torch.Tensor:
        return self.layout.to_grid(features)

    def with_grid(self, features: torch.Tensor, grid: torch.Tensor, repeats: int = 1) -> torch.Tensor:
        return self.layout.with_grid(features, grid, repeats)

    def feature_rows(self, features: torch.Tensor, rows: slice) -> torch.Tensor:
        return features[:, rows] if self.layout.sequence_first else features[rows]

    def config(self) -> dict[str, Any]:
        # Interpreters fitted before the grid was normalised masked raw tokens: a checkpoint says which.
        return {**super().config(), "tokens": "normalised" if self.normalised else "raw"}
