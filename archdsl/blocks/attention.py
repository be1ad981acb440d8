"""Self-attention with a fused QKV projection and one SDPA call, and cross-attention over another
stack's output (paired with spec/attention.py)."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..cache import KVState, ValueState
from .context import BuildContext, ForwardContext
from .embedding import apply_rotary, fill_buffers
from .norm import LayerNorm, RMSNorm

_SDPA_HAS_GQA = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 5)


def alibi_slopes(heads: int) -> torch.Tensor:
    """Head slopes of Press et al. (2022): a geometric sequence, interleaved when heads is not a power of 2."""
    def powers(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start ** (i + 1) for i in range(n)]
    if math.log2(heads).is_integer():
        return torch.tensor(powers(heads))
    closest = 2 ** math.floor(math.log2(heads))
    return torch.tensor(powers(closest) + powers(2 * closest)[0::2][: heads - closest])


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, is_causal: bool,
         scale: float | None, dropout: float) -> torch.Tensor:
    """One scaled_dot_product_attention call; grouped/multi-query k, v (fewer heads than q) are
    expanded by the kernel where torch supports it (>= 2.5), by repeat_interleave before that."""
    gqa = {}
    if k.shape[1] != q.shape[1]:
        if _SDPA_HAS_GQA:
            gqa = {"enable_gqa": True}
        else:
            group = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale,
                                          dropout_p=dropout, **gqa)


def softcapped_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                         is_causal: bool, scale: float | None, softcap: float | None, dropout: float,
                         sinks: torch.Tensor | None = None) -> torch.Tensor:
    """SDPA's arithmetic with softcap · tanh(scores / softcap) between the scores and the mask (Gemma 2), and/or
    attention sinks: the output times sigmoid(logsumexp(scores) − sink) per head, the same as a softmax with
    one more logit, the sink, in its denominator (GPT-OSS, Granite-SWA).

    No fused scaled_dot_product_attention kernel soft-caps or returns the logsumexp, so this is the
    explicit form: the (B, heads, q, k) score matrix is materialised. `mask` and `is_causal` are
    ForwardContext's (a boolean keep-mask or an additive float bias); the softmax runs in float32 as
    transformers'.
    """
    if k.shape[1] != q.shape[1]:  # grouped or multi-query: each kv head serves a group of query heads
        group = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = (q @ k.transpose(-1, -2)) * (scale if scale is not None else q.shape[-1] ** -0.5)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if is_causal:
        q_len, k_len = scores.shape[-2:]
        mask = torch.ones(q_len, k_len, dtype=torch.bool, device=q.device).tril(k_len - q_len)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    if dropout:
        probs = F.dropout(probs, dropout)
    if sinks is None:
        return probs @ v
    keep = torch.sigmoid(torch.logsumexp(scores.float(), dim=-1) - sinks.float().view(1, -1, 1))  # (B, heads, q)
    return (probs @ v) * keep.unsqueeze(-1).to(q.dtype)



class PartialBiasLinear(nn.Linear):
    """A fused projection whose bias leaves out one run of rows, ``without`` = (start, end): Whisper's keys have
    none. ``bias`` holds the other rows' values, in order; the left-out rows add 0."""

    def __init__(self, in_features: int, out_features: int, without: tuple[int, int]):
        super().__init__(in_features, out_features, bias=False)
        self.without = without
        self.bias = nn.Parameter(torch.zeros(out_features - (without[1] - without[0])))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start, end = self.without
        bias = torch.cat([self.bias[:start], self.bias.new_zeros(end - start), self.bias[start:]])
        return F.linear(x, self.weight, bias)

