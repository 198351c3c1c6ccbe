"""Saving and loading a fitted :class:`reidexplain.Explainer` (private).

The file is ``torch.save`` of a plain dict (loadable with ``weights_only=True``). Format 2 holds: the
schema (exactly), the metric, the recipe (name and options) and what it prepared, the adapter's split
(kind, layer, grid shape, embedding size), the network's state dict, the training configuration and
history, and fingerprints of the target (its architecture, which must match at load, and its weights,
which only warn). Format 1 files (written before recipes and adapters) still load.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..adapters import adapt_model
from ..attributes import AttributeSchema, get_schema
from .model import AMDModel
from .recipes import saved_recipe
from .training import TrainingConfig

__all__ = ["checkpoint_dict", "restore", "architecture_signature", "weights_checksum", "SUPPORTED_VERSIONS"]

logger = logging.getLogger(__name__)
_MAGIC = "reidexplain.amd"
SUPPORTED_VERSIONS = (1, 2)
# Version 1 named the splits by how they were found; the same grid is now found by these adapters.
_V1_KINDS = {"sequential": "fx", "torchvision_resnet": "fx", "forward_features": "forward_features",
             "hook": None, "none": "none"}


def architecture_signature(model: nn.Module) -> str:
    """A hash of the names and shapes of a model's parameters and buffers (not their values)."""
    h = hashlib.sha1()
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        h.update(f"{name}:{tuple(t.shape)};".encode())
    return h.hexdigest()


def weights_checksum(model: nn.Module) -> float:
    """A cheap checksum of a model's floating-point parameter values."""
    with torch.no_grad():
        return float(sum(float(p.double().sum()) + float(p.double().abs().sum()) * 1e-3
                         for p in model.parameters() if p.is_floating_point()))


def checkpoint_dict(explainer: Any, version: int) -> dict[str, Any]:
    """Everything needed to rebuild ``explainer`` for the same model."""
    amd: AMDModel = explainer.amd
    return {
        "magic": _MAGIC,
        "format_version": version,
        "schema": amd.schema.to_dict(),
        "metric": amd.metric,
        "output": explainer.output if isinstance(explainer.output, (int, str)) else None,
        "output_is_callable": callable(explainer.output) and not isinstance(explainer.output, (int, str)),
        "side_inputs": dict(explainer.side_inputs),
        "recipe": {"name": amd.recipe.name, "options": amd.recipe.options()},
        "prepared": amd.prepared,
        "adapter": amd.adapter.config(),
        "input_size": list(explainer.input_size),
        "network": {k: v.detach().cpu() for k, v in amd.network.state_dict().items()},
        "config": explainer.config.to_dict(),
        "history": [dict(h) for h in explainer.history],
        "target_architecture": architecture_signature(explainer.model),
        "target_checksum": weights_checksum(explainer.model),
    }


# What a format-2 file must hold, and the type of each entry (checked before anything is used).
_V2_KEYS: dict[str, type | tuple[type, ...]] = {
    "schema": dict, "metric": str, "recipe": dict, "prepared": dict, "adapter": dict, "input_size": (list, tuple),
    "network": dict, "config": dict, "history": list, "target_architecture": str,
    "target_checksum": (float, int),
}


