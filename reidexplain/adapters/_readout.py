"""The last transformer block of a class-token model, computed for the read-out tokens only.

Two things go wrong when a pre-norm transformer is masked at the input of its last block:

* **The mask does not reach the embedding.** The block normalises every token before its attention
  (``norm1``), and a layer norm ignores a token's scale: ``LN(a * x) = LN(x)`` for ``a`` well above
  ``sqrt(eps) / std(x)``. Masking a token by ``0.5`` changes the embedding of the zoo's ViT by ``5e-6``
  (relative), by ``0.1`` by ``2e-4``; only masks below about ``0.01`` act, as a switch.
* **Most of the head's work is wasted.** The head reads one row of the block's output (the class
  token), yet the block computes every patch token's query, projection and MLP: about six sevenths of
  its work.

So where the head reads only the prefix (class, distillation, register tokens), the grid is the
*normalised* patch tokens, ``norm1(x)`` of the last block (:class:`PatchNorm`, the end of the trunk):
the attention's keys and values are linear in them, so a mask scales what each patch contributes.
:class:`ReadoutBlock` then computes the block from the raw prefix and the normalised patches for the
prefix rows only: their queries against every token's keys and values, then the per-token rest
(residual, ``norm2``, MLP, layer scales). The patch rows pass through unchanged so that the tensor
keeps its shape; the head must not read them, and :func:`readout_head` keeps the substitution only when
the head's output is the same as the full block's, on the probe and on a randomly masked grid.

Because the keys and values are linear in the normalised patches, ``(A * y) W + b = A * (y W) + b``, the
``M`` masked grids of an image need one projection, not ``M``: under :meth:`ReadoutBlock.masking` the
block takes the ``B`` unmasked token tensors and returns the prefix rows of the ``B*M`` read-outs
(:class:`~reidexplain.adapters.tokens.TokenAdapter` checks this path against the masked grids on the
probe before it uses it).

Supported blocks are pre-norm residual blocks with ``norm1``/``ln_1``, ``attn``, ``norm2``/``ln_2``,
``mlp`` and optional layer scales ``ls1``/``ls_1``, ``ls2``/``ls_2`` (timm's ``Block``, open_clip's
``ResidualAttentionBlock``, the zoo's transformers), whose ``attn`` is an ``nn.MultiheadAttention`` or a
timm-style attention with a fused ``qkv`` projection.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .base import outputs_match

__all__ = ["NormedTrunk", "PatchNorm", "ReadoutBlock", "readout_head"]

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
        weight, bias, width = self.attn.qkv.weight, self.attn.qkv.bias, self.width
        q = F.linear(queries, weight[:width], None if bias is None else bias[:width])
        kv = F.linear(tokens, weight[width:], None if bias is None else bias[width:])
        return self._attend(q, kv, queries)

    def masked(self, queries: torch.Tensor, patches: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """The prefix's attention output under each of ``M`` masks of the patches: ``(B*M,P,C)`` from
        queries ``(B,P,C)``, normalised patches ``(B,N,C)`` and masks ``(B,M,N)``."""
        weight, bias, width = self.attn.qkv.weight, self.attn.qkv.bias, self.width
        m = masks.shape[1]
        q = F.linear(queries, weight[:width], None if bias is None else bias[:width])
        kv = _masked_kv(queries, patches, masks, weight[width:], None if bias is None else bias[width:])
        return self._attend(q.repeat_interleave(m, dim=0), kv, queries.repeat_interleave(m, dim=0))

    def _attend(self, q: torch.Tensor, kv: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        attn, width, heads = self.attn, self.width, self.heads
        b, p, n = q.shape[0], q.shape[1], kv.shape[1]
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


def _masked_kv(queries: torch.Tensor, patches: torch.Tensor, masks: torch.Tensor, weight: torch.Tensor,
               bias: torch.Tensor | None) -> torch.Tensor:
    """Keys and values ``(B*M,P+N,2D)`` of every masked copy, batch-first, the prefix's (mask 1) then
    the patches': ``(A * y) W + b = A * (y W) + b``, one projection per image instead of one per mask."""
    b, m, _ = masks.shape
    projected = F.linear(torch.cat([queries, patches], dim=1), weight).unsqueeze(1)  # (B,1,P+N,2D)
    scale = torch.cat([masks.new_ones(b, m, queries.shape[1]), masks], dim=2).unsqueeze(-1)  # (B,M,P+N,1)
    kv = scale * projected if bias is None else torch.addcmul(bias, scale, projected)
    return kv.flatten(0, 1)


