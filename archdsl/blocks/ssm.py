"""Mamba-1 and Mamba-2 mixers in plain PyTorch (paired with spec/ssm.py).

Parameter names and layouts are transformers' (MambaMixer, Mamba2Mixer: in_proj, conv1d, x_proj,
dt_proj, dt_bias, A_log, D, norm, out_proj), so a mixer's state dict is the checkpoint's.

Three forms compute the same recurrence h_t = exp(Δ_t A) h_{t−1} + Δ_t B_t x_t, y_t = C_t h_t + D x_t:

* Mamba-1, every length: a chunked parallel scan. Within a chunk of `chunk` positions the
  linear recurrence is an associative prefix scan, done by doubling (log2(chunk) steps of
  elementwise products, no Python loop over positions); chunks run in order, each starting from
  the previous chunk's last state. One position is the single decoding step.
* Mamba-2, several positions: the chunked SSD algorithm (Dao & Gu 2024, listing 1): within a
  chunk the output is a masked, decay-weighted C·Bᵀ product (quadratic in the chunk length),
  across chunks a recurrence over the chunk-final states.
* Mamba-2, one position: the recurrent step on the (heads, head_dim, state) state.

The decode state is fixed in size: the causal convolution's last conv_kernel − 1 inputs and the
SSM state (kept in float32, as the scan computes in float32 whatever the weights' dtype). A
forward with a cache continues from the cached state, so a prefill, then one token per step,
gives the full forward's outputs.

Padding follows transformers: positions where attention_mask is 0 are zeroed before in_proj and
after the convolution, so they add nothing to the state (their Δ only decays a zero state when
they come first, as left padding does). The kernels of mamba_ssm / causal_conv1d are not used:
this is the reference path on every device.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..cache import ValueState
from .context import BuildContext, ForwardContext, InitScheme


# ----------------------------------------------------------------------------- shared pieces
def causal_conv(x: torch.Tensor, conv: nn.Conv1d, previous: torch.Tensor | None,
                keep_state: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Depthwise causal conv1d + SiLU over x (B, S, C), continuing from the last K − 1 inputs
    `previous` (B, C, K − 1) or from zeros; returns the output and (with keep_state) the new last inputs."""
    h = x.transpose(1, 2)
    left = conv.kernel_size[0] - 1
    h = torch.cat([previous.to(h.dtype), h], dim=2) if previous is not None else F.pad(h, (left, 0))
    state = h[:, :, h.shape[2] - left:].clone() if keep_state else None  # a copy: not a view of the whole prefix
    y = F.conv1d(h, conv.weight, conv.bias, groups=conv.groups)
    return F.silu(y).transpose(1, 2), state


def _rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    x32 = x.float()
    return x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)


class RMSNorm(nn.Module):
    """RMSNorm with an optional weight (Jamba's Δ/B/C norms have one, FalconMamba's do not)."""

    def __init__(self, width: int, eps: float, weighted: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width)) if weighted else None
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _rms(x, self.eps).to(x.dtype)
        return self.weight * y if self.weight is not None else y


def _inverse_softplus_dt(n: int, generator: Any, device: Any, dt_min: float = 1e-3, dt_max: float = 0.1) -> torch.Tensor:
    """Bias whose softplus is a Δ drawn log-uniformly in [dt_min, dt_max] (Mamba's initialisation)."""
    dt = torch.exp(torch.rand(n, generator=generator, device=device) * (math.log(dt_max) - math.log(dt_min))
                   + math.log(dt_min)).clamp(min=1e-4)
    return dt + torch.log(-torch.expm1(-dt))


@torch.no_grad()
def _init_conv(conv: nn.Conv1d, generator: Any) -> None:
    bound = 1.0 / math.sqrt(conv.weight.shape[1] * conv.weight.shape[2])  # torch's default, from `generator`
    conv.weight.uniform_(-bound, bound, generator=generator)
    if conv.bias is not None:
        conv.bias.uniform_(-bound, bound, generator=generator)


@torch.no_grad()
def _init_linear(linear: nn.Linear, std: float, generator: Any) -> None:
    linear.weight.normal_(0.0, std, generator=generator)
    if linear.bias is not None:
        linear.bias.zero_()