class Attention(nn.Module):
    def __init__(self, width: int, heads: int, kv_heads: int, head_dim: int, *, causal: bool,
                 window: int | None, dropout: float, bias: bool, out_bias: bool, scale: float | None,
                 rotary: tuple[str, bool] | None, alibi: bool, relative: str | None = None,
                 qk_norm_eps: float | None = None, qk_norm_over: str = "head", qk_norm_unit_offset: bool = False,
                 softcap: float | None = None, output_gate: bool = False, in_scale: float = 1.0,
                 qk_norm_after_rotary: bool = False, qk_norm_scale: bool = True, sinks: bool = False,
                 qk_norm_centered: bool = False, qk_norm_bias: bool = True, chunk: int | None = None,
                 key_bias: bool = True, out_norm_eps: float | None = None,
                 temperature: tuple[int, float] | None = None):
        super().__init__()
        self.chunk = chunk  # aligned chunks of keys a query may see (Llama 4), or None
        self.temperature = temperature  # (floor, scale) of the queries' temperature (Llama 4's NoPE layers), or None
        assert heads % kv_heads == 0, "the spec validator guarantees kv_heads divides heads"
        self.qk_norm_after_rotary = qk_norm_after_rotary
        self.in_scale = in_scale  # the input's multiplier before the projections (Falcon-H1)
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.output_gate = output_gate  # sigmoid(W_g x) per head output, W_g the last rows of qkv (Qwen3-Next)
        self.tp, self.tp_rank = 1, 0  # tensor parallel: heads and kv_heads are this rank's (tp_localize)
        self.causal, self.window, self.dropout, self.scale = causal, window, dropout, scale
        self.softcap = softcap
        self.rotary = rotary  # (positional node id, interleaved) or None
        self.relative = relative  # id of the relative position bias node that governs this layer, or None
        self.cache_slot: int | None = None  # index of this layer's state in a KVCache (set by ArchModel)
        rows = (heads * (2 if output_gate else 1) + 2 * kv_heads) * head_dim
        self.qkv = (PartialBiasLinear(width, rows, (heads * head_dim, (heads + kv_heads) * head_dim))
                    if bias and not key_bias else nn.Linear(width, rows, bias=bias))
        self.out = nn.Linear(heads * head_dim, width, bias=out_bias)
        self.out.writes_residual = True  # initialised with the residual std (archdsl.compiler.initialise)
        # an RMSNorm of the heads' output before the output projection (BitNet's attn_sub_norm)
        self.out_norm = RMSNorm(heads * head_dim, out_norm_eps) if out_norm_eps is not None else None
        self.sinks = nn.Parameter(torch.zeros(heads)) if sinks else None  # a logit per head, 0 as transformers starts
        self.qk_norm_over = qk_norm_over
        if qk_norm_eps is not None:  # a norm of queries and keys, named as transformers names them
            q_size, k_size = (head_dim, head_dim) if qk_norm_over == "head" else (heads * head_dim, kv_heads * head_dim)
            if qk_norm_centered:  # a LayerNorm, with a shift (Persimmon)
                shift = qk_norm_scale and qk_norm_bias  # ESM-C's has none
                self.q_norm = LayerNorm(q_size, qk_norm_eps, bias=shift, scale=qk_norm_scale,
                                        unit_offset=qk_norm_unit_offset)
                self.k_norm = LayerNorm(k_size, qk_norm_eps, bias=shift, scale=qk_norm_scale,
                                        unit_offset=qk_norm_unit_offset)
            else:
                self.q_norm = RMSNorm(q_size, qk_norm_eps, unit_offset=qk_norm_unit_offset, scale=qk_norm_scale)
                self.k_norm = RMSNorm(k_size, qk_norm_eps, unit_offset=qk_norm_unit_offset, scale=qk_norm_scale)
        else:
            self.q_norm = self.k_norm = None
        if alibi:
            self.register_buffer("alibi_slopes", torch.empty(heads), persistent=False)
            fill_buffers(self)
        else:
            self.alibi_slopes = None

    @property
    def decodes(self) -> bool:
        return self.causal  # a bidirectional layer's cached prefix could not see later tokens

    def new_state(self, batch: int, max_len: int, *, device: Any = None, dtype: Any = None) -> KVState:
        """The keys and values of the kv heads, per position."""
        shape = (self.kv_heads, self.head_dim)
        return KVState(batch, max_len, shape, shape, device=device, dtype=dtype or self.out.weight.dtype)

    def fill_buffers(self) -> None:
        if self.alibi_slopes is not None:  # under tensor parallelism, this rank's heads' slopes
            self.alibi_slopes.copy_(alibi_slopes(self.heads * self.tp)[self.tp_rank * self.heads:][: self.heads])

    def tp_plan(self, tp: int) -> dict:
        """Tensor parallelism (archdsl.parallel): heads split across the ranks. The fused qkv projection is
        column-parallel section by section (each rank computes the queries, keys and values of its own
        heads), the output projection row-parallel (one all-reduce), qk-norm weights shared by the heads."""
        from torch.distributed.tensor.parallel import RowwiseParallel

        from ..parallel import FusedColwise, HeadSharded

        h, kv, hd = self.heads, self.kv_heads, self.head_dim
        if self.out_norm is not None:
            raise ValueError("tensor parallelism of an attention with out_norm is not supported: the norm reads every "
                             "head's output, which the ranks split")
        if isinstance(self.qkv, PartialBiasLinear):
            raise ValueError("tensor parallelism of an attention without a key bias (key_bias: false) is not "
                             "supported; set key_bias: true (a zero key bias is the same model)")
        if kv % tp:
            raise ValueError(f"{kv} kv heads do not split over {tp} tensor-parallel ranks (each rank keeps whole "
                             f"kv heads with the query heads that share them); use a --tp that divides {kv}")
        if h % tp:
            raise ValueError(f"{h} heads do not split over {tp} tensor-parallel ranks; use a --tp that divides {h}")
        if self.relative is not None:
            raise ValueError("a relative position bias (T5) is shared by the heads of every layer and has no "
                             "tensor-parallel plan yet; train it with --fsdp alone")
        if self.sinks is not None:
            raise ValueError("attention sinks (one logit per head) have no tensor-parallel plan yet; train them with "
                             "--fsdp alone")
        if self.q_norm is not None and self.qk_norm_over == "width":
            raise ValueError("qk-norm over the whole width (OLMo 2) normalises every head together, which needs "
                             "all heads on one rank; train it with --fsdp alone")
        sections = {"q": h * hd, "k": kv * hd, "v": kv * hd, **({"gate": h * hd} if self.output_gate else {})}
        plan: dict = {"qkv": FusedColwise(sections), "out": RowwiseParallel()}  # the gate: per query head
        if self.q_norm is not None:
            plan.update(q_norm=HeadSharded(2), k_norm=HeadSharded(2))
        return plan

    def tp_localize(self, rank: int, tp: int) -> None:
        """Forward with this rank's heads (the plan split the projections)."""
        self.heads, self.kv_heads, self.tp, self.tp_rank = self.heads // tp, self.kv_heads // tp, tp, rank
        if self.alibi_slopes is not None:
            self.alibi_slopes = self.alibi_slopes[: self.heads].clone()
            fill_buffers(self)

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        B, S, _ = x.shape
        h, kv, hd = self.heads, self.kv_heads, self.head_dim
        if self.in_scale != 1.0:
            x = x * self.in_scale
        if self.output_gate:
            q, k, v, gate = self.qkv(x).split([h * hd, kv * hd, kv * hd, h * hd], dim=-1)
        else:
            q, k, v = self.qkv(x).split([h * hd, kv * hd, kv * hd], dim=-1)
        if self.q_norm is not None and self.qk_norm_over == "width":  # every head's values together (OLMo 2)
            q, k = self.q_norm(q, ctx), self.k_norm(k, ctx)
        q, k = q.view(B, S, h, hd), k.view(B, S, kv, hd)
        if self.q_norm is not None and self.qk_norm_over == "head" and not self.qk_norm_after_rotary:  # Qwen3
            q, k = self.q_norm(q, ctx), self.k_norm(k, ctx)
        q = q.transpose(1, 2)  # (B, h, S, hd)
        k = k.transpose(1, 2)  # (B, kv, S, hd)
        v = v.view(B, S, kv, hd).transpose(1, 2)
        if self.rotary is not None:
            cos, sin = ctx.rope[self.rotary[0]]
            q, k = apply_rotary(q, cos, sin, self.rotary[1]), apply_rotary(k, cos, sin, self.rotary[1])
        if self.q_norm is not None and self.qk_norm_after_rotary:  # each head, after the rotation (HunYuan)
            q, k = self.q_norm(q, ctx), self.k_norm(k, ctx)
        if self.temperature is not None:  # 1 + scale · log(1 + floor((t + 1) / floor)), t the sequence index
            floor, scale = self.temperature
            t = ctx.sequence_index(S)
            q = (q * (torch.log1p(torch.floor((t.float() + 1.0) / floor)) * scale + 1.0)[None, None, :, None]).to(q.dtype)
        if ctx.cache is not None:  # write this step's keys/values in place, attend over everything cached so far
            k, v = ctx.cache.update(self.cache_slot, k, v)
        relative = ctx.relative[self.relative] if self.relative is not None else None
        mask, is_causal = ctx.attention_mask(S, k.shape[2], self.causal, self.window, self.alibi_slopes, q.dtype,
                                             relative, chunk=self.chunk)
        dropout = self.dropout if self.training else 0.0
        if self.softcap is not None or self.sinks is not None:
            y = softcapped_attention(q, k, v, mask, is_causal, self.scale, self.softcap, dropout, self.sinks)
        else:
            y = sdpa(q, k, v, mask, is_causal, self.scale, dropout)
        y = y.transpose(1, 2).reshape(B, S, h * hd)
        y = y * torch.sigmoid(gate) if self.output_gate else y
        return self.out(self.out_norm(y, None) if self.out_norm is not None else y)


