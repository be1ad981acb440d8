"""Normalisation layers."""
from __future__ import annotations

from pydantic import Field

from .base import NodeSpec, PosFloat, Scope


class LayerNorm(NodeSpec):
    """LayerNorm over the width (mean and variance), with a learned scale and optional bias."""

    kind = "layernorm"
    family = "norm"

    eps: PosFloat = Field(1e-5, description="Added to the variance.")
    bias: bool = Field(True, description="Learned shift.")

    def param_count(self, scope: Scope) -> int:
        return scope.width * (2 if self.bias else 1)

    def summary_args(self) -> str:
        return f"eps={self.eps:g}"


class RMSNorm(NodeSpec):
    """RMSNorm (no mean subtraction, no bias): x / rms(x) * weight."""

    kind = "rmsnorm"
    family = "norm"

    eps: PosFloat = Field(1e-6, description="Added to the mean square.")

    def param_count(self, scope: Scope) -> int:
        return scope.width

    def summary_args(self) -> str:
        return f"eps={self.eps:g}"
