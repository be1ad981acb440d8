"""Normalisation layers."""
from __future__ import annotations

from pydantic import Field

from .base import NodeSpec, PosFloat, Scope


class LayerNorm(NodeSpec):
    """LayerNorm over the width (mean and variance), with a learned scale and optional bias."""

    kind = "layernorm"
    family = "norm"
    title = "LayerNorm"
    builder = "archdsl.blocks.norm:build_layernorm"

    eps: PosFloat = Field(1e-5, description="Added to the variance.")
    bias: bool = Field(True, description="Learned shift.")
    scale: bool = Field(True, description="Learned scale; false with bias false: a LayerNorm without parameters, "
                        "computed in float32 (OLMo 1).")
    unit_offset: bool = Field(False, description="Store the scale as an offset from 1: apply (1 + weight), initialised "
                              "to 0 (Nemotron's LayerNorm1P).")

    def check(self, scope: Scope) -> None:
        if self.unit_offset and not self.scale:
            scope.report("unit_offset", "unit_offset without a learned scale", "drop unit_offset, or keep scale: true")

    def param_count(self, scope: Scope) -> int:
        return scope.width * (int(self.scale) + int(self.bias))

    def summary_args(self) -> str:
        return f"eps={self.eps:g}" + (", 1+w" if self.unit_offset else "") + ("" if self.scale or self.bias else
                                                                              ", no parameters")


class RMSNorm(NodeSpec):
    """RMSNorm (no mean subtraction, no bias): x / rms(x) * weight, or x / rms(x) * (1 + weight) with unit_offset."""

    kind = "rmsnorm"
    family = "norm"
    title = "RMSNorm"
    builder = "archdsl.blocks.norm:build_rmsnorm"

    eps: PosFloat = Field(1e-6, description="Added to the mean square.")
    unit_offset: bool = Field(False, description="Store the scale as an offset from 1: apply (1 + weight), initialised "
                                                 "to 0, computed in float32 before casting back (Gemma).")
    scale: bool = Field(True, description="Learned scale; false: x / rms(x) without parameters, computed in float32 "
                        "(nanochat).")

    def check(self, scope: Scope) -> None:
        if self.unit_offset and not self.scale:
            scope.report("unit_offset", "unit_offset without a learned scale", "drop unit_offset, or keep scale: true")

    def param_count(self, scope: Scope) -> int:
        return scope.width if self.scale else 0

    def summary_args(self) -> str:
        return f"eps={self.eps:g}" + (", 1+w" if self.unit_offset else "") + ("" if self.scale else ", no parameters")
