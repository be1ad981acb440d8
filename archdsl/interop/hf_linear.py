"""Hugging Face interop for the hybrids of linear-recurrent or convolutional mixers and attention:
Qwen3-Next (gated DeltaNet + gated attention + MoE), LFM2 (short convolutions + attention),
RecurrentGemma (Griffin's RG-LRU blocks + local attention) and MiniMax (lightning attention +
softmax attention + MoE, norms before residuals that carry the normalised stream).

    from archdsl.interop import hf
    spec = hf.spec_from_config(qwen3_next_config)     # dispatched here by model_type
    model = hf.from_hf(hf_model)                      # spec + weights, as for every family
    model = hf.from_pretrained("path/to/checkpoint")  # config.json + *.safetensors, offline

The spec is readable YAML: one block per layer kind (its mixer, and for Qwen3-Next whether its MLP
is sparse), and the layer sequence as few ``repeat``s with ``pattern``s as cover it (Qwen3-Next's
three DeltaNet layers per attention layer is one repeat; LFM2-1.2B's irregular attention layers
are two). Module names are the checkpoint's (``input_layernorm``, ``linear_attn``, ``self_attn``,
``mlp``, ``operator_norm``, ``conv``, ``temporal_block`` ...), so each archdsl parameter finds its
tensor at ``model.layers.<i>.<name>``; the layer index comes from the IR (archdsl.ir.layer_numbering).
Layout conversions: q/k/v are concatenated into archdsl's fused ``qkv``; Qwen3-Next's q_proj
interleaves each head's query and output gate ([q; gate] per head) and its in_proj_qkvz / in_proj_ba
interleave q, k, v, z (b, a) per query/key head; gate and up projections are concatenated; experts
stored one module per expert (checkpoints on disk) are stacked. Every archdsl parameter must be
filled and every checkpoint tensor used.
"""
from __future__ import annotations

import struct
import textwrap
from pathlib import Path
from typing import Any, Callable, Mapping

__all__ = ["LINEAR_MODEL_TYPES", "is_linear", "spec_yaml_from_config", "spec_from_config", "map_weights", "from_hf",
           "from_pretrained"]

LINEAR_MODEL_TYPES = ("qwen3_next", "qwen3_5_text", "qwen3_5_moe_text", "lfm2", "recurrent_gemma", "minimax")


def is_linear(cfg: Any) -> bool:
    return getattr(cfg, "model_type", None) in LINEAR_MODEL_TYPES or _deltanet_tree(cfg) is not None


def _deltanet_tree(cfg: Any) -> Any:
    """The transformers model (on meta) of a config whose layers mix attention with Qwen3.5's gated DeltaNet (a
    linear_attn holding in_proj_qkv, in_proj_z, in_proj_b and in_proj_a), whatever its model_type (Lara-mini);
    else None. Only configs whose layer_types name linear-attention layers are built."""
    types = getattr(cfg, "layer_types", None)
    if not isinstance(types, (list, tuple)) or "linear_attention" not in types:
        return None
    try:
        from .hf_probe import _layers
        from .hf_verify import transformers_model_on_meta

        model = transformers_model_on_meta(cfg)
    except Exception:  # noqa: BLE001 - no class for it, or one that cannot be built
        return None
    mixers = [getattr(layer, "linear_attn", None) for layer in _layers(model)]
    layouts = (("in_proj_qkv", "in_proj_z", "in_proj_b", "in_proj_a"),  # Qwen3.5's
               ("q_proj", "k_proj", "v_proj", "a_proj", "b_proj", "g_proj", "o_norm"))  # OLMo-hybrid's
    if not any(m is not None and any(all(hasattr(m, n) for n in names) for names in layouts) for m in mixers):
        return None
    return model


# ---------------------------------------------------------------------------------------- config -> YAML
def _bfloat16(x: float) -> float:
    """x rounded to bfloat16 (to nearest, ties to even), as a Python float."""
    bits = struct.unpack("<I", struct.pack("<f", x))[0]
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def _rotary(cfg: Any) -> tuple[float, float]:
    """(theta, fraction) of a plain rotary embedding; other rope types are refused by name."""
    from .hf import _rope, _unsupported

    rope = _rope(cfg) or {}
    kind = rope.get("rope_type", "default")
    if kind != "default":
        raise _unsupported(cfg, "rope_parameters", f"rope_type '{kind}' in a {cfg.model_type} model",
                           "archdsl imports these hybrids with plain rotary positions")
    return float(rope.get("rope_theta", 10000.0)), float(rope.get("partial_rotary_factor", 1.0))


def _repeats(kinds: list[str], longest: int = 8) -> list[tuple[int, int, list[str]]]:
    """(first layer, layers, pattern) runs covering `kinds`: from each start, the period (≤ longest)
    whose pattern covers the most layers, so a regular hybrid is one repeat and an irregular one few."""
    runs, start = [], 0
    while start < len(kinds):
        best = (0, 1)
        for period in range(1, min(longest, len(kinds) - start) + 1):
            end = start + period
            while end < len(kinds) and kinds[end] == kinds[start + (end - start) % period]:
                end += 1
            if end - start > best[0] or (end - start == best[0] and period < best[1]):
                best = (end - start, period)
        length, period = best
        runs.append((start, length, kinds[start:start + period]))
        start += length
    return runs


