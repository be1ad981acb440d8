"""A minimal hand-written decoder, nanoGPT style: the baseline archdsl must match.

Two flavours in ~150 lines of plain PyTorch:

* ``style="gpt"``   - GPT-2: learned positions, LayerNorm, fused qkv, GELU(tanh) MLP, biases, tied head;
* ``style="llama"`` - Llama: RMSNorm, rotary (rotate halves), grouped-query attention, SwiGLU with a
  fused [gate; up] projection, no biases, untied head.

Both use one fused qkv ``nn.Linear`` and one ``F.scaled_dot_product_attention`` call per layer, i.e.
what a careful person writes by hand. ``load_archdsl_weights`` copies an archdsl model's weights in
(the parameter shapes are the same, only the names differ) and ``from_archdsl`` builds the reference
next to an archdsl model and checks that both give the same logits.

The reference also has a static KV cache and a greedy ``generate`` so that decoding can be compared.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class RefConfig:
    style: str  # "gpt" or "llama"
    vocab: int
    d_model: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    context: int = 1024  # learned positions (gpt)
    eps: float = 1e-5
    rope_theta: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads


class Attention(nn.Module):
    def __init__(self, cfg: RefConfig, bias: bool):
        super().__init__()
        self.h, self.kv, self.hd = cfg.heads, cfg.kv_heads, cfg.head_dim
        self.qkv = nn.Linear(cfg.d_model, (self.h + 2 * self.kv) * self.hd, bias=bias)
        self.proj = nn.Linear(self.h * self.hd, cfg.d_model, bias=bias)

    def forward(self, x, rope=None, cache=None, layer=0, start=0):
        B, S, _ = x.shape
        q, k, v = self.qkv(x).split([self.h * self.hd, self.kv * self.hd, self.kv * self.hd], dim=-1)
        q = q.view(B, S, self.h, self.hd).transpose(1, 2)
        k = k.view(B, S, self.kv, self.hd).transpose(1, 2)
        v = v.view(B, S, self.kv, self.hd).transpose(1, 2)
        if rope is not None:
            cos, sin = rope
            q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        if cache is not None:  # static cache: write [start, start + S), attend over [0, start + S)
            keys, values = cache[layer]
            keys[:, :, start:start + S] = k
            values[:, :, start:start + S] = v
            k, v = keys[:, :, :start + S], values[:, :, :start + S]
        # a prompt starting at 0 is plainly causal; one new token sees every cached key
        y = F.scaled_dot_product_attention(q, k, v, is_causal=S > 1, enable_gqa=self.kv != self.h)
        return self.proj(y.transpose(1, 2).reshape(B, S, self.h * self.hd))


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Block(nn.Module):
    def __init__(self, cfg: RefConfig):
        super().__init__()
        self.llama = cfg.style == "llama"
        d = cfg.d_model
        if self.llama:
            self.norm1, self.norm2 = nn.RMSNorm(d, eps=cfg.eps), nn.RMSNorm(d, eps=cfg.eps)
            self.fc = nn.Linear(d, 2 * cfg.ffn, bias=False)  # [gate; up]
            self.fc_out = nn.Linear(cfg.ffn, d, bias=False)
        else:
            self.norm1, self.norm2 = nn.LayerNorm(d, eps=cfg.eps), nn.LayerNorm(d, eps=cfg.eps)
            self.fc = nn.Linear(d, cfg.ffn)
            self.fc_out = nn.Linear(cfg.ffn, d)
        self.attn = Attention(cfg, bias=not self.llama)

    def forward(self, x, rope=None, cache=None, layer=0, start=0):
        x = x + self.attn(self.norm1(x), rope, cache, layer, start)
        h = self.fc(self.norm2(x))
        if self.llama:
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        else:
            h = F.gelu(h, approximate="tanh")
        return x + self.fc_out(h)


class ReferenceGPT(nn.Module):
    def __init__(self, cfg: RefConfig):
        super().__init__()
        assert cfg.style in ("gpt", "llama")
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab, cfg.d_model)
        self.wpe = nn.Embedding(cfg.context, cfg.d_model) if cfg.style == "gpt" else None
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm_f = nn.LayerNorm(cfg.d_model, eps=cfg.eps) if cfg.style == "gpt" else nn.RMSNorm(cfg.d_model, eps=cfg.eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab, bias=False)
        if cfg.style == "gpt":
            self.lm_head.weight = self.wte.weight  # tied
        else:
            hd = cfg.head_dim
            self.register_buffer("inv_freq", 1.0 / cfg.rope_theta ** (torch.arange(0, hd, 2).float() / hd), persistent=False)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2's scaled init of the residual projections
            if name.endswith(("proj.weight", "fc_out.weight")):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.layers))

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, tokens, cache=None, start=0, last_only=False):
        B, S = tokens.shape
        x = self.wte(tokens)
        rope = None
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(start, start + S, device=tokens.device))
        else:
            t = torch.arange(start, start + S, device=tokens.device, dtype=torch.float32)
            freqs = torch.outer(t, self.inv_freq)
            emb = torch.cat((freqs, freqs), dim=-1)
            rope = (emb.cos().to(x.dtype), emb.sin().to(x.dtype))  # (S, hd), broadcast over (B, H)
        for i, block in enumerate(self.blocks):
            x = block(x, rope, cache, i, start)
        x = self.norm_f(x)
        if last_only:
            x = x[:, -1:]
        return self.lm_head(x)

    def new_cache(self, batch: int, max_len: int):
        c, p = self.cfg, self.lm_head.weight
        shape = (batch, c.kv_heads, max_len, c.head_dim)
        return [(torch.zeros(shape, device=p.device, dtype=p.dtype), torch.zeros(shape, device=p.device, dtype=p.dtype))
                for _ in range(c.layers)]

    @torch.no_grad()
    def generate(self, tokens, max_new_tokens: int):
        """Greedy decoding through a static KV cache (prompt in one forward, then one token per step)."""
        B, S = tokens.shape
        cache = self.new_cache(B, S + max_new_tokens)
        out = torch.empty(B, S + max_new_tokens, dtype=torch.long, device=tokens.device)
        out[:, :S] = tokens
        logits = self(tokens, cache, 0, last_only=True)[:, -1]
        for step in range(max_new_tokens):
            token = logits.argmax(-1)
            out[:, S + step] = token
            if step + 1 < max_new_tokens:
                logits = self(token[:, None], cache, S + step, last_only=True)[:, -1]
        return out


# ------------------------------------------------------------------------------------------- weights
def archdsl_key_map(cfg: RefConfig) -> dict[str, str]:
    """reference parameter name -> archdsl state_dict key, for the GPT-2 and Llama specs of specs/."""
    m: dict[str, str] = {}
    if cfg.style == "gpt":
        m["wte.weight"], m["wpe.weight"] = "wte.weight", "wpe.weight"
        stack, norm1, norm2, final = "h", "layernorm", "layernorm", "ln_f"
    else:
        m["wte.weight"], m["lm_head.weight"] = "embed_tokens.weight", "lm_head.weight"
        stack, norm1, norm2, final = "layers", "input_norm", "post_attention_norm", "norm"
    params = ("weight", "bias") if cfg.style == "gpt" else ("weight",)
    for i in range(cfg.layers):
        a, b, r = f"{stack}.{i}.residual_0.", f"{stack}.{i}.residual_1.", f"blocks.{i}."
        for p in params:
            m[f"{r}norm1.{p}"] = f"{a}{norm1}.{p}"
            m[f"{r}attn.qkv.{p}"] = f"{a}attention.qkv.{p}"
            m[f"{r}attn.proj.{p}"] = f"{a}attention.out.{p}"
            m[f"{r}norm2.{p}"] = f"{b}{norm2}.{p}"
            m[f"{r}fc.{p}"] = f"{b}mlp.up.{p}"
            m[f"{r}fc_out.{p}"] = f"{b}mlp.down.{p}"
    for p in params:
        m[f"norm_f.{p}"] = f"{final}.{p}"
    return m


@torch.no_grad()
def load_archdsl_weights(ref: ReferenceGPT, arch_model: nn.Module) -> ReferenceGPT:
    """Copy every parameter of an archdsl model into the reference (strict: every name must map)."""
    source = arch_model.state_dict()
    mapping = archdsl_key_map(ref.cfg)
    own = dict(ref.named_parameters())  # a tied lm_head appears once, as wte.weight
    missing = set(own) - set(mapping)
    assert not missing, f"reference parameters without an archdsl key: {sorted(missing)}"
    for name, param in own.items():
        value = source[mapping[name]]
        assert value.shape == param.shape, f"{name}: {tuple(value.shape)} vs archdsl {tuple(param.shape)}"
        param.copy_(value)
    return ref


def from_archdsl(arch_model: nn.Module, cfg: RefConfig, *, check: bool = True, atol: float = 1e-4) -> ReferenceGPT:
    """A reference model holding the archdsl model's weights; asserts equal logits on random tokens."""
    p = next(arch_model.parameters())
    ref = ReferenceGPT(cfg).to(device=p.device, dtype=p.dtype)
    load_archdsl_weights(ref, arch_model)
    if check:
        assert_same_logits(arch_model, ref, cfg.vocab, atol=atol)
    return ref


@torch.no_grad()
def assert_same_logits(a: nn.Module, b: nn.Module, vocab: int, *, atol: float = 1e-4, seq: int = 16) -> float:
    """Max |a(tokens) - b(tokens)| on random tokens in eval mode (a Hugging Face output's .logits); raises
    when above atol."""
    device = next(a.parameters()).device
    tokens = torch.randint(0, vocab, (2, seq), generator=torch.Generator().manual_seed(0)).to(device)
    was = a.training, b.training
    a.eval(), b.eval()
    try:
        diff = (_logits(a(tokens)).float() - _logits(b(tokens)).float()).abs().max().item()
    finally:
        a.train(was[0]), b.train(was[1])
    assert diff <= atol, f"outputs differ by {diff:.3g} > {atol}"
    return diff


def _logits(out):
    return getattr(out, "logits", out)
