"""Feed-forward blocks (paired with spec/feedforward.py)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .context import BuildContext, ForwardContext, InitScheme
from .norm import RMSNorm

ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "relu2": lambda x: F.relu(x).square(),  # squared ReLU (So et al. 2021, Primer; Nemotron-H's MLPs)
    "silu": F.silu,
    "swiglu": F.silu,  # gated: silu(gate) * up
    "geglu": lambda x: F.gelu(x, approximate="tanh"),  # gated: gelu(gate) * up (T5 v1.1, Gemma)
    "geglu_exact": F.gelu,  # gated, with the erf GELU (GTE, ModernBERT)
    "relu2_glu": lambda x: F.relu(x).square(),  # gated: relu(gate)² * up (BitNet)
}


class ClampedSwiGLU:
    """GPT-OSS's gated activation of (gate, up): (clamp(up, ±limit) + 1) · g · sigmoid(alpha · g), g = min(gate, limit)."""

    def __init__(self, alpha: float, limit: float):
        self.alpha, self.limit = alpha, limit

    def __call__(self, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        gate = gate.clamp(max=self.limit)
        return (up.clamp(-self.limit, self.limit) + 1) * (gate * torch.sigmoid(gate * self.alpha))


def gated_combine(activation: str, clamp: tuple[float, float]) -> Any:
    """f(gate, up) of a gated activation: act(gate) · up, or GPT-OSS's clamped form."""
    if activation == "swiglu_clamped":
        return ClampedSwiGLU(*clamp)
    act = ACTIVATIONS[activation]
    return lambda gate, up: act(gate) * up


class XIELU(nn.Module):
    """xIELU (Huang et al. 2024; Apertus): α_p·x² + β·x for x > 0, α_n·(expm1(min(x, ε)) − x) + β·x otherwise,
    with α_p = softplus(alpha_p) and α_n = β + softplus(alpha_n) learned (transformers' parametrisation and
    initial values, α_p = α_n = 0.8)."""

    def __init__(self, beta: float = 0.5, eps: float = -1e-6):
        super().__init__()
        self.beta, self.eps = beta, eps
        self.alpha_p = nn.Parameter(torch.log(torch.expm1(torch.tensor([0.8]))))
        self.alpha_n = nn.Parameter(torch.log(torch.expm1(torch.tensor([0.8 - beta]))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha_p, alpha_n = F.softplus(self.alpha_p), self.beta + F.softplus(self.alpha_n)
        negative = (torch.expm1(torch.clamp(x, max=self.eps)) - x) * alpha_n
        return torch.where(x > 0, alpha_p * x * x, negative) + self.beta * x


class MLP(nn.Module):
    """down(act(up(x))); gated variants compute [gate, up] in one fused projection."""

    def __init__(self, width: int, hidden: int, activation: str, bias: bool, dropout: float, gated: bool,
                 gate_scale: float = 1.0, xielu: tuple[float, float] = (0.5, -1e-6),
                 clamp: tuple[float, float] = (1.702, 7.0), down_bias: bool | None = None,
                 inner_norm_eps: float | None = None):
        super().__init__()
        self.gated, self.gate_scale = gated, gate_scale
        # an RMSNorm of the hidden units before the down-projection (BitNet's ffn_sub_norm)
        self.inner_norm = RMSNorm(hidden, inner_norm_eps) if inner_norm_eps is not None else None
        self.act = XIELU(*xielu) if activation == "xielu" else gated_combine(activation, clamp) if gated else \
            ACTIVATIONS[activation]
        self.up = nn.Linear(width, hidden * (2 if gated else 1), bias=bias)
        self.down = nn.Linear(hidden, width, bias=bias if down_bias is None else down_bias)
        self.down.writes_residual = True  # initialised with the residual std (archdsl.compiler.initialise)
        self.drop = nn.Dropout(dropout) if dropout else None

    def tp_plan(self, tp: int) -> dict:
        """Tensor parallelism (archdsl.parallel): the hidden units split across the ranks; up column-parallel
        (gated: gate and up each split, so every rank holds matching halves), down row-parallel."""
        from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

        from ..parallel import FusedColwise

        hidden = self.down.in_features
        if self.inner_norm is not None:
            raise ValueError("tensor parallelism of an mlp with inner_norm is not supported: the norm reads every "
                             "hidden unit, which the ranks split")
        if hidden % tp:
            raise ValueError(f"{hidden} hidden units do not split over {tp} tensor-parallel ranks; use a --tp that "
                             f"divides {hidden}")
        up = FusedColwise({"gate": hidden, "up": hidden}) if self.gated else ColwiseParallel()
        return {"up": up, "down": RowwiseParallel()}

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        h = self.up(x)
        if self.gated:
            gate, up = h.chunk(2, dim=-1)
            h = self.act(gate * self.gate_scale if self.gate_scale != 1.0 else gate, up)
        else:
            h = self.act(h)
        if self.inner_norm is not None:
            h = self.inner_norm(h, ctx)
        out = self.down(h)
        return self.drop(out) if self.drop is not None and self.training else out


class Experts(nn.Module):
    """`n` MLPs of one shape with their weights stacked, as transformers 5 stores experts:
    up (n, hidden or 2 * hidden for gated, width) and down (n, width, hidden), biases (n, ...).

    Two tensors instead of 2n Linear modules: DeepSeek-V3's 58 x 256 experts build in a fraction
    of the time, and a checkpoint's 3-D expert tensors load as they are. :meth:`grouped` runs rows
    sorted by expert, each expert on its block of rows (:func:`torch._grouped_mm` where the device
    and dtype have it, else one matmul pair per expert that has rows); :meth:`gathered` and
    :meth:`dense` are the static-shape forms torch.compile traces.
    """

    def __init__(self, n: int, width: int, hidden: int, activation: str, bias: bool, gated: bool,
                 clamp: tuple[float, float] = (1.702, 7.0)):
        super().__init__()
        self.gated, self.act = gated, gated_combine(activation, clamp) if gated else ACTIVATIONS[activation]
        up = hidden * (2 if gated else 1)
        self.up = nn.Parameter(torch.empty(n, up, width))
        self.down = nn.Parameter(torch.empty(n, width, hidden))
        self.up_bias = nn.Parameter(torch.zeros(n, up)) if bias else None
        self.down_bias = nn.Parameter(torch.zeros(n, width)) if bias else None

    def __len__(self) -> int:
        return self.up.shape[0]

    @torch.no_grad()
    def init_weights(self, init: InitScheme) -> None:
        """up as any projection, down (which writes the residual) with the residual std, zero biases."""
        self.up.normal_(0.0, init.std, generator=init.generator)
        self.down.normal_(0.0, init.residual_std, generator=init.generator)
        for bias in (self.up_bias, self.down_bias):
            if bias is not None:
                bias.zero_()

    def _activate(self, h: torch.Tensor) -> torch.Tensor:
        if self.gated:
            gate, value = h.chunk(2, dim=-1)
            return self.act(gate, value)
        return self.act(h)

    def grouped(self, rows: torch.Tensor, expert: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """rows (R, width) sorted by their expert ids `expert` (R,), `counts` (n,) rows per expert ->
        each row through its expert's MLP (R, width)."""
        if rows.shape[0] == 0:
            return torch.zeros_like(rows)
        if _grouped_mm_ok(rows, self.up):
            ends = torch.cumsum(counts, 0, dtype=torch.int32)  # group boundaries: no host sync
            h = torch._grouped_mm(rows, self.up.transpose(1, 2), offs=ends)
            if self.up_bias is not None:
                h = h + self.up_bias[expert]
            y = torch._grouped_mm(self._activate(h), self.down.transpose(1, 2), offs=ends)
            return y + self.down_bias[expert] if self.down_bias is not None else y
        # one matmul pair per expert on its contiguous block of rows (one host sync for the counts).
        # Training unbinds the stacks once, so that the backward stacks the gradients once.
        tensors = (self.up, self.up_bias, self.down, self.down_bias)
        if torch.is_grad_enabled():
            tensors = tuple(t.unbind(0) if t is not None else None for t in tensors)
        up, up_bias, down, down_bias = tensors
        outs, start = [], 0
        for e, n in enumerate(counts.tolist()):
            if n:
                h = F.linear(rows[start:start + n], up[e], up_bias[e] if up_bias is not None else None)
                outs.append(F.linear(self._activate(h), down[e], down_bias[e] if down_bias is not None else None))
            start += n
        return torch.cat(outs) if len(outs) > 1 else outs[0]

    def gathered(self, x: torch.Tensor, chosen: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """x (N, width), chosen (N, k) -> (N, k, width): each token through each of its experts, their
        weights gathered (static shapes; reads k experts per token, for a few tokens such as a decode step).
        ``scale`` (N, k): each expert's input multiplied by it first (MoE.scale_inputs)."""
        xs = x[:, None, :] if scale is None else x[:, None, :] * scale[..., None].to(x.dtype)
        h = torch.einsum("nkd,nkod->nko", xs.expand(-1, chosen.shape[1], -1), self.up[chosen])
        if self.up_bias is not None:
            h = h + self.up_bias[chosen]
        y = torch.einsum("nkh,nkoh->nko", self._activate(h), self.down[chosen])
        return y + self.down_bias[chosen] if self.down_bias is not None else y

    def dense(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """x (N, width) -> (n, N, width): every expert on every token (static shapes, for many tokens).
        ``scale`` (n, N): each expert's input multiplied by it first (MoE.scale_inputs)."""
        if scale is None:
            h = torch.einsum("nd,eod->eno", x, self.up)
        else:
            h = torch.einsum("end,eod->eno", x[None] * scale[..., None].to(x.dtype), self.up)
        if self.up_bias is not None:
            h = h + self.up_bias[:, None]
        y = torch.einsum("enh,eoh->eno", self._activate(h), self.down)
        return y + self.down_bias[:, None] if self.down_bias is not None else y


_GROUPED_MM: dict[tuple[str, torch.dtype], bool] = {}  # (device type, dtype) -> torch._grouped_mm runs there


def _grouped_mm_ok(rows: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether torch._grouped_mm runs for these operands: torch >= 2.9 has CPU and CUDA kernels for
    some dtypes (float32/bfloat16/float16 on CPU, bfloat16 on recent GPUs); under torch.compile its
    meta kernel takes bfloat16 only. Eagerly, each (device type, dtype) is probed once with a tiny call."""
    if not hasattr(torch, "_grouped_mm") or rows.dtype != weight.dtype:
        return False
    if torch.compiler.is_compiling():
        return rows.dtype == torch.bfloat16 and _GROUPED_MM.get((rows.device.type, rows.dtype), False)
    if rows.device.type == "cpu" and (rows.data_ptr() % 16 or weight.data_ptr() % 16):
        return False  # older CPU kernels need 16-byte aligned operands
    key = (rows.device.type, rows.dtype)
    if key not in _GROUPED_MM:
        try:
            a = torch.ones(2, 8, device=rows.device, dtype=rows.dtype)
            b = torch.ones(2, 8, 8, device=rows.device, dtype=rows.dtype).transpose(1, 2)
            out = torch._grouped_mm(a, b, offs=torch.tensor([1, 2], device=rows.device, dtype=torch.int32))
            _GROUPED_MM[key] = bool((out == 8).all())
        except (RuntimeError, NotImplementedError):
            _GROUPED_MM[key] = False
    return _GROUPED_MM[key]


class Linear(nn.Linear):
    """A projection, optionally followed by an activation (a head's transform)."""

    def __init__(self, width: int, out: int, bias: bool, activation: str = "none"):
        super().__init__(width, out, bias=bias)
        self.act = None if activation == "none" else torch.tanh if activation == "tanh" else ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:  # type: ignore[override]
        y = super().forward(x)
        return y if self.act is None else self.act(y)


class Dropout(nn.Dropout):
    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:  # type: ignore[override]
        if not self.training or self.p == 0.0:  # the identity, without dispatching an op (eval, inference)
            return x
        return super().forward(x)


class MoE(nn.Module):
    """Mixture of experts: a router scores `experts` MLPs (softmax, or sigmoid with an optional choice
    bias and expert groups for DeepSeek), each token is mixed from its top_k experts.

    After each forward the router logits (tokens, experts) are kept in ``router_logits`` so that
    :func:`router_aux_loss` can compute the load-balancing loss of the last forward.
    """

    def __init__(self, width: int, experts: int, top_k: int, hidden: int, activation: str, bias: bool,
                 router_bias: bool, normalize: bool, jitter: float, gated: bool, aux_loss_coef: float = 0.0,
                 shared_hidden: int | None = None, shared_gate: bool = False, scoring: str = "softmax",
                 score_bias: bool = False, groups: int = 1, top_groups: int | None = None, routed_scale: float = 1.0,
                 group_score: str = "top2_sum", router_fp32: bool = False, sparsemixer_eps: float = 0.01,
                 clamp: tuple[float, float] = (1.702, 7.0), scale_inputs: bool = False, capacity: int | None = None,
                 bias_on_logits: bool = False):
        super().__init__()
        self.bias_on_logits = bias_on_logits  # score_bias added to the logits when choosing (Kolibri 1)
        self.capacity = capacity  # tokens per expert per sequence (Switch Transformers), or None
        self.scale_inputs = scale_inputs  # the routing weight multiplies the expert's input (Llama 4), not its output
        self.num_experts, self.top_k, self.normalize, self.jitter = experts, top_k, normalize, jitter
        self.aux_loss_coef = aux_loss_coef
        self.scoring, self.groups, self.top_groups, self.routed_scale = scoring, groups, top_groups, routed_scale
        self.group_score, self.router_fp32, self.sparsemixer_eps = group_score, router_fp32, sparsemixer_eps
        if score_bias:  # a checkpoint's state (DeepSeek-V3's e_score_correction_bias), not trained by gradients
            self.register_buffer("score_bias", torch.zeros(experts))
        else:
            self.score_bias = None
        self.router = nn.Linear(width, experts, bias=router_bias)
        self.experts = Experts(experts, width, hidden, activation, bias, gated, clamp)
        self.router_logits: torch.Tensor | None = None
        # an expert every token goes through, optionally scaled by a learned sigmoid gate (Qwen2-MoE)
        self.shared = MLP(width, shared_hidden, activation, bias, 0.0, gated, clamp=clamp) if shared_hidden else None
        self.shared_gate = nn.Linear(width, 1, bias=False) if shared_gate else None

    def _apply(self, fn: Any, recurse: bool = True) -> "MoE":
        """Casts (model.to(torch.bfloat16)) leave score_bias, and with router_fp32 the router, in
        float32, as transformers keeps DeepSeek's e_score_correction_bias and gate.weight: the
        choice between experts hinges on small differences of them."""
        kept = [(self, "score_bias", self.score_bias)] if self.score_bias is not None else []
        if self.router_fp32:
            kept += [(self.router, name, p.detach()) for name, p in self.router.named_parameters()]
        super()._apply(fn, recurse)
        for owner, attr, before in kept:  # put the float32 values back, on the new device
            now = getattr(owner, attr)
            if now.dtype == torch.float32:
                continue
            device = now.device
            value = (torch.empty(before.shape, dtype=torch.float32, device=device) if before.is_meta or
                     device.type == "meta" else before.to(device=device, dtype=torch.float32))
            if isinstance(now, nn.Parameter):
                now.data = value
            else:
                setattr(owner, attr, value)
        return self

    def add_shared(self, out: torch.Tensor, flat: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        if self.shared is None:
            return out
        y = self.shared(flat, ctx)
        if self.shared_gate is not None:
            y = torch.sigmoid(self.shared_gate(flat)) * y
        return out + y.to(out.dtype)

    def route(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(router logits (N, E), top-k weights (N, k) in float32, top-k expert ids (N, k))."""
        if self.router_fp32:  # float32 logits from a float32 router whatever the stream's dtype (DeepSeek)
            logits = F.linear(flat.float(), self.router.weight.float(),
                              None if self.router.bias is None else self.router.bias.float())
        else:
            logits = self.router(flat)
        return (logits, *self.choose(logits))

    def choose(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(top-k weights (N, k) in float32, top-k expert ids (N, k)) from router logits (N, E)."""
        if self.scoring == "sparsemixer":
            return self.sparsemixer(logits.float())
        if self.scoring == "softmax" and self.score_bias is None and self.groups == 1:
            probs = torch.softmax(logits.float(), dim=-1)
            weights, chosen = torch.topk(probs, self.top_k, dim=-1)
            if self.normalize:
                weights = weights / weights.sum(dim=-1, keepdim=True)
            return weights * self.routed_scale if self.routed_scale != 1.0 else weights, chosen
        # DeepSeek-V2/V3: choose by the (biased) scores within the best groups, weight by the unbiased scores
        scores = torch.sigmoid(logits.float()) if self.scoring == "sigmoid" else torch.softmax(logits.float(), dim=-1)
        choice = scores if self.score_bias is None else (
            logits.float() if self.bias_on_logits else scores) + self.score_bias.float()
        if self.groups > 1:
            grouped = choice.view(-1, self.groups, self.num_experts // self.groups)
            group = grouped.topk(2, dim=-1).values.sum(dim=-1) if self.group_score == "top2_sum" else grouped.amax(dim=-1)
            best = group.topk(self.top_groups, dim=-1).indices  # (N, top_groups)
            keep = torch.zeros(grouped.shape[:2], dtype=torch.bool, device=logits.device).scatter(1, best, True)
            choice = grouped.masked_fill(~keep[..., None], float("-inf")).view(-1, self.num_experts)
        chosen = torch.topk(choice, self.top_k, dim=-1).indices
        weights = scores.gather(1, chosen)
        if self.normalize:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        return weights * self.routed_scale, chosen

    def sparsemixer(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """PhiMoE's routing at inference: round r picks the best expert not yet picked and weights it by its
        softmax probability among the remaining experts whose logits lie within 2 · eps (relative) of it."""
        remaining, weights, chosen = scores, [], []
        for _ in range(self.top_k):
            best, index = remaining.max(dim=-1, keepdim=True)
            far = (best - scores) / scores.abs().clamp(min=best) > 2 * self.sparsemixer_eps
            weights.append(torch.softmax(remaining.masked_fill(far, float("-inf")), dim=-1).gather(-1, index))
            chosen.append(index)
            remaining = remaining.scatter(-1, index, float("-inf"))
        return torch.cat(weights, dim=-1), torch.cat(chosen, dim=-1)

    def within_capacity(self, weights: torch.Tensor, chosen: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """The routing weights with 0 for each (token, expert) choice beyond the expert's capacity in its sequence:
        a token's place in an expert's queue is the number of tokens up to and including it, in its sequence, that
        chose that expert (Switch Transformers' cumsum of the one-hot choices along the sequence)."""
        n, e = chosen.shape[0], self.num_experts
        batch = shape[0] if len(shape) == 3 else 1
        counts = F.one_hot(chosen, e).sum(dim=1)  # (N, E): 1 where the token chose the expert
        place = counts.view(batch, n // batch, e).cumsum(dim=1).view(n, e)
        return weights * (place.gather(1, chosen) <= self.capacity)

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        shape = x.shape
        if self.training and self.jitter > 0:
            x = x * torch.empty_like(x).uniform_(1.0 - self.jitter, 1.0 + self.jitter)
        flat = x.reshape(-1, shape[-1])
        logits, weights, chosen = self.route(flat)
        self.router_logits = logits
        if self.capacity is not None:
            weights = self.within_capacity(weights, chosen, shape)
        N, k = chosen.shape
        if torch.compiler.is_compiling() and not _grouped_mm_ok(flat, self.experts.up):
            # static shapes for torch.compile(fullgraph=True): a few tokens gather their experts' weights
            # (a decode step), many run every expert densely, weighted by the routing matrix (0 elsewhere)
            if N * k < self.num_experts:
                if self.scale_inputs:
                    y = self.experts.gathered(flat, chosen, weights)
                else:
                    y = self.experts.gathered(flat, chosen) * weights[..., None]
                out = y.sum(dim=1).to(flat.dtype)
            else:
                dense = torch.zeros(N, self.num_experts, dtype=weights.dtype, device=flat.device)
                dense = dense.scatter(1, chosen, weights)
                if self.scale_inputs:  # an expert a token does not choose sees 0 and its 0 is masked out
                    out = (self.experts.dense(flat, dense.t()) * (dense.t() != 0)[..., None]).sum(dim=0).to(flat.dtype)
                else:
                    out = (self.experts.dense(flat) * dense.t()[..., None]).sum(dim=0).to(flat.dtype)
            return self.add_shared(out, flat, ctx).view(shape)
        # tokens grouped per expert: the N * k (token, expert) pairs sorted by expert (stable: tokens
        # ascending within an expert), each expert runs once on its block, and the weighted rows are
        # added back per token in ascending expert order, as transformers' loop over experts adds them
        expert = chosen.reshape(-1)
        order = torch.argsort(expert, stable=True)
        token = order // k
        counts = torch.zeros(self.num_experts, dtype=torch.long, device=flat.device)
        counts = counts.scatter_add_(0, expert, torch.ones_like(expert))
        w = weights.reshape(-1)[order, None]
        if self.scale_inputs:  # Llama 4: expert(w · x)
            y = self.experts.grouped((flat[token] * w).to(flat.dtype), expert[order], counts)
        else:
            y = self.experts.grouped(flat[token], expert[order], counts) * w
        out = torch.zeros_like(flat).index_add_(0, token, y.to(flat.dtype))
        return self.add_shared(out, flat, ctx).view(shape)


def router_aux_loss(model: nn.Module, attention_mask: torch.Tensor | None = None, *, scaled: bool = False) -> torch.Tensor:
    """The load-balancing loss of Switch Transformer / Mixtral over every `moe` layer of the last forward.

    Equal to Hugging Face's ``router_aux_loss`` (``outputs.aux_loss``): with f_e the fraction of
    top-k assignments that go to expert e and P_e its mean routing probability, over all layers
    and all real tokens (``attention_mask`` (B, S) of that forward excludes padding), the loss
    is ``experts * sum_e f_e * P_e``. ``scaled=True`` multiplies by the spec's ``aux_loss_coef``.
    """
    layers = [m for m in model.modules() if isinstance(m, MoE) and m.router_logits is not None]
    if not layers:
        return torch.zeros(())
    if any(m.scoring == "sigmoid" or m.groups > 1 for m in layers):  # sparsemixer picks the softmax's top-k too
        raise ValueError("router_aux_loss is the loss of a softmax router over all experts; this model routes with "
                         "sigmoid scores or expert groups (DeepSeek-V3 balances its load with score_bias instead)")
    experts, top_k = layers[0].num_experts, layers[0].top_k
    if any((m.num_experts, m.top_k) != (experts, top_k) for m in layers):
        raise ValueError("router_aux_loss needs every moe layer to have the same experts and top_k")
    device = layers[0].router_logits.device
    counts = torch.zeros(experts, dtype=torch.float32, device=device)
    prob_sum = torch.zeros(experts, dtype=torch.float32, device=device)
    rows = torch.zeros((), dtype=torch.float32, device=device)
    mask = None if attention_mask is None else attention_mask.reshape(-1).to(device=device, dtype=torch.float32)
    for m in layers:
        probs = torch.softmax(m.router_logits.float(), dim=-1)
        chosen = torch.topk(probs, top_k, dim=-1).indices
        weight = torch.ones(probs.shape[0], device=device) if mask is None else mask
        counts = counts.scatter_add(0, chosen.reshape(-1), weight.repeat_interleave(top_k))
        prob_sum = prob_sum + (probs * weight[:, None]).sum(dim=0)
        rows = rows + weight.sum()
    loss = experts * torch.sum((counts / rows) * (prob_sum / rows))
    return loss * layers[0].aux_loss_coef if scaled else loss


# ------------------------------------------------------------------------------------ builders
def build_mlp(node: BuildContext) -> nn.Module:
    s = node.spec
    return MLP(node.in_width, s.hidden, s.activation, s.bias, s.dropout, s.gated, s.gate_scale,
               (s.xielu_beta, s.xielu_eps), (s.swiglu_alpha, s.swiglu_limit), s.down_bias,
               s.inner_norm_eps if s.inner_norm else None)


def build_moe(node: BuildContext) -> nn.Module:
    s = node.spec
    return MoE(node.in_width, s.experts, s.top_k, s.hidden, s.activation, s.bias, s.router_bias, s.normalize,
               s.jitter, s.gated, s.aux_loss_coef, s.shared_hidden, s.shared_gate, s.scoring, s.score_bias, s.groups,
               s.top_groups, s.routed_scale, s.group_score, s.router_fp32, s.sparsemixer_eps,
               (s.swiglu_alpha, s.swiglu_limit), s.scale_inputs, s.capacity, s.bias_on_logits)


def build_linear(node: BuildContext) -> nn.Module:
    return Linear(node.in_width, node.spec.out, bias=node.spec.bias, activation=node.spec.activation)


def build_dropout(node: BuildContext) -> nn.Module:
    return Dropout(node.spec.p)
