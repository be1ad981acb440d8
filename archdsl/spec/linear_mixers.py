"""Linear-recurrent and convolutional token mixers: the blocks that hybrid models put between (or
instead of) attention layers.

* ``gated_deltanet`` — the gated delta rule (Qwen3-Next, Qwen3.5, OLMo-hybrid);
* ``short_conv`` — LFM2's gated short convolution;
* ``rg_lru`` — Griffin's / RecurrentGemma's recurrent block around the RG-LRU;
* ``lightning_attention`` — MiniMax-01's linear attention with a fixed decay per head.

Each keeps a state of fixed size while decoding (a convolution's last inputs and a recurrent
state), so its decode memory does not grow with the context: ``decode_state`` reports it as
``fixed``, and ``archdsl summary`` adds it to the KV cache of the attention layers. Modules and
builders live in archdsl/blocks/linear_mixers.py.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import DecodeState, NodeSpec, PosFloat, PosInt, Scope, linear_params


class GatedDeltaNet(NodeSpec):
    """Gated DeltaNet (Yang, Kautz & Hatamizadeh 2025), the linear attention of Qwen3-Next, Qwen3.5 and
    OLMo-hybrid. Per token: q, k, v projections through one short causal depthwise convolution and
    SiLU; q and k L2-normalised (q also scaled by 1/√head_dim); a per-head write strength β =
    sigmoid(b·x) and decay g = −exp(A_log) · softplus(a·x + dt_bias). Each value head keeps a
    head_dim × value_dim state S, decayed by exp(g) and corrected toward v by the delta rule
    S ← exp(g)·S + β·k(v − Sᵀk)ᵀ; the output Sᵀq is RMS-normalised per head, gated by SiLU(z·x)
    and projected back. Training and prefill run the chunked parallel form (chunks of chunk_size
    positions, one triangular solve each); decoding runs the recurrence one token at a time with a
    fixed state: the convolution's last conv_kernel − 1 inputs and every head's S. Padding
    positions neither write into nor decay the state, so a padded row gives its unpadded result."""

    kind = "gated_deltanet"
    family = "recurrent"
    title = "Gated DeltaNet"
    builder = "archdsl.blocks.linear_mixers:build_gated_deltanet"
    residual_branch = True

    heads: PosInt = Field(description="Query/key heads (linear_num_key_heads; Qwen3-Next: 16).")
    head_dim: PosInt = Field(description="Width of each query/key head (linear_key_head_dim; Qwen3-Next: 128).")
    value_heads: PosInt | None = Field(None, description="Value heads, a multiple of heads: each query/key head "
                                       "serves value_heads / heads of them (linear_num_value_heads; Qwen3-Next: "
                                       "32); default: heads.")
    value_dim: PosInt | None = Field(None, description="Width of each value head (linear_value_head_dim); default: "
                                     "head_dim.")
    conv_kernel: PosInt = Field(4, description="Window of the causal depthwise convolution over q, k and v "
                                "(linear_conv_kernel_dim).")
    norm_eps: PosFloat = Field(1e-6, description="Epsilon of the gated RMSNorm of the output (OLMo-hybrid: 1e-5).")
    allow_neg_eigval: bool = Field(False, description="β = 2·sigmoid(b·x) in (0, 2), so the state's transition "
                                   "I − β·kkᵀ may have negative eigenvalues (OLMo-hybrid's linear_allow_neg_eigval).")
    chunk_size: PosInt = Field(64, description="Positions per chunk of the parallel form (the result does not "
                                "depend on it beyond rounding; it trades the C×C intra-chunk work against the "
                                "number of sequential steps).")

    def dims(self) -> tuple[int, int, int, int]:
        """(heads, head_dim, value_heads, value_dim) with defaults filled in."""
        return self.heads, self.head_dim, self.value_heads or self.heads, self.value_dim or self.head_dim

    def conv_channels(self) -> int:
        h, d, hv, dv = self.dims()
        return 2 * h * d + hv * dv

    def param_count(self, scope: Scope) -> int:
        h, d, hv, dv = self.dims()
        width = scope.width
        projections = width * self.conv_channels() + width * hv * dv + 2 * width * hv  # qkv, z, and b, a
        return (projections + self.conv_channels() * self.conv_kernel + 2 * hv  # conv, A_log, dt_bias
                + dv + linear_params(hv * dv, width, False))  # the gated norm's weight, the output projection

    def flops_per_token(self, scope: Scope) -> int:
        h, d, hv, dv = self.dims()
        width = scope.width
        projections = 2 * width * (self.conv_channels() + hv * dv + 2 * hv) + 2 * hv * dv * width
        # per value head and token: decay S, read Sᵀk, write the rank-1 correction, read Sᵀq
        return projections + 2 * self.conv_channels() * self.conv_kernel + 7 * hv * d * dv

    def decode_state(self, scope: Scope) -> DecodeState:
        h, d, hv, dv = self.dims()
        return DecodeState(fixed=self.conv_channels() * (self.conv_kernel - 1) + hv * d * dv)

    def check(self, scope: Scope) -> None:
        h, _, hv, _ = self.dims()
        if hv % h:
            scope.report("value_heads", f"value_heads {hv} is not a multiple of heads {h}",
                         "each query/key head serves a whole group of value heads")

    def summary_args(self) -> str:
        h, d, hv, dv = self.dims()
        values = f", {hv} v-heads × {dv}" if (hv, dv) != (h, d) else ""
        return f"{h} heads × {d}{values}, conv {self.conv_kernel}" + (", β ∈ (0, 2)" if self.allow_neg_eigval else "")


class ShortConv(NodeSpec):
    """LFM2's gated short convolution (Liquid AI 2025): in_proj splits each token into B, C and x
    (three width-wide vectors); B·x goes through a causal depthwise convolution of `kernel`
    positions, its output is gated by C and projected back: out_proj(C ⊙ conv(B ⊙ x)). While
    decoding it keeps the last kernel − 1 values of B·x. Padding positions are zeroed before the
    convolution, so they never enter a real position's window."""

    kind = "short_conv"
    family = "conv"
    title = "Short conv"
    builder = "archdsl.blocks.linear_mixers:build_short_conv"
    residual_branch = True
    shorthand = "kernel"

    kernel: PosInt = Field(3, description="Window of the causal depthwise convolution (LFM2's conv_L_cache: 3).")
    bias: bool = Field(False, description="Biases on in_proj, the convolution and out_proj (LFM2's conv_bias).")

    def param_count(self, scope: Scope) -> int:
        w = scope.width
        conv = w * self.kernel + (w if self.bias else 0)
        return linear_params(w, 3 * w, self.bias) + conv + linear_params(w, w, self.bias)

    def flops_per_token(self, scope: Scope) -> int:
        w = scope.width
        return 2 * w * 3 * w + 2 * w * self.kernel + 2 * w + 2 * w * w  # projections, conv, the two gates

    def decode_state(self, scope: Scope) -> DecodeState:
        return DecodeState(fixed=scope.width * (self.kernel - 1))

    def summary_args(self) -> str:
        return f"k={self.kernel}, C ⊙ conv(B ⊙ x)" + (", bias" if self.bias else "")


