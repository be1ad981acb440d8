"""Linear-recurrent and convolutional mixers (paired with spec/linear_mixers.py): gated DeltaNet,
LFM2's short convolution and Griffin's RG-LRU block.

Each has two forms with the same result: a parallel one for training and prefill (the chunked
delta rule, a convolution over the whole sequence, a log-depth scan) and a recurrent one that
takes a token at a time with a fixed-size state kept in the decode cache (``ctx.cache``: a
``ValueState`` per layer holding the convolution's last inputs and the recurrent state). A
forward with a cache continues from the state (prefill in several pieces works too) and leaves
the new state there.

Padding (``ctx.key_padding``, False at padding): padded positions are zeroed before every
convolution and neither write into nor decay a recurrent state, so a left-padded row computes
exactly what the row alone computes (the Hugging Face models zero the mixer's input too).

The arithmetic follows the torch paths of transformers (Qwen3NextGatedDeltaNet, Lfm2ShortConv,
RecurrentGemmaRecurrentBlock): the recurrences run in float32 and cast back; the tests compare
each module with transformers' on the same weights.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..cache import ValueState
from .context import BuildContext, ForwardContext, InitScheme
from .embedding import fill_buffers


# ------------------------------------------------------------------------------------ shared pieces
class CausalConv(nn.Module):
    """A causal depthwise convolution over (B, C, S) that can continue from its last inputs.

    ``weight`` is (C, 1, kernel), as nn.Conv1d(groups=C) stores it, so checkpoints load unchanged.
    forward(x, state) returns (y, new state): state is the previous kernel − 1 inputs (B, C, kernel − 1),
    zeros at the start of a sequence.
    """

    def __init__(self, channels: int, kernel: int, bias: bool):
        super().__init__()
        self.kernel = kernel
        self.weight = nn.Parameter(torch.empty(channels, 1, kernel))
        self.bias = nn.Parameter(torch.empty(channels)) if bias else None

    def forward(self, x: torch.Tensor, state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        keep = self.kernel - 1
        if state is None:
            state = x.new_zeros(x.shape[0], x.shape[1], keep)
        h = torch.cat([state.to(x.dtype), x], dim=-1)
        if x.shape[-1] == 1:  # one decoding step: a dot product per channel (F.conv1d's set-up costs more)
            y = (h * self.weight[:, 0]).sum(dim=-1, keepdim=True)
            y = y + self.bias[:, None] if self.bias is not None else y
        else:
            y = F.conv1d(h, self.weight, self.bias, groups=x.shape[1])
        return y, h[:, :, h.shape[-1] - keep:]

    @torch.no_grad()
    def init_weights(self, init: InitScheme) -> None:
        """torch's default for a depthwise Conv1d: uniform ±1/√kernel, from `generator`."""
        bound = 1.0 / math.sqrt(self.kernel)
        self.weight.uniform_(-bound, bound, generator=init.generator)
        if self.bias is not None:
            self.bias.uniform_(-bound, bound, generator=init.generator)


def _real(ctx: ForwardContext, seq: int) -> torch.Tensor | None:
    """(B, S) bool, True at the real tokens of this forward, or None without padding."""
    return ctx.key_padding[:, -seq:].bool() if ctx.key_padding is not None else None


def _state(module: nn.Module, ctx: ForwardContext) -> Any:
    return ctx.cache.state(module.cache_slot) if ctx.cache is not None else None


def _accumulate(dtype: torch.dtype) -> torch.dtype:
    """The dtype recurrences accumulate in: float32 (bf16/fp16/fp32 models, as transformers), float64 for float64."""
    return torch.promote_types(dtype, torch.float32)


def _heads_first(t: torch.Tensor) -> torch.Tensor:
    """(B, S, H, ...) -> (B, H, S, ...), contiguous."""
    return t.transpose(1, 2).contiguous()


def _init_linear(linear: nn.Linear, std: float, generator: Any) -> None:
    linear.weight.normal_(0.0, std, generator=generator)
    if linear.bias is not None:
        linear.bias.zero_()


