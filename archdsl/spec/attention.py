"""Self-attention: multi-head, multi-query and grouped-query, causal or bidirectional."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from .base import DecodeState, Name, NodeSpec, PosFloat, PosInt, Probability, Scope, linear_params


class Attention(NodeSpec):
    """Scaled dot-product self-attention with one fused QKV projection and an output projection."""

    kind = "attention"
    family = "attention"
    title = "Attention"
    builder = "archdsl.blocks.attention:build_attention"
    residual_branch = True

    heads: PosInt = Field(description="Number of query heads.")
    kv_heads: PosInt | None = Field(None, description="Key/value heads: = heads (MHA, default), 1 (MQA), or a divisor of heads (GQA).")
    head_dim: PosInt | None = Field(None, description="Width of each head; default width / heads.")
    causal: bool = Field(False, description="Mask future positions (decoders).")
    window: PosInt | None = Field(None, description="Sliding window: attend to at most this many most recent positions.")
    dropout: Probability = Field(0.0, description="Dropout on attention probabilities (training only).")
    bias: bool = Field(True, description="Bias on the QKV projection.")
    out_bias: bool | None = Field(None, description="Bias on the output projection; default: same as bias.")
    out_norm: bool = Field(False, description="An RMSNorm (a learned scale per value) of the heads' concatenated "
                           "output before the output projection (BitNet's attn_sub_norm).")
    out_norm_eps: PosFloat = Field(1e-6, description="out_norm: its epsilon.")
    key_bias: bool = Field(True, description="With bias: false leaves the keys without one (Whisper). A key bias "
                           "adds the same q·b to every score of a query, so it never changes the output.")
    scale: PosFloat | None = Field(None, description="Score scale; default 1/sqrt(head_dim).")
    cross: Name | None = Field(None, description="Cross-attention: queries from the stream, keys and values from "
                               "the output of this stack of the graph (e.g. encoder).")
    qk_norm: bool = Field(False, description="RMSNorm of the queries and keys before rotary (Qwen3, OLMo 2); see "
                          "qk_norm_over.")
    qk_norm_over: Literal["head", "width"] = Field(
        "head", description="qk_norm: normalise each head's head_dim values with one weight shared by the heads "
        "(head: Qwen3, Gemma 3), or all heads' values together with one weight per value (width: OLMo 2).")
    qk_norm_centered: bool = Field(False, description="qk_norm: subtract each vector's mean and add a learned shift "
                                   "after the scale, as a LayerNorm does (Persimmon), instead of an RMSNorm.")
    qk_norm_bias: bool = Field(True, description="qk_norm_centered: the learned shift; false: a LayerNorm of the "
                               "queries and keys without one (ESM-C).")
    qk_norm_eps: PosFloat = Field(1e-6, description="qk_norm: the norm's epsilon.")
    qk_norm_unit_offset: bool = Field(False, description="qk_norm: scale by (1 + w) with w starting at 0, as "
                                      "rmsnorm's unit_offset (Gemma 3).")
    qk_norm_after_rotary: bool = Field(False, description="qk_norm: normalise each head's queries and keys after the "
                                       "rotary rotation instead of before it (HunYuan); per head only.")
    qk_norm_scale: bool = Field(True, description="qk_norm: a learned scale; false: each head's queries and keys "
                                "divided by their RMS, no parameters (nanochat).")
    softcap: PosFloat | None = Field(None, description="Soft-cap the attention scores: softcap · tanh(scores / "
                                     "softcap) before the mask (Gemma 2: 50). No fused SDPA kernel has this, so such "
                                     "layers run attention as explicit matmuls and softmax.")
    sinks: bool = Field(False, description="Attention sinks: a learned logit per head added to each query's softmax "
                        "denominator, so a query may attend to nothing (GPT-OSS, Granite-SWA; output · sigmoid(lse − "
                        "sink)). Such layers run attention as explicit matmuls, as softcap does.")
    nope: bool = Field(False, description="NoPE: this self-attention ignores the positional node before it (no rotary "
                       "rotation, ALiBi or relative bias), as the global layers of SmolLM3, Cohere2 and EXAONE 4 among "
                       "rotary ones; the causal mask alone orders the tokens.")
    in_scale: PosFloat = Field(1.0, description="Multiply the input by this before the projections (Falcon-H1's "
                               "attention_in_multiplier; not linear: the scores scale by its square).")
    output_gate: bool = Field(False, description="Gated attention (Qiu et al. 2025; Qwen3-Next): multiply each head's "
                              "output by sigmoid(W_g·x), a gate projected from the stream (heads × head_dim more "
                              "outputs of the QKV projection), before the output projection.")
    chunk: PosInt | None = Field(None, description="Chunked attention (Llama 4): the tokens form aligned chunks of "
                                 "this many, counted from each row's first real token (0..chunk-1, chunk..2·chunk-1, "
                                 "...), and a query attends only to the earlier keys of its own chunk. Causal "
                                 "self-attention only.")
    temperature_floor: PosInt | None = Field(
        None, description="Query temperature (Llama 4's attn_temperature_tuning, for its NoPE layers): queries are "
        "multiplied by 1 + temperature_scale · log(1 + floor((t + 1) / temperature_floor)), t the token's index in "
        "the sequence (padding included), so attention sharpens past every temperature_floor positions.")
    temperature_scale: PosFloat = Field(0.1, description="temperature_floor: the logarithm's multiplier (Llama 4: 0.1).")

    def dims(self, width: int) -> tuple[int, int, int]:
        """(heads, kv_heads, head_dim) with defaults filled in."""
        head_dim = self.head_dim or max(width // self.heads, 1)
        return self.heads, self.kv_heads or self.heads, head_dim

    def param_count(self, scope: Scope) -> int:
        h, kv, hd = self.dims(scope.width)
        out_bias = self.bias if self.out_bias is None else self.out_bias
        out = linear_params(h * hd, scope.width, out_bias) - (kv * hd if self.bias and not self.key_bias else 0)
        out += h * hd if self.out_norm else 0
        if self.cross:  # separate q (from the stream) and kv (from the memory) projections
            memory = scope.memory_widths.get(self.cross, scope.width)
            return linear_params(scope.width, h * hd, self.bias) + linear_params(memory, 2 * kv * hd, self.bias) + out
        qk_norm = (2 * hd if self.qk_norm_over == "head" else (h + kv) * hd) if self.qk_norm and self.qk_norm_scale else 0
        qk_norm *= 2 if self.qk_norm_centered and self.qk_norm_bias else 1  # a shift as well as a scale
        gate = h * hd if self.output_gate else 0
        sinks = h if self.sinks else 0
        return linear_params(scope.width, (h + 2 * kv) * hd + gate, self.bias) + out + qk_norm + sinks

    def flops_per_token(self, scope: Scope) -> int:
        h, kv, hd = self.dims(scope.width)
        projections = 2 * scope.width * (h + 2 * kv + (h if self.output_gate else 0)) * hd + 2 * h * hd * scope.width
        keys = min(scope.seq_len, self.window or scope.seq_len)
        return projections + 2 * 2 * keys * h * hd  # q·k scores and probs·v

    def check(self, scope: Scope) -> None:
        width = scope.width
        if self.head_dim is None and width % self.heads:
            scope.report("heads", f"{self.heads} heads do not divide width {width}",
                         f"choose heads among the divisors of {width}, or set head_dim")
        h, kv, hd = self.dims(width)
        if kv > h:
            scope.report("kv_heads", f"kv_heads {kv} is more than heads {h}", "kv_heads must divide heads")
        elif h % kv:
            scope.report("kv_heads", f"kv_heads {kv} does not divide heads {h}",
                         "each key/value head serves a whole group of query heads")
        if "qk_norm_bias" in self.model_fields_set and not self.qk_norm_centered:
            scope.report("qk_norm_bias", "qk_norm_bias without qk_norm_centered: an RMSNorm has no shift",
                         "add qk_norm_centered: true, or drop qk_norm_bias")
        for field in ("qk_norm_centered", "qk_norm_eps", "qk_norm_over", "qk_norm_unit_offset", "qk_norm_after_rotary", "qk_norm_scale"):
            if field in self.model_fields_set and not self.qk_norm:
                scope.report(field, f"{field} without qk_norm: true", f"add qk_norm: true, or drop {field}")
        if "out_norm_eps" in self.model_fields_set and not self.out_norm:
            scope.report("out_norm_eps", "out_norm_eps without out_norm: true", "add out_norm: true, or drop it")
        if self.out_norm and self.cross:
            scope.report("out_norm", "out_norm in a cross-attention", "drop out_norm")
        if not self.key_bias and not self.bias:
            scope.report("key_bias", "key_bias: false without bias: there is no bias to leave the keys out of",
                         "drop key_bias, or set bias: true")
        if self.temperature_scale != 0.1 and self.temperature_floor is None:
            scope.report("temperature_scale", "temperature_scale without temperature_floor",
                         "add temperature_floor (Llama 4: 8192), or drop temperature_scale")
        if self.chunk is not None and not self.causal:
            scope.report("chunk", "chunked attention is causal: each query sees the earlier keys of its chunk",
                         "add causal: true, or drop chunk")
        if self.qk_norm_after_rotary and self.qk_norm_over != "head":
            scope.report("qk_norm_after_rotary", "qk_norm_after_rotary normalises each head; qk_norm_over is 'width'",
                         "use qk_norm_over: head, or drop qk_norm_after_rotary")
        if self.cross is not None:
            for field in ("qk_norm", "softcap", "output_gate", "nope", "in_scale", "sinks", "chunk", "temperature_floor"):
                if (getattr(self, field) != 1.0) if field == "in_scale" else getattr(self, field):
                    scope.report(field, f"{field} is implemented for self-attention only", f"drop {field} here")
            if self.cross not in scope.memory_widths:
                known = ", ".join(sorted(scope.memory_widths)) or "none"
                scope.report("cross", f"no stack or memory named '{self.cross}' to attend to (stacks resolved before "
                             f"this one, and memories: {known})", "name a stack under model.graph (a stack cannot "
                             "read itself), or a memory the model is given (memories: {NAME: WIDTH})")
            if self.causal:
                scope.report("causal", "cross-attention cannot be causal: the memory is not in the query's timeline",
                             "drop causal: true here")
            if self.window is not None:
                scope.report("window", "a sliding window has no meaning for cross-attention", "drop window here")
            return
        pos = scope.positional if not self.nope else None
        if pos is not None and pos.type == "relative" and pos.heads != h:
            scope.report("heads", f"{h} heads, but the relative position bias before this attention has one bias per "
                         f"head for {pos.heads} heads", "give the positional node the heads of the attention it governs")
        if pos is not None and pos.type == "rotary":
            rotated = int(hd * pos.fraction)
            if rotated % 2 or rotated == 0:
                field = "head_dim" if self.head_dim else "heads"  # the field that set the head size
                scope.report(field, f"rotary rotates {rotated} of {hd} head dims; it needs an even, non-zero number",
                             "change positional.fraction or the head size")

    def uses_positional(self) -> bool:
        return self.cross is None and not self.nope  # cross-attention's keys come from another timeline

    def rotary_dims(self, width: int, positional: Any) -> tuple[int, str] | None:
        return int(self.dims(width)[2] * positional.fraction), "head_dim" if self.head_dim else "heads"

    def memory(self) -> str | None:
        return self.cross

    def decode_state(self, scope: Scope) -> DecodeState:
        _, kv, hd = self.dims(scope.width)  # keys and values of the kv heads (cross-attention: of the memory)
        return DecodeState(per_token=2 * kv * hd)

    def summary_args(self) -> str:
        h, kv, _ = self.heads, self.kv_heads or self.heads, None
        parts = [f"{h} heads"]
        if kv != h:
            parts.append(f"{kv} kv")
        if self.head_dim:
            parts.append(f"d={self.head_dim}")
        parts.append(f"cross → {self.cross}" if self.cross else "causal" if self.causal else "bidir")
        if self.window:
            parts.append(f"window {self.window}")
        if self.chunk:
            parts.append(f"chunks of {self.chunk}")
        if self.temperature_floor:
            parts.append("query temperature")
        if self.qk_norm:
            parts.append("qk-norm" + (" (width)" if self.qk_norm_over == "width" else ""))
        if self.softcap:
            parts.append(f"softcap {self.softcap:g}")
        if self.sinks:
            parts.append("sinks")
        if self.output_gate:
            parts.append("output gate")
        if self.nope:
            parts.append("NoPE")
        return ", ".join(parts)


class LatentAttention(NodeSpec):
    """Multi-head latent attention (DeepSeek-V2/V3): keys and values are expanded per head from one
    small latent vector per token (kv_rank wide, RMS-normalised), plus one rotary key part shared
    by all heads (rope_dim wide); queries come straight from the stream or through their own
    low-rank bottleneck (q_rank). The KV cache holds only the latent and the rotary key, so a
    token costs kv_rank + rope_dim cached values per layer instead of 2 * heads * head_dim."""

    kind = "latent_attention"
    family = "attention"
    title = "Latent attention"
    builder = "archdsl.blocks.attention:build_latent_attention"
    residual_branch = True

    heads: PosInt = Field(description="Number of heads.")
    kv_rank: PosInt = Field(description="Width of the compressed key/value latent (DeepSeek-V3: 512).")
    q_rank: PosInt | None = Field(None, description="Width of the query bottleneck (DeepSeek-V3: 1536); default: "
                                  "queries projected directly from the stream.")
    head_dim: PosInt = Field(description="Per-head query/key dims without rotary (qk_nope_head_dim; DeepSeek-V3: 128).")
    rope_dim: PosInt = Field(description="Per-head query/key dims that rotate (qk_rope_head_dim; DeepSeek-V3: 64); "
                             "the rotary key part is shared by all heads.")
    v_dim: PosInt | None = Field(None, description="Per-head value width (v_head_dim); default head_dim.")
    causal: bool = Field(False, description="Mask future positions (decoders).")
    dropout: Probability = Field(0.0, description="Dropout on attention probabilities (training only).")
    bias: bool = Field(False, description="Biases on the projections from the stream (query/latent down-projections "
                       "and the output projection), as DeepSeek's attention_bias.")
    scale: PosFloat | None = Field(None, description="Score scale; default 1/sqrt(head_dim + rope_dim).")
    latent_eps: PosFloat = Field(1e-6, description="Epsilon of the RMSNorms of the latents.")

    @property
    def value_dim(self) -> int:
        return self.v_dim or self.head_dim

    def param_count(self, scope: Scope) -> int:
        h, qk = self.heads, self.head_dim + self.rope_dim
        width = scope.width
        if self.q_rank:
            q = linear_params(width, self.q_rank, self.bias) + self.q_rank + linear_params(self.q_rank, h * qk, False)
        else:
            q = linear_params(width, h * qk, False)
        kv = (linear_params(width, self.kv_rank + self.rope_dim, self.bias) + self.kv_rank
              + linear_params(self.kv_rank, h * (self.head_dim + self.value_dim), False))
        return q + kv + linear_params(h * self.value_dim, width, self.bias)

    def flops_per_token(self, scope: Scope) -> int:
        h, qk, width = self.heads, self.head_dim + self.rope_dim, scope.width
        q = 2 * (width * self.q_rank + self.q_rank * h * qk) if self.q_rank else 2 * width * h * qk
        kv = 2 * width * (self.kv_rank + self.rope_dim) + 2 * self.kv_rank * h * (self.head_dim + self.value_dim)
        out = 2 * h * self.value_dim * width
        return q + kv + out + 2 * scope.seq_len * h * (qk + self.value_dim)  # scores and probs·v

    def check(self, scope: Scope) -> None:
        pos = scope.positional
        if pos is None or pos.type != "rotary":
            what = "no rotary positional node" if pos is None else f"an {pos.type} positional node" \
                if pos.type[0] in "aeiou" else f"a {pos.type} positional node"
            scope.report("rope_dim", f"latent attention rotates rope_dim dims per head, but {what} governs it",
                         "put `- positional: {kind: rotary}` before the layers")
            return
        rotated = int(self.rope_dim * pos.fraction)
        if rotated != self.rope_dim or rotated % 2:
            scope.report("rope_dim", f"rotary must turn all {self.rope_dim} rope dims, an even number "
                         f"(positional.fraction is {pos.fraction:g})", "use fraction 1 and an even rope_dim")

    def uses_positional(self) -> bool:
        return True

    def rotary_dims(self, width: int, positional: Any) -> tuple[int, str] | None:
        return self.rope_dim, "rope_dim"  # only the rope part rotates

    def decode_state(self, scope: Scope) -> DecodeState:
        return DecodeState(per_token=self.kv_rank + self.rope_dim)  # the latent and the shared rotary key part

    def summary_args(self) -> str:
        q = f", q rank {self.q_rank}" if self.q_rank else ""
        return (f"{self.heads} heads, kv rank {self.kv_rank}{q}, d={self.head_dim}+{self.rope_dim} rope"
                + ("" if self.v_dim in (None, self.head_dim) else f", v {self.v_dim}")
                + (", causal" if self.causal else ", bidir"))
