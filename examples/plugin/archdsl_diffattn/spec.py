"""The torch-free half of the kind: its fields, shape and size rules, decode state and label.

`archdsl validate` and `archdsl summary` import only this module, so it must not import torch.
"""
from __future__ import annotations

import math
from typing import Any

from pydantic import Field

from archdsl.spec import DecodeState, NodeSpec, Scope


class DiffAttention(NodeSpec):
    """Differential attention (Ye et al. 2024, "Differential Transformer", arXiv:2410.05258): each head
    computes two softmax attention maps from two halves of its queries and keys and attends with their
    difference, (softmax(Q1 K1ᵀ/√d) − λ·softmax(Q2 K2ᵀ/√d)) V, which cancels attention noise common to
    both maps. λ = exp(λq1·λk1) − exp(λq2·λk2) + λ_init is learned per layer; each head's output
    (2·head_dim wide) is RMS-normalised and scaled by 1 − λ_init before the output projection. With
    kv_heads < heads, query head i uses the two key maps of kv head i // (heads / kv_heads)."""

    kind = "diff_attention"
    family = "attention"
    title = "Differential attention"
    builder = "archdsl_diffattn.blocks:build_diff_attention"  # imported only when a model is compiled
    residual_branch = True  # its output projection writes into the residual stream

    heads: int = Field(gt=0, description="Number of heads (each with two attention maps).")
    kv_heads: int | None = Field(None, gt=0, description="Key/value heads; default: heads. Must divide heads.")
    head_dim: int | None = Field(None, gt=0, description="Dims of each map's queries and keys (values are twice "
                                 "this); default: width / heads / 2.")
    causal: bool = Field(False, description="Mask future positions (decoders).")
    lambda_init: float | None = Field(None, gt=0.0, lt=1.0, description="λ_init; default the paper's depth "
                                      "schedule 0.8 − 0.6·exp(−0.3·layer), layer = the repeated layer's index.")
    eps: float = Field(1e-5, gt=0.0, description="Epsilon of the per-head RMSNorm.")

    def dims(self, width: int) -> tuple[int, int, int]:
        """(heads, kv_heads, head_dim) with defaults filled in."""
        return self.heads, self.kv_heads or self.heads, self.head_dim or max(width // self.heads // 2, 1)

    def param_count(self, scope: Scope) -> int:
        h, kv, d = self.dims(scope.width)
        projections = scope.width * 2 * h * d + 2 * scope.width * 2 * kv * d + 2 * h * d * scope.width
        return projections + 4 * d + 2 * d  # the four λ vectors and the RMSNorm weight

    def flops_per_token(self, scope: Scope) -> int:
        h, kv, d = self.dims(scope.width)
        projections = 2 * scope.width * (2 * h * d + 4 * kv * d) + 2 * 2 * h * d * scope.width
        return projections + 12 * scope.seq_len * h * d  # two score maps (d) and two map·V products (2d)

    def check(self, scope: Scope) -> None:
        if self.head_dim is None and scope.width % (2 * self.heads):
            scope.report("heads", f"2 × {self.heads} heads do not divide width {scope.width}",
                         "each head has two maps: choose heads so that 2 × heads divides the width, or set head_dim")
        h, kv, d = self.dims(scope.width)
        if h % kv:
            scope.report("kv_heads", f"kv_heads {kv} does not divide heads {h}",
                         "each key/value head serves a whole group of query heads")
        pos = scope.positional
        if pos is not None and pos.type not in ("rotary", "none"):
            scope.report(None, f"differential attention supports rotary positions (or none), not {pos.type}",
                         "use - positional: {kind: rotary} before the layers")
        if pos is not None and pos.type == "rotary" and (int(d * pos.fraction) % 2 or int(d * pos.fraction) == 0):
            scope.report("head_dim" if self.head_dim else "heads", f"rotary would rotate {int(d * pos.fraction)} of "
                         f"{d} dims per map; it needs an even, non-zero number", "change the head size")

    def uses_positional(self) -> bool:
        return True

    def rotary_dims(self, width: int, positional: Any) -> tuple[int, str] | None:
        return int(self.dims(width)[2] * positional.fraction), "head_dim" if self.head_dim else "heads"

    def decode_state(self, scope: Scope) -> DecodeState:
        _, kv, d = self.dims(scope.width)
        return DecodeState(per_token=2 * kv * d + kv * 2 * d)  # two key maps of d, values of 2d

    def summary_args(self) -> str:
        kv = f", {self.kv_heads} kv" if self.kv_heads and self.kv_heads != self.heads else ""
        lam = f", λ₀={self.lambda_init:g}" if self.lambda_init is not None else ""
        return f"{self.heads} heads × 2 maps{kv}{lam}, " + ("causal" if self.causal else "bidir")


def default_lambda_init(layer: int | None) -> float:
    """The paper's λ_init schedule over depth (layer 0 first)."""
    return 0.8 - 0.6 * math.exp(-0.3 * (layer or 0))