class _MultiheadAttention(nn.Module):
    """``attend(queries, tokens)`` for an ``nn.MultiheadAttention``.

    With one packed input projection, no key/value biases and no zero attention (the usual case), the
    projections run on the tensors as laid out: ``nn.MultiheadAttention`` transposes batch-first inputs
    and then multiplies through a broadcast batched product, which costs several times more here.
    """

    def __init__(self, attn: nn.MultiheadAttention) -> None:
        super().__init__()
        self.attn = attn
        self.direct = bool(attn._qkv_same_embed_dim and attn.in_proj_weight is not None
                           and attn.bias_k is None and attn.bias_v is None and not attn.add_zero_attn)

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        attn = self.attn
        if not self.direct:  # (ReadoutBlock runs in eval mode only: no dropout to honour here)
            return attn(queries, tokens, tokens, need_weights=False)[0]
        width, heads = attn.embed_dim, attn.num_heads
        weight, bias = attn.in_proj_weight, attn.in_proj_bias
        q = F.linear(queries, weight[:width], None if bias is None else bias[:width])
        kv = F.linear(tokens, weight[width:], None if bias is None else bias[width:])
        # To (B, heads, rows, head_dim) from (B,T,.) or, sequence-first, (T,B,.).
        order = (0, 2, 1, 3) if attn.batch_first else (1, 2, 0, 3)
        q = q.unflatten(-1, (heads, width // heads)).permute(order)
        k, v = (t.unflatten(-1, (heads, width // heads)).permute(order) for t in kv.chunk(2, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.permute(order).flatten(-2) if attn.batch_first else out.permute(2, 0, 1, 3).flatten(-2)
        return attn.out_proj(out)

    def masked(self, queries: torch.Tensor, patches: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """As :meth:`_FusedQKVAttention.masked`; batch-first tensors whatever the layout."""
        attn = self.attn
        if not self.direct:
            raise ValueError("masked read-out: nn.MultiheadAttention with separate projections or biases")
        width, heads = attn.embed_dim, attn.num_heads
        weight, bias = attn.in_proj_weight, attn.in_proj_bias
        m = masks.shape[1]
        q = F.linear(queries, weight[:width], None if bias is None else bias[:width]).repeat_interleave(m, dim=0)
        kv = _masked_kv(queries, patches, masks, weight[width:], None if bias is None else bias[width:])
        q = q.unflatten(-1, (heads, width // heads)).transpose(1, 2)
        k, v = (t.unflatten(-1, (heads, width // heads)).transpose(1, 2) for t in kv.chunk(2, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v)
        return attn.out_proj(out.transpose(1, 2).flatten(-2))


def _parts(block: nn.Module, sequence_first: bool) -> tuple[nn.Module, ...]:
    """``(norm1, attend, norm2, mlp, ls1, ls2)`` of a supported pre-norm block.

    Raises:
        ValueError: ``block`` is not a supported pre-norm block (see the module docs).
    """
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
    return (norm1, attend, norm2, mlp, _first(block, ("ls1", "ls_1")) or nn.Identity(),
            _first(block, ("ls2", "ls_2")) or nn.Identity())


class PatchNorm(nn.Module):
    """Tokens with their patch rows normalised by a block's first norm; the prefix rows stay raw.

    Args:
        norm: The block's ``norm1`` (shared, not copied).
        prefix: Leading tokens left as they are.
        sequence_first: Tokens are ``(T,B,C)`` instead of ``(B,T,C)``.
    """

    def __init__(self, norm: nn.Module, prefix: int, sequence_first: bool) -> None:
        super().__init__()
        self.norm, self.prefix, self.sequence_first = norm, prefix, sequence_first

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        dim = 0 if self.sequence_first else 1
        rest = tokens.shape[dim] - self.prefix
        return torch.cat([tokens.narrow(dim, 0, self.prefix), self.norm(tokens.narrow(dim, self.prefix, rest))],
                         dim=dim)


class NormedTrunk(nn.Module):
    """A trunk whose token output goes through :class:`PatchNorm`; side inputs pass to the trunk."""

    def __init__(self, trunk: nn.Module, patch_norm: PatchNorm) -> None:
        super().__init__()
        self.trunk, self.patch_norm = trunk, patch_norm

    def forward(self, images: torch.Tensor, *side: torch.Tensor) -> torch.Tensor:
        return self.patch_norm(self.trunk(images, *side))


class ReadoutBlock(nn.Module):
    """A pre-norm transformer block evaluated for its first ``prefix`` tokens only, from the raw prefix
    rows and the patch rows already normalised by the block's ``norm1`` (:class:`PatchNorm`).

    Eval mode only (the block's dropout and drop-path are identities there): it computes the frozen
    target's head. The block's own modules are registered here, not the block itself, so that the
    head's parameters appear once; :attr:`block` still returns it.

    Args:
        block: The block (its modules are shared, not copied).
        prefix: Leading tokens to compute (class, distillation, register tokens).
        sequence_first: Tokens are ``(T,B,C)`` instead of ``(B,T,C)``.

    Raises:
        ValueError: ``block`` is not a supported pre-norm block (see the module docs).
    """

    def __init__(self, block: nn.Module, prefix: int, sequence_first: bool) -> None:
        super().__init__()
        self.prefix, self.sequence_first = prefix, sequence_first
        self.norm1, self.attend, self.norm2, self.mlp, self.ls1, self.ls2 = _parts(block, sequence_first)
        object.__setattr__(self, "_block", block)  # not a submodule: its parameters are the parts'
        self.train(block.training)
        self._masks: torch.Tensor | None = None

    @contextmanager
    def masking(self, masks: torch.Tensor) -> Iterator[None]:
        """Within: the block takes ``B`` unmasked token tensors and returns the prefix rows of the ``B*M``
        read-outs of the patches masked by ``masks`` ``(B,M,N)`` (image-major), without ``M``
        projections per image."""
        previous, self._masks = self._masks, masks
        try:
            yield
        finally:
            self._masks = previous

    @property
    def block(self) -> nn.Module:
        """The full block this one reads out."""
        return self._block

    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        # open_clip calls its blocks with attn_mask=None: defaults are fine, a real mask is not.
        if any(a is not None for a in args) or any(v not in (None, False) for v in kwargs.values()):
            raise RuntimeError("ReadoutBlock: the last block takes no attention mask or other arguments here")
        if self.training:
            raise RuntimeError("ReadoutBlock: computes the frozen target's head in eval mode only")
        if self._masks is not None:
            return self._masked(x, self._masks)
        dim = 0 if self.sequence_first else 1
        patches = x.narrow(dim, self.prefix, x.shape[dim] - self.prefix)
        rows = x.narrow(dim, 0, self.prefix)
        queries = self.norm1(rows)
        rows = rows + self.ls1(self.attend(queries, torch.cat([queries, patches], dim=dim)))
        rows = rows + self.ls2(self.mlp(self.norm2(rows)))
        return torch.cat([rows, patches], dim=dim)

    def _masked(self, x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        if self.sequence_first:
            x = x.transpose(0, 1)
        b, m = masks.shape[:2]
        rows, patches = x[:, :self.prefix], x[:, self.prefix:]
        queries = self.norm1(rows)
        rows = rows.repeat_interleave(m, dim=0) + self.ls1(self.attend.masked(queries, patches, masks))
        rows = rows + self.ls2(self.mlp(self.norm2(rows)))
        # The prefix rows only: the head does not read the others (the adapter checks this path on
        # the probe against the masked grids before using it).
        return rows.transpose(0, 1) if self.sequence_first else rows


def _scaled_patches(module: nn.Module, scales: torch.Tensor, prefix: int, dim: int) -> Any:
    """A forward hook that scales the patch rows of ``module``'s output by ``scales`` (a masked grid)."""
    def hook(mod: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        shape = [1] * output.dim()
        shape[dim] = -1
        factors = torch.cat([torch.ones(prefix).to(scales), scales]).reshape(shape)
        return output * factors

    return module.register_forward_hook(hook)


def readout_head(head: torch.fx.GraphModule, block_name: str, prefix: int, sequence_first: bool,
                 tokens: torch.Tensor, side: tuple[torch.Tensor, ...], seed: int = 0) -> PatchNorm | None:
    """Compute ``head``'s call of ``block_name`` for the ``prefix`` tokens only, if its output stays the same.

    ``head`` is changed in place to take the tokens with their patch rows normalised (the returned
    :class:`PatchNorm`, which the trunk must apply). Two checks against the original head: on
    ``tokens`` themselves, and on a masked grid (the normalised patch rows scaled by random factors in
    ``[0, 1)``, as the interpreter's maps scale them; in the original head, by a hook on the block's
    ``norm1``). When either differs, or the block is not supported, the head is restored and ``None``
    returned.
    """
    if prefix < 1:
        return None
    parent_name, _, child = block_name.rpartition(".")
    try:
        parent = head.get_submodule(parent_name) if parent_name else head
        original = getattr(parent, child)
        readout = ReadoutBlock(original, prefix, sequence_first)
    except (AttributeError, ValueError) as err:
        logger.debug("tokens: the last block is computed in full (%s)", err)
        return None
    patch_norm = PatchNorm(readout.norm1, prefix, sequence_first)
    dim = 0 if sequence_first else 1
    patches = tokens.shape[dim] - prefix
    scales = torch.rand(patches, generator=torch.Generator().manual_seed(seed)).to(tokens)
    shape = [1] * tokens.dim()
    shape[dim] = -1
    masked_rows = torch.cat([torch.ones(prefix).to(scales), scales]).reshape(shape)
    try:
        with torch.no_grad():
            expected = head(tokens.clone(), *side)
            handle = _scaled_patches(readout.norm1, scales, prefix, dim)
            try:
                expected_masked = head(tokens.clone(), *side)
            finally:
                handle.remove()
            setattr(parent, child, readout)
            normalised = patch_norm(tokens)
            kept = (outputs_match(head(normalised, *side), expected)
                    and outputs_match(head(normalised * masked_rows, *side), expected_masked)
                    and not outputs_match(expected_masked, expected))  # the mask reached the output
    except Exception as err:  # noqa: BLE001 - any failure keeps the full block
        logger.debug("tokens: the read-out block failed on the probe: %s", err)
        kept = False
    if not kept:
        setattr(parent, child, original)
        return None
    return patch_norm