def _document(cfg: Any, description: str, variables: dict[str, Any], blocks: dict[str, list[str]],
              kinds: list[str], head: list[str], tail: list[str]) -> str:
    from .hf import _scalar, _spec_name

    lines = [f"# Written by archdsl from a Hugging Face '{cfg.model_type}' config; edit freely.", "archdsl: 1",
             f"name: {_scalar(_spec_name(cfg))}", "description: >"]
    lines += ["  " + line for line in textwrap.wrap(description, 94)]
    lines += ["vars:"] + [f"  {k}: {_scalar(v)}" for k, v in variables.items()]
    lines += ["", "blocks:"]
    for name, body in blocks.items():
        lines += [f"  {name}:"] + ["    " + line for line in body]
    lines += ["", "model:", "  width: $d_model", "  layers:"] + ["    " + line for line in head]
    runs = _repeats(kinds)
    for start, times, pattern in runs:
        count = "$layers" if len(runs) == 1 else str(times)
        lines += [f"    - repeat: {count}", f"      name: {'layers' if start == 0 else f'layers_{start}'}"]
        lines += [f"      body: {pattern[0]}"] if len(pattern) == 1 else [f"      pattern: [{', '.join(pattern)}]"]
    lines += ["    " + line for line in tail]
    return "\n".join(lines) + "\n"


# sizes of the small random model that _nope_types runs (the layer types kept)
_SMALL_DELTANET = {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
                   "intermediate_size": 64, "moe_intermediate_size": 32, "shared_expert_intermediate_size": 32,
                   "num_experts": 4, "num_experts_per_tok": 2, "linear_num_key_heads": 2, "linear_key_head_dim": 16,
                   "linear_num_value_heads": 4, "linear_value_head_dim": 16}


