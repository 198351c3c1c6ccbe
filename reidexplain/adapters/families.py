"""The model families reidexplain knows, tried in the order they are registered.

* :class:`ForwardFeaturesAdapter` (``"forward_features"``): models that opt in with timm's contract,
  ``forward_features(x)`` -> grid and ``forward_head(grid)`` -> embedding (the zoo's models, timm CNNs).
* :class:`GraphAdapter` (``"fx"``): any model torch.fx can trace in eval mode; the graph is cut at the
  feature layer, the part before it is the trunk and the part after it the head (torchvision's
  ``create_feature_extractor`` idea, the other way round too). ``nn.Sequential``, torchvision ResNets,
  BNNeck heads and functional pooling all land here.
* :class:`HookAdapter` (``"hook"``): the last resort for models that do not trace. The head cannot run
  alone: the whole model is re-run once over the ``B*M`` masked copies with the feature layer's output
  replaced by a forward hook (slow; a warning says so).

A black box (:class:`BlackBoxAdapter`, no feature layer) is what remains when a model has no feature
layer at all or ``feature_layer=None`` is asked for.
"""

from __future__ import annotations

import inspect
import logging
import operator
from typing import Any

import torch
import torch.fx
from torch import nn

from ._layers import feature_layers, is_image_grid
from .base import FeatureAdapter, SideInputs, outputs_match

__all__ = ["ForwardFeaturesAdapter", "GraphAdapter", "HookAdapter", "BlackBoxAdapter", "cut_graph", "trace"]

logger = logging.getLogger(__name__)


def _grid(t: object, size: tuple[int, int]) -> bool:
    return isinstance(t, torch.Tensor) and is_image_grid(tuple(t.shape), size)


def _size(probe: torch.Tensor) -> tuple[int, int]:
    return int(probe.shape[-2]), int(probe.shape[-1])


def _verified(head: Any, feats: torch.Tensor, reference: torch.Tensor, side: tuple = ()) -> bool:
    try:
        with torch.no_grad():
            return outputs_match(head(feats.clone(), *side), reference)
    except Exception as err:  # a head that rejects its input is just not a valid split
        logger.debug("split candidate failed on the probe batch: %s", err)
        return False


def _layer_output(target: nn.Module, name: str, probe: torch.Tensor) -> torch.Tensor:
    """The output of module ``name`` on ``probe``; it must be an image grid produced exactly once."""
    outputs: list[object] = []
    handle = target.get_submodule(name).register_forward_hook(lambda m, i, o: outputs.append(o))
    try:
        with torch.no_grad():
            target(probe.clone())
    finally:
        handle.remove()
    if len(outputs) != 1:
        raise ValueError(f"feature_layer: module {name!r} runs {len(outputs)} times per forward pass, "
                         "expected once")
    out = outputs[0]
    if not _grid(out, _size(probe)):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"feature_layer: the output of {name!r} must be an image-grid feature map "
                         f"(B,C,h,w) with the input's aspect and h*w > 1, got {got}")
    return out  # type: ignore[return-value]