class RGLRU(NodeSpec):
    """Griffin's recurrent block (De et al. 2024), as RecurrentGemma's: two branches from the
    stream, y = act(W_y·x) and a recurrent branch W_x·x → causal depthwise conv (conv_kernel
    positions) → RG-LRU, multiplied and projected back. The RG-LRU is a diagonal linear
    recurrence h_t = a_t ⊙ h_{t−1} + √(1 − a_t²) ⊙ (i_t ⊙ x_t) with a_t = σ(Λ)^(c·r_t), where
    the recurrence gate r_t and input gate i_t are block-diagonal (`heads` blocks) projections of
    x_t and c = 8. It restarts (a = 0, no √ scaling) where positions restart at 0 and at a
    sequence's first real token. Training and prefill compute the recurrence with a parallel
    (log-depth) scan; decoding keeps the convolution's last inputs and h."""

    kind = "rg_lru"
    family = "recurrent"
    title = "RG-LRU block"
    builder = "archdsl.blocks.linear_mixers:build_rg_lru"
    residual_branch = True

    heads: PosInt = Field(description="Blocks of the block-diagonal gate projections (RecurrentGemma: its "
                          "num_attention_heads, 10).")
    lru_width: PosInt | None = Field(None, description="Width of the recurrence (lru_width); default: the stream width.")
    conv_kernel: PosInt = Field(4, description="Window of the causal depthwise convolution (conv1d_width).")
    activation: Literal["gelu_tanh", "gelu", "silu"] = Field("gelu_tanh", description="Activation of the y branch "
                                                             "(RecurrentGemma: gelu_pytorch_tanh).")
    c: PosFloat = Field(8.0, description="The constant c of a_t = σ(Λ)^(c·r_t) (Griffin: 8).")

    def size(self, width: int) -> int:
        return self.lru_width or width

    def param_count(self, scope: Scope) -> int:
        w, lru = scope.width, self.size(scope.width)
        block = lru // self.heads
        gates = 2 * (self.heads * block * block + lru)  # input and recurrence gates: block-diagonal weight, bias
        return (2 * linear_params(w, lru, True) + linear_params(lru, w, True) + lru * self.conv_kernel + lru
                + gates + lru)  # the y and x branches, out, the conv (weight, bias), gates, Λ

    def flops_per_token(self, scope: Scope) -> int:
        w, lru = scope.width, self.size(scope.width)
        block = lru // self.heads
        return 2 * 2 * w * lru + 2 * lru * w + 2 * lru * self.conv_kernel + 2 * 2 * lru * block + 8 * lru

    def decode_state(self, scope: Scope) -> DecodeState:
        lru = self.size(scope.width)
        return DecodeState(fixed=lru * (self.conv_kernel - 1) + lru)  # the conv's last inputs and h

    def check(self, scope: Scope) -> None:
        lru = self.size(scope.width)
        if lru % self.heads:
            field = "lru_width" if self.lru_width else "heads"
            scope.report(field, f"{self.heads} gate blocks do not divide the recurrence width {lru}",
                         f"choose heads among the divisors of {lru}")

    def summary_args(self) -> str:
        width = f"width {self.lru_width}, " if self.lru_width else ""
        return f"{width}{self.heads} gate blocks, conv {self.conv_kernel}, {self.activation}"