class _Mixer(nn.Module):
    """What both mixers share: the cache protocol and the padding mask."""

    def __init__(self, name: str):
        super().__init__()
        self.node_name = name
        self.cache_slot: int | None = None  # index of its state in a decode cache (set by ArchModel)

    decodes = True  # causal: it can run one token at a time

    def new_state(self, batch: int, max_len: int, *, device: Any = None, dtype: Any = None) -> ValueState:
        """(conv inputs (B, C, K − 1), SSM state), set by the first forward; fixed in size."""
        return ValueState()

    def _cached(self, ctx: ForwardContext) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if ctx.cache is None:
            return None, None
        value = ctx.cache.state(self.cache_slot)
        return (None, None) if value is None else value

    @staticmethod
    def _mask(ctx: ForwardContext, x: torch.Tensor) -> torch.Tensor | None:
        return ctx.key_padding[:, -x.shape[1]:, None].to(x.dtype) if ctx.key_padding is not None else None


# ----------------------------------------------------------------------------- Mamba-1
def _prefix_scan(a: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inclusive scan of h_t = a_t h_{t−1} + x_t along dim 1 from h = 0, by doubling (Hillis & Steele):
    after the step of span k each position holds the composition of its last 2k steps. Returns
    (prod of a up to t, h_t). Products of decays in (0, 1] only shrink, so this is stable."""
    k, length = 1, a.shape[1]
    while k < length:
        x = torch.cat([x[:, :k], a[:, k:] * x[:, :-k] + x[:, k:]], dim=1)
        a = torch.cat([a[:, :k], a[:, k:] * a[:, :-k]], dim=1)
        k *= 2
    return a, x


def selective_scan(u: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: torch.Tensor, h: torch.Tensor | None, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mamba-1's scan in float32. u, dt (b, s, e); A (e, n); B, C (b, s, n); D (e,); h (b, e, n) or None.
    Returns y (b, s, e) = C·h_t + D·u and the last state (b, e, n)."""
    b, s, e = u.shape
    u, dt, B, C = u.float(), dt.float(), B.float(), C.float()
    h = h.float() if h is not None else u.new_zeros(b, e, A.shape[1])
    ys = []
    for start in range(0, s, chunk):  # chunks in order; the number of chunks is fixed by the shape
        part = slice(start, start + chunk)
        decay = torch.exp(dt[:, part, :, None] * A)  # (b, l, e, n)
        inputs = (dt[:, part] * u[:, part])[..., None] * B[:, part, None, :]  # Δ·B·u, (b, l, e, n)
        prod, acc = _prefix_scan(decay, inputs)
        states = prod * h[:, None] + acc
        ys.append(torch.einsum("blen,bln->ble", states, C[:, part]))
        h = states[:, -1]
    return torch.cat(ys, dim=1) + u * D.float(), h


class Mamba(_Mixer):
    """Mamba-1 mixer (transformers' MambaMixer; JambaMambaMixer / FalconMambaMixer with dt_bc_norm)."""

    def __init__(self, width: int, inner: int, state: int, conv_kernel: int, dt_rank: int, *, conv_bias: bool,
                 bias: bool, dt_bc_norm: str, norm_eps: float, chunk: int, name: str = "mamba"):
        super().__init__(name)
        self.inner, self.state, self.dt_rank, self.chunk = inner, state, dt_rank, chunk
        self.in_proj = nn.Linear(width, 2 * inner, bias=bias)
        self.conv1d = nn.Conv1d(inner, inner, conv_kernel, groups=inner, bias=conv_bias)
        self.x_proj = nn.Linear(inner, dt_rank + 2 * state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, inner, bias=True)
        self.A_log = nn.Parameter(torch.empty(inner, state))
        self.D = nn.Parameter(torch.empty(inner))
        self.out_proj = nn.Linear(inner, width, bias=bias)
        self.out_proj.writes_residual = True
        self.norms = dt_bc_norm != "none"
        if self.norms:
            weighted = dt_bc_norm == "rmsnorm"
            self.dt_layernorm = RMSNorm(dt_rank, norm_eps, weighted)
            self.b_layernorm = RMSNorm(state, norm_eps, weighted)
            self.c_layernorm = RMSNorm(state, norm_eps, weighted)

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        mask = self._mask(ctx, x)
        conv_state, ssm_state = self._cached(ctx)
        if mask is not None:
            x = x * mask
        u, z = self.in_proj(x).chunk(2, dim=-1)  # (B, S, inner) each
        u, conv_state = causal_conv(u, self.conv1d, conv_state, ctx.cache is not None)
        if mask is not None:
            u = u * mask
        dt, B, C = self.x_proj(u).split([self.dt_rank, self.state, self.state], dim=-1)
        if self.norms:
            dt, B, C = self.dt_layernorm(dt), self.b_layernorm(B), self.c_layernorm(C)
        dt = F.softplus(F.linear(dt, self.dt_proj.weight) + self.dt_proj.bias.float())
        A = -torch.exp(self.A_log.float())
        y, ssm_state = selective_scan(u, dt, A, B, C, self.D, ssm_state, self.chunk)
        y = y * F.silu(z.float())
        if ctx.cache is not None:
            ctx.cache.states[self.cache_slot].value = (conv_state, ssm_state)
        return self.out_proj(y.to(x.dtype))

    @torch.no_grad()
    def init_weights(self, init: InitScheme) -> None:
        """Mamba's initialisation: A = −(1, …, N) per channel, D = 1, Δ's bias the inverse softplus of
        log-uniform [0.001, 0.1], dt_proj uniform ±dt_rank^−½; projections N(0, std), out_proj the residual std."""
        g = init.generator
        _init_linear(self.in_proj, init.std, g)
        _init_linear(self.x_proj, init.std, g)
        _init_linear(self.out_proj, init.residual_std, g)
        _init_conv(self.conv1d, g)
        bound = self.dt_rank ** -0.5
        self.dt_proj.weight.uniform_(-bound, bound, generator=g)
        self.dt_proj.bias.copy_(_inverse_softplus_dt(self.inner, g, self.D.device))
        self.A_log.copy_(torch.log(torch.arange(1, self.state + 1, dtype=torch.float32)).expand(self.inner, -1))
        self.D.fill_(1.0)
        for norm in ("dt_layernorm", "b_layernorm", "c_layernorm"):
            weight = getattr(getattr(self, norm, None), "weight", None)
            if weight is not None:
                weight.fill_(1.0)

    def extra_repr(self) -> str:
        return f"inner={self.inner}, state={self.state}, dt_rank={self.dt_rank}, chunk={self.chunk}"


# ----------------------------------------------------------------------------- Mamba-2
def _segsum(a: torch.Tensor) -> torch.Tensor:
    """(..., l) -> (..., l, l): [i, j] = a_{j+1} + … + a_i for j ≤ i, −inf above the diagonal (a masked
    cumulative sum, stable where a difference of cumulative sums is not)."""
    length = a.shape[-1]
    x = a[..., None].expand(*a.shape, length)  # x[..., i, j] = a_i
    below = torch.tril(torch.ones(length, length, dtype=torch.bool, device=a.device), diagonal=-1)
    sums = x.masked_fill(~below, 0).cumsum(dim=-2)
    return sums.masked_fill(~torch.tril(torch.ones_like(below), diagonal=0), float("-inf"))


def ssd_scan(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, chunk: int,
             h: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked SSD in float32. x (b, s, h, p); dt (b, s, h) after softplus; A (h,); B, C (b, s, h, n) (already
    repeated from groups to heads); h (b, h, p, n) or None. Returns y (b, s, h, p) without the D skip, and the
    last state. Letters: c chunk, l/s positions in a chunk, h head, p head_dim, n state."""
    b, s, heads, p = x.shape
    chunk = min(chunk, s)  # a short sequence is one chunk (the chunk length does not change the result)
    pad = (-s) % chunk  # padded steps have Δ = 0: no input, no decay, so the final state is exact
    xdt, a = x * dt[..., None], dt * A  # (b, s, h, p), (b, s, h)
    if pad:
        xdt, B, C = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (xdt, B, C))
        a = F.pad(a, (0, 0, 0, pad))
    c = (s + pad) // chunk
    xdt, B, C = (t.reshape(b, c, chunk, heads, t.shape[-1]) for t in (xdt, B, C))
    a = a.reshape(b, c, chunk, heads).permute(0, 3, 1, 2)  # (b, h, c, l)
    cum = a.cumsum(dim=-1)
    # 1. within each chunk: y_l = Σ_{s ≤ l} (C_l · B_s) exp(cum_l − cum_s) Δ_s x_s
    scores = torch.einsum("bclhn,bcshn->bhcls", C, B) * torch.exp(_segsum(a))
    y = torch.einsum("bhcls,bcshp->bclhp", scores, xdt)
    # 2. each chunk's own final state (from zero), 3. carried across chunks from the initial state
    states = torch.einsum("bclhn,bhcl,bclhp->bchpn", B, torch.exp(cum[..., -1:] - cum), xdt)
    start = h.float() if h is not None else states.new_zeros(b, heads, p, B.shape[-1])
    states = torch.cat([start[:, None], states], dim=1)  # (b, c + 1, h, p, n)
    across = torch.exp(_segsum(F.pad(cum[..., -1], (1, 0))))  # (b, h, c + 1, c + 1)
    states = torch.einsum("bhzc,bchpn->bzhpn", across, states)  # [z]: the state after chunk z (0: the start)
    # 4. what each chunk's start state contributes: C_l · exp(cum_l) h_start
    y = y + torch.einsum("bclhn,bchpn,bhcl->bclhp", C, states[:, :-1], torch.exp(cum))
    return y.reshape(b, c * chunk, heads, p)[:, :s], states[:, -1]


def ssd_step(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
             h: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One position of the recurrence: x (b, h, p), dt (b, h), B, C (b, h, n), h (b, h, p, n) or None."""
    if h is None:
        h = x.new_zeros(*x.shape, B.shape[-1])
    h = h * torch.exp(dt * A)[..., None, None] + (dt[..., None] * x)[..., None] * B[:, :, None, :]
    return torch.einsum("bhpn,bhn->bhp", h, C), h


class GatedRMSNorm(nn.Module):
    """RMSNorm per group of channels, with the gate silu(z) applied before (Mamba-2) or after (Falcon-H1)."""

    def __init__(self, width: int, groups: int, eps: float, before_gate: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.groups, self.eps, self.before_gate = groups, eps, before_gate

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        gate = F.silu(z.float())
        y = y.float() if self.before_gate else y.float() * gate
        *lead, width = y.shape
        y = _rms(y.view(*lead, self.groups, width // self.groups), self.eps).view(*lead, width)
        return self.weight * y * gate if self.before_gate else self.weight * y  # float32, as transformers


class Mamba2(_Mixer):
    """Mamba-2 mixer (transformers' Mamba2Mixer; Bamba, GraniteMoeHybrid, NemotronH, Zamba2 and FalconH1's)."""

    def __init__(self, width: int, inner: int, heads: int, head_dim: int, state: int, groups: int, conv_kernel: int,
                 *, conv_bias: bool, bias: bool, out_bias: bool, gate_norm: str, norm_eps: float, dt_limit: tuple,
                 in_scale: float, projection_scales: list[float] | None, chunk: int, name: str = "mamba2"):
        super().__init__(name)
        self.inner, self.heads, self.head_dim, self.state, self.groups = inner, heads, head_dim, state, groups
        self.conv_dim = inner + 2 * groups * state
        self.dt_limit, self.in_scale, self.chunk = dt_limit, in_scale, chunk
        self.projection_scales = list(projection_scales) if projection_scales else None
        self.in_proj = nn.Linear(width, inner + self.conv_dim + heads, bias=bias)  # z, x‖B‖C, Δ
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, conv_kernel, groups=self.conv_dim, bias=conv_bias)
        self.dt_bias = nn.Parameter(torch.empty(heads))
        self.A_log = nn.Parameter(torch.empty(heads))
        self.D = nn.Parameter(torch.empty(heads))
        self.gate_norm = gate_norm
        if gate_norm != "none":
            self.norm = GatedRMSNorm(inner, groups, norm_eps, before_gate=gate_norm == "before_gate")
        self.out_proj = nn.Linear(inner, width, bias=out_bias)
        self.out_proj.writes_residual = True

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        b, S, _ = x.shape
        mask = self._mask(ctx, x)
        conv_state, ssm_state = self._cached(ctx)
        dtype = x.dtype
        if mask is not None:
            x = x * mask
        if self.in_scale != 1.0:
            x = x * self.in_scale
        gn = self.groups * self.state
        z, xbc, dt = self.in_proj(x).split([self.inner, self.conv_dim, self.heads], dim=-1)
        if self.projection_scales is not None:  # Falcon-H1's μP multipliers of z, x, B, C and Δ
            sz, sx, sb, sc, sdt = self.projection_scales
            xs, bs, cs = xbc.split([self.inner, gn, gn], dim=-1)
            z, xbc, dt = z * sz, torch.cat([xs * sx, bs * sb, cs * sc], dim=-1), dt * sdt
        xbc, conv_state = causal_conv(xbc, self.conv1d, conv_state, ctx.cache is not None)
        if mask is not None:
            xbc = xbc * mask
        xs, B, C = xbc.float().split([self.inner, gn, gn], dim=-1)
        dt = F.softplus(dt.float() + self.dt_bias.float()).clamp(*self.dt_limit)  # (b, S, heads)
        A = -torch.exp(self.A_log.float())
        per_group = self.heads // self.groups
        xs = xs.reshape(b, S, self.heads, self.head_dim)
        B = B.reshape(b, S, self.groups, self.state).repeat_interleave(per_group, dim=2)
        C = C.reshape(b, S, self.groups, self.state).repeat_interleave(per_group, dim=2)
        if S == 1:  # the recurrent step (decoding)
            y, ssm_state = ssd_step(xs[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], ssm_state)
            y = y[:, None]
        else:
            y, ssm_state = ssd_scan(xs, dt, A, B, C, self.chunk, ssm_state)
        y = (y + xs * self.D.float()[:, None]).reshape(b, S, self.inner)
        if ctx.cache is not None:
            ctx.cache.states[self.cache_slot].value = (conv_state, ssm_state)
        y = self.norm(y, z) if self.gate_norm != "none" else y * F.silu(z.float())
        return self.out_proj(y.to(dtype))

    @torch.no_grad()
    def init_weights(self, init: InitScheme) -> None:
        """Mamba-2's initialisation: A uniform in [1, 16] per head, D = 1, Δ's bias the inverse softplus of
        log-uniform [0.001, 0.1]; projections N(0, std), out_proj the residual std, the norm's weight 1."""
        g = init.generator
        _init_linear(self.in_proj, init.std, g)
        _init_linear(self.out_proj, init.residual_std, g)
        _init_conv(self.conv1d, g)
        self.dt_bias.copy_(_inverse_softplus_dt(self.heads, g, self.D.device))
        self.A_log.copy_(torch.log(torch.empty(self.heads, device=self.D.device).uniform_(1.0, 16.0, generator=g)))
        self.D.fill_(1.0)
        if self.gate_norm != "none":
            self.norm.weight.fill_(1.0)

    def extra_repr(self) -> str:
        return (f"inner={self.inner}, heads={self.heads}, head_dim={self.head_dim}, state={self.state}, "
                f"groups={self.groups}, chunk={self.chunk}")


# ----------------------------------------------------------------------------- builders
def build_mamba(node: BuildContext) -> nn.Module:
    s, width = node.spec, node.in_width
    return Mamba(width, s.inner(width), s.state, s.conv_kernel, s.rank(width), conv_bias=s.conv_bias, bias=s.bias,
                 dt_bc_norm=s.dt_bc_norm, norm_eps=s.norm_eps, chunk=s.chunk, name=node.id)


def build_mamba2(node: BuildContext) -> nn.Module:
    s, width = node.spec, node.in_width
    return Mamba2(width, s.inner(width), s.n_heads(width), s.head_dim, s.state, s.groups, s.conv_kernel,
                  conv_bias=s.conv_bias, bias=s.bias, out_bias=s.bias if s.out_bias is None else s.out_bias,
                  gate_norm=s.gate_norm, norm_eps=s.norm_eps, dt_limit=(s.dt_floor, s.dt_ceiling),
                  in_scale=s.in_scale, projection_scales=s.projection_scales, chunk=s.chunk, name=node.id)
