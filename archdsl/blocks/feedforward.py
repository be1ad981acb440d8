"""Feed-forward blocks (paired with spec/feedforward.py)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .context import ForwardContext

ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swiglu": F.silu,  # gated: silu(gate) * up
    "geglu": lambda x: F.gelu(x, approximate="tanh"),  # gated: gelu(gate) * up (T5 v1.1, Gemma)
}


class MLP(nn.Module):
    """down(act(up(x))); gated variants compute [gate, up] in one fused projection."""

    def __init__(self, width: int, hidden: int, activation: str, bias: bool, dropout: float, gated: bool):
        super().__init__()
        self.gated = gated
        self.act = ACTIVATIONS[activation]
        self.up = nn.Linear(width, hidden * (2 if gated else 1), bias=bias)
        self.down = nn.Linear(hidden, width, bias=bias)
        self.drop = nn.Dropout(dropout) if dropout else None

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        h = self.up(x)
        if self.gated:
            gate, up = h.chunk(2, dim=-1)
            h = self.act(gate) * up
        else:
            h = self.act(h)
        out = self.down(h)
        return self.drop(out) if self.drop is not None else out


class Linear(nn.Linear):
    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x)


class Dropout(nn.Dropout):
    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x)