class _ForwardFeatures(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


class ForwardFeaturesAdapter(FeatureAdapter):
    """Models with timm's ``forward_features`` / ``forward_head`` contract."""

    kind = "forward_features"

    def __init__(self, target: nn.Module, grid_shape: tuple[int, int, int], embedding_dim: int,
                 layer: str = "forward_features", reason: str = "") -> None:
        super().__init__(target, layer, grid_shape, embedding_dim, reason)
        self.trunk = _ForwardFeatures(target)

    @classmethod
    def build(cls, target: nn.Module, probe: torch.Tensor, layer: str | None,
              reference: torch.Tensor) -> FeatureAdapter | None:
        if not (callable(getattr(target, "forward_features", None))
                and callable(getattr(target, "forward_head", None))):
            return None
        try:
            with torch.no_grad():
                feats = target.forward_features(probe.clone())
        except Exception as err:
            logger.debug("forward_features failed on the probe: %s", err)
            return None
        if not _grid(feats, _size(probe)) or not _verified(target.forward_head, feats, reference):
            return None
        if layer is not None and layer != "forward_features":
            # A named layer is this split only if its output is the grid forward_features returns.
            try:
                named = _layer_output(target, layer, probe)
            except ValueError:
                return None
            if not outputs_match(named, feats):
                return None
        shape = tuple(int(s) for s in feats.shape[1:])
        return cls(target, shape, int(reference.shape[1]), layer or "forward_features",  # type: ignore[arg-type]
                   "the model's own forward_features/forward_head")

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        return self.target.forward_features(images)

    def _head(self, features: torch.Tensor, images: torch.Tensor | None) -> torch.Tensor:
        return self.target.forward_head(features)

    def _trainable_trunk(self) -> nn.Module:
        return self.trunk


class _LeafTracer(torch.fx.Tracer):
    """torch.fx's tracer, with the chosen feature layer kept as one call (a leaf)."""

    def __init__(self, leaves: set[str]) -> None:
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return module_qualified_name in self.leaves or super().is_leaf_module(m, module_qualified_name)


def side_count(target: nn.Module) -> int:
    """Number of per-image side inputs the (wrapped) target takes after the images."""
    return len(target.names) if isinstance(target, SideInputs) else 0


def side_probe(target: nn.Module) -> tuple[torch.Tensor, ...]:
    """The side inputs of the probe batch (``()`` for a target without side inputs)."""
    return target.probe if isinstance(target, SideInputs) else ()


def trace(target: nn.Module, leaves: set[str]) -> torch.fx.GraphModule:
    """``target`` traced by torch.fx with ``leaves`` kept as single calls; optional forward arguments
    (``attn_mask=None`` in timm's ViTs, say) are fixed at their defaults, so the graph has one input,
    and the side inputs of a :class:`~reidexplain.adapters.base.SideInputs` target after it.

    Raises:
        Exception: whatever torch.fx raises for a model it cannot trace.
    """
    params = list(inspect.signature(target.forward).parameters.values())[1 + side_count(target):]
    concrete = {p.name: p.default for p in params
                if p.default is not inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD}
    graph = _LeafTracer(leaves).trace(target, concrete_args=concrete or None)
    return torch.fx.GraphModule(target, graph)


def _batch_size_of(node: torch.fx.Node) -> torch.fx.Node | None:
    """The tensor whose batch size ``node`` reads (``x.size(0)``, ``x.shape[0]``), else ``None``."""
    if node.op == "call_method" and node.target == "size":
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        if dim == 0 and isinstance(node.args[0], torch.fx.Node):
            return node.args[0]
    if node.op == "call_function" and node.target is operator.getitem and node.args[1] == 0:
        whole = node.args[0]
        if isinstance(whole, torch.fx.Node) and (
                (whole.op == "call_function" and whole.target is getattr and whole.args[1] == "shape")
                or (whole.op == "call_method" and whole.target == "size" and len(whole.args) == 1
                    and not whole.kwargs)):
            return whole.args[0] if isinstance(whole.args[0], torch.fx.Node) else None
    return None


def cut_graph(module: torch.fx.GraphModule, cut: torch.fx.Node, side: int = 0
              ) -> tuple[torch.fx.GraphModule, torch.fx.GraphModule] | None:
    """Split a traced graph at ``cut`` into ``(trunk, head)``, or ``None`` if the cut is not clean.

    The trunk is the graph up to ``cut`` in execution order (in-place preprocessing included); the head
    is the rest, computed from ``cut`` alone. A cut is clean when nothing after it that the output needs
    reads the input except through ``cut`` (no skip connection crosses it). Two things may cross: values
    that do not depend on the input (parameters, constants), which are recomputed in the head, and the
    batch size of a tensor (``x.size(0)``, ``x.shape[0]``, as in ``x.view(x.size(0), -1)``), which the
    head reads from its own input: it runs on ``B*M`` masked grids, not on ``B`` images.
    """
    nodes = list(module.graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    # The images are the first input, then the side inputs; the others must be arguments fixed at their
    # defaults (see trace).
    if len(placeholders) < 1 + side or any(len(p.args) != 1 for p in placeholders[1 + side:]) \
            or cut.op in ("placeholder", "output"):
        return None
    position = nodes.index(cut)
    before, after = nodes[: position + 1], nodes[position + 1:]
    output = after.pop()  # the graph's output node is its last
    depends = {placeholders[0]}
    for node in nodes:
        if any(p in depends for p in node.all_input_nodes):
            depends.add(node)

    head_graph = torch.fx.Graph()
    features = head_graph.placeholder("features")
    env: dict[torch.fx.Node, torch.fx.Node] = {cut: features}
    for extra in placeholders[1:1 + side]:  # side inputs, one value per (masked) image
        env[extra] = head_graph.placeholder(extra.name)
    for fixed in placeholders[1 + side:]:
        env[fixed] = head_graph.placeholder(fixed.name, default_value=fixed.args[0])
    missing: set[torch.fx.Node] = set()  # nodes of the head that would need the input around the cut
    lazy = {n for n in before if n not in depends and n.op != "placeholder"}

    def take(node: torch.fx.Node) -> torch.fx.Node:
        if node not in env and node in lazy:
            env[node] = head_graph.node_copy(node, take)
        return env[node]

    for node in after:
        if node in missing:
            continue
        if _batch_size_of(node) is not None and _batch_size_of(node) not in env:
            env[node] = head_graph.call_method("size", (features, 0))
            continue
        if all(p in env or p in lazy for p in node.all_input_nodes):
            env[node] = head_graph.node_copy(node, take)
        else:
            missing.add(node)
    result = output.args[0]
    needed: list[torch.fx.Node] = []
    torch.fx.map_arg(result, needed.append)
    if any(n not in env and n not in lazy for n in needed):
        return None
    head_graph.output(torch.fx.map_arg(result, take))

    trunk_graph = torch.fx.Graph()
    trunk_env: dict[torch.fx.Node, torch.fx.Node] = {}
    for node in before:
        trunk_env[node] = trunk_graph.node_copy(node, lambda n: trunk_env[n])
    trunk_graph.output(trunk_env[cut])
    head = torch.fx.GraphModule(module, head_graph)
    head.graph.eliminate_dead_code()  # what only the trunk's side needed (a training-only branch, say)
    head.recompile()
    return torch.fx.GraphModule(module, trunk_graph), head


class GraphAdapter(FeatureAdapter):
    """Any model torch.fx traces: the traced graph cut at the feature layer (see :func:`cut_graph`)."""

    kind = "fx"

    def __init__(self, target: nn.Module, trunk: torch.fx.GraphModule, head: torch.fx.GraphModule,
                 layer: str, grid_shape: tuple[int, int, int], embedding_dim: int, reason: str = "") -> None:
        super().__init__(target, layer, grid_shape, embedding_dim, reason)
        self.trunk = trunk
        self.head_graph = head

    @classmethod
    def build(cls, target: nn.Module, probe: torch.Tensor, layer: str | None,
              reference: torch.Tensor) -> FeatureAdapter | None:
        if layer == "forward_features":
            return None
        candidates = [layer] if layer is not None else [f.name for f in reversed(feature_layers(target, probe))]
        for name in candidates:
            if layer is not None:
                _layer_output(target, name, probe)  # a clear error for a named layer that is not a grid
            try:
                traced = trace(target, {name})
            except Exception as err:  # control flow on values, unsupported ops: not traceable
                logger.info("torch.fx cannot trace %s (%s)", type(target).__name__, err)
                return None
            nodes = [n for n in traced.graph.nodes if n.op == "call_module" and n.target == name]
            if len(nodes) != 1:
                continue
            parts = cut_graph(traced, nodes[0], side_count(target))
            if parts is None:
                logger.debug("fx: a connection crosses %r; trying an earlier layer", name)
                continue
            trunk, head = parts
            side = side_probe(target)
            try:
                with torch.no_grad():
                    feats = trunk(probe.clone(), *side)
            except Exception as err:
                logger.debug("fx trunk at %r failed on the probe: %s", name, err)
                continue
            if not _grid(feats, _size(probe)) or not _verified(head, feats, reference, side):
                continue
            shape = tuple(int(s) for s in feats.shape[1:])
            why = "the layer asked for" if layer is not None else (
                "the last image-grid feature map whose head runs alone")
            return cls(target, trunk, head, name, shape, int(reference.shape[1]), why)  # type: ignore[arg-type]
        return None

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        return self.trunk(images, *self._bound)

    def _head(self, features: torch.Tensor, images: torch.Tensor | None) -> torch.Tensor:
        return self.head_graph(features, *self._bound)

    def _trainable_trunk(self) -> nn.Module:
        return self.trunk


class _StopForward(Exception):
    """Raised from a forward hook to stop a forward pass once the feature grid is known."""


class _HookTrunk(nn.Module):
    """Any model, run until ``layer`` has produced its output, which is returned."""

    def __init__(self, model: nn.Module, layer: str) -> None:
        super().__init__()
        self.model = model
        self.layer = layer

    def forward(self, x: torch.Tensor, *side: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []

        def hook(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
            captured.append(output)
            raise _StopForward

        handle = self.model.get_submodule(self.layer).register_forward_hook(hook)
        try:
            self.model(x, *side)
        except _StopForward:
            pass
        finally:
            handle.remove()
        if not captured:
            raise RuntimeError(f"feature layer {self.layer!r} was not called in the forward pass")
        return captured[0]


class HookAdapter(FeatureAdapter):
    """Models that do not trace: the feature layer's output is replaced by a forward hook (slow)."""

    kind = "hook"
    fast_head = False

    @classmethod
    def build(cls, target: nn.Module, probe: torch.Tensor, layer: str | None,
              reference: torch.Tensor) -> FeatureAdapter | None:
        if layer == "forward_features":
            raise ValueError("feature_layer: 'forward_features' does not give an image-grid (B,C,h,w) map "
                             "whose forward_head reproduces the model output")
        if layer is None:
            found = feature_layers(target, probe)
            if not found:
                return None
            layer = found[-1].name
        named = _layer_output(target, layer, probe)
        adapter = cls(target, layer, tuple(int(s) for s in named.shape[1:]), int(reference.shape[1]),  # type: ignore[arg-type]
                      "the model does not trace with torch.fx, so its head cannot run alone")
        with torch.no_grad():
            replayed = adapter.head(named.clone(), probe)
        if not outputs_match(replayed, reference):
            raise ValueError(f"feature_layer: replacing the output of {layer!r} by itself changes the model "
                             "output (is the layer stateful or random?)")
        logger.warning("no fast split of %s at %r (torch.fx cannot trace it, and it has no "
                       "forward_features/forward_head): AMD re-runs the whole model on the M masked copies "
                       "of each image, which is slow; make the model traceable or give it timm-style "
                       "forward_features/forward_head methods", type(target).__name__, layer)
        return adapter

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        return _HookTrunk(self.target, self.layer)(images, *self._bound)  # type: ignore[arg-type]

    def _head(self, features: torch.Tensor, images: torch.Tensor | None) -> torch.Tensor:
        if images is None:
            raise ValueError("images: required to re-run a model split with a hook")
        layer = self.target.get_submodule(self.layer)  # type: ignore[arg-type]
        handle = layer.register_forward_hook(lambda m, i, o: features)
        try:
            return self.target(images.clone(), *self._bound)
        finally:
            handle.remove()

    def _trainable_trunk(self) -> nn.Module:
        return _HookTrunk(self.target, self.layer)  # type: ignore[arg-type]


class BlackBoxAdapter(FeatureAdapter):
    """No feature layer: the interpreter owns the whole metric (its own trunk and head)."""

    kind = "none"

    def __init__(self, target: nn.Module, embedding_dim: int, reason: str = "") -> None:
        super().__init__(target, None, None, embedding_dim, reason)

    @classmethod
    def build(cls, target: nn.Module, probe: torch.Tensor, layer: str | None,
              reference: torch.Tensor) -> FeatureAdapter | None:
        return cls(target, int(reference.shape[1]), "no image-grid feature map")
