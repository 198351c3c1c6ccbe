"""Building the interpreter for a split target, and fingerprints for save/load checks (private)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import nn

from .network import AMDInterpreter, EmbeddingHead, SmallTrunk
from .split import TargetSplit

__all__ = ["build_interpreter", "architecture_signature", "weights_checksum"]

BLACK_BOX_DIM = 256


TRUNKS = ("copy", "shared")


def build_interpreter(split: TargetSplit, num_attributes: int, hidden: int = 256,
                      trunk: str = "copy", slots: Sequence[int] | None = None) -> AMDInterpreter:
    """Gray box: a trainable copy of the target's trunk (``trunk="copy"``) or the target's own frozen
    feature map (``"shared"``); black box: :class:`SmallTrunk` + own head (``trunk`` ignored).
    ``slots``: regions of the gated, shared maps of AMD+ (``None``: the paper's head)."""
    if trunk not in TRUNKS:
        raise ValueError(f"trunk: expected one of {TRUNKS}, got {trunk!r}")
    if split.gray_box:
        assert split.feature_shape is not None
        own = split.make_trunk() if trunk == "copy" else None
        interpreter = AMDInterpreter(own, split.feature_shape[0], num_attributes, hidden, slots=slots)
    else:
        small = SmallTrunk()
        interpreter = AMDInterpreter(small, small.out_channels, num_attributes, hidden,
                                     embedding_head=EmbeddingHead(small.out_channels, BLACK_BOX_DIM),
                                     slots=slots)
    return interpreter.to(split.device)


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
