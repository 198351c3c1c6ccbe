"""Helpers about a user's model shared by the explainers and the trainers: where it lives, and how to
run it in eval mode without leaving a trace."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["model_device", "preserved_model_state"]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer; the CPU for a model without either.

    Examples:
        >>> from torch import nn
        >>> model_device(nn.Linear(2, 2))
        device(type='cpu')
    """
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


@contextmanager
def preserved_model_state(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block, then restore every submodule's ``training`` flag.

    Flags are restored module by module, so a model the user left partly in train mode comes back
    exactly as it was. Parameters' ``requires_grad`` flags are never touched by the explainers.

    Examples:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Dropout(), nn.Linear(2, 2)).train()
        >>> with preserved_model_state(model):
        ...     model.training
        False
        >>> model.training
        True
    """
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, flag in flags:
            module.training = flag