class CrossAttention(nn.Module):
    """Queries from the stream, keys and values from the output of another stack of the graph
    (``attention: {cross: encoder}``). The memory's keys/values are projected once per forward;
    during cached decoding once per cache (the first forward stores them in ``cache.cross``)."""

    causal = False

    def __init__(self, width: int, memory_width: int, heads: int, kv_heads: int, head_dim: int, *, memory: str,
                 dropout: float, bias: bool, out_bias: bool, scale: float | None, key_bias: bool = True):
        super().__init__()
        assert heads % kv_heads == 0, "the spec validator guarantees kv_heads divides heads"
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.memory, self.dropout, self.scale = memory, dropout, scale
        self.cache_slot: int | None = None  # index of this layer's state in a cache (set by ArchModel)
        self.q = nn.Linear(width, heads * head_dim, bias=bias)
        self.kv = (PartialBiasLinear(memory_width, 2 * kv_heads * head_dim, (0, kv_heads * head_dim))
                   if bias and not key_bias else nn.Linear(memory_width, 2 * kv_heads * head_dim, bias=bias))
        self.out = nn.Linear(heads * head_dim, width, bias=out_bias)
        self.out.writes_residual = True  # initialised with the residual std (archdsl.compiler.initialise)

    decodes = True  # its keys come from the memory, computed once per cache

    def new_state(self, batch: int, max_len: int, *, device: Any = None, dtype: Any = None) -> ValueState:
        """The memory's keys and values, computed by the first forward with the cache."""
        return ValueState()

    def tp_plan(self, tp: int) -> dict:
        """Heads split across the ranks: q and the fused k|v column-parallel, out row-parallel."""
        from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

        from ..parallel import FusedColwise

        kv, hd = self.kv_heads, self.head_dim
        if kv % tp or self.heads % tp:
            raise ValueError(f"{self.heads} heads and {kv} kv heads must both split over {tp} tensor-parallel "
                             f"ranks; use a --tp that divides {kv}")
        return {"q": ColwiseParallel(), "kv": FusedColwise({"k": kv * hd, "v": kv * hd}), "out": RowwiseParallel()}

    def tp_localize(self, rank: int, tp: int) -> None:
        self.heads, self.kv_heads = self.heads // tp, self.kv_heads // tp

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The memory (B, S_m, D_m) projected to keys and values (B, kv, S_m, hd)."""
        B, M, _ = memory.shape
        k, v = self.kv(memory).split([self.kv_heads * self.head_dim] * 2, dim=-1)
        return (k.view(B, M, self.kv_heads, self.head_dim).transpose(1, 2),
                v.view(B, M, self.kv_heads, self.head_dim).transpose(1, 2))

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        B, S, _ = x.shape
        h, kv, hd = self.heads, self.kv_heads, self.head_dim
        q = self.q(x).view(B, S, h, hd).transpose(1, 2)
        cache = ctx.cache
        if cache is not None:
            state = cache.states[self.cache_slot]
            if state.value is None:
                state.value = self.memory_kv(ctx.memory[self.memory][0])
            k, v = state.value
        else:
            k, v = self.memory_kv(ctx.memory[self.memory][0])
        mask = ctx.memory_mask(self.memory)
        y = sdpa(q, k, v, mask, False, self.scale, self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, S, h * hd))


class LatentAttention(nn.Module):
    """Multi-head latent attention (DeepSeek-V2/V3; paired with spec/attention.py LatentAttention).

    Per token, kv_a projects the stream to a latent (kv_rank, RMS-normalised) and a rotary key
    part (rope_dim, shared by all heads); kv_b expands the latent to each head's key part and
    value. Queries come from q (or from q_a -> RMSNorm -> q_b with a q_rank bottleneck); their
    last rope_dim dims rotate. With a cache only the latent and the rotated key part are stored
    (cache_shapes), and every step expands them again: the memory saving MLA was designed for.
    """

    def __init__(self, width: int, heads: int, *, kv_rank: int, q_rank: int | None, head_dim: int, rope_dim: int,
                 v_dim: int, causal: bool, dropout: float, bias: bool, scale: float | None, latent_eps: float,
                 rotary: tuple[str, bool]):
        super().__init__()
        self.heads, self.kv_rank, self.head_dim, self.rope_dim, self.v_dim = heads, kv_rank, head_dim, rope_dim, v_dim
        self.causal, self.dropout, self.rotary = causal, dropout, rotary
        self.scale = scale if scale is not None else (head_dim + rope_dim) ** -0.5
        self.cache_slot: int | None = None  # index of this layer's state in a KVCache (set by ArchModel)
        qk = heads * (head_dim + rope_dim)
        if q_rank:
            self.q_a = nn.Linear(width, q_rank, bias=bias)
            self.q_norm = RMSNorm(q_rank, latent_eps)
            self.q_b = nn.Linear(q_rank, qk, bias=False)
            self.q = None
        else:
            self.q = nn.Linear(width, qk, bias=False)
        self.kv_a = nn.Linear(width, kv_rank + rope_dim, bias=bias)
        self.kv_norm = RMSNorm(kv_rank, latent_eps)
        self.kv_b = nn.Linear(kv_rank, heads * (head_dim + v_dim), bias=False)
        self.out = nn.Linear(heads * v_dim, width, bias=bias)
        self.out.writes_residual = True

    @property
    def decodes(self) -> bool:
        return self.causal

    def new_state(self, batch: int, max_len: int, *, device: Any = None, dtype: Any = None) -> KVState:
        """What the cache stores per position: the normalised latent ("keys") and the rotated key part."""
        return KVState(batch, max_len, (1, self.kv_rank), (1, self.rope_dim), device=device,
                       dtype=dtype or self.out.weight.dtype)

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        B, S, _ = x.shape
        h, nope, rope = self.heads, self.head_dim, self.rope_dim
        q = self.q(x) if self.q is not None else self.q_b(self.q_norm(self.q_a(x), ctx))
        q = q.view(B, S, h, nope + rope).transpose(1, 2)  # (B, h, S, nope + rope)
        latent, k_rot = self.kv_a(x).split([self.kv_rank, rope], dim=-1)
        latent = self.kv_norm(latent, ctx)[:, None]  # (B, 1, S, kv_rank)
        cos, sin = ctx.rope[self.rotary[0]]
        q_pass, q_rot = q.split([nope, rope], dim=-1)
        q = torch.cat((q_pass, apply_rotary(q_rot, cos, sin, self.rotary[1])), dim=-1)
        k_rot = apply_rotary(k_rot[:, None], cos, sin, self.rotary[1])  # (B, 1, S, rope)
        if ctx.cache is not None:  # cache the latent and the rotated key part; expand everything cached so far
            latent, k_rot = ctx.cache.update(self.cache_slot, latent, k_rot)
        L = latent.shape[2]
        kv = self.kv_b(latent).view(B, L, h, nope + self.v_dim).transpose(1, 2)
        k_nope, v = kv.split([nope, self.v_dim], dim=-1)
        k = torch.cat((k_nope, k_rot.expand(B, h, L, rope)), dim=-1)
        mask, is_causal = ctx.attention_mask(S, L, self.causal, None, None, q.dtype)
        y = sdpa(q, k, v, mask, is_causal, self.scale, self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, S, h * self.v_dim))


# ------------------------------------------------------------------------------------ builders
def build_attention(node: BuildContext) -> nn.Module:
    s = node.spec
    heads, kv_heads, head_dim = s.dims(node.in_width)
    out_bias = s.bias if s.out_bias is None else s.out_bias
    if s.cross:
        return CrossAttention(node.in_width, node.memory_width(), heads, kv_heads, head_dim, memory=s.cross,
                              dropout=s.dropout, bias=s.bias, out_bias=out_bias, scale=s.scale, key_bias=s.key_bias)
    pos = node.positional
    rotary = (node.positional_id, pos.interleaved) if pos is not None and pos.type == "rotary" else None
    return Attention(node.in_width, heads, kv_heads, head_dim, causal=s.causal, window=s.window, dropout=s.dropout,
                     bias=s.bias, out_bias=out_bias, scale=s.scale, rotary=rotary,
                     alibi=pos is not None and pos.type == "alibi",
                     relative=node.positional_id if pos is not None and pos.type == "relative" else None,
                     qk_norm_eps=s.qk_norm_eps if s.qk_norm else None, qk_norm_over=s.qk_norm_over,
                     qk_norm_unit_offset=s.qk_norm_unit_offset, softcap=s.softcap, output_gate=s.output_gate,
                     in_scale=s.in_scale, qk_norm_after_rotary=s.qk_norm_after_rotary, qk_norm_scale=s.qk_norm_scale,
                     sinks=s.sinks, qk_norm_centered=s.qk_norm_centered,
                     qk_norm_bias=s.qk_norm_bias, chunk=s.chunk, key_bias=s.key_bias,
                     out_norm_eps=s.out_norm_eps if s.out_norm else None,
                     temperature=(s.temperature_floor, s.temperature_scale) if s.temperature_floor else None)


def build_latent_attention(node: BuildContext) -> nn.Module:
    s = node.spec
    interleaved = node.positional.interleaved  # the validator guarantees a rotary node governs it
    return LatentAttention(node.in_width, s.heads, kv_rank=s.kv_rank, q_rank=s.q_rank, head_dim=s.head_dim,
                           rope_dim=s.rope_dim, v_dim=s.value_dim, causal=s.causal, dropout=s.dropout, bias=s.bias,
                           scale=s.scale, latent_eps=s.latent_eps, rotary=(node.positional_id, interleaved))
