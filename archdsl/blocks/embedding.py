"""Token and positional embeddings (paired with spec/embedding.py)."""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import nn

from .context import BuildContext, ForwardContext, InitScheme


def fill_buffers(module: nn.Module) -> None:
    """Compute a module's derived (non-persistent) buffers, unless it lives on the meta device.

    Derived buffers are not in the state_dict, so a model built on `meta` and materialised with
    to_empty() must have them computed again (ArchModel.materialize does that).
    """
    if all(b.device.type != "meta" for b in module.buffers(recurse=False)):
        with torch.no_grad():
            module.fill_buffers()


class Embedding(nn.Module):
    """Token lookup. With ``input="token_type_ids"`` the lookup is added to the stream (BERT segments)."""

    def __init__(self, vocab: int, dim: int, *, input: str = "tokens", scale: float | None = None,
                 padding_idx: int | None = None, tied: nn.Parameter | None = None):
        super().__init__()
        self.weight = tied if tied is not None else nn.Parameter(torch.empty(vocab, dim))
        self.input, self.scale, self.padding_idx = input, scale, padding_idx
        self.tied = tied is not None  # shares another embedding's table (one tensor, two names)

    @torch.no_grad()
    def init_weights(self, init: InitScheme) -> None:
        # a tied table is drawn again by each embedding that shares it, as archdsl always did, so that
        # a seeded model keeps the same weights across versions
        self.weight.normal_(0.0, init.std, generator=init.generator)
        if self.padding_idx is not None:
            self.weight[self.padding_idx].zero_()

    def tp_plan(self, tp: int) -> dict:
        """Replicated under tensor parallelism (archdsl.parallel): every rank holds it whole."""
        return {}

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        if self.input == "tokens":
            out = nn.functional.embedding(x, self.weight, self.padding_idx)  # (B, S) -> (B, S, D)
            if self.scale is None:
                return out
            # the scale is rounded to the model dtype first, as Gemma does (matters in bf16)
            return out * torch.tensor(self.scale, dtype=out.dtype, device=out.device)
        ids = ctx.token_type_ids if ctx.token_type_ids is not None else torch.zeros_like(ctx.positions)
        return x + nn.functional.embedding(ids, self.weight)


class LearnedPositional(nn.Module):
    """x + W[position + offset]; position ids come from the context (they shift under left padding).
    The table has max_len + offset rows (BART reserves 2)."""

    def __init__(self, max_len: int, dim: int, offset: int = 0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_len + offset, dim))
        self.max_len, self.offset = max_len, offset

    @torch.no_grad()
    def init_weights(self, init: InitScheme) -> None:
        self.weight.normal_(0.0, init.std, generator=init.generator)

    def tp_plan(self, tp: int) -> dict:
        """Replicated under tensor parallelism (archdsl.parallel): every rank holds it whole."""
        return {}

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        positions = ctx.positions + self.offset if self.offset else ctx.positions
        return x + nn.functional.embedding(positions, self.weight)


def relative_position_bucket(distance: torch.Tensor, bidirectional: bool, buckets: int, max_distance: int) -> torch.Tensor:
    """T5's bucketing of key - query distances (Raffel et al. 2020, as Mesh TensorFlow computes it).

    Bidirectional: half the buckets for keys after the query. Causal: only keys at or before the
    query have a bucket (later ones are masked anyway). Of each half, the first half are exact
    distances and the rest grow logarithmically up to max_distance, beyond which all share the last.
    """
    out = torch.zeros_like(distance)
    if bidirectional:
        buckets //= 2
        out = out + (distance > 0).to(torch.long) * buckets
        distance = distance.abs()
    else:
        distance = -torch.clamp(distance, max=0)
    exact = buckets // 2
    small = distance < exact
    large = exact + (torch.log(distance.float() / exact) / math.log(max_distance / exact)
                     * (buckets - exact)).to(torch.long)
    large = torch.clamp(large, max=buckets - 1)
    return out + torch.where(small, distance, large)


