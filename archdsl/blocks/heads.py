"""Output heads (paired with spec/heads.py)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .context import BuildContext, ForwardContext, InitScheme


class LMHead(nn.Module):
    """Logits over the vocabulary. A tied head shares the embedding's Parameter (one tensor, two names)."""

    def __init__(self, width: int, vocab: int, bias: bool, tied: nn.Parameter | None, scale: float | None = None,
                 softcap: float | None = None):
        super().__init__()
        self.weight = tied if tied is not None else nn.Parameter(torch.empty(vocab, width))
        self.bias = nn.Parameter(torch.zeros(vocab)) if bias else None
        self.tied = tied is not None
        self.scale = scale  # multiplies the stream before the projection (T5 v1.0: d_model ** -0.5)
        self.softcap = softcap  # logits -> softcap * tanh(logits / softcap) (Gemma 2)

    @torch.no_grad()
    def init_weights(self, init: InitScheme) -> None:
        if not self.tied:  # a tied weight is the embedding's, drawn there
            self.weight.normal_(0.0, init.std, generator=init.generator)
        if self.bias is not None:
            self.bias.zero_()

    def tp_plan(self, tp: int) -> dict:
        """Replicated under tensor parallelism (archdsl.parallel): every rank holds it whole."""
        return {}

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        if self.scale is not None:
            x = x * self.scale
        logits = F.linear(x, self.weight, self.bias)
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


class Pooler(nn.Module):
    """Writes one vector per sequence to ctx.pooled; the stream passes through unchanged."""

    def __init__(self, width: int, reduce: str, dense: bool, activation: str):
        super().__init__()
        self.reduce, self.activation = reduce, activation
        self.dense = nn.Linear(width, width) if dense else None

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        if self.reduce == "first":
            pooled = x[:, 0]
        elif ctx.key_padding is not None:
            keep = ctx.key_padding[..., None].to(x.dtype)
            pooled = (x * keep).sum(1) / keep.sum(1).clamp(min=1)
        else:
            pooled = x.mean(1)
        if self.dense is not None:
            pooled = self.dense(pooled)
        if self.activation == "tanh":
            pooled = torch.tanh(pooled)
        ctx.pooled = pooled
        return x


# ------------------------------------------------------------------------------------ builders
def build_lm_head(node: BuildContext) -> nn.Module:
    s = node.spec
    return LMHead(node.in_width, s.vocab, s.bias, node.tied_weight(), s.scale, s.softcap)


def build_pooler(node: BuildContext) -> nn.Module:
    s = node.spec
    return Pooler(node.in_width, s.reduce, s.dense, s.activation)
