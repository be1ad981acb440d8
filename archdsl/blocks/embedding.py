"""Token and positional embeddings (paired with spec/embedding.py)."""
from __future__ import annotations

import math

import torch
from torch import nn

from .context import ForwardContext


def fill_buffers(module: nn.Module) -> None:
    """Compute a module's derived (non-persistent) buffers, unless it lives on the meta device.

    Derived buffers are not in the state_dict, so a model built on `meta` and materialised with
    to_empty() must have them computed again (ArchModel.materialize does that).
    """
    if all(b.device.type != "meta" for b in module.buffers(recurse=False)):
        with torch.no_grad():
            module.fill_buffers()


class Embedding(nn.Module):
    """Token lookup. With ``input="token_type_ids"`` the lookup is added to the stream (BERT segments)."""

    def __init__(self, vocab: int, dim: int, *, input: str = "tokens", scale: float | None = None,
                 padding_idx: int | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab, dim))
        self.input, self.scale, self.padding_idx = input, scale, padding_idx

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        if self.input == "tokens":
            out = nn.functional.embedding(x, self.weight, self.padding_idx)  # (B, S) -> (B, S, D)
            return out * self.scale if self.scale is not None else out
        ids = ctx.token_type_ids if ctx.token_type_ids is not None else torch.zeros_like(ctx.positions)
        return x + nn.functional.embedding(ids, self.weight)


class LearnedPositional(nn.Module):
    """x + W[position]; position ids come from the context (they shift under left padding)."""

    def __init__(self, max_len: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_len, dim))
        self.max_len = max_len

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        return x + nn.functional.embedding(ctx.positions, self.weight)


class SinusoidalPositional(nn.Module):
    """x + the fixed sin/cos table of Vaswani et al. (2017), computed for the positions at hand."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.register_buffer("inv_freq", torch.empty((dim + 1) // 2), persistent=False)
        fill_buffers(self)

    def fill_buffers(self) -> None:
        steps = torch.arange(0, self.dim, 2, dtype=torch.float32, device=self.inv_freq.device)
        self.inv_freq.copy_(torch.exp(steps * (-math.log(10000.0) / self.dim)))

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        angles = ctx.positions.to(torch.float32)[..., None] * self.inv_freq  # (B, S, D/2)
        table = torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)[..., : self.dim]  # sin, cos interleaved
        return x + table.to(x.dtype)


class Rotary(nn.Module):
    """Computes rotary cos/sin for this forward's positions once; the attention layers it governs apply them."""

    def __init__(self, node_id: str, rotary_dim: int, base: float, interleaved: bool):
        super().__init__()
        self.node_id, self.rotary_dim, self.interleaved, self.base = node_id, rotary_dim, interleaved, base
        self.register_buffer("inv_freq", torch.empty(rotary_dim // 2), persistent=False)
        fill_buffers(self)

    def fill_buffers(self) -> None:
        steps = torch.arange(0, self.rotary_dim, 2, dtype=torch.float32, device=self.inv_freq.device)
        self.inv_freq.copy_(1.0 / (self.base ** (steps / self.rotary_dim)))

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        freqs = ctx.positions.to(torch.float32)[..., None] * self.inv_freq  # (B, S, R/2)
        if self.interleaved:
            freqs = freqs.repeat_interleave(2, dim=-1)
        else:
            freqs = torch.cat((freqs, freqs), dim=-1)  # (B, S, R)
        ctx.rope[self.node_id] = (freqs.cos()[:, None].to(x.dtype), freqs.sin()[:, None].to(x.dtype))  # (B, 1, S, R)
        return x


class PositionMarker(nn.Module):
    """ALiBi and `none` change the attention after them, not the stream; the node stays for readability."""

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        return x


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool) -> torch.Tensor:
    """Rotate the first cos.shape[-1] dims of each head; x is (B, H, S, hd)."""
    rot = cos.shape[-1]
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    if interleaved:
        pairs = x_rot.unflatten(-1, (-1, 2))
        rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    else:
        half = rot // 2
        rotated = torch.cat((-x_rot[..., half:], x_rot[..., :half]), dim=-1)
    out = x_rot * cos + rotated * sin
    return torch.cat((out, x_pass), dim=-1) if x_pass.shape[-1] else out
