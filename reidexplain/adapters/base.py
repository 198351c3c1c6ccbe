"""The feature-adapter protocol: how AMD and Grad-CAM see a target model.

An adapter holds a frozen copy of the target (eval mode, no gradients) and splits it in two:

* ``features(images)`` -> the feature grid ``F`` ``(B,C,h,w)`` (for token models, the patch tokens laid
  out on their grid);
* ``head(F')`` -> the embedding, on any (masked) grid ``F'`` of that shape, with gradients to ``F'``;

checked numerically at construction: ``head(features(x)) == model(x)``. A family of models is one
subclass with a ``kind`` and a :meth:`FeatureAdapter.build` class method that returns an adapter, or
``None`` when the model is not of that family; :func:`reidexplain.adapters.adapt_model` tries the
registered families in order.

The user's model is never called, moved, hooked or switched to eval mode, and the caller's tensors are
never changed: the copy always receives a copy of the images (fast-reid style models normalise their
input in place).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import nn

from .._resize import upsample_maps

__all__ = ["FeatureAdapter", "frozen_copy", "outputs_match", "InputCopy", "SelectOutput", "select_output",
           "SideInputs", "MAX_SIDE_INPUTS"]


def frozen_copy(model: nn.Module, device: torch.device) -> nn.Module:
    """A deep copy of ``model`` on ``device``, in eval mode, without gradients."""
    target = copy.deepcopy(model).to(device)
    target.eval()
    target.requires_grad_(False)
    return target


def outputs_match(a: object, b: torch.Tensor) -> bool:
    """Whether ``a`` is a tensor equal to ``b`` within float tolerance (relative to ``b``'s scale)."""
    if not isinstance(a, torch.Tensor) or a.shape != b.shape:
        return False
    scale = float(b.abs().max()) if b.numel() else 0.0
    return bool(torch.allclose(a, b, rtol=1e-4, atol=1e-5 * max(scale, 1.0)))


OutputSelector = int | str | Callable[[Any], torch.Tensor]


class SelectOutput(nn.Module):
    """A model whose output is one part of ``model``'s (a tuple's item, a dict's value, or ``fn(out)``).

    SOLIDER returns ``(feat, featmaps)``, fast-reid dicts: this picks the embedding, traceably, so that
    the wrapped model still takes the fast path. The wrapped model is a child named ``model``.

    Args:
        model: The model.
        output: An index, a key, or a callable applied to the output.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> class Pair(nn.Module):
        ...     def forward(self, x):
        ...         return x.mean(dim=(2, 3)), x
        >>> SelectOutput(Pair(), 0)(torch.rand(2, 3, 4, 4)).shape
        torch.Size([2, 3])
    """

    def __init__(self, model: nn.Module, output: OutputSelector) -> None:
        super().__init__()
        if not (isinstance(output, (int, str)) or callable(output)) or isinstance(output, bool):
            raise TypeError(f"output: expected an index, a key or a callable, got {type(output).__name__}")
        self.model = model
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if callable(self.output) and not isinstance(self.output, (int, str)):
            return self.output(out)
        return out[self.output]

    def extra_repr(self) -> str:
        return f"output={self.output!r}"


def select_output(model: nn.Module, output: OutputSelector | None) -> nn.Module:
    """``model`` itself when ``output`` is ``None``, else :class:`SelectOutput` ``(model, output)``."""
    return model if output is None else SelectOutput(model, output)


MAX_SIDE_INPUTS = 4


class SideInputs(nn.Module):
    """A model whose named per-image forward arguments (TransReID's ``cam_label``) become positional
    inputs ``side_0, side_1, ...`` after the images, so that a traced graph takes them as inputs.

    Called with the images alone it uses :attr:`probe` (the values of the probe batch a split is found
    on); without those it raises.

    Args:
        model: The model.
        names: The forward arguments, in order (at most :data:`MAX_SIDE_INPUTS`).
        probe: Their values for the probe batch.
    """

    def __init__(self, model: nn.Module, names: tuple[str, ...], probe: tuple[torch.Tensor, ...] = ()) -> None:
        super().__init__()
        if not 1 <= len(names) <= MAX_SIDE_INPUTS:
            raise ValueError(f"side_inputs: expected 1 to {MAX_SIDE_INPUTS} forward arguments, got {list(names)}")
        self.model = model
        self.names = tuple(names)
        self.probe = tuple(probe)

    def forward(self, x: torch.Tensor, side_0: Any = None, side_1: Any = None, side_2: Any = None,
                side_3: Any = None) -> torch.Tensor:
        given = (side_0, side_1, side_2, side_3)[: len(self.names)]
        if any(v is None for v in given):
            if not self.probe:
                raise ValueError(f"side inputs {list(self.names)}: the model needs them for every image; pass "
                                 "them (Explainer(..., side_inputs=...), explain(..., forward_kwargs=...))")
            given = tuple(self.probe[i] if v is None else v for i, v in enumerate(given))
        return self.model(x, **dict(zip(self.names, given, strict=True)))


class InputCopy(nn.Module):
    """Runs ``module`` on a copy of its input, so that in-place preprocessing never reaches the caller;
    ``side`` (a callable) gives the side inputs to pass after the images (see :class:`SideInputs`)."""

    def __init__(self, module: nn.Module | Callable, side: Callable[[], tuple] | None = None) -> None:
        super().__init__()
        self.module = module
        self._side = side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.clone(), *(self._side() if self._side is not None else ()))