class RelativePositionBias(nn.Module):
    """T5's relative position bias: one learned scalar per (distance bucket, head), added to the
    attention scores of every layer this node governs. It owns the one (buckets, heads) table;
    the attention layers read it through the context, and the bias for a forward's (queries, keys)
    is built once (ForwardContext.attention_mask) and passed to SDPA as a float mask."""

    def __init__(self, node_id: str, heads: int, buckets: int, max_distance: int):
        super().__init__()
        self.node_id, self.heads, self.buckets, self.max_distance = node_id, heads, buckets, max_distance
        self.weight = nn.Parameter(torch.empty(buckets, heads))

    def init_weights(self, init: InitScheme) -> None:
        """N(0, std), as the other embeddings (called by archdsl.compiler.initialise)."""
        with torch.no_grad():
            self.weight.normal_(0.0, init.std, generator=init.generator)

    def bias(self, distance: torch.Tensor, causal: bool) -> torch.Tensor:
        """distance (Sq, Sk) = key index - query index -> float32 bias (1, heads, Sq, Sk)."""
        bucket = relative_position_bucket(distance, not causal, self.buckets, self.max_distance)
        return nn.functional.embedding(bucket, self.weight).float().permute(2, 0, 1)[None]

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        ctx.relative[self.node_id] = self
        return x


