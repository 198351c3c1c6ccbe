"""The last transformer block computed for the read-out tokens only.

The head of a class-token transformer (the last block, the final norm, the read-out of the class token)
reads one row of the last block's output. The block still computes every patch token's attention query,
projection and MLP, about six sevenths of its work, for rows nobody reads. :class:`ReadoutBlock` computes
the block for the ``prefix`` rows only: their queries against the keys and values of every token, then
the per-token rest (residuals, norm, MLP, layer scale). The rows of the patch tokens pass through
unchanged, so the tensor keeps its shape; the head must not read them, and :func:`readout_head` keeps
the substitution only when the head's output is the same with and without it, on the probe and on
randomly masked copies of it.

Supported blocks are pre-norm residual blocks with ``norm1``/``ln_1``, ``attn``, ``norm2``/``ln_2``,
``mlp`` and optional layer scales ``ls1``/``ls_1``, ``ls2``/``ls_2`` (timm's ``Block``, open_clip's
``ResidualAttentionBlock``, the zoo's transformers), whose ``attn`` is an ``nn.MultiheadAttention`` or a
timm-style attention with a fused ``qkv`` projection.
"""

from __future__ import annotations

import logging

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .base import outputs_match

__all__ = ["ReadoutBlock", "readout_head"]

logger = logging.getLogger(__name__)


def _first(module: nn.Module, names: tuple[str, ...]) -> nn.Module | None:
    for name in names:
        child = getattr(module, name, None)
        if isinstance(child, nn.Module):
            return child
    return None