class _ToGrid(nn.Module):
    """The adapter's :meth:`FeatureAdapter.to_grid` as a module (it holds no parameters)."""

    def __init__(self, adapter: FeatureAdapter) -> None:
        super().__init__()
        self._convert = adapter.to_grid  # a bound method: the adapter is not registered as a child

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self._convert(features)


class FeatureAdapter(nn.Module):
    """A frozen target split into a feature grid and a head (see the module docs).

    Subclasses set :attr:`kind`, implement :meth:`build`, :meth:`_features` and :meth:`_head`, and may
    override :attr:`fast_head` (``False`` when the head cannot run without re-running the model).

    Attributes:
        target: The frozen copy.
        layer: Name of the feature layer (``None`` for a black box).
        grid_shape: ``(C,h,w)`` of the feature grid on the probe images (``None`` for a black box).
        embedding_dim: ``D``.
        reason: Why this split was chosen (shown by :meth:`describe`).
    """

    kind: ClassVar[str] = "abstract"
    fast_head: ClassVar[bool] = True
    #: Values per chunk of masked grids in :meth:`masked_embeddings` (8 MB of float32: a CPU's cache).
    masked_chunk_elements: ClassVar[int] = 1 << 21

    def __init__(self, target: nn.Module, layer: str | None, grid_shape: tuple[int, int, int] | None,
                 embedding_dim: int, reason: str = "") -> None:
        super().__init__()
        self.target = target
        self.layer = layer
        self.grid_shape = grid_shape
        self.embedding_dim = int(embedding_dim)
        self.reason = reason
        self._bound: tuple[torch.Tensor, ...] = ()

    # ------------------------------------------------------------------ side inputs
    @property
    def side_names(self) -> tuple[str, ...]:
        """The target's per-image forward arguments (see :class:`SideInputs`); ``()`` for most models."""
        return self.target.names if isinstance(self.target, SideInputs) else ()

    def bound_side(self) -> tuple[torch.Tensor, ...]:
        """The side inputs of the images being processed (see :meth:`bind`)."""
        return self._bound

    @contextmanager
    def bind(self, side: tuple[torch.Tensor, ...] = ()) -> Iterator[None]:
        """Process images with these per-image side inputs (one ``(B,)`` tensor per forward argument)."""
        side = tuple(side)
        if len(side) != len(self.side_names):
            raise ValueError(f"side inputs: the target takes {list(self.side_names)} per image, got {len(side)} "
                             "tensors")
        previous, self._bound = self._bound, side
        try:
            yield
        finally:
            self._bound = previous

    def _require_side(self) -> None:
        if len(self._bound) != len(self.side_names):
            raise ValueError(f"side inputs {list(self.side_names)}: the model needs them for every image; bind "
                             "them (adapter.bind(...), Explainer(..., side_inputs=...), "
                             "explain(..., forward_kwargs=...))")

    @contextmanager
    def repeated(self, times: int) -> Iterator[None]:
        """The bound side inputs repeated ``times`` per image (the head runs on ``B*times`` grids)."""
        with self.bind(tuple(t.repeat_interleave(times, dim=0) for t in self._bound)):
            yield

    # ------------------------------------------------------------------ family protocol
    @classmethod
    def build(cls, target: nn.Module, probe: torch.Tensor, layer: str | None,
              reference: torch.Tensor) -> FeatureAdapter | None:
        """An adapter of this family for the frozen ``target``, or ``None`` if it is not of this family.

        Args:
            target: The frozen copy (eval mode).
            probe: ``(B,3,H,W)`` images on the target's device.
            layer: The requested feature layer's name, or ``None`` for the automatic choice.
            reference: ``target(probe)``, which ``head(features(probe))`` must reproduce.
        """
        raise NotImplementedError

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _head(self, features: torch.Tensor, images: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def _trainable_trunk(self) -> nn.Module:
        """A module images -> features whose parameters may be copied and trained (the interpreter's
        trunk; :meth:`make_trunk` appends :meth:`to_grid`)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ grid <-> features geometry
    def to_grid(self, features: torch.Tensor) -> torch.Tensor:
        """The feature grid ``(B,C,h,w)`` of what :meth:`features` returns (the same tensor for CNNs;
        the patch tokens laid out on their grid for token models)."""
        return features

    def with_grid(self, features: torch.Tensor, grid: torch.Tensor, repeats: int = 1) -> torch.Tensor:
        """``features`` with their grid replaced by ``grid`` ``(B*repeats,C,h,w)`` (each image's other
        parts, such as a class token, repeated ``repeats`` times): what :meth:`head` takes."""
        return grid

    # ------------------------------------------------------------------ what everyone calls
    @property
    def device(self) -> torch.device:
        """Device of the frozen copy."""
        for t in self.target.parameters():
            return t.device
        for t in self.target.buffers():
            return t.device
        return torch.device("cpu")

    @property
    def gray_box(self) -> bool:
        """Whether component embeddings can use the target's own head."""
        return self.grid_shape is not None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The target's embedding of ``images`` (a copy of them)."""
        self._require_side()
        return self.target(images.clone(), *self._bound)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """What the head takes, for ``images``, without gradients (:meth:`to_grid` gives its grid)."""
        self._require_side()
        with torch.no_grad():
            return self._features(images.clone())

    def grid(self, images: torch.Tensor) -> torch.Tensor:
        """The feature grid ``(B,C,h,w)`` of ``images``, without gradients."""
        return self.to_grid(self.features(images))

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Features (``None`` for a black box; :meth:`to_grid` gives their grid) and embedding of
        ``images``, without gradients."""
        self._require_side()
        with torch.no_grad():
            if not self.gray_box:
                return None, self.forward(images)
            feats = self._features(images.clone())
            # The head gets its own copy: a head that starts with an in-place op must not edit F.
            return feats, self._head(feats.clone(), images)

    def head(self, features: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        """Embeddings of (masked) features; gradients flow to ``features``.

        Args:
            features: What :meth:`features` returns, for ``N`` images (``(N,C,h,w)`` for CNNs).
            images: The ``(N,3,H,W)`` images the grids belong to; only adapters whose head cannot run
                alone (:attr:`fast_head` false) need them.
        """
        if not self.gray_box:
            raise RuntimeError("the target has no feature layer: its head cannot be applied alone")
        self._require_side()
        return self._head(features, images)

    def masked_embeddings(self, images: torch.Tensor, features: torch.Tensor,
                          maps: torch.Tensor) -> torch.Tensor:
        """Component embeddings ``e_k = head(F * A_k)``: ``(B,M,D)`` from the features of ``B`` images and
        maps ``A`` ``(B,M,h,w)`` on their grid.

        On a CPU the masked grids go through the head in chunks of whole images, each at most
        :attr:`masked_chunk_elements` values (at least one image): a head whose first operations are
        element-wise (pooling, GeM's power) then works in cache, about 3x faster than on all ``B*M``
        grids at once. On other devices they go in one call.
        """
        b, m = maps.shape[:2]
        grid = self.to_grid(features)
        per_image = m * grid[0].numel()
        step = max(1, self.masked_chunk_elements // max(per_image, 1))
        if step >= b or grid.device.type != "cpu":  # a GPU wants the large call
            return self._masked_chunk(images, features, grid, maps)
        side = self._bound
        parts = []
        for start in range(0, b, step):
            rows = slice(start, start + step)
            with self.bind(tuple(t[rows] for t in side)):
                parts.append(self._masked_chunk(images[rows], self.feature_rows(features, rows), grid[rows],
                                                maps[rows]))
        return torch.cat(parts)

    def feature_rows(self, features: torch.Tensor, rows: slice) -> torch.Tensor:
        """The features of the images ``rows`` (their batch axis is the first unless overridden)."""
        return features[rows]

    def _masked_chunk(self, images: torch.Tensor, features: torch.Tensor, grid: torch.Tensor,
                      maps: torch.Tensor) -> torch.Tensor:
        b, m = maps.shape[:2]
        masked = (grid.unsqueeze(1) * maps.unsqueeze(2)).flatten(0, 1)
        repeated = None if self.fast_head else images.repeat_interleave(m, dim=0)
        with self.repeated(m):
            return self.head(self.with_grid(features, masked, m), repeated).reshape(b, m, -1)

    def make_trunk(self) -> nn.Module:
        """A trainable deep copy of the path images -> grid (the start of the interpreter's trunk)."""
        if not self.gray_box:
            raise RuntimeError("the target has no feature layer to copy a trunk from")
        trunk: nn.Module = InputCopy(copy.deepcopy(self._trainable_trunk()),
                                     self.bound_side if self.side_names else None)
        if type(self).to_grid is not FeatureAdapter.to_grid:
            trunk = nn.Sequential(trunk, _ToGrid(self))
        trunk.requires_grad_(True)
        trunk.train()
        return trunk

    def grid_to_image(self, maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Maps on the feature grid ``(B,K,h,w)`` brought to image size ``(B,K,H,W)`` (bilinear, >= 0)."""
        return upsample_maps(maps, size)

    def describe(self) -> str:
        """One line: which layer, why, and how to choose another."""
        if not self.gray_box:
            return f"black box ({self.reason or 'no feature layer'}); the interpreter learns its own trunk and head"
        why = f" ({self.reason})" if self.reason else ""
        return (f"{self.kind} split at {self.layer!r}, grid (C,h,w)={self.grid_shape}{why}; "
                "pass feature_layer='<module name>' to choose another")

    def config(self) -> dict[str, Any]:
        """What identifies this split in a checkpoint."""
        return {"kind": self.kind, "layer": self.layer,
                "grid_shape": list(self.grid_shape) if self.grid_shape else None,
                "embedding_dim": self.embedding_dim}

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, layer={self.layer!r}, grid_shape={self.grid_shape}"