def _nope_types(cfg: Any) -> frozenset[str]:
    """The attention layer types that a Qwen3.5-layout model runs without rotary positions (Lara-mini's full
    attention layers: its model passes them none, which neither its config nor its attention module says), from
    behaviour: a small random model of the class against the spec written with each choice, on the same weights."""
    import itertools

    import torch
    import transformers

    from .hf import _assign, _build, _unsupported
    from ..loader import load_spec
    from .hf_probe import small_random_model

    kinds = sorted({t for t in cfg.layer_types if t != "linear_attention"})
    sizes = dict(_SMALL_DELTANET)  # the value heads per key head and value width per key width kept
    sizes["linear_num_value_heads"] = 2 * max(1, cfg.linear_num_value_heads // cfg.linear_num_key_heads)
    sizes["linear_value_head_dim"] = 16 * max(1, cfg.linear_value_head_dim // cfg.linear_key_head_dim)
    small, model = small_random_model(cfg, sizes, transformers.AutoModelForCausalLM.from_config)
    tokens = torch.arange(3, 13)[None] % int(small.vocab_size)
    state = model.state_dict()
    with torch.no_grad():
        theirs = model(tokens, use_cache=False).logits
        diffs = {}
        for n in range(len(kinds) + 1):
            for nope in map(frozenset, itertools.combinations(kinds, n)):
                ours = _build(load_spec(_qwen3_next(small, nope)), torch.float32, "cpu")
                _assign(ours, map_weights(small, {k: (lambda t=t: t) for k, t in state.items()}, ours))
                diffs[nope] = (ours.eval()(tokens) - theirs).abs().max().item() / max(1.0, theirs.abs().max().item())
                if diffs[nope] <= 1e-4:
                    return nope
    raise _unsupported(cfg, "model_type", f"a small random '{cfg.model_type}' model differs from its description by "
                       f"{min(diffs.values()):.3g} with or without rotary positions in each attention layer type")


def _qwen3_next(cfg: Any, nope: frozenset[str] | None = None) -> str:
    from .hf import _unsupported

    if cfg.hidden_act != "silu":
        raise _unsupported(cfg, "hidden_act", f"hidden_act '{cfg.hidden_act}' (Qwen3-Next's convolution and MLPs use "
                           "SiLU)")
    from .hf_probe import _layers, norm_traits, router_traits
    from .hf_verify import transformers_model_on_meta

    theta, fraction = _rotary(cfg)
    layers = cfg.num_hidden_layers
    # read from the model's tree (on meta): which layers route to experts, the norms' scale (w or 1 + w), whether
    # the attention gates its output (q_proj twice as wide), a gate on the shared expert, how the router weighs
    tree = _layers(transformers_model_on_meta(cfg))
    sparse = [hasattr(layer.mlp, "experts") for layer in tree]
    unit_offset = bool(norm_traits(next(layer.input_layernorm for layer in tree if hasattr(layer, "input_layernorm"))
                                   ).get("unit_offset", True))
    attn_layer = next((layer for layer in tree if hasattr(layer, "self_attn")), None)  # none: every layer linear
    attn = getattr(attn_layer, "self_attn", None)
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
    output_gate = attn is not None and attn.q_proj.out_features == 2 * cfg.num_attention_heads * head_dim
    # one weight per value of all heads (OLMo's) or per head dim
    qk_width = attn is not None and attn.q_norm.weight.shape[0] != head_dim
    mixer_tree = next(layer.linear_attn for layer in tree if hasattr(layer, "linear_attn"))
    gated_norm = getattr(mixer_tree, "norm", None) or getattr(mixer_tree, "o_norm", None)
    norm_eps = float(getattr(gated_norm, "variance_epsilon", None) or getattr(gated_norm, "eps", None) or cfg.rms_norm_eps)
    # OLMo 2's attention layers: no norm before a sub-layer, one after it inside its residual
    post_norms = not hasattr(attn_layer, "input_layernorm") and hasattr(attn_layer, "post_feedforward_layernorm")
    moe_tree = next((layer.mlp for layer in tree if hasattr(layer.mlp, "experts")), None)
    shared_gate = moe_tree is not None and getattr(moe_tree, "shared_expert_gate", None) is not None
    routing = router_traits(cfg, moe_tree).get("routing") if moe_tree is not None else None
    if isinstance(routing, dict) and (routing["scoring"] != "softmax" or routing["score_bias"] or routing["groups"] > 1
                                      or routing["routed_scale"] != 1.0):
        raise _unsupported(cfg, "model_type", "a router other than a softmax over the experts")
    normalize = routing["normalize"] if isinstance(routing, dict) else bool(getattr(cfg, "norm_topk_prob", False))
    aux_coef = getattr(cfg, "router_aux_loss_coef", 0.0) or 0.0
    if any(sparse) and not cfg.shared_expert_intermediate_size:
        raise _unsupported(cfg, "shared_expert_intermediate_size", "a zero-width shared expert")
    mixers = {"linear_attention": "linear", "full_attention": "attention", "sliding_attention": "local"}
    if nope is None:  # Qwen's rotate in every attention layer; another family's is probed
        nope = frozenset() if cfg.model_type in LINEAR_MODEL_TYPES else _nope_types(cfg)
    for i, kind in enumerate(cfg.layer_types):
        if kind not in mixers:
            raise _unsupported(cfg, f"layer_types[{i}]", f"the layer type '{kind}'")
    ffn_kinds = {("moe" if s else "dense") for s in sparse}
    kinds = [f"{mixers[t]}_layer" if len(ffn_kinds) == 1 else f"{mixers[t]}_{'moe' if s else 'dense'}_layer"
             for t, s in zip(cfg.layer_types, sparse)]
    v: dict[str, Any] = {"vocab": cfg.vocab_size, "context": cfg.max_position_embeddings, "d_model": cfg.hidden_size,
                         "layers": layers, "heads": cfg.num_attention_heads, "kv_heads": cfg.num_key_value_heads,
                         "head_dim": head_dim, "rotary_fraction": fraction, "rope_theta": theta,
                         "linear_heads": cfg.linear_num_key_heads, "linear_head_dim": cfg.linear_key_head_dim,
                         "linear_value_heads": cfg.linear_num_value_heads,
                         "linear_value_dim": cfg.linear_value_head_dim, "conv_kernel": cfg.linear_conv_kernel_dim}
    if "sliding_attention" in cfg.layer_types:
        v["local_window"] = cfg.sliding_window
    if "dense" in ffn_kinds:
        v["ffn"] = cfg.intermediate_size
    if "moe" in ffn_kinds:
        v.update(experts=cfg.num_experts, top_k=cfg.num_experts_per_tok, moe_ffn=cfg.moe_intermediate_size,
                 shared_ffn=cfg.shared_expert_intermediate_size)
    v["eps"] = cfg.rms_norm_eps
    if norm_eps != cfg.rms_norm_eps:  # the DeltaNet's gated norm's own (OLMo-hybrid's 1e-5)
        v["linear_norm_eps"] = norm_eps
    norm = "rmsnorm: {eps: $eps" + (", unit_offset: true" if unit_offset else "") + ", name: %s}"
    bias = ", bias: true" if cfg.attention_bias else ", bias: false"
    dropout = f", dropout: {cfg.attention_dropout}" if cfg.attention_dropout else ""
    mixer = {
        "linear": "gated_deltanet: {heads: $linear_heads, head_dim: $linear_head_dim, value_heads: $linear_value_heads, "
                  "value_dim: $linear_value_dim, conv_kernel: $conv_kernel, norm_eps: "
                  + ("$linear_norm_eps" if norm_eps != cfg.rms_norm_eps else "$eps")
                  + (", allow_neg_eigval: true" if getattr(cfg, "linear_allow_neg_eigval", False) else "")
                  + ", name: linear_attn}",
        "attention": "attention: {heads: $heads, kv_heads: $kv_heads, head_dim: $head_dim, causal: true" + bias + dropout
                     + ", qk_norm: true, qk_norm_eps: $eps" + (", qk_norm_unit_offset: true" if unit_offset else "")
                     + (", qk_norm_over: width" if qk_width else "")
                     + (", output_gate: true" if output_gate else "") + ", name: self_attn}",
    }
    mixer["local"] = mixer["attention"].replace(", name: self_attn}", ", window: $local_window, name: self_attn}")
    for kind, key in (("full_attention", "attention"), ("sliding_attention", "local")):
        if kind in nope:  # no rotary positions in these layers (Lara-mini's full ones)
            mixer[key] = mixer[key].replace(", name: self_attn}", ", nope: true, name: self_attn}")
    aux = f", aux_loss_coef: {aux_coef}" if aux_coef else ""
    ffn = {
        "moe": "moe: {experts: $experts, top_k: $top_k, hidden: $moe_ffn, activation: swiglu, shared_hidden: "
               f"$shared_ffn{', shared_gate: true' if shared_gate else ''}, normalize: {str(normalize).lower()}{aux}, "
               "name: mlp}",
        "dense": "mlp: {hidden: $ffn, activation: swiglu, bias: false, name: mlp}",
    }
    blocks: dict[str, list[str]] = {}
    for kind, (t, s) in zip(kinds, zip(cfg.layer_types, sparse)):
        if post_norms and t != "linear_attention":  # x + norm(attention(x)), h + norm(mlp(h))
            blocks.setdefault(kind, ["- residual:", "    - " + mixer[mixers[t]], "    - " + norm % "post_attention_layernorm",
                                     "- residual:", "    - " + ffn["moe" if s else "dense"],
                                     "    - " + norm % "post_feedforward_layernorm"])
            continue
        blocks.setdefault(kind, ["- residual:", "    - " + norm % "input_layernorm", "    - " + mixer[mixers[t]],
                                 "- residual:", "    - " + norm % "post_attention_layernorm",
                                 "    - " + ffn["moe" if s else "dense"]])
    n_linear = sum(t == "linear_attention" for t in cfg.layer_types)
    description = (f"Imported from a Hugging Face '{cfg.model_type}' config: {n_linear} of {layers} layers gated DeltaNet "
                   f"({cfg.linear_num_key_heads} query/key heads of {cfg.linear_key_head_dim}, "
                   f"{cfg.linear_num_value_heads} value heads of {cfg.linear_value_head_dim}), the others "
                   + ("gated " if output_gate else "") + ("" if "sliding_attention" not in cfg.layer_types else
                                                          f"sliding-window ({cfg.sliding_window}) or full ")
                   + f"attention ({cfg.num_attention_heads} heads, {cfg.num_key_value_heads} kv, rotary on "
                   f"{fraction:g} of each head); "
                   + (f"MoE of {cfg.num_experts} experts, top {cfg.num_experts_per_tok}, with a "
                      + ("gated " if shared_gate else "") + "shared expert; " if "moe" in ffn_kinds else "")
                   + ("RMSNorms as (1 + w)." if unit_offset else "RMSNorms.")
                   + (" The text model: its multimodal rotary sections (mrope_section) all see a text token's one "
                      "position, which makes them plain rotary." if cfg.model_type.startswith("qwen3_5") else ""))
    head = ["- embedding: {name: embed_tokens, vocab: $vocab}",
            "- positional: {kind: rotary, base: $rope_theta, fraction: $rotary_fraction, max_len: $context}"]
    tail = ["- rmsnorm: {eps: $eps" + (", unit_offset: true" if unit_offset else "") + ", name: norm}",
            "- lm_head: {vocab: $vocab" + (", tie: embed_tokens}" if cfg.tie_word_embeddings else "}")]
    return _document(cfg, description, v, blocks, kinds, head, tail)


def _lfm2_ffn(cfg: Any) -> int:
    """Lfm2MLP's inner width: 2/3 of intermediate_size, times the multiplier, rounded up to multiple_of."""
    size = cfg.intermediate_size
    if cfg.block_auto_adjust_ff_dim:
        size = int(2 * size / 3)
        if cfg.block_ffn_dim_multiplier is not None:
            size = int(cfg.block_ffn_dim_multiplier * size)
            size = cfg.block_multiple_of * ((size + cfg.block_multiple_of - 1) // cfg.block_multiple_of)
    return size


def _lfm2(cfg: Any) -> str:
    from .hf import _unsupported

    theta, fraction = _rotary(cfg)
    if fraction != 1.0:
        raise _unsupported(cfg, "rope_parameters", f"partial rotary ({fraction:g}) in an LFM2 model")
    names = {"conv": "conv_layer", "full_attention": "attention_layer"}
    for i, kind in enumerate(cfg.layer_types):
        if kind not in names:
            raise _unsupported(cfg, f"layer_types[{i}]", f"the layer type '{kind}'")
    kinds = [names[t] for t in cfg.layer_types]
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    v = {"vocab": cfg.vocab_size, "context": cfg.max_position_embeddings, "d_model": cfg.hidden_size,
         "layers": cfg.num_hidden_layers, "heads": cfg.num_attention_heads, "kv_heads": cfg.num_key_value_heads,
         "head_dim": head_dim, "ffn": _lfm2_ffn(cfg), "conv_kernel": cfg.conv_L_cache, "rope_theta": theta,
         "eps": cfg.norm_eps}
    ffn = ["- residual:", "    - rmsnorm: {eps: $eps, name: ffn_norm}",
           "    - mlp: {hidden: $ffn, activation: swiglu, bias: false, name: feed_forward}"]
    blocks = {
        "conv_layer": ["- residual:", "    - rmsnorm: {eps: $eps, name: operator_norm}",
                       "    - short_conv: {kernel: $conv_kernel" + (", bias: true" if cfg.conv_bias else "")
                       + ", name: conv}"] + ffn,
        "attention_layer": ["- residual:", "    - rmsnorm: {eps: $eps, name: operator_norm}",
                            "    - attention: {heads: $heads, kv_heads: $kv_heads, head_dim: $head_dim, causal: true, "
                            "bias: false, qk_norm: true, qk_norm_eps: $eps, name: self_attn}"] + ffn,
    }
    blocks = {k: b for k, b in blocks.items() if k in kinds}
    attention = [i for i, t in enumerate(cfg.layer_types) if t == "full_attention"]
    description = (f"Imported from a Hugging Face 'lfm2' config: {len(kinds) - len(attention)} of {len(kinds)} layers "
                   f"gated short convolutions (kernel {cfg.conv_L_cache}), attention at layers "
                   f"{', '.join(map(str, attention)) or 'none'} ({cfg.num_attention_heads} heads, "
                   f"{cfg.num_key_value_heads} kv, qk-norm); SwiGLU MLPs of {_lfm2_ffn(cfg)}.")
    head = ["- embedding: {name: embed_tokens, vocab: $vocab}",
            "- positional: {kind: rotary, base: $rope_theta, max_len: $context}"]
    tail = ["- rmsnorm: {eps: $eps, name: embedding_norm}",
            "- lm_head: {vocab: $vocab" + (", tie: embed_tokens}" if cfg.tie_word_embeddings else "}")]
    return _document(cfg, description, v, blocks, kinds, head, tail)


def _recurrent_gemma(cfg: Any) -> str:
    from .hf import _unsupported

    activations = {"gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh"}
    if cfg.hidden_activation not in activations:
        raise _unsupported(cfg, "hidden_activation", f"hidden_activation '{cfg.hidden_activation}' (archdsl's gated "
                           "GELU is the tanh form)")
    theta, fraction = _rotary(cfg)
    names = {"linear_attention": "recurrent_layer", "sliding_attention": "attention_layer"}
    kinds = [names[t] for t in cfg.layers_block_type]
    v = {"vocab": cfg.vocab_size, "d_model": cfg.hidden_size, "layers": cfg.num_hidden_layers,
         "heads": cfg.num_attention_heads, "kv_heads": cfg.num_key_value_heads, "head_dim": cfg.head_dim,
         "lru_width": cfg.lru_width, "conv_kernel": cfg.conv1d_width, "ffn": cfg.intermediate_size // 2,
         "local_window": cfg.attention_window_size, "rotary_fraction": fraction, "rope_theta": theta,
         "embedding_scale": _bfloat16(cfg.hidden_size ** 0.5), "final_softcap": cfg.logits_soft_cap,
         "eps": cfg.rms_norm_eps}
    ffn = ["- residual:", "    - rmsnorm: {eps: $eps, unit_offset: true, name: channel_pre_norm}",
           "    - mlp: {hidden: $ffn, activation: geglu, bias: true, name: mlp_block}"]
    bias = "true" if cfg.attention_bias else "false"
    blocks = {
        "recurrent_layer": ["- residual:", "    - rmsnorm: {eps: $eps, unit_offset: true, name: temporal_pre_norm}",
                            "    - rg_lru: {heads: $heads, lru_width: $lru_width, conv_kernel: $conv_kernel, "
                            f"activation: {activations[cfg.hidden_activation]}, name: temporal_block}}"] + ffn,
        "attention_layer": ["- residual:", "    - rmsnorm: {eps: $eps, unit_offset: true, name: temporal_pre_norm}",
                            "    - attention: {heads: $heads, kv_heads: $kv_heads, head_dim: $head_dim, causal: true, "
                            f"window: $local_window, bias: {bias}, out_bias: true"
                            + (f", dropout: {cfg.attention_dropout}" if cfg.attention_dropout else "")
                            + ", name: temporal_block}"] + ffn,
    }
    blocks = {k: b for k, b in blocks.items() if k in kinds}
    description = (f"Imported from a Hugging Face 'recurrent_gemma' config: Griffin's recurrent blocks (RG-LRU of width "
                   f"{cfg.lru_width}) and local attention (window {cfg.attention_window_size}) in the pattern "
                   f"{', '.join(cfg.block_types)}; an embedding scaled by bfloat16 √d, RMSNorms as (1 + w), GeGLU "
                   f"MLPs with biases, logits soft-capped at {cfg.logits_soft_cap:g}.")
    head = ["- embedding: {name: embed_tokens, vocab: $vocab, scale: $embedding_scale}",
            "- positional: {kind: rotary, base: $rope_theta, fraction: $rotary_fraction}"]
    tail = ["- rmsnorm: {eps: $eps, unit_offset: true, name: final_norm}",
            "- lm_head: {vocab: $vocab" + (", tie: embed_tokens" if cfg.tie_word_embeddings else "")
            + ", softcap: $final_softcap}"]
    return _document(cfg, description, v, blocks, kinds, head, tail)


def _minimax(cfg: Any) -> str:
    from .hf import _unsupported

    if cfg.hidden_act != "silu":
        raise _unsupported(cfg, "hidden_act", f"hidden_act '{cfg.hidden_act}' (lightning attention and the experts "
                           "use SiLU)")
    for key in ("full_attn_alpha_factor", "linear_attn_alpha_factor", "mlp_alpha_factor"):
        if getattr(cfg, key) != 1:
            raise _unsupported(cfg, key, f"{key} {getattr(cfg, key)}: a residual whose skip path is scaled",
                               "archdsl's residual scales the branch only (x + s·f(x))")
    theta, _ = _rotary(cfg)  # MiniMaxAttention rotates whole heads whatever partial_rotary_factor says
    names = {"linear_attention": "linear_layer", "full_attention": "attention_layer"}
    for i, kind in enumerate(cfg.layer_types):
        if kind not in names:
            raise _unsupported(cfg, f"layer_types[{i}]", f"the layer type '{kind}'")
    kinds = [names[t] for t in cfg.layer_types]
    head_dim = cfg.head_dim or cfg.hidden_size // cfg.num_attention_heads
    v: dict[str, Any] = {"vocab": cfg.vocab_size, "context": cfg.max_position_embeddings, "d_model": cfg.hidden_size,
                         "layers": cfg.num_hidden_layers, "heads": cfg.num_attention_heads,
                         "kv_heads": cfg.num_key_value_heads, "head_dim": head_dim, "block_size": cfg.block_size,
                         "experts": cfg.num_local_experts, "top_k": cfg.num_experts_per_tok,
                         "ffn": cfg.intermediate_size, "rope_theta": theta, "eps": cfg.rms_norm_eps}
    if cfg.sliding_window:
        v["window"] = cfg.sliding_window

    def residual(beta: float, node: str) -> list[str]:
        return (["- residual:", "    - " + node] if beta == 1 else
                ["- residual:", f"    scale: {beta}", "    body:", "      - " + node])

    extra = (f", jitter: {cfg.router_jitter_noise}" if cfg.router_jitter_noise else "") + (
        f", aux_loss_coef: {cfg.router_aux_loss_coef}" if cfg.router_aux_loss_coef else "")
    moe = ["- rmsnorm: {eps: $eps, name: post_attention_layernorm}"] + residual(
        cfg.mlp_beta_factor, "moe: {experts: $experts, top_k: $top_k, hidden: $ffn, activation: swiglu" + extra
        + ", name: mlp}")
    window = ", window: $window" if cfg.sliding_window else ""
    dropout = f", dropout: {cfg.attention_dropout}" if cfg.attention_dropout else ""
    blocks = {
        "linear_layer": ["- rmsnorm: {eps: $eps, name: input_layernorm}"] + residual(
            cfg.linear_attn_beta_factor, "lightning_attention: {heads: $heads, head_dim: $head_dim, block_size: "
            "$block_size, name: self_attn}") + moe,
        "attention_layer": ["- rmsnorm: {eps: $eps, name: input_layernorm}"] + residual(
            cfg.full_attn_beta_factor, "attention: {heads: $heads, kv_heads: $kv_heads, head_dim: $head_dim, "
            f"causal: true, bias: false{window}{dropout}, name: self_attn}}") + moe,
    }
    blocks = {k: b for k, b in blocks.items() if k in kinds}
    linear = sum(t == "linear_attention" for t in cfg.layer_types)
    description = (f"Imported from a Hugging Face 'minimax' config: {linear} of {len(kinds)} layers lightning attention "
                   f"(linear attention with a decay per head and layer, blocks of {cfg.block_size}), the others "
                   f"softmax attention ({cfg.num_attention_heads} heads, {cfg.num_key_value_heads} kv); the norm "
                   f"comes before each residual, whose skip path carries the normalised stream; MoE of "
                   f"{cfg.num_local_experts} experts, top {cfg.num_experts_per_tok}.")
    head = ["- embedding: {name: embed_tokens, vocab: $vocab}",
            "- positional: {kind: rotary, base: $rope_theta, max_len: $context}"]
    tail = ["- rmsnorm: {eps: $eps, name: norm}",
            "- lm_head: {vocab: $vocab" + (", tie: embed_tokens}" if cfg.tie_word_embeddings else "}")]
    return _document(cfg, description, v, blocks, kinds, head, tail)


_WRITERS: dict[str, Callable[[Any], str]] = {"qwen3_next": _qwen3_next, "qwen3_5_text": _qwen3_next,
                                               "qwen3_5_moe_text": _qwen3_next, "lfm2": _lfm2,
                                               "recurrent_gemma": _recurrent_gemma, "minimax": _minimax}


def spec_yaml_from_config(config: Any) -> str:
    """The readable YAML spec of a Qwen3-Next, LFM2 or RecurrentGemma config."""
    from .hf import _unsupported, load_config

    cfg = load_config(config)
    if cfg.model_type not in _WRITERS and _deltanet_tree(cfg) is not None:  # laid out as Qwen3.5's (Lara-mini)
        return _qwen3_next(cfg)
    if cfg.model_type not in _WRITERS:
        raise _unsupported(cfg, "model_type", f"model_type '{cfg.model_type}' as a linear/recurrent hybrid",
                           f"supported: {', '.join(LINEAR_MODEL_TYPES)}")
    return _WRITERS[cfg.model_type](cfg)


def spec_from_config(config: Any) -> Any:
    from ..loader import load_spec

    return load_spec(spec_yaml_from_config(config))


# ---------------------------------------------------------------------------------------- weights
class _Tensors:
    """A checkpoint's tensors by name, read on demand; remembers which were used."""

    def __init__(self, loaders: Mapping[str, Callable[[], Any]]):
        self.loaders, self.used = dict(loaders), set()

    def __contains__(self, key: str) -> bool:
        return key in self.loaders

    def get(self, key: str) -> Any:
        if key not in self.loaders:
            raise KeyError(key)
        self.used.add(key)
        return self.loaders[key]()

    def first(self, prefix: str, *names: str) -> Any:
        """The tensor at prefix.name for the first name the checkpoint has."""
        for name in names:
            if f"{prefix}.{name}" in self.loaders:
                return self.get(f"{prefix}.{name}")
        raise KeyError(f"{prefix}.{{{', '.join(names)}}}")


def _same_names(src: _Tensors, prefix: str, module: Any, cfg: Any) -> dict[str, Any]:
    return {name: src.get(f"{prefix}.{name}") for name in module.state_dict()}


def _attention(src: _Tensors, prefix: str, module: Any, cfg: Any) -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {}
    for kind in ("weight", "bias"):
        if getattr(module.out, kind) is not None:
            out[f"out.{kind}"] = src.first(prefix, f"o_proj.{kind}", f"out_proj.{kind}")
        if getattr(module.qkv, kind) is None:
            continue
        q = src.get(f"{prefix}.q_proj.{kind}")
        parts = [q, src.get(f"{prefix}.k_proj.{kind}"), src.get(f"{prefix}.v_proj.{kind}")]
        if module.output_gate:  # Qwen3-Next: each head's rows are [query; gate]
            q, gate = q.reshape(module.heads, 2 * module.head_dim, -1).split(module.head_dim, dim=1)
            parts = [q.reshape(module.heads * module.head_dim, *parts[1].shape[1:]), parts[1], parts[2],
                     gate.reshape(module.heads * module.head_dim, *parts[1].shape[1:])]
        out[f"qkv.{kind}"] = torch.cat(parts)
    if module.q_norm is not None:
        out["q_norm.weight"] = src.first(prefix, "q_norm.weight", "q_layernorm.weight")
        out["k_norm.weight"] = src.first(prefix, "k_norm.weight", "k_layernorm.weight")
    return out


def _gated_deltanet(src: _Tensors, prefix: str, module: Any, cfg: Any) -> dict[str, Any]:
    """Qwen3.5's in_proj_qkv / in_proj_z / in_proj_b / in_proj_a are archdsl's qkv, z, b, a as they are;
    Qwen3-Next's in_proj_qkvz rows are, per query/key head, [q (Dk); k (Dk); v (r·Dv); z (r·Dv)] with r
    value heads per key head, and in_proj_ba's [b (r); a (r)]: regrouped into [all q; all k; all v], z, b, a."""
    import torch

    common = {"conv.weight": src.get(f"{prefix}.conv1d.weight"), "A_log": src.get(f"{prefix}.A_log"),
              "dt_bias": src.get(f"{prefix}.dt_bias"), "norm.weight": src.first(prefix, "norm.weight", "o_norm.weight"),
              "out.weight": src.first(prefix, "out_proj.weight", "o_proj.weight")}
    if f"{prefix}.g_proj.weight" in src:  # OLMo-hybrid: separate q, k, v, a, b and the gate g
        return {"qkv.weight": torch.cat([src.get(f"{prefix}.{n}_proj.weight") for n in "qkv"]),
                "z.weight": src.get(f"{prefix}.g_proj.weight"), "b.weight": src.get(f"{prefix}.b_proj.weight"),
                "a.weight": src.get(f"{prefix}.a_proj.weight"), **common}
    if f"{prefix}.in_proj_qkv.weight" in src:  # Qwen3.5: separate projections, already [all q; all k; all v]
        return {"qkv.weight": src.get(f"{prefix}.in_proj_qkv.weight"), "z.weight": src.get(f"{prefix}.in_proj_z.weight"),
                "b.weight": src.get(f"{prefix}.in_proj_b.weight"), "a.weight": src.get(f"{prefix}.in_proj_a.weight"),
                **common}
    Hk, Dk, Hv, Dv = module.heads, module.head_dim, module.value_heads, module.value_dim
    r = Hv // Hk
    qkvz = src.get(f"{prefix}.in_proj_qkvz.weight")
    width = qkvz.shape[-1]
    q, k, v, z = qkvz.reshape(Hk, 2 * Dk + 2 * r * Dv, width).split([Dk, Dk, r * Dv, r * Dv], dim=1)
    b, a = src.get(f"{prefix}.in_proj_ba.weight").reshape(Hk, 2 * r, width).split([r, r], dim=1)
    return {"qkv.weight": torch.cat([q.reshape(-1, width), k.reshape(-1, width), v.reshape(-1, width)]),
            "z.weight": z.reshape(-1, width), "b.weight": b.reshape(-1, width), "a.weight": a.reshape(-1, width),
            **common}


def _gated_mlp(src: _Tensors, prefix: str, kinds: tuple[str, ...] = ("weight", "bias")) -> dict[str, Any]:
    import torch

    out = {}
    for kind in kinds:
        if f"{prefix}.gate_proj.{kind}" in src or f"{prefix}.w1.{kind}" in src:
            out[f"up.{kind}"] = torch.cat([src.first(prefix, f"gate_proj.{kind}", f"w1.{kind}"),
                                           src.first(prefix, f"up_proj.{kind}", f"w3.{kind}")])
            out[f"down.{kind}"] = src.first(prefix, f"down_proj.{kind}", f"w2.{kind}")
    return out


def _mlp(src: _Tensors, prefix: str, module: Any, cfg: Any) -> dict[str, Any]:
    return _gated_mlp(src, prefix)


def _moe(src: _Tensors, prefix: str, module: Any, cfg: Any) -> dict[str, Any]:
    import torch

    if f"{prefix}.gate.weight" not in src and prefix.endswith(".mlp"):  # MiniMax on disk (Mixtral's names)
        prefix = prefix[:-len("mlp")] + "block_sparse_moe"
    out = {"router.weight": src.get(f"{prefix}.gate.weight")}
    if f"{prefix}.experts.gate_up_proj" in src:  # transformers 5 in memory: stacked, [gate; up]
        out["experts.up"] = src.get(f"{prefix}.experts.gate_up_proj")
        out["experts.down"] = src.get(f"{prefix}.experts.down_proj")
    else:  # on disk: one module per expert, gate/up/down_proj (Qwen) or w1/w3/w2 (Mixtral, MiniMax)
        n = len(module.experts)

        def expert(e: int, *names: str) -> Any:
            return src.first(f"{prefix}.experts.{e}", *(f"{name}.weight" for name in names))
        out["experts.up"] = torch.stack([torch.cat([expert(e, "gate_proj", "w1"), expert(e, "up_proj", "w3")])
                                         for e in range(n)])
        out["experts.down"] = torch.stack([expert(e, "down_proj", "w2") for e in range(n)])
    if module.shared is not None:
        out.update({f"shared.{k}": t for k, t in _gated_mlp(src, f"{prefix}.shared_expert", ("weight",)).items()})
    if module.shared_gate is not None:
        out["shared_gate.weight"] = src.get(f"{prefix}.shared_expert_gate.weight")
    return out


def _lightning(src: _Tensors, prefix: str, module: Any, cfg: Any) -> dict[str, Any]:
    """Same names; the checkpoint's decay buffers must be the rates archdsl derives from the layer's depth."""
    import torch

    out = _same_names(src, prefix, module, cfg)
    if f"{prefix}.slope_rate" in src:
        theirs = src.get(f"{prefix}.slope_rate").flatten().to(torch.float32)
        for name in ("query_decay", "key_decay", "diagonal_decay"):  # derived from slope_rate
            if f"{prefix}.{name}" in src:
                src.used.add(f"{prefix}.{name}")
        if not torch.allclose(theirs, module.decay_rates.cpu(), rtol=1e-4, atol=1e-7):
            raise ValueError(f"{prefix}.slope_rate {theirs.tolist()} is not MiniMax's rate for this depth "
                             f"({module.decay_rates.tolist()}); set lightning_attention's decay_factor")
    return out


_CONVERTERS = {"rmsnorm": _same_names, "embedding": _same_names, "lm_head": _same_names, "attention": _attention,
               "gated_deltanet": _gated_deltanet, "short_conv": _same_names, "rg_lru": _same_names, "mlp": _mlp,
               "moe": _moe, "lightning_attention": _lightning}


def map_weights(cfg: Any, loaders: Mapping[str, Callable[[], Any]], model: Any) -> dict[str, Any]:
    """archdsl parameter name -> tensor, from a checkpoint's lazy tensors (names as transformers writes them).

    Each leaf node with parameters is converted by its kind (_CONVERTERS) from ``model.layers.<i>.<its
    module name>`` (i from the IR's layer numbering) or, outside the layers, from ``model.<name>`` and
    ``lm_head``. Raises ValueError naming the first checkpoint tensor that no parameter used."""
    from ..ir import layer_numbering

    src = _Tensors(loaders)
    g = model.graph
    layer_of = layer_numbering(g)
    out: dict[str, Any] = {}
    for node, data in g.nodes(data=True):
        spec = data.get("spec")
        if spec is None or not spec.leaf or not data.get("params") or spec.tied_to():
            continue
        module = model.get_submodule(node)
        layer, name = layer_of(node), node.rsplit(".", 1)[-1]
        prefix = f"model.layers.{layer}.{name}" if layer is not None else (
            "lm_head" if data["kind"] == "lm_head" else f"model.{name}")
        try:
            tensors = _CONVERTERS[data["kind"]](src, prefix, module, cfg)
        except KeyError as exc:
            raise ValueError(f"{node} ({data['kind']}): the checkpoint has no tensor {exc.args[0]}") from None
        out.update({f"{node}.{k}": t for k, t in tensors.items()})
    tied = "lm_head.weight" if getattr(cfg, "tie_word_embeddings", False) else None
    left = sorted(k for k in src.loaders if k not in src.used and k != tied and "rotary_emb" not in k)
    if left:
        raise ValueError(f"checkpoint tensors that no archdsl parameter uses: {', '.join(left[:8])}")
    return out


def from_hf(hf_model: Any, *, spec: Any = None, overrides: Mapping[str, Any] | None = None, dtype: Any = None,
            device: Any = None, verify: bool | None = None) -> Any:
    """An ArchModel with the architecture and weights of an in-memory Qwen3-Next, LFM2 or RecurrentGemma
    causal LM (archdsl.interop.hf.from_hf dispatches here; the same arguments)."""
    from ..loader import load_spec
    from .hf import _assign, _build, _verify

    if spec is None and overrides:
        raise TypeError("overrides apply to a spec given with spec=")
    target = load_spec(spec, overrides=overrides) if spec is not None else spec_from_config(hf_model.config)
    first = next(hf_model.parameters())
    model = _build(target, dtype or first.dtype, device or first.device)
    state = hf_model.state_dict()
    _assign(model, map_weights(hf_model.config, {k: (lambda t=t: t) for k, t in state.items()}, model))
    model.eval()
    if verify if verify is not None else spec is not None:
        _verify(hf_model, model)
    return model


def from_pretrained(local_dir: str | Path, *, spec: Any = None, overrides: Mapping[str, Any] | None = None,
                    dtype: Any = None, device: Any = "cpu") -> Any:
    """An ArchModel from a local checkpoint folder (config.json + *.safetensors); see hf.from_pretrained."""
    import torch

    from ..loader import load_spec
    from .hf import _assign, _build, _get, load_config, load_safetensors

    cfg = load_config(Path(local_dir))
    if spec is None and overrides:
        raise TypeError("overrides apply to a spec given with spec=")
    target = load_spec(spec, overrides=overrides) if spec is not None else spec_from_config(cfg)
    if dtype == "auto":
        dtype = _get(cfg, "dtype", "torch_dtype") or torch.float32
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    model = _build(target, dtype or torch.float32, device)
    _assign(model, map_weights(cfg, load_safetensors(local_dir), model))
    return model.eval()
