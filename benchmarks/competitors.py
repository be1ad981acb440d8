"""The models archdsl is measured against, built at the same shape as an archdsl model.

* Hugging Face ``transformers``: ``GPT2LMHeadModel`` / ``LlamaForCausalLM`` from configs of the same shape,
  with the archdsl model's weights copied in (so the logits match; checked), attention "eager" or "sdpa".
* ``x-transformers``: ``TransformerWrapper(Decoder(...))`` of the same shape with its own weights (its
  parameter layout differs: no weight copy; its parameter count is reported next to archdsl's).

Every builder returns None when its package is not installed.
"""
from __future__ import annotations

import importlib.util
from typing import Any

import torch
from torch import nn

from reference_gpt import RefConfig

HAVE_HF = importlib.util.find_spec("transformers") is not None
HAVE_XT = importlib.util.find_spec("x_transformers") is not None


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for name in ("torch", "transformers", "x-transformers", "matplotlib"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


# ------------------------------------------------------------------------------------- Hugging Face
def hf_config(cfg: RefConfig, attn: str):
    if cfg.style == "gpt":
        from transformers import GPT2Config
        c = GPT2Config(vocab_size=cfg.vocab, n_positions=cfg.context, n_embd=cfg.d_model, n_layer=cfg.layers,
                       n_head=cfg.heads, n_inner=cfg.ffn, activation_function="gelu_new", resid_pdrop=0.0,
                       embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=cfg.eps, use_cache=False, bos_token_id=None, eos_token_id=None,
                       tie_word_embeddings=True)
    else:
        from transformers import LlamaConfig
        c = LlamaConfig(vocab_size=cfg.vocab, hidden_size=cfg.d_model, intermediate_size=cfg.ffn,
                        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads,
                        max_position_embeddings=cfg.context, rms_norm_eps=cfg.eps, rope_theta=cfg.rope_theta,
                        tie_word_embeddings=False, attention_bias=False, mlp_bias=False, use_cache=False)
    c._attn_implementation = attn
    return c


def hf_model(cfg: RefConfig, attn: str, device: Any = "cpu"):
    """A randomly initialised HF model of the shape (construction includes HF's own init)."""
    from transformers import GPT2LMHeadModel, LlamaForCausalLM
    cls = GPT2LMHeadModel if cfg.style == "gpt" else LlamaForCausalLM
    with torch.device(device):
        model = cls(hf_config(cfg, attn))
    assert model.config._attn_implementation == attn, model.config._attn_implementation
    return model


def hf_deepseek_v3(layers: int | None = None, device: Any = "meta"):
    """transformers' DeepSeek-V3 (DeepseekV3Config defaults = the 671B model), optionally fewer layers."""
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM
    cfg = DeepseekV3Config(**({"num_hidden_layers": layers} if layers else {}))
    cfg._attn_implementation = "sdpa"
    with torch.device(device):
        return DeepseekV3ForCausalLM(cfg)


@torch.no_grad()
def load_archdsl_into_hf(hf: nn.Module, arch: nn.Module, cfg: RefConfig) -> nn.Module:
    sd = arch.state_dict()
    own = dict(hf.named_parameters())
    done = set()

    def put(name: str, value: torch.Tensor) -> None:
        assert own[name].shape == value.shape, f"{name}: {tuple(own[name].shape)} vs {tuple(value.shape)}"
        own[name].copy_(value)
        done.add(name)

    d, hd = cfg.d_model, cfg.head_dim
    if cfg.style == "gpt":  # HF GPT-2 uses Conv1D: weights stored (in, out), the transpose of nn.Linear's
        put("transformer.wte.weight", sd["wte.weight"])
        put("transformer.wpe.weight", sd["wpe.weight"])
        for i in range(cfg.layers):
            a, b, t = f"h.{i}.residual_0.", f"h.{i}.residual_1.", f"transformer.h.{i}."
            for p in ("weight", "bias"):
                put(t + f"ln_1.{p}", sd[a + f"layernorm.{p}"])
                put(t + f"ln_2.{p}", sd[b + f"layernorm.{p}"])
            put(t + "attn.c_attn.weight", sd[a + "attention.qkv.weight"].T)
            put(t + "attn.c_attn.bias", sd[a + "attention.qkv.bias"])
            put(t + "attn.c_proj.weight", sd[a + "attention.out.weight"].T)
            put(t + "attn.c_proj.bias", sd[a + "attention.out.bias"])
            put(t + "mlp.c_fc.weight", sd[b + "mlp.up.weight"].T)
            put(t + "mlp.c_fc.bias", sd[b + "mlp.up.bias"])
            put(t + "mlp.c_proj.weight", sd[b + "mlp.down.weight"].T)
            put(t + "mlp.c_proj.bias", sd[b + "mlp.down.bias"])
        put("transformer.ln_f.weight", sd["ln_f.weight"])
        put("transformer.ln_f.bias", sd["ln_f.bias"])
        assert hf.lm_head.weight is hf.transformer.wte.weight
    else:
        put("model.embed_tokens.weight", sd["embed_tokens.weight"])
        for i in range(cfg.layers):
            a, b, t = f"layers.{i}.residual_0.", f"layers.{i}.residual_1.", f"model.layers.{i}."
            put(t + "input_layernorm.weight", sd[a + "input_norm.weight"])
            q, k, v = sd[a + "attention.qkv.weight"].split([cfg.heads * hd, cfg.kv_heads * hd, cfg.kv_heads * hd])
            put(t + "self_attn.q_proj.weight", q)
            put(t + "self_attn.k_proj.weight", k)
            put(t + "self_attn.v_proj.weight", v)
            put(t + "self_attn.o_proj.weight", sd[a + "attention.out.weight"])
            put(t + "post_attention_layernorm.weight", sd[b + "post_attention_norm.weight"])
            gate, up = sd[b + "mlp.up.weight"].chunk(2)
            put(t + "mlp.gate_proj.weight", gate)
            put(t + "mlp.up_proj.weight", up)
            put(t + "mlp.down_proj.weight", sd[b + "mlp.down.weight"])
        put("model.norm.weight", sd["norm.weight"])
        put("lm_head.weight", sd["lm_head.weight"])
    left = set(own) - done
    assert not left, f"HF parameters not copied: {sorted(left)}"
    return hf


def hf_from_archdsl(arch: nn.Module, cfg: RefConfig, attn: str) -> nn.Module | None:
    if not HAVE_HF:
        return None
    p = next(arch.parameters())
    hf = hf_model(cfg, attn, device=p.device).to(p.dtype)
    load_archdsl_into_hf(hf, arch, cfg)
    from reference_gpt import assert_same_logits
    assert_same_logits(arch, hf, cfg.vocab)
    return hf


# ----------------------------------------------------------------------------------- x-transformers
def xt_model(cfg: RefConfig, device: Any = "cpu") -> nn.Module | None:
    """x-transformers at the same shape; its own initialisation (no weight copy)."""
    if not HAVE_XT:
        return None
    from x_transformers import Decoder, TransformerWrapper
    common = dict(dim=cfg.d_model, depth=cfg.layers, heads=cfg.heads, attn_dim_head=cfg.head_dim, attn_flash=True,
                  ff_mult=cfg.ffn / cfg.d_model)
    with torch.device(device):
        if cfg.style == "gpt":
            layers = Decoder(**common)
            return TransformerWrapper(num_tokens=cfg.vocab, max_seq_len=cfg.context, attn_layers=layers,
                                      tie_embedding=True)
        layers = Decoder(**common, attn_kv_heads=cfg.kv_heads, rotary_pos_emb=True, use_rmsnorm=True, ff_glu=True,
                         ff_swish=True, ff_no_bias=True, rotary_emb_dim=cfg.head_dim)
        return TransformerWrapper(num_tokens=cfg.vocab, max_seq_len=cfg.context, attn_layers=layers,
                                  use_abs_pos_emb=False)


def xt_generate(model: nn.Module, prompt: torch.Tensor, new: int) -> torch.Tensor:
    from x_transformers import AutoregressiveWrapper
    wrapper = AutoregressiveWrapper(model)
    return wrapper.generate(prompt, new, temperature=0.0, cache_kv=True)