def _read(path: Path) -> dict[str, Any]:
    """The checkpoint at ``path`` in format-2 terms, or a ``ValueError`` of ours (never torch's).

    The file is read with ``torch.load(weights_only=True)``: a pickle of anything but tensors and plain
    containers is refused without running any of it.
    """
    if not path.is_file():
        raise FileNotFoundError(f"path: no such file {str(path)!r}")
    not_ours = f"path: {str(path)!r} is not an interpreter file written by Explainer.save (expected one)"
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower() or "weights_only" in str(err):
            raise ValueError(f"{not_ours}: it holds objects other than tensors and plain containers; "
                             "torch.load(weights_only=True) refused to unpickle them (nothing of the file "
                             "was run)") from None
        raise ValueError(f"{not_ours}: it is not a torch file ({_first_line(err)})") from None
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure to read the file means it is not ours
        raise ValueError(f"{not_ours}: it cannot be read, truncated or damaged? "
                         f"({type(err).__name__}: {_first_line(err)})") from None
    if not isinstance(ckpt, dict) or ckpt.get("magic") != _MAGIC:
        raise ValueError(f"{not_ours}: it holds a {type(ckpt).__name__} without reidexplain's marker")
    version = ckpt.get("format_version")
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f"path: {str(path)!r} has format version {version!r}; this reidexplain reads "
                         f"versions {list(SUPPORTED_VERSIONS)} (a newer release wrote it?)")
    try:
        ckpt = ckpt if version == 2 else _upgrade_v1(ckpt)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        raise ValueError(f"path: {str(path)!r} is a damaged format-1 interpreter file ({type(err).__name__}: "
                         f"{_first_line(err)})") from None
    for key, kind in _V2_KEYS.items():
        if not isinstance(ckpt.get(key), kind):
            got = "missing" if key not in ckpt else f"a {type(ckpt[key]).__name__}"
            raise ValueError(f"path: {str(path)!r} is a damaged interpreter file: its {key!r} entry is {got}")
    lacking = [k for k in ("kind", "layer", "grid_shape", "embedding_dim") if k not in ckpt["adapter"]]
    if lacking or "name" not in ckpt["recipe"]:
        raise ValueError(f"path: {str(path)!r} is a damaged interpreter file: its adapter or recipe entry "
                         f"lacks {lacking or ['name']}")
    bad = sorted(k for k, v in ckpt["network"].items()
                 if not isinstance(v, torch.Tensor) or (v.is_floating_point() and not torch.isfinite(v).all()))
    if bad:
        raise ValueError(f"path: {str(path)!r} is a damaged interpreter file: the network's entries {bad[:4]} "
                         "are not finite tensors (a fit that diverged?)")
    return ckpt


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def _upgrade_v1(old: dict[str, Any]) -> dict[str, Any]:
    """A format-1 checkpoint in format-2 terms (AMD+ then lived in flags of the training config)."""
    config = dict(old["config"])
    recipe = old.get("method", "amd")
    options: dict[str, Any] = {"hidden": old["hidden"], "trunk": old.get("trunk", "copy"),
                               "distillation_weight": config.get("distillation_weight"),
                               "prior_weight": config.get("prior_weight", 1.0)}
    prepared: dict[str, Any] = {}
    if recipe == "amd+":
        for key in ("shared_maps", "probe_weight", "recognition_weight", "entropy_weight",
                    "recognition_warmup", "recognition_lr"):
            if key in config:
                options[key] = config[key]
        usage = config.get("usage_weights")
        options["model_aware_prior"] = usage is not None
        prepared["one_hot_groups"] = [list(g) for g in config.get("one_hot_groups", ())]
        if usage is not None:
            prepared["usage_weights"] = [float(w) for w in usage]
    return {**old, "recipe": {"name": recipe, "options": options}, "prepared": prepared,
            "network": _v1_network_keys(old["interpreter"], old["split_kind"]),
            "adapter": {"kind": _V1_KINDS.get(old["split_kind"]), "layer": old["feature_layer"],
                        "grid_shape": old["feature_shape"], "embedding_dim": old["embedding_dim"]},
            "config": {k: v for k, v in config.items() if k in TrainingConfig.option_names()}}


_V1_RESNET_TRUNK = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def _v1_network_keys(state: dict[str, torch.Tensor], kind: str) -> dict[str, torch.Tensor]:
    """Format 1 kept the trunk's copy at ``trunk.``; it now sits inside an input-copying wrapper."""
    out = {}
    for key, value in state.items():
        if key.startswith("trunk."):
            rest = key[len("trunk."):]
            if kind == "torchvision_resnet":  # an nn.Sequential of the ResNet's stages, by position
                first, _, tail = rest.partition(".")
                rest = f"{_V1_RESNET_TRUNK[int(first)]}.{tail}"
            key = "trunk.module." + rest
        out[key] = value
    return out