class LightningAttention(NodeSpec):
    """Lightning attention (Qin et al. 2024), MiniMax-01's linear attention: per head, q, k, v = SiLU of
    one projection, and o_t = Σ_{j≤t} exp(−s·(t − j)) (q_t·k_j) v_j with no softmax and a fixed decay
    rate s per head: s_h = 2^(−8(h+1)/heads) × a per-layer factor (MiniMax: 1 − l/(L − 1) for layer
    l of L, so the first layers forget fastest). The output is RMS-normalised over all heads,
    gated by sigmoid(W_g·x) and projected back. Training and prefill compute it block by block
    (block_size positions: one matmul within a block, the head's state across blocks); decoding
    keeps each head's head_dim × head_dim state, whatever the context. Padding positions neither
    write into nor decay the state."""

    kind = "lightning_attention"
    family = "recurrent"
    title = "Lightning attention"
    builder = "archdsl.blocks.linear_mixers:build_lightning_attention"
    residual_branch = True

    heads: PosInt = Field(description="Number of heads.")
    head_dim: PosInt | None = Field(None, description="Width of each head; default width / heads.")
    block_size: PosInt = Field(256, description="Positions per block of the parallel form (MiniMax: 256; the result "
                               "does not depend on it beyond rounding).")
    decay_factor: PosFloat | None = Field(None, description="Multiply every head's decay rate by this; default "
                                          "MiniMax's 1 − l/(L − 1) + 1e-5 for the layer's depth l among the L "
                                          "layers of its stack.")
    norm_eps: PosFloat = Field(1e-6, description="Epsilon of the RMSNorm of the output (MiniMax: 1e-6).")

    def dim(self, width: int) -> int:
        return self.head_dim or max(width // self.heads, 1)

    def param_count(self, scope: Scope) -> int:
        inner = self.heads * self.dim(scope.width)
        return scope.width * 3 * inner + scope.width * inner + inner * scope.width + inner  # qkv, gate, out, norm

    def flops_per_token(self, scope: Scope) -> int:
        d = self.dim(scope.width)
        inner = self.heads * d
        return 2 * scope.width * 5 * inner + 4 * self.heads * d * d  # projections; write k⊗v and read q·S

    def decode_state(self, scope: Scope) -> DecodeState:
        d = self.dim(scope.width)
        return DecodeState(fixed=self.heads * d * d)

    def check(self, scope: Scope) -> None:
        if self.head_dim is None and scope.width % self.heads:
            scope.report("heads", f"{self.heads} heads do not divide width {scope.width}",
                         f"choose heads among the divisors of {scope.width}, or set head_dim")

    def summary_args(self) -> str:
        d = f" × {self.head_dim}" if self.head_dim else ""
        factor = f", decay × {self.decay_factor:g}" if self.decay_factor is not None else ""
        return f"{self.heads} heads{d}, block {self.block_size}{factor}"
