"""The torch half of the kind: the module and its builder (imported only when a model is compiled)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from archdsl.blocks import BuildContext, ForwardContext
from archdsl.blocks.attention import sdpa
from archdsl.blocks.context import InitScheme
from archdsl.blocks.embedding import apply_rotary
from archdsl.cache import KVState

from .spec import default_lambda_init


class DiffAttention(nn.Module):
    """Differential attention over (B, S, width); each head's two maps share the values.

    Two SDPA calls (one per map) instead of materialising the difference of the maps:
    (A1 − λ·A2) V = A1 V − λ·(A2 V), so the fused kernels and their masks apply unchanged.
    """

    def __init__(self, width: int, heads: int, kv_heads: int, head_dim: int, *, causal: bool, lambda_init: float,
                 eps: float, rotary: tuple[str, bool] | None):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.causal, self.lambda_init, self.eps, self.rotary = causal, lambda_init, eps, rotary
        self.cache_slot: int | None = None  # set by archdsl when the model is built
        self.q = nn.Linear(width, 2 * heads * head_dim, bias=False)
        self.k = nn.Linear(width, 2 * kv_heads * head_dim, bias=False)
        self.v = nn.Linear(width, 2 * kv_heads * head_dim, bias=False)
        self.out = nn.Linear(2 * heads * head_dim, width, bias=False)
        self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2 = (
            nn.Parameter(torch.zeros(head_dim)) for _ in range(4))
        self.norm_weight = nn.Parameter(torch.ones(2 * head_dim))

    # --- the decode-state protocol (archdsl/cache.py) ---------------------------------------
    @property
    def decodes(self) -> bool:
        return self.causal

    def new_state(self, batch: int, max_len: int, *, device: Any = None, dtype: Any = None) -> KVState:
        """Per position: the two key maps of each kv head (2·kv, d) and its values (kv, 2d)."""
        return KVState(batch, max_len, (2 * self.kv_heads, self.head_dim), (self.kv_heads, 2 * self.head_dim),
                       device=device, dtype=dtype or self.out.weight.dtype)

    @torch.no_grad()
    def init_weights(self, init: InitScheme) -> None:
        for projection in (self.q, self.k, self.v):
            projection.weight.normal_(0.0, init.std, generator=init.generator)
        self.out.weight.normal_(0.0, init.residual_std, generator=init.generator)
        for vector in (self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2):
            vector.normal_(0.0, 0.1, generator=init.generator)  # as the paper's code
        self.norm_weight.fill_(1.0)

    def lambda_(self) -> torch.Tensor:
        return (torch.exp((self.lambda_q1 * self.lambda_k1).sum().float())
                - torch.exp((self.lambda_q2 * self.lambda_k2).sum().float()) + self.lambda_init)

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        B, S, _ = x.shape
        h, kv, d = self.heads, self.kv_heads, self.head_dim
        q = self.q(x).view(B, S, 2 * h, d).transpose(1, 2)  # (B, 2h, S, d): head i's maps at 2i, 2i+1
        k = self.k(x).view(B, S, 2 * kv, d).transpose(1, 2)  # (B, 2kv, S, d)
        v = self.v(x).view(B, S, kv, 2 * d).transpose(1, 2)  # (B, kv, S, 2d)
        if self.rotary is not None:
            cos, sin = ctx.rope[self.rotary[0]]
            q, k = apply_rotary(q, cos, sin, self.rotary[1]), apply_rotary(k, cos, sin, self.rotary[1])
        if ctx.cache is not None:  # keys and values of this step into the cache, attend over all of it
            k, v = ctx.cache.update(self.cache_slot, k, v)
        mask, is_causal = ctx.attention_mask(S, k.shape[2], self.causal, None, None, q.dtype)
        y1 = sdpa(q[:, 0::2], k[:, 0::2], v, mask, is_causal, None, 0.0)  # (B, h, S, 2d)
        y2 = sdpa(q[:, 1::2], k[:, 1::2], v, mask, is_causal, None, 0.0)
        y = y1 - self.lambda_().to(y1.dtype) * y2
        y = y * torch.rsqrt(y.float().pow(2).mean(-1, keepdim=True) + self.eps).to(y.dtype) * self.norm_weight
        y = y * (1.0 - self.lambda_init)
        return self.out(y.transpose(1, 2).reshape(B, S, 2 * h * d))


def build_diff_attention(node: BuildContext) -> nn.Module:
    """The builder archdsl calls with each resolved `diff_attention` node."""
    s = node.spec
    heads, kv_heads, head_dim = s.dims(node.in_width)
    pos = node.positional  # the rotary node before the layers, if any
    rotary = (node.positional_id, pos.interleaved) if pos is not None and pos.type == "rotary" else None
    lambda_init = s.lambda_init if s.lambda_init is not None else default_lambda_init(node.layer_index())
    return DiffAttention(node.in_width, heads, kv_heads, head_dim, causal=s.causal, lambda_init=lambda_init,
                         eps=s.eps, rotary=rotary)