def restore(cls: type, path: Path, model: nn.Module, attributes: Any, device: Any, version: int,
            output: Any = None) -> Any:
    """Rebuild an explainer of class ``cls`` from ``path`` for ``model``; see ``Explainer.load``."""
    ckpt = _read(path)
    if output is None:
        output = ckpt.get("output")
        if output is None and ckpt.get("output_is_callable"):
            raise ValueError("output: the interpreter was fitted with a callable output selection, which "
                             "is not saved; pass it again: Explainer.load(path, model, output=...)")
    try:
        schema = AttributeSchema.from_dict(ckpt["schema"])
        recipe = saved_recipe(ckpt["recipe"]["name"], ckpt["recipe"].get("options", {}))
        h, w = (int(v) for v in ckpt["input_size"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"path: {str(path)!r} holds an interpreter this reidexplain cannot rebuild "
                         f"(its schema, recipe or input size): {_first_line(err)}") from None
    if attributes is not None:
        wanted = get_schema(attributes)
        if wanted.names != schema.names:
            raise ValueError(f"attributes: the interpreter was fitted with schema {schema.name!r} "
                             f"({len(schema)} attributes: {list(schema.names[:4])}...), got {wanted.name!r} "
                             f"({len(wanted)} attributes: {list(wanted.names[:4])}...)")
        schema = wanted
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if architecture_signature(model) != ckpt["target_architecture"]:
        raise ValueError(f"model: {type(model).__name__} is not the architecture the interpreter was fitted to "
                         "(its parameter names or shapes differ)")
    saved = ckpt["adapter"]
    layer = saved["layer"] if saved["kind"] != "none" else None
    side_inputs = dict(ckpt.get("side_inputs") or {})
    wrappers = int(output is not None) + int(bool(side_inputs))
    for _ in range(wrappers):  # the adapter named the layer inside its wrappers
        if layer is not None and layer.startswith("model."):
            layer = layer[len("model."):]
    explainer = cls(model, attributes=schema, metric=ckpt["metric"], feature_layer=layer, device=device,
                    recipe=recipe, output=output, side_inputs=side_inputs)
    probe = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(0))
    try:
        probe_side = {name: torch.zeros(2, dtype=torch.long) for name in side_inputs} or None
        adapter = adapt_model(model, probe, layer, explainer.device, output=output, side_inputs=probe_side)
    except (ValueError, TypeError) as err:
        raise ValueError(f"model: cannot be split as when the interpreter was fitted: {err}") from None
    got = adapter.config()
    same_kind = saved["kind"] is None or got["kind"] == saved["kind"]
    if not same_kind or got["grid_shape"] != saved["grid_shape"] or got["embedding_dim"] != saved["embedding_dim"]:
        raise ValueError(f"model: split as {got}, but the interpreter was fitted to {saved}")
    if got["kind"] == "tokens" and got.get("tokens") != saved.get("tokens", "raw"):
        raise ValueError(f"model: the interpreter was fitted to the {saved.get('tokens', 'raw')} patch tokens of "
                         f"{saved['layer']!r}, but this version masks the {got.get('tokens')} ones (masking raw "
                         "tokens before a layer norm barely reaches the embedding): fit the explainer again")
    amd = AMDModel(adapter, recipe, schema, ckpt["metric"], prepared=ckpt["prepared"],
                   side_fields=tuple(side_inputs.values()))
    try:
        amd.network.load_state_dict(ckpt["network"])
    except RuntimeError as err:
        raise ValueError(f"model: the interpreter's weights do not fit this model: {err}") from None
    amd.train(False)
    if abs(weights_checksum(model) - ckpt["target_checksum"]) > 1e-6 * max(1.0, abs(ckpt["target_checksum"])):
        warnings.warn("Explainer.load: the model's weights differ from those the interpreter was fitted to; "
                      "its explanations may not match this model (refit it)", stacklevel=3)
    explainer.amd = amd
    explainer.input_size = (h, w)
    explainer.config = TrainingConfig(**ckpt["config"])
    explainer.history = list(ckpt["history"])
    return explainer