# ------------------------------------------------------------------------------------ gated DeltaNet
def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x / √(Σx² + eps) over the last dim (FLA's and transformers' form)."""
    return x * torch.rsqrt((x * x).sum(dim=-1, keepdim=True) + eps)


def delta_rule_chunked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor,
                       state: torch.Tensor | None, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The gated delta rule over a sequence, in chunks (the WY/UT form of Yang et al. 2024).

    q, k (B, H, S, Dk) normalised (q scaled), v (B, H, S, Dv), g (B, H, S) log-decays (≤ 0), beta
    (B, H, S), state (B, H, Dk, Dv) or None; all in the accumulation dtype (float32). Returns outputs (B, H, S, Dv) and the
    final state. Within a chunk the C sequential rank-1 corrections become one unit-lower-
    triangular solve; chunks then follow each other through the state.
    """
    B, H, S, Dk = k.shape
    Dv = v.shape[-1]
    C = min(chunk, S)
    pad = (-S) % C  # padded positions have k = v = 0, beta = 0 and g = 0: they change nothing
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        g, beta = F.pad(g, (0, pad)), F.pad(beta, (0, pad))
    n = (S + pad) // C
    q, k, v = (t.reshape(B, H, n, C, t.shape[-1]) for t in (q, k, v))
    g, beta = g.reshape(B, H, n, C), beta.reshape(B, H, n, C)
    k_beta, v_beta = k * beta[..., None], v * beta[..., None]
    decay = g.cumsum(dim=-1)  # log of the decay from the chunk's start to each position
    upper = torch.ones(C, C, dtype=torch.bool, device=q.device).triu(1)
    pairwise = (decay[..., :, None] - decay[..., None, :]).masked_fill(upper, float("-inf")).exp()
    system = (k_beta @ k.transpose(-1, -2)) * pairwise  # its strict lower triangle; the diagonal is taken as 1
    new_values = torch.linalg.solve_triangular(system, v_beta, upper=False, unitriangular=True)
    k_cumdecay = torch.linalg.solve_triangular(system, k_beta * decay.exp()[..., None], upper=False,
                                               unitriangular=True)
    intra = (q @ k.transpose(-1, -2)) * pairwise
    q_decayed = q * decay.exp()[..., None]
    k_decayed = k * (decay[..., -1:] - decay).exp()[..., None]
    chunk_decay = decay[..., -1].exp()[..., None, None]
    S_ = state if state is not None else q.new_zeros(B, H, Dk, Dv)
    outs = []
    for i in range(n):
        v_new = new_values[:, :, i] - k_cumdecay[:, :, i] @ S_
        outs.append(q_decayed[:, :, i] @ S_ + intra[:, :, i] @ v_new)
        S_ = S_ * chunk_decay[:, :, i] + k_decayed[:, :, i].transpose(-1, -2) @ v_new
    out = torch.stack(outs, dim=2).reshape(B, H, n * C, Dv)[:, :, :S]
    return out, S_


def delta_rule_recurrent(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor,
                         state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The same rule one position at a time (decoding): S ← exp(g)·S; S += k ⊗ β(v − Sᵀk); o = Sᵀq."""
    B, H, S, Dk = k.shape
    S_ = state if state is not None else q.new_zeros(B, H, Dk, v.shape[-1])
    outs = []
    for t in range(S):
        S_ = S_ * g[:, :, t].exp()[..., None, None]
        remembered = (S_ * k[:, :, t, :, None]).sum(dim=-2)
        delta = (v[:, :, t] - remembered) * beta[:, :, t, None]
        S_ = S_ + k[:, :, t, :, None] * delta[:, :, None, :]
        outs.append((S_ * q[:, :, t, :, None]).sum(dim=-2))
    return torch.stack(outs, dim=2), S_


class GatedRMSNorm(nn.Module):
    """RMSNorm of each head's output, then × SiLU(gate) (FLA's FusedRMSNormGated, norm before gate)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        acc = _accumulate(x.dtype)
        xf = x.to(acc)
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight * normed.to(x.dtype) * F.silu(gate.to(acc))).to(x.dtype)