class SinusoidalPositional(nn.Module):
    """x + the fixed sin/cos table of Vaswani et al. (2017), computed for the positions at hand."""

    def __init__(self, dim: int, halves: bool = False, spacing: str = "vaswani", offset: int = 0):
        super().__init__()
        self.dim, self.halves, self.spacing, self.offset = dim, halves, spacing, offset
        if spacing == "tensor2tensor" and dim < 4:
            raise ValueError(f"tensor2tensor's sinusoids need a width of at least 4, not {dim}")
        self.register_buffer("inv_freq", torch.empty(self._frequencies()), persistent=False)
        fill_buffers(self)

    def _frequencies(self) -> int:
        return self.dim // 2 if self.spacing == "tensor2tensor" else (self.dim + 1) // 2

    def _exact(self, device: Any = None) -> torch.Tensor:
        """The frequencies in float64: 10000^(-2i/d), or tensor2tensor's 10000^(-i/(d/2 - 1))."""
        if self.spacing == "tensor2tensor":
            steps = torch.arange(self.dim // 2, dtype=torch.float64, device=device)
            return torch.exp(steps * (-math.log(10000.0) / (self.dim // 2 - 1)))
        steps = torch.arange(0, self.dim, 2, dtype=torch.float64, device=device)
        return torch.exp(steps * (-math.log(10000.0) / self.dim))

    def fill_buffers(self) -> None:  # the float32 nearest each exact frequency (forward adds back the residue)
        exact = self._exact().to(torch.float32)  # on the CPU: not every device has float64
        self.inv_freq.copy_(exact.to(self.inv_freq.device, self.inv_freq.dtype))

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        # in float64 where the device has it: sin and cos of positions in the thousands keep ~1e-7 (float32 angles
        # lose ~1e-4 there), as the float64 tables of Marian and Pegasus do
        if self.spacing == "tensor2tensor":  # fairseq's float32 table, rounded as it computes it
            steps = torch.arange(self.dim // 2, dtype=torch.float32, device=x.device)
            inv_freq = torch.exp(steps * -(math.log(10000.0) / (self.dim // 2 - 1)))
            angles = (ctx.positions + self.offset).to(torch.float32)[..., None] * inv_freq
        elif x.device.type in ("cpu", "cuda") and not torch.compiler.is_compiling():
            # the float32 buffer plus its rounding residue: exact frequencies while the buffer is right, and
            # wrong ones when it is not (a buffer computed in half precision still shows)
            exact = self._exact(x.device)
            inv_freq = self.inv_freq.to(torch.float64) + (exact - exact.to(torch.float32).to(torch.float64))
            angles = (ctx.positions.to(torch.float64) + self.offset)[..., None] * inv_freq  # (B, S, D/2)
        else:
            angles = (ctx.positions.to(torch.float32) + self.offset)[..., None] * self.inv_freq
        if self.halves:  # [sin of every frequency | cos of every frequency] (Marian, Pegasus)
            cos = angles.cos() if self.spacing == "tensor2tensor" else angles[..., : self.dim - angles.shape[-1]].cos()
            table = torch.cat((angles.sin(), cos), dim=-1)
        else:
            table = torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)[..., : self.dim]  # interleaved
        if table.shape[-1] < self.dim:  # tensor2tensor's odd width: a zero last dim
            table = torch.nn.functional.pad(table, (0, self.dim - table.shape[-1]))
        return x + table.to(x.dtype)


class RotaryScaling(NamedTuple):
    """Rescaled rotary frequencies for a context longer than the one trained (positional `scaling:`).

    linear: every frequency / factor (position interpolation). llama3 (Llama 3.1): wavelengths longer
    than original_max_len / low_freq_factor are divided by factor, those shorter than
    original_max_len / high_freq_factor are kept, and the band between blends the two smoothly.
    yarn (YaRN, Peng et al. 2023): a linear ramp over the dims between those that rotate more than
    beta_fast times within original_max_len (kept) and fewer than beta_slow times (divided by
    factor), and cos/sin multiplied by attention_factor. The arithmetic is transformers'
    (`_compute_llama3_parameters`, `_compute_yarn_parameters`), so the frequencies are equal.
    """

    method: str  # linear | llama3 | yarn
    factor: float
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_len: int | None = None
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    yarn_attention_factor: float | None = None
    truncate: bool = True

    @property
    def attention_factor(self) -> float:
        """What cos and sin are multiplied by (1 but for yarn: by default 0.1 · ln(factor) + 1)."""
        if self.method != "yarn":
            return 1.0
        if self.yarn_attention_factor is not None:
            return self.yarn_attention_factor
        return 0.1 * math.log(self.factor) + 1.0 if self.factor > 1 else 1.0

    def apply(self, inv_freq: torch.Tensor, base: float) -> torch.Tensor:
        """The rescaled frequencies of inv_freq = 1 / base ** (2i / dim), i < dim / 2."""
        if self.method == "linear":
            return inv_freq / self.factor
        if self.method == "yarn":
            return self._yarn(inv_freq, base)
        old = self.original_max_len
        low_wavelen, high_wavelen = old / self.low_freq_factor, old / self.high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_wavelen, inv_freq / self.factor, inv_freq)
        smooth = (old / wavelen - self.low_freq_factor) / (self.high_freq_factor - self.low_freq_factor)
        blended = (1 - smooth) * scaled / self.factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        return torch.where(medium, blended, scaled)


    def _yarn(self, inv_freq: torch.Tensor, base: float) -> torch.Tensor:
        half = inv_freq.shape[0]
        dim = 2 * half

        def correction_dim(rotations: float) -> float:  # the dim that turns `rotations` times in the context
            return dim * math.log(self.original_max_len / (rotations * 2 * math.pi)) / (2 * math.log(base))
        low, high = correction_dim(self.beta_fast), correction_dim(self.beta_slow)
        if self.truncate:
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, dim - 1)
        if low == high:
            high += 0.001  # no zero-width ramp
        ramp = ((torch.arange(half, dtype=torch.float32, device=inv_freq.device) - low) / (high - low)).clamp(0, 1)
        keep = 1 - ramp  # 1: extrapolate (keep the frequency), 0: interpolate (divide by factor)
        return inv_freq / self.factor * (1 - keep) + inv_freq * keep


class Rotary(nn.Module):
    """Computes rotary cos/sin for this forward's positions once; the attention layers it governs apply them."""

    def __init__(self, node_id: str, rotary_dim: int, base: float, interleaved: bool,
                 scaling: RotaryScaling | None = None, reverse: bool = False):
        super().__init__()
        self.node_id, self.rotary_dim, self.interleaved, self.base = node_id, rotary_dim, interleaved, base
        self.reverse = reverse  # rotate by -angle: sin negated
        self.scaling = scaling
        self.register_buffer("inv_freq", torch.empty(rotary_dim // 2), persistent=False)
        fill_buffers(self)

    def fill_buffers(self) -> None:
        steps = torch.arange(0, self.rotary_dim, 2, dtype=torch.int64, device=self.inv_freq.device).float()
        inv_freq = 1.0 / (self.base ** (steps / self.rotary_dim))
        self.inv_freq.copy_(self.scaling.apply(inv_freq, self.base) if self.scaling is not None else inv_freq)

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        freqs = ctx.positions.to(torch.float32)[..., None] * self.inv_freq  # (B, S, R/2)
        if self.interleaved:
            freqs = freqs.repeat_interleave(2, dim=-1)
        else:
            freqs = torch.cat((freqs, freqs), dim=-1)  # (B, S, R)
        cos, sin = freqs.cos()[:, None], freqs.sin()[:, None]  # (B, 1, S, R)
        if self.reverse:
            sin = -sin
        if self.scaling is not None and self.scaling.attention_factor != 1.0:  # yarn
            cos, sin = cos * self.scaling.attention_factor, sin * self.scaling.attention_factor
        ctx.rope[self.node_id] = (cos.to(x.dtype), sin.to(x.dtype))
        return x


class PositionMarker(nn.Module):
    """ALiBi and `none` change the attention after them, not the stream; the node stays for readability."""

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        return x


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool) -> torch.Tensor:
    """Rotate the first cos.shape[-1] dims of each head; x is (B, H, S, hd)."""
    rot = cos.shape[-1]
    if rot == x.shape[-1] and not interleaved:  # every dim rotates: no slices (and no zero-filled slice grads)
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + torch.cat((-x2, x1), dim=-1) * sin
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    if interleaved:
        pairs = x_rot.unflatten(-1, (-1, 2))
        rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    else:
        half = rot // 2
        rotated = torch.cat((-x_rot[..., half:], x_rot[..., :half]), dim=-1)
    out = x_rot * cos + rotated * sin
    return torch.cat((out, x_pass), dim=-1) if x_pass.shape[-1] else out


# ------------------------------------------------------------------------------------ builders
def build_embedding(node: BuildContext) -> nn.Module:
    s = node.spec
    return Embedding(s.vocab, node.out_width, input=s.input, scale=s.scale, padding_idx=s.padding_idx,
                     tied=node.tied_weight())  # a tied table is one Parameter shared across stacks


def build_positional(node: BuildContext) -> nn.Module:
    s, width = node.spec, node.in_width
    if s.type == "learned":
        return LearnedPositional(s.max_len, width, s.offset)
    if s.type == "relative":
        return RelativePositionBias(node.id, s.heads, s.buckets, s.max_distance)
    if s.type == "sinusoidal":
        return SinusoidalPositional(width, halves=s.halves, spacing=s.spacing, offset=s.offset)
    if s.type == "rotary":
        scaling = None if s.scaling == "none" else RotaryScaling(
            s.scaling, s.factor, s.low_freq_factor, s.high_freq_factor, s.original_max_len, s.beta_fast, s.beta_slow,
            s.attention_factor, s.truncate)
        # rotated dims per head, from the nodes it governs (the IR checked that they agree)
        dims = next((d["rotary_dims"] for d in node.governed() if d.get("rotary_dims")), 2)
        return Rotary(node.id, dims, s.base, s.interleaved, scaling, reverse=s.reverse)
    return PositionMarker()
