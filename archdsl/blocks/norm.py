"""Normalisation (paired with spec/norm.py)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .context import ForwardContext


class LayerNorm(nn.Module):
    def __init__(self, width: int, eps: float, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width)) if bias else None
        self.eps = eps

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class RMSNorm(nn.Module):
    def __init__(self, width: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        # computed in float32 as Llama does, then cast back
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)
