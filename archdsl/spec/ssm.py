"""State-space mixers: Mamba-1's selective scan and Mamba-2's state-space duality (SSD).

Both are sequence mixers that replace attention in a layer: (batch, seq, width) -> the same,
with a decode state of fixed size (the last conv_kernel − 1 inputs of the causal convolution and
the SSM state), so memory does not grow with the context. Paired with blocks/ssm.py.
"""
from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from .base import DecodeState, NodeSpec, PosFloat, PosInt, Scope, linear_params


class Mamba(NodeSpec):
    """Mamba-1 selective state space (Gu & Dao 2023), as transformers' MambaMixer: in_proj to
    2 × inner (x and the gate z), a causal depthwise conv1d and SiLU over x, x_proj to dt_rank +
    2 × state (Δ, B, C, input-dependent), dt_proj back to inner with softplus, a diagonal A
    (−exp(A_log), inner × state) and the skip D; y = scan(x) · silu(z), then out_proj. Training
    and prefill run a chunked parallel scan; decoding one token updates the state in place of a
    KV cache. Padding positions (attention_mask 0) are zeroed before the projection and after
    the convolution, as transformers does, so they add nothing to the state."""

    kind = "mamba"
    family = "recurrent"
    title = "Mamba"
    builder = "archdsl.blocks.ssm:build_mamba"
    residual_branch = True  # out_proj writes into the residual stream

    state: PosInt = Field(16, description="SSM state size N per channel (d_state).")
    expand: PosInt = Field(2, description="Inner width = expand × width (d_inner).")
    conv_kernel: PosInt = Field(4, description="Taps of the causal depthwise convolution (d_conv).")
    dt_rank: PosInt | None = Field(None, description="Rank of the Δ projection; default ceil(width / 16) "
                                   "(time_step_rank: auto).")
    conv_bias: bool = Field(True, description="Bias on the convolution.")
    bias: bool = Field(False, description="Biases on in_proj and out_proj.")
    dt_bc_norm: Literal["none", "rmsnorm", "rmsnorm_unweighted"] = Field(
        "none", description="RMS-normalise Δ (before dt_proj), B and C: rmsnorm with learned weights (Jamba's "
        "dt/b/c_layernorm), rmsnorm_unweighted (FalconMamba's), or none (Mamba).")
    norm_eps: PosFloat = Field(1e-6, description="Epsilon of the Δ/B/C norms.")
    chunk: PosInt = Field(64, description="Positions per block of the parallel scan (memory: batch × chunk × "
                          "inner × state values per block); the result does not depend on it.")

    def inner(self, width: int) -> int:
        return self.expand * width

    def rank(self, width: int) -> int:
        return self.dt_rank or math.ceil(width / 16)

    def param_count(self, scope: Scope) -> int:
        d, e, n, r = scope.width, self.inner(scope.width), self.state, self.rank(scope.width)
        conv = e * self.conv_kernel + (e if self.conv_bias else 0)
        norms = r + 2 * n if self.dt_bc_norm == "rmsnorm" else 0
        return (linear_params(d, 2 * e, self.bias) + conv + e * (r + 2 * n) + linear_params(r, e, True)
                + e * n + e + linear_params(e, d, self.bias) + norms)

    def flops_per_token(self, scope: Scope) -> int:
        d, e, n, r = scope.width, self.inner(scope.width), self.state, self.rank(scope.width)
        projections = 2 * d * 2 * e + 2 * e * (r + 2 * n) + 2 * r * e + 2 * e * d
        return projections + 2 * e * self.conv_kernel + 6 * e * n  # conv; state update (dA·h + dt·B·x) and C·h

    def decode_state(self, scope: Scope) -> DecodeState:
        e = self.inner(scope.width)
        return DecodeState(fixed=e * (self.conv_kernel - 1) + e * self.state)  # conv inputs + SSM state

    def summary_args(self) -> str:
        parts = [f"state {self.state}", f"expand {self.expand}", f"conv {self.conv_kernel}"]
        if self.dt_rank:
            parts.append(f"dt rank {self.dt_rank}")
        if self.dt_bc_norm != "none":
            parts.append("Δ/B/C " + ("rmsnorm" if self.dt_bc_norm == "rmsnorm" else "rms (no weight)"))
        return ", ".join(parts)


