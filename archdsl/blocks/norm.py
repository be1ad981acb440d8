"""Normalisation (paired with spec/norm.py)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .context import BuildContext, ForwardContext


class LayerNorm(nn.Module):
    """LayerNorm with a learned scale (or 1 + a learned offset: Nemotron's LayerNorm1P) and shift, either of
    which may be absent; with neither it computes in float32 and casts back, as OLMo's parameter-free norm."""

    def __init__(self, width: int, eps: float, bias: bool, scale: bool = True, unit_offset: bool = False):
        super().__init__()
        self.width, self.unit_offset = width, unit_offset
        self.weight = nn.Parameter(torch.zeros(width) if unit_offset else torch.ones(width)) if scale else None
        self.bias = nn.Parameter(torch.zeros(width)) if bias else None
        self.eps = eps

    def init_weights(self, std: float = 0.02, generator: torch.Generator | None = None) -> None:
        """Unit scale (a zero offset with unit_offset), zero shift (called by archdsl.compiler.initialise)."""
        with torch.no_grad():
            if self.weight is not None:
                self.weight.fill_(0.0 if self.unit_offset else 1.0)
            if self.bias is not None:
                self.bias.zero_()

    def tp_plan(self, tp: int) -> dict:
        """Replicated under tensor parallelism (archdsl.parallel): every rank holds it whole."""
        return {}

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        if self.weight is None and self.bias is None:
            return F.layer_norm(x.float(), (self.width,), None, None, self.eps).to(x.dtype)
        weight = self.weight + 1.0 if self.unit_offset and self.weight is not None else self.weight
        return F.layer_norm(x, (self.width,), weight, self.bias, self.eps)


_FUSED_RMS_NORM = hasattr(F, "rms_norm")  # torch >= 2.4


class RMSNorm(nn.Module):
    """x / rms(x) * w (Llama: normalised in float32, cast back, then scaled), or with unit_offset
    (x / rms(x) * (1 + w)) computed wholly in float32 and cast back (Gemma); w starts at 0 then."""

    def __init__(self, width: int, eps: float, unit_offset: bool = False, scale: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(width) if unit_offset else torch.ones(width)) if scale else None
        self.eps, self.unit_offset, self.width = eps, unit_offset, width

    def init_weights(self, std: float = 0.02, generator: torch.Generator | None = None) -> None:
        """A unit scale: w = 1, or w = 0 with unit_offset (called by archdsl.compiler.initialise)."""
        if self.weight is None:
            return
        with torch.no_grad():
            self.weight.fill_(0.0 if self.unit_offset else 1.0)

    def tp_plan(self, tp: int) -> dict:
        """Replicated under tensor parallelism (archdsl.parallel): every rank holds it whole."""
        return {}

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        if _FUSED_RMS_NORM and not self.unit_offset and x.dtype == torch.float32:
            return F.rms_norm(x, (self.width,), self.weight, self.eps)  # the same math, one op
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.weight is None:
            return normed.to(x.dtype)
        if self.unit_offset:
            return (normed * (1.0 + self.weight.float())).to(x.dtype)
        return self.weight * normed.to(x.dtype)


# ------------------------------------------------------------------------------------ builders
def build_layernorm(node: BuildContext) -> nn.Module:
    return LayerNorm(node.in_width, node.spec.eps, node.spec.bias, node.spec.scale, node.spec.unit_offset)


def build_rmsnorm(node: BuildContext) -> nn.Module:
    return RMSNorm(node.in_width, node.spec.eps, node.spec.unit_offset, node.spec.scale)