class GatedDeltaNet(nn.Module):
    """Gated DeltaNet (see spec/linear_mixers.py). Parameters in Qwen3.5's layout: one qkv
    projection [q | k | v], the output gate z, b (β) and a (decay), the depthwise conv over qkv,
    A_log and dt_bias per value head, the gated norm and the output projection."""

    def __init__(self, width: int, heads: int, head_dim: int, value_heads: int, value_dim: int, *,
                 conv_kernel: int, norm_eps: float, allow_neg_eigval: bool, chunk_size: int):
        super().__init__()
        self.heads, self.head_dim, self.value_heads, self.value_dim = heads, head_dim, value_heads, value_dim
        self.allow_neg_eigval, self.chunk_size = allow_neg_eigval, chunk_size
        self.key_size, self.value_size = heads * head_dim, value_heads * value_dim
        channels = 2 * self.key_size + self.value_size
        self.qkv = nn.Linear(width, channels, bias=False)
        self.z = nn.Linear(width, self.value_size, bias=False)
        self.b = nn.Linear(width, value_heads, bias=False)
        self.a = nn.Linear(width, value_heads, bias=False)
        self.conv = CausalConv(channels, conv_kernel, bias=False)
        self.A_log = nn.Parameter(torch.empty(value_heads))
        self.dt_bias = nn.Parameter(torch.empty(value_heads))
        self.norm = GatedRMSNorm(value_dim, norm_eps)
        self.out = nn.Linear(self.value_size, width, bias=False)
        self.cache_slot: int | None = None  # index of its state in a cache (set by ArchModel)

    decodes = True

    def new_state(self, batch: int, max_len: int, *, device: Any = None, dtype: Any = None) -> ValueState:
        """(the conv's last qkv inputs (B, channels, kernel − 1), each value head's state (B, Hv, Dk, Dv) float32)."""
        return ValueState()

    @torch.no_grad()
    def init_weights(self, init: InitScheme) -> None:
        """Projections N(0, std) (the output one with the residual std), the conv as torch's default,
        A = exp(A_log) uniform in [1, 16] and dt_bias = 1 (transformers' initialisation), norm weight 1."""
        for linear in (self.qkv, self.z, self.b, self.a):
            _init_linear(linear, init.std, init.generator)
        _init_linear(self.out, init.residual_std, init.generator)
        self.conv.init_weights(init)
        self.A_log.copy_(torch.empty_like(self.A_log).uniform_(1.0, 16.0, generator=init.generator).log())
        self.dt_bias.fill_(1.0)
        self.norm.weight.fill_(1.0)

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        B, S, _ = x.shape
        real = _real(ctx, S)
        if real is not None:
            x = x * real[..., None].to(x.dtype)
        state = _state(self, ctx)
        conv_state, recurrent = state if state is not None else (None, None)
        mixed, conv_state = self.conv(self.qkv(x).transpose(1, 2), conv_state)
        q, k, v = F.silu(mixed).transpose(1, 2).split([self.key_size, self.key_size, self.value_size], dim=-1)
        # β and the decay per (head, position), computed in that layout (B, Hv, S): elementwise ops on
        # tensors of one layout keep AOT autograd's traced strides equal to eager's (torch.compile)
        acc = _accumulate(x.dtype)  # float32, or float64 for a float64 model
        beta = torch.sigmoid(_heads_first(self.b(x)).to(acc))
        if self.allow_neg_eigval:
            beta = beta * 2.0
        g = -self.A_log.to(acc).exp()[:, None] * F.softplus(_heads_first(self.a(x)).to(acc) + self.dt_bias[:, None].to(acc))
        if real is not None:  # padding neither writes into the state nor decays it
            keep = real[:, None, :].to(g.dtype)
            beta, g = beta * keep, g * keep
        group = self.value_heads // self.heads
        q, k = q.reshape(B, S, self.heads, self.head_dim), k.reshape(B, S, self.heads, self.head_dim)
        if group > 1:  # each query/key head serves `group` consecutive value heads
            q, k = q.repeat_interleave(group, dim=2), k.repeat_interleave(group, dim=2)
        v = v.reshape(B, S, self.value_heads, self.value_dim)
        q, k, v = (_heads_first(t).to(acc) for t in (q, k, v))
        q, k = l2norm(q) * self.head_dim ** -0.5, l2norm(k)
        if S == 1:
            out, recurrent = delta_rule_recurrent(q, k, v, g, beta, recurrent)
        else:
            out, recurrent = delta_rule_chunked(q, k, v, g, beta, recurrent, self.chunk_size)
        if ctx.cache is not None:
            ctx.cache.states[self.cache_slot].value = (conv_state, recurrent)
        out = out.transpose(1, 2).to(x.dtype)  # (B, S, Hv, Dv)
        out = self.norm(out, self.z(x).reshape(B, S, self.value_heads, self.value_dim))
        return self.out(out.reshape(B, S, self.value_size))


