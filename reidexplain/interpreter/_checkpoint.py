"""Saving and loading a fitted :class:`reidexplain.Explainer` (private).

The file is ``torch.save`` of a plain dict (loadable with ``weights_only=True``): format version, schema,
metric, mode, split, interpreter state dict, training config and history, and fingerprints of the target
(its architecture, which must match at load, and its weights, which only warn).
"""

from __future__ import annotations

import logging
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..attributes import AttributeSchema, get_schema
from ._build import architecture_signature, build_interpreter, weights_checksum
from .split import split_model
from .training import TrainingConfig

__all__ = ["checkpoint_dict", "restore"]

logger = logging.getLogger(__name__)
_MAGIC = "reidexplain.amd"


def checkpoint_dict(explainer: Any, version: int) -> dict[str, Any]:
    """Everything needed to rebuild ``explainer`` for the same model."""
    schema: AttributeSchema = explainer.schema
    split = explainer.split
    return {
        "magic": _MAGIC,
        "format_version": version,
        "schema": {"name": schema.name, "names": list(schema.names), "labels": list(schema.labels),
                   "positive_ratios": list(schema.positive_ratios)},
        "metric": explainer.metric,
        "mode": explainer.mode,
        "split_kind": split.kind,
        "feature_layer": split.feature_layer,
        "feature_shape": list(split.feature_shape) if split.feature_shape else None,
        "embedding_dim": split.embedding_dim,
        "input_size": list(explainer.input_size),
        "hidden": explainer.hidden,
        "trunk": explainer.trunk,
        "method": getattr(explainer, "method", "amd"),
        "interpreter": {k: v.detach().cpu() for k, v in explainer.interpreter.state_dict().items()},
        "config": explainer.config.to_dict(),
        "history": [dict(h) for h in explainer.history],
        "target_architecture": architecture_signature(explainer.model),
        "target_checksum": weights_checksum(explainer.model),
    }


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"path: no such file {str(path)!r}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise ValueError(f"path: {str(path)!r} is not an interpreter file written by Explainer.save ({err})") from None
    if not isinstance(ckpt, dict) or ckpt.get("magic") != _MAGIC:
        raise ValueError(f"path: {str(path)!r} is not an interpreter file written by Explainer.save")
    return ckpt


def restore(cls: type, path: Path, model: nn.Module, attributes: Any, device: Any, version: int) -> Any:
    """Rebuild an explainer of class ``cls`` from ``path`` for ``model``; see ``Explainer.load``."""
    ckpt = _read(path)
    if ckpt["format_version"] != version:
        raise ValueError(f"path: format version {ckpt['format_version']} is not supported (expected {version})")
    saved = ckpt["schema"]
    schema = AttributeSchema(saved["name"], tuple(saved["names"]), tuple(saved["labels"]),
                             tuple(saved["positive_ratios"]))
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
    layer = ckpt["feature_layer"] if ckpt["split_kind"] != "none" else None
    explainer = cls(model, attributes=schema, metric=ckpt["metric"], feature_layer=layer, device=device,
                    hidden=ckpt["hidden"], trunk=ckpt.get("trunk", "copy"), method=ckpt.get("method", "amd"))
    h, w = ckpt["input_size"]
    probe = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(0))
    try:
        split = split_model(model, probe, layer, explainer.device)
    except (ValueError, TypeError) as err:
        raise ValueError(f"model: cannot be split as when the interpreter was fitted: {err}") from None
    expected = (ckpt["split_kind"], ckpt["feature_shape"], ckpt["embedding_dim"])
    got = (split.kind, list(split.feature_shape) if split.feature_shape else None, split.embedding_dim)
    if got != expected:
        raise ValueError(f"model: split as (kind, feature shape, embedding dim) = {got}, but the interpreter "
                         f"was fitted to {expected}")
    slots = ckpt["interpreter"].get("decomposition.slots")
    interpreter = build_interpreter(split, len(schema), ckpt["hidden"], explainer.trunk,
                                    None if slots is None else slots.tolist())
    try:
        interpreter.load_state_dict(ckpt["interpreter"])
    except RuntimeError as err:
        raise ValueError(f"model: the interpreter's weights do not fit this model: {err}") from None
    interpreter.eval()
    if abs(weights_checksum(model) - ckpt["target_checksum"]) > 1e-6 * max(1.0, abs(ckpt["target_checksum"])):
        warnings.warn("Explainer.load: the model's weights differ from those the interpreter was fitted to; "
                      "its explanations may not match this model (refit it)", stacklevel=3)
    explainer.split, explainer.interpreter = split, interpreter
    explainer.input_size = (h, w)
    fields = set(TrainingConfig.__dataclass_fields__)
    explainer.config = TrainingConfig(**{k: v for k, v in ckpt["config"].items() if k in fields})
    explainer.history = list(ckpt["history"])
    return explainer