class Mamba2(NodeSpec):
    """Mamba-2 (Dao & Gu 2024, state-space duality), as transformers' Mamba2Mixer: one in_proj to
    the gate z, x, B, C and Δ (inner + inner + 2 × groups × state + heads); a causal depthwise
    conv1d and SiLU over x‖B‖C; a scalar A = −exp(A_log) and skip D per head; heads of head_dim
    channels share B and C within each of `groups` groups; the output is gated and normalised
    (RMSNorm per group of y · silu(z)) before out_proj. Training and prefill run the chunked SSD
    scan (quadratic within a chunk, a recurrence across chunks); decoding one token updates the
    (heads, head_dim, state) state. Padding positions are zeroed before the projection and after
    the convolution, as transformers does."""

    kind = "mamba2"
    family = "recurrent"
    title = "Mamba-2"
    builder = "archdsl.blocks.ssm:build_mamba2"
    residual_branch = True

    state: PosInt = Field(128, description="SSM state size N (d_state).")
    head_dim: PosInt = Field(64, description="Channels per head (headdim).")
    heads: PosInt | None = Field(None, description="Number of heads; default inner / head_dim. Setting it sets "
                                 "the inner width to heads × head_dim (Nemotron-H, Falcon-H1's d_ssm).")
    expand: PosInt | None = Field(None, description="Inner width = expand × width; default 2 (unless heads is set).")
    groups: PosInt = Field(1, description="Groups of heads sharing B and C (n_groups); the gated norm is per group.")
    conv_kernel: PosInt = Field(4, description="Taps of the causal depthwise convolution over x‖B‖C (d_conv).")
    conv_bias: bool = Field(True, description="Bias on the convolution.")
    bias: bool = Field(False, description="Bias on in_proj.")
    out_bias: bool | None = Field(None, description="Bias on out_proj; default: same as bias.")
    gate_norm: Literal["after_gate", "before_gate", "none"] = Field(
        "after_gate", description="The output gate and norm: rmsnorm(y · silu(z)) (after_gate: Mamba-2), "
        "rmsnorm(y) · silu(z) (before_gate: Falcon-H1's mamba_norm_before_gate), or y · silu(z) with no norm "
        "(none: Falcon-H1's mamba_rms_norm false).")
    norm_eps: PosFloat = Field(1e-5, description="Epsilon of the gated RMSNorm.")
    dt_floor: float = Field(0.0, ge=0.0, description="Clamp Δ (after softplus) to at least this "
                            "(time_step_limit[0]: Nemotron-H and Zamba2 use time_step_min), in the chunked scan "
                            "and the decoding step alike (transformers' one-token step does not clamp).")
    dt_ceiling: PosFloat | None = Field(None, description="Clamp Δ to at most this (time_step_limit[1]); default none.")
    in_scale: PosFloat = Field(1.0, description="Multiply the input by this before in_proj (Falcon-H1's "
                               "ssm_in_multiplier).")
    projection_scales: list[float] | None = Field(
        None, min_length=5, max_length=5, description="Multipliers of in_proj's five outputs z, x, B, C, Δ "
        "(Falcon-H1's ssm_multipliers, its μP vector); default none.")
    chunk: PosInt = Field(256, description="Chunk length of the SSD scan (chunk_size); the result does not "
                          "depend on it beyond rounding.")

    def inner(self, width: int) -> int:
        return self.heads * self.head_dim if self.heads else (self.expand or 2) * width

    def n_heads(self, width: int) -> int:
        return self.heads or max(self.inner(width) // self.head_dim, 1)

    def conv_dim(self, width: int) -> int:
        return self.inner(width) + 2 * self.groups * self.state

    def param_count(self, scope: Scope) -> int:
        d, e, h = scope.width, self.inner(scope.width), self.n_heads(scope.width)
        conv_dim = self.conv_dim(d)
        out_bias = self.bias if self.out_bias is None else self.out_bias
        conv = conv_dim * self.conv_kernel + (conv_dim if self.conv_bias else 0)
        norm = e if self.gate_norm != "none" else 0
        return linear_params(d, e + conv_dim + h, self.bias) + conv + 3 * h + norm + linear_params(e, d, out_bias)

    def flops_per_token(self, scope: Scope) -> int:
        d, e, h = scope.width, self.inner(scope.width), self.n_heads(scope.width)
        conv_dim = self.conv_dim(d)
        projections = 2 * d * (e + conv_dim + h) + 2 * e * d
        return projections + 2 * conv_dim * self.conv_kernel + 6 * e * self.state  # conv; state update and C·h

    def decode_state(self, scope: Scope) -> DecodeState:
        return DecodeState(fixed=self.conv_dim(scope.width) * (self.conv_kernel - 1) + self.inner(scope.width)
                           * self.state)  # conv inputs (x‖B‖C) + the (heads, head_dim, state) SSM state

    def check(self, scope: Scope) -> None:
        e = self.inner(scope.width)
        if self.heads and self.expand and self.heads * self.head_dim != self.expand * scope.width:
            scope.report("heads", f"heads {self.heads} × head_dim {self.head_dim} = {self.heads * self.head_dim} "
                         f"contradicts expand {self.expand} × width {scope.width} = {self.expand * scope.width}",
                         "give heads or expand, not both")
        elif e % self.head_dim:
            scope.report("head_dim", f"head_dim {self.head_dim} does not divide the inner width {e} "
                         f"(expand × width)", "choose head_dim among the divisors of the inner width, or set heads")
        h = self.n_heads(scope.width)
        if h % self.groups:
            scope.report("groups", f"{self.groups} groups do not divide {h} heads",
                         "each group of B and C serves a whole number of heads")
        if self.dt_ceiling is not None and self.dt_ceiling <= self.dt_floor:
            scope.report("dt_ceiling", f"dt_ceiling {self.dt_ceiling:g} is not above dt_floor {self.dt_floor:g}",
                         "Δ is clamped to [dt_floor, dt_ceiling]")

    def summary_args(self) -> str:
        parts = [f"{self.heads} heads" if self.heads else f"expand {self.expand or 2}", f"d={self.head_dim}",
                 f"state {self.state}"]
        if self.groups != 1:
            parts.append(f"{self.groups} groups")
        parts.append(f"conv {self.conv_kernel}")
        if self.gate_norm != "after_gate":
            parts.append({"before_gate": "norm before gate", "none": "no norm"}[self.gate_norm])
        return ", ".join(parts)
