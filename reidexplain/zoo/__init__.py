"""Reference ReID models: a registry, :class:`ReIDNet`, the layouts practitioners run (BoT ResNet,
OSNet, ViT-ReID, CLIP-style ViT; :mod:`reidexplain.zoo.architectures`), a trainer and cached reference
models.

Examples:
    >>> from reidexplain.zoo import create_model, list_models
    >>> list_models("reidnet_*")
    ['reidnet_resnet18', 'reidnet_resnet34', 'reidnet_resnet50', 'reidnet_small']
    >>> create_model("reidnet_small").embedding_dim
    128
"""

from __future__ import annotations

from reidexplain.zoo.architectures import BoTResNet, CLIPStyleViT, OSNet, ViTReID
from reidexplain.zoo.losses import batch_hard_triplet_loss, label_smoothing_cross_entropy
from reidexplain.zoo.reference import (
    REFERENCE_CONFIG,
    cache_dir_path,
    load_reference_model,
    reference_config,
    reference_splits,
)
from reidexplain.zoo.registry import MODELS, create_model, is_model, list_models, register_model
from reidexplain.zoo.reidnet import GeM, ReIDNet, SmallBackbone
from reidexplain.zoo.training import train_reid_model

__all__ = [
    "MODELS",
    "register_model",
    "create_model",
    "list_models",
    "is_model",
    "ReIDNet",
    "BoTResNet",
    "OSNet",
    "ViTReID",
    "CLIPStyleViT",
    "GeM",
    "SmallBackbone",
    "train_reid_model",
    "label_smoothing_cross_entropy",
    "batch_hard_triplet_loss",
    "load_reference_model",
    "reference_splits",
    "reference_config",
    "REFERENCE_CONFIG",
    "cache_dir_path",
]