class _FusedQKVAttention(nn.Module):
    """``attend(queries, tokens)`` for a timm-style attention (a fused ``qkv``, ``num_heads``, ``proj``).

    Raises:
        ValueError: ``attn`` has no fused ``qkv`` projection.
    """

    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        qkv, proj, heads = getattr(attn, "qkv", None), getattr(attn, "proj", None), getattr(attn, "num_heads", None)
        if not isinstance(qkv, nn.Linear) or not isinstance(proj, nn.Module) or not isinstance(heads, int):
            raise ValueError(f"unsupported attention {type(attn).__name__}")
        self.attn, self.heads = attn, heads
        self.width = qkv.out_features // 3
        self.scale = float(getattr(attn, "scale", (self.width // heads) ** -0.5))

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        attn, width, heads = self.attn, self.width, self.heads
        weight, bias = attn.qkv.weight, attn.qkv.bias
        b, p, n = queries.shape[0], queries.shape[1], tokens.shape[1]
        q = F.linear(queries, weight[:width], None if bias is None else bias[:width])
        kv = F.linear(tokens, weight[width:], None if bias is None else bias[width:])
        q = q.reshape(b, p, heads, width // heads).transpose(1, 2)
        k, v = kv.reshape(b, n, 2, heads, width // heads).permute(2, 0, 3, 1, 4).unbind(0)
        if isinstance(getattr(attn, "q_norm", None), nn.Module):
            q = attn.q_norm(q)
        if isinstance(getattr(attn, "k_norm", None), nn.Module):
            k = attn.k_norm(k)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        out = out.transpose(1, 2).reshape(b, p, width)
        if isinstance(getattr(attn, "norm", None), nn.Module):
            out = attn.norm(out)
        if isinstance(getattr(attn, "gate", None), nn.Module):
            out = out * attn.gate(queries).sigmoid()
        return attn.proj(out)


class _MultiheadAttention(nn.Module):
    """``attend(queries, tokens)`` for an ``nn.MultiheadAttention``."""

    def __init__(self, attn: nn.MultiheadAttention) -> None:
        super().__init__()
        self.attn = attn

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.attn(queries, tokens, tokens, need_weights=False)[0]


class ReadoutBlock(nn.Module):
    """A pre-norm transformer block evaluated for its first ``prefix`` tokens only.

    Args:
        block: The block (its modules are shared, not copied).
        prefix: Leading tokens to compute (class, distillation, register tokens).
        sequence_first: Tokens are ``(T,B,C)`` instead of ``(B,T,C)``.

    Raises:
        ValueError: ``block`` is not a supported pre-norm block (see the module docs).
    """

    def __init__(self, block: nn.Module, prefix: int, sequence_first: bool) -> None:
        super().__init__()
        norm1, norm2 = _first(block, ("norm1", "ln_1")), _first(block, ("norm2", "ln_2"))
        attn, mlp = _first(block, ("attn",)), _first(block, ("mlp",))
        if norm1 is None or norm2 is None or attn is None or mlp is None:
            raise ValueError(f"{type(block).__name__} is not a pre-norm block with norm1/attn/norm2/mlp")
        if isinstance(attn, nn.MultiheadAttention):
            if attn.batch_first == sequence_first:
                raise ValueError("the attention's batch_first does not match the token layout")
            attend: nn.Module = _MultiheadAttention(attn)
        elif sequence_first:
            raise ValueError(f"unsupported sequence-first attention {type(attn).__name__}")
        else:
            attend = _FusedQKVAttention(attn)
        self.block, self.prefix, self.sequence_first = block, prefix, sequence_first
        self.attend = attend
        self.norm1, self.norm2, self.mlp = norm1, norm2, mlp
        self.ls1 = _first(block, ("ls1", "ls_1")) or nn.Identity()
        self.ls2 = _first(block, ("ls2", "ls_2")) or nn.Identity()

    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        if args or kwargs or self.block.training:  # masks, dropout: the block as it is
            return self.block(x, *args, **kwargs)
        dim = 0 if self.sequence_first else 1
        rows = x.narrow(dim, 0, self.prefix)
        normed = self.norm1(x)
        rows = rows + self.ls1(self.attend(normed.narrow(dim, 0, self.prefix), normed))
        rows = rows + self.ls2(self.mlp(self.norm2(rows)))
        return torch.cat([rows, x.narrow(dim, self.prefix, x.shape[dim] - self.prefix)], dim=dim)


def readout_head(head: torch.fx.GraphModule, block_name: str, prefix: int, sequence_first: bool,
                 tokens: torch.Tensor, side: tuple[torch.Tensor, ...], seed: int = 0) -> bool:
    """Compute ``head``'s call of ``block_name`` for the ``prefix`` tokens only, if its output stays the same.

    ``head`` is changed in place; it is restored when the check fails. The check runs the head with
    and without the substitution on ``tokens`` and on copies whose patch tokens are scaled by random
    non-negative masks (what the interpreter feeds it). Returns whether the substitution was kept.
    """
    if prefix < 1:
        return False
    parent_name, _, child = block_name.rpartition(".")
    try:
        parent = head.get_submodule(parent_name) if parent_name else head
        original = getattr(parent, child)
        readout = ReadoutBlock(original, prefix, sequence_first)
    except (AttributeError, ValueError) as err:
        logger.debug("tokens: the last block is computed in full (%s)", err)
        return False
    generator = torch.Generator().manual_seed(seed)
    dim = 0 if sequence_first else 1
    scales = torch.rand(tokens.shape[dim], generator=generator).to(tokens)
    scales[:prefix] = 1.0
    shape = [1, 1, 1]
    shape[dim] = -1
    inputs = [tokens, tokens * scales.reshape(shape)]
    try:
        with torch.no_grad():
            expected = [head(t.clone(), *side) for t in inputs]
            setattr(parent, child, readout)
            kept = all(outputs_match(head(t.clone(), *side), e) for t, e in zip(inputs, expected, strict=True))
    except Exception as err:  # noqa: BLE001 - any failure keeps the full block
        logger.debug("tokens: the read-out block failed on the probe: %s", err)
        kept = False
    if not kept:
        setattr(parent, child, original)
    return kept