# ------------------------------------------------------------------------------------ short conv (LFM2)
class ShortConv(nn.Module):
    """out_proj(C ⊙ conv(B ⊙ x)) with B, C, x = in_proj(x) (see spec/linear_mixers.py)."""

    def __init__(self, width: int, kernel: int, bias: bool):
        super().__init__()
        self.in_proj = nn.Linear(width, 3 * width, bias=bias)
        self.conv = CausalConv(width, kernel, bias=bias)
        self.out_proj = nn.Linear(width, width, bias=bias)
        self.out_proj.writes_residual = True  # initialised with the residual std (archdsl.compiler.initialise)
        self.cache_slot: int | None = None

    decodes = True

    def new_state(self, batch: int, max_len: int, *, device: Any = None, dtype: Any = None) -> ValueState:
        """The last kernel − 1 values of B ⊙ x (B, width, kernel − 1)."""
        return ValueState()

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        S = x.shape[1]
        b, c, h = self.in_proj(x).transpose(1, 2).chunk(3, dim=1)  # (B, width, S) each
        h = b * h
        real = _real(ctx, S)
        if real is not None:  # padding enters no window (with biases B ⊙ x is not 0 there)
            h = h * real[:, None, :].to(h.dtype)
        y, conv_state = self.conv(h, _state(self, ctx))
        if ctx.cache is not None:
            ctx.cache.states[self.cache_slot].value = conv_state
        return self.out_proj((c * y).transpose(1, 2))


# ------------------------------------------------------------------------------------ RG-LRU (Griffin)
_MAX_SQRT_GRADIENT = 1000.0


class _SqrtBoundDerivative(torch.autograd.Function):
    """√x whose gradient is clipped at 1000 (Griffin's and transformers' SqrtBoundDerivative): a → 1
    makes 1 − a² → 0, where √'s derivative explodes."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.sqrt(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad / torch.sqrt(torch.clip(4.0 * x, min=1 / (_MAX_SQRT_GRADIENT ** 2)))


def linear_scan(a: torch.Tensor, u: torch.Tensor, h0: torch.Tensor | None) -> torch.Tensor:
    """h_t = a_t ⊙ h_{t−1} + u_t over dim 1 of (B, S, W), h_{−1} = h0 (or 0): every h_t.

    A Hillis-Steele scan of the pairs (a, u) under (a₁, u₁)∘(a₂, u₂) = (a₁a₂, a₂u₁ + u₂): ⌈log₂ S⌉
    elementwise steps over the whole sequence instead of S sequential ones, and products of
    a ∈ [0, 1] only (no division, so no overflow however long the sequence)."""
    if h0 is not None:
        u = torch.cat([u[:, :1] + a[:, :1] * h0[:, None], u[:, 1:]], dim=1)
    step, S = 1, u.shape[1]
    while step < S:
        u = torch.cat([u[:, :step], u[:, step:] + a[:, step:] * u[:, :-step]], dim=1)
        a = torch.cat([a[:, :step], a[:, step:] * a[:, :-step]], dim=1)
        step *= 2
    return u


class RGLRU(nn.Module):
    """The real-gated linear recurrent unit; parameters named and shaped as transformers' RecurrentGemmaRglru."""

    def __init__(self, width: int, heads: int, c: float):
        super().__init__()
        self.heads, self.block, self.c = heads, width // heads, c
        self.recurrent_param = nn.Parameter(torch.empty(width))
        self.input_gate_weight = nn.Parameter(torch.empty(heads, self.block, self.block))
        self.input_gate_bias = nn.Parameter(torch.empty(heads, self.block))
        self.recurrent_gate_weight = nn.Parameter(torch.empty(heads, self.block, self.block))
        self.recurrent_gate_bias = nn.Parameter(torch.empty(heads, self.block))

    def _gate(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        B, S, W = x.shape
        blocks = torch.einsum("bshi,hij->bshj", x.reshape(B, S, self.heads, self.block), weight)
        return torch.sigmoid((blocks + bias).reshape(B, S, W))

    def forward(self, x: torch.Tensor, reset: torch.Tensor, real: torch.Tensor | None,
                h0: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, S, W), reset (B, S, 1) bool, real (B, S) or None, h0 (B, W) float32 or None -> (h (B, S, W), h_last)."""
        input_gate = self._gate(x, self.input_gate_weight, self.input_gate_bias)
        recurrence_gate = self._gate(x, self.recurrent_gate_weight, self.recurrent_gate_bias)
        log_a = -self.c * recurrence_gate * F.softplus(self.recurrent_param)
        a = torch.exp(log_a)
        one_minus = 1 - torch.exp(2 * log_a)
        scale = _SqrtBoundDerivative.apply(one_minus) if torch.is_grad_enabled() else torch.sqrt(one_minus)
        scale = torch.where(reset, 1.0, scale)  # a restart takes the input unscaled ...
        acc = _accumulate(x.dtype)
        u = (x * input_gate * scale.to(x.dtype)).to(acc)
        a = torch.where(reset, 0.0, a).to(acc)  # ... and forgets the state
        if real is not None:  # padding: keep the state as it is (a = 1) and add nothing
            keep = real[..., None]
            a, u = torch.where(keep, a, 1.0), u * keep
        if x.shape[1] == 1:
            h = a * (h0[:, None] if h0 is not None else 0.0) + u
        else:
            h = linear_scan(a, u, h0)
        return h.to(x.dtype), h[:, -1]


_ACTIVATIONS = {"gelu_tanh": lambda t: F.gelu(t, approximate="tanh"), "gelu": F.gelu, "silu": F.silu}


class RecurrentBlock(nn.Module):
    """Griffin's recurrent block: linear_out(act(linear_y(x)) ⊙ RG-LRU(conv(linear_x(x)))), named as
    transformers' RecurrentGemmaRecurrentBlock."""

    def __init__(self, width: int, lru_width: int, heads: int, conv_kernel: int, activation: str, c: float):
        super().__init__()
        self.linear_y = nn.Linear(width, lru_width)
        self.linear_x = nn.Linear(width, lru_width)
        self.linear_out = nn.Linear(lru_width, width)
        self.linear_out.writes_residual = True
        self.conv_1d = CausalConv(lru_width, conv_kernel, bias=True)
        self.rg_lru = RGLRU(lru_width, heads, c)
        self.act = _ACTIVATIONS[activation]
        self.cache_slot: int | None = None

    decodes = True

    def new_state(self, batch: int, max_len: int, *, device: Any = None, dtype: Any = None) -> ValueState:
        """(the conv's last inputs (B, W, kernel − 1), h (B, W) float32, whether a real token was seen (B,))."""
        return ValueState()

    @torch.no_grad()
    def init_weights(self, init: InitScheme) -> None:
        """Griffin's: projections N(0, std) (out with the residual std), zero biases; the conv as torch's
        default; gate weights N(0, √(0.01 / block)), zero gate biases; Λ such that a² is uniform in
        [0.9², 0.999²] at r = 1 (transformers' RecurrentGemma initialisation)."""
        for linear in (self.linear_x, self.linear_y):
            _init_linear(linear, init.std, init.generator)
        _init_linear(self.linear_out, init.residual_std, init.generator)
        self.conv_1d.init_weights(init)
        lru = self.rg_lru
        for weight in (lru.input_gate_weight, lru.recurrent_gate_weight):
            weight.normal_(0.0, math.sqrt(0.01 / lru.block), generator=init.generator)
        lru.input_gate_bias.zero_()
        lru.recurrent_gate_bias.zero_()
        a_square = torch.empty_like(lru.recurrent_param).uniform_(0.9 ** 2 + 1e-8, 0.999 ** 2 + 1e-8,
                                                                   generator=init.generator)
        lru.recurrent_param.copy_((a_square.log() * -0.5).exp().sub(1.0).log())

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        B, S, _ = x.shape
        real = _real(ctx, S)
        y = self.act(self.linear_y(x))
        branch = self.linear_x(x)
        if real is not None:
            branch = branch * real[..., None].to(branch.dtype)
        state = _state(self, ctx)
        conv_state, h0, started = state if state is not None else (None, None, None)
        branch, conv_state = self.conv_1d(branch.transpose(1, 2), conv_state)
        # restart where positions restart at 0 (documents packed in one row) and at a row's first real
        # token; `started` (B,) says which rows saw a real token in earlier forwards (None: every row did)
        reset = ctx.positions[:, -S:, None] == 0
        if real is not None:
            first = real & (real.cumsum(dim=1) == 1)
            if state is not None and started is not None:
                first = first & ~started[:, None]
            reset = reset | first[..., None]
        elif state is None:  # no padding: the sequence starts at this forward's first token
            reset = torch.cat([torch.ones_like(reset[:, :1]), reset[:, 1:]], dim=1)
        h, h_last = self.rg_lru(branch.transpose(1, 2), reset, real, h0)
        if ctx.cache is not None:
            if real is not None:
                started = real.any(dim=1) | (started if state is not None and started is not None else False)
            else:
                started = None if state is None else started
            ctx.cache.states[self.cache_slot].value = (conv_state, h_last, started)
        return self.linear_out(h * y)


# ------------------------------------------------------------------------------------ lightning attention (MiniMax)
def decayed_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
                             state: torch.Tensor | None, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """o_t = Σ_{j≤t} exp(G_t − G_j) (q_t·k_j) v_j + exp(G_t) q_t S₀ with G the cumulative log-decay g, block by
    block (lightning attention's form: within a block one masked matmul, across blocks the state).

    q, k (B, H, S, Dk), v (B, H, S, Dv), g (B, H, S) ≤ 0, state (B, H, Dk, Dv) or None. Returns (B, H, S, Dv)
    and the final state S = Σ_j exp(G_S − G_j) k_j v_jᵀ (+ decayed S₀)."""
    B, H, S, Dk = k.shape
    Dv = v.shape[-1]
    if S == 1:  # one decoding step
        S_ = state * g.exp()[..., None] if state is not None else q.new_zeros(B, H, Dk, Dv)
        S_ = S_ + k.transpose(-1, -2) @ v
        return q @ S_, S_
    C = min(block, S)
    pad = (-S) % C  # padded positions: k = v = 0 and g = 0, so they change nothing
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        g = F.pad(g, (0, pad))
    n = (S + pad) // C
    q, k, v = (t.reshape(B, H, n, C, t.shape[-1]) for t in (q, k, v))
    decay = g.reshape(B, H, n, C).cumsum(dim=-1)
    upper = torch.ones(C, C, dtype=torch.bool, device=q.device).triu(1)
    pairwise = (decay[..., :, None] - decay[..., None, :]).masked_fill(upper, float("-inf")).exp()
    intra = (q @ k.transpose(-1, -2)) * pairwise
    q_decayed = q * decay.exp()[..., None]
    k_decayed = k * (decay[..., -1:] - decay).exp()[..., None]
    block_decay = decay[..., -1].exp()[..., None, None]
    S_ = state if state is not None else q.new_zeros(B, H, Dk, Dv)
    outs = []
    for i in range(n):
        outs.append(q_decayed[:, :, i] @ S_ + intra[:, :, i] @ v[:, :, i])
        S_ = S_ * block_decay[:, :, i] + k_decayed[:, :, i].transpose(-1, -2) @ v[:, :, i]
    return torch.stack(outs, dim=2).reshape(B, H, n * C, Dv)[:, :, :S], S_


def minimax_decay_rates(heads: int, factor: float) -> torch.Tensor:
    """MiniMax's per-head decay rates: 2^(−8(h+1)/heads) × factor."""
    return (1 / (2 ** (8 / heads))) ** (torch.arange(heads, dtype=torch.float64) + 1) * factor


class LightningAttention(nn.Module):
    """MiniMax's lightning attention (see spec/linear_mixers.py); parameters named as transformers'
    MiniMaxLightningAttention: qkv_proj (per head [q; k; v]), output_gate, out_proj, norm."""

    def __init__(self, width: int, heads: int, head_dim: int, *, block_size: int, decay_factor: float,
                 norm_eps: float):
        super().__init__()
        self.heads, self.head_dim, self.block_size, self.decay_factor = heads, head_dim, block_size, decay_factor
        inner = heads * head_dim
        self.qkv_proj = nn.Linear(width, 3 * inner, bias=False)
        self.output_gate = nn.Linear(width, inner, bias=False)
        self.out_proj = nn.Linear(inner, width, bias=False)
        self.out_proj.writes_residual = True
        self.norm = GatedRMSNorm(inner, norm_eps)  # its weight; applied without a gate below
        self.register_buffer("decay_rates", torch.empty(heads, dtype=torch.float32), persistent=False)
        fill_buffers(self)
        self.cache_slot: int | None = None

    decodes = True

    def fill_buffers(self) -> None:
        self.decay_rates.copy_(minimax_decay_rates(self.heads, self.decay_factor))

    def new_state(self, batch: int, max_len: int, *, device: Any = None, dtype: Any = None) -> ValueState:
        """Each head's state Σ exp(−s(t − j)) k_j v_jᵀ (B, heads, head_dim, head_dim)."""
        return ValueState()

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        B, S, _ = x.shape
        real = _real(ctx, S)
        qkv = F.silu(self.qkv_proj(x))
        if real is not None:
            qkv = qkv * real[..., None].to(qkv.dtype)
        q, k, v = qkv.reshape(B, S, self.heads, 3 * self.head_dim).split(self.head_dim, dim=-1)
        acc = _accumulate(x.dtype)  # the state accumulates in float32 (transformers: in the model's dtype)
        q, k, v = (_heads_first(t).to(acc) for t in (q, k, v))
        g = (-self.decay_rates.to(acc))[None, :, None].expand(B, self.heads, S)
        if real is not None:  # padding does not decay the state
            g = g * real[:, None, :].to(g.dtype)
        out, state = decayed_linear_attention(q, k, v, g, _state(self, ctx), self.block_size)
        if ctx.cache is not None:
            ctx.cache.states[self.cache_slot].value = state
        out = out.transpose(1, 2).reshape(B, S, self.heads * self.head_dim)
        normed = (out * torch.rsqrt(out.pow(2).mean(-1, keepdim=True) + self.norm.eps)).to(x.dtype)
        return self.out_proj(torch.sigmoid(self.output_gate(x)) * (self.norm.weight * normed))


# ------------------------------------------------------------------------------------ builders
def build_gated_deltanet(node: BuildContext) -> nn.Module:
    s = node.spec
    heads, head_dim, value_heads, value_dim = s.dims()
    return GatedDeltaNet(node.in_width, heads, head_dim, value_heads, value_dim, conv_kernel=s.conv_kernel,
                         norm_eps=s.norm_eps, allow_neg_eigval=s.allow_neg_eigval, chunk_size=s.chunk_size)


def build_short_conv(node: BuildContext) -> nn.Module:
    return ShortConv(node.in_width, node.spec.kernel, node.spec.bias)


def build_rg_lru(node: BuildContext) -> nn.Module:
    s = node.spec
    return RecurrentBlock(node.in_width, s.size(node.in_width), s.heads, s.conv_kernel, s.activation, s.c)


def build_lightning_attention(node: BuildContext) -> nn.Module:
    s = node.spec
    factor = s.decay_factor
    if factor is None:  # MiniMax: the rate falls with depth, from 1 at the first layer to ~0 at the last
        index, count = node.layer_index() or 0, node.layer_count()
        factor = 1 - index / (count - 1 + 1e-5) + 1e-5
    return LightningAttention(node.in_width, s.heads, s.dim(node.in_width), block_size=s.block_size,
                              decay_factor=factor, norm_eps=s.norm_eps)
