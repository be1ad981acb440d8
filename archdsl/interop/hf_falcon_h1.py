"""Hugging Face interop for Falcon-H1: attention and Mamba-2 side by side in every layer.

Dispatched from :mod:`.hf_ssm` (so ``hf.spec_from_config``, ``hf.from_hf``, ``hf.from_pretrained`` and
``archdsl import-hf`` take Falcon-H1 configs). A Falcon-H1 layer is

    h = x + ssm_out · mamba2(n) + attn_out · attention(attn_in · n),   n = rmsnorm(x)
    y = h + down_mult · down(up(m) · silu(gate_mult · gate(m))),       m = rmsnorm(h)

with μP multipliers everywhere, each of which archdsl writes as a field rather than code:

- the Mamba-2 mixer's input and per-part multipliers: ``mamba2: {in_scale, projection_scales}``;
- the two branch outputs: ``parallel: {scales: [ssm_out, attn_in · attn_out]}``: attention is
  linear in its values, so the input multiplier attn_in leaves the output scaled by attn_in;
- attn_in and the key multiplier inside the softmax: attention ``scale: attn_in² · key_mult / √head_dim``
  (queries and keys each carry attn_in; keys also key_mult, before the rotation, which is linear);
- the MLP's down multiplier: ``residual: {scale: down_mult}``; its gate multiplier is folded into the
  gate projection's weights when they are mapped (gate_mult · W, one rounding of each weight);
- the embedding and logits multipliers: ``embedding: {scale}``, ``lm_head: {scale}``.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

__all__ = ["spec_yaml_from_config", "map_weights"]


def _mixer(cfg: Any) -> str:
    from .hf_ssm import _mixer_args, _silu, _unsupported

    _silu(cfg)
    heads = int(cfg.mamba_n_heads)
    inner = int(cfg.mamba_d_ssm) if getattr(cfg, "mamba_d_ssm", None) else int(cfg.mamba_expand * cfg.hidden_size)
    head_dim = cfg.mamba_d_head
    head_dim = inner // heads if head_dim == "auto" else int(head_dim)
    if heads * head_dim != inner:
        raise _unsupported(cfg, "mamba_d_head", f"Mamba-2 heads × head_dim = {heads} × {head_dim} that is not "
                           f"mamba_d_ssm ({inner})", "transformers' own mixer needs them equal")
    gate_norm = ("before_gate" if cfg.mamba_norm_before_gate else "after_gate") if cfg.mamba_rms_norm else "none"
    items: list[tuple[str, Any]] = [
        ("heads", heads), ("head_dim", head_dim), ("state", int(cfg.mamba_d_state)), ("groups", int(cfg.mamba_n_groups)),
        ("conv_kernel", int(cfg.mamba_d_conv)), ("conv_bias", bool(cfg.mamba_conv_bias)),
        ("bias", bool(cfg.mamba_proj_bias)), ("out_bias", bool(cfg.projectors_bias)), ("gate_norm", gate_norm),
        ("norm_eps", float(cfg.rms_norm_eps)), ("chunk", int(cfg.mamba_chunk_size))]
    low, high = (tuple(getattr(cfg, "time_step_limit", None) or (0.0, float("inf"))) + (float("inf"),))[:2]
    if low:
        items.append(("dt_floor", float(low)))
    if high is not None and math.isfinite(high):
        items.append(("dt_ceiling", float(high)))
    if float(cfg.ssm_in_multiplier) != 1.0:
        items.append(("in_scale", float(cfg.ssm_in_multiplier)))
    scales = [float(s) for s in cfg.ssm_multipliers]
    if len(scales) != 5:
        raise _unsupported(cfg, "ssm_multipliers", f"{len(scales)} SSM multipliers", "one each for z, x, B, C and Δ")
    if any(s != 1.0 for s in scales):
        items.append(("projection_scales", scales))
    return "mamba2: " + _mixer_args(items)


def _attention(cfg: Any) -> tuple[str, float]:
    """The attention node and the factor its output carries (attention_in_multiplier)."""
    from .hf_ssm import _mixer_args

    heads = int(cfg.num_attention_heads)
    kv = int(getattr(cfg, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
    attn_in, key = float(cfg.attention_in_multiplier), float(cfg.key_multiplier)
    items: list[tuple[str, Any]] = [("heads", heads)]
    if kv != heads:
        items.append(("kv_heads", kv))
    if head_dim != cfg.hidden_size // heads:
        items.append(("head_dim", head_dim))
    items += [("causal", True), ("bias", bool(cfg.attention_bias))]
    if attn_in != 1.0 or key != 1.0:
        items.append(("scale", attn_in * attn_in * key / math.sqrt(head_dim)))
    return "attention: " + _mixer_args(items), attn_in


def spec_yaml_from_config(cfg: Any) -> str:
    """The readable YAML spec of a Falcon-H1 config (every layer the same parallel hybrid)."""
    from .hf import _scalar, _spec_name
    from .hf_ssm import _positional, _silu, _unsupported

    _silu(cfg)
    if getattr(cfg, "mlp_bias", False):
        raise _unsupported(cfg, "mlp_bias", "Falcon-H1 MLP biases", "transformers' FalconH1MLP has none either")
    mixer = _mixer(cfg)
    attention, attn_in = _attention(cfg)
    gate_mult, down_mult = (float(m) for m in cfg.mlp_multipliers)
    tie = bool(getattr(cfg, "tie_word_embeddings", False))
    embed = [("name", "embed_tokens"), ("vocab", "$vocab")]
    if float(cfg.embedding_multiplier) != 1.0:
        embed.append(("scale", _scalar(float(cfg.embedding_multiplier))))
    head = [("vocab", "$vocab")] + ([("tie", "embed_tokens")] if tie else [])
    if float(cfg.lm_head_multiplier) != 1.0:
        head.append(("scale", _scalar(float(cfg.lm_head_multiplier))))
    scales = [float(cfg.ssm_out_multiplier), attn_in * float(cfg.attention_out_multiplier)]
    ff = ["    - residual:"]
    if down_mult != 1.0:
        ff += [f"        scale: {_scalar(down_mult)}", "        body:"]
        indent = "          "
    else:
        indent = "        "
    ff += [f"{indent}- rmsnorm: {{eps: $eps, name: pre_ff_layernorm}}",
           f"{indent}- mlp: {{hidden: {int(cfg.intermediate_size)}, activation: swiglu, bias: false}}"]
    args = lambda items: "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"  # noqa: E731
    lines = [
        "archdsl: 1", f"name: {_scalar(_spec_name(cfg))}", "description: >",
        f"  Imported from a Hugging Face falcon_h1 config: {cfg.num_hidden_layers} layers, each attention and",
        "  Mamba-2 side by side on one normed input, their outputs scaled and summed, then a SwiGLU MLP"
        + (f"; the MLP's gate multiplier ({gate_mult:g}) is folded into the gate weights." if gate_mult != 1.0 else "."),
        "vars:", f"  vocab: {cfg.vocab_size}", f"  d_model: {cfg.hidden_size}", f"  eps: {_scalar(float(cfg.rms_norm_eps))}",
        "", "blocks:", "  hybrid_layer:", "    - residual:", "        - rmsnorm: {eps: $eps, name: input_layernorm}",
        "        - parallel:", "            branches:", f"              - [{mixer}]", f"              - [{attention}]",
        f"            scales: [{', '.join(_scalar(s) for s in scales)}]", *ff,
        "", "model:", "  width: $d_model", "  layers:", f"    - embedding: {args(embed)}", f"    - {_positional(cfg)}",
        f"    - repeat: {cfg.num_hidden_layers}", "      name: layers", "      body: hybrid_layer",
        "    - rmsnorm: {eps: $eps, name: final_layernorm}", f"    - lm_head: {args(head)}"]
    return "\n".join(lines) + "\n"


def map_weights(cfg: Any, tensors: Mapping[str, Callable[[], Any]], model: Any) -> dict[str, Any]:
    """archdsl parameter name -> tensor: layer i's mixers, norms and MLP from model.layers.i (the mixer keeps
    transformers' names); the MLP's gate rows multiplied by the gate multiplier. Every tensor must be used."""
    import torch

    from ..ir import layer_numbering, leaves

    g = model.graph
    layer_of = layer_numbering(g)
    used: set[str] = set()
    out: dict[str, Any] = {}
    gate_mult = float(cfg.mlp_multipliers[0])

    def get(key: str) -> Any:
        if key not in tensors:
            raise ValueError(f"the checkpoint has no tensor {key} (for falcon_h1)")
        used.add(key)
        return tensors[key]()

    for node in leaves(g):
        data = g.nodes[node]
        if "spec" not in data:
            continue
        kind, i, name = data["kind"], layer_of(node), node.rsplit(".", 1)[-1]
        hf = f"model.layers.{i}"
        if i is None:
            source = {"embedding": "model.embed_tokens", "rmsnorm": "model.final_layernorm"}.get(kind)
            if kind == "lm_head":
                if data["spec"].tie is None:
                    out[f"{node}.weight"] = get("lm_head.weight")
                elif "lm_head.weight" in tensors:
                    used.add("lm_head.weight")  # the tied copy transformers' state dict also lists
            elif source is not None:
                out[f"{node}.weight"] = get(f"{source}.weight")
        elif kind == "rmsnorm":
            out[f"{node}.weight"] = get(f"{hf}.{name}.weight")
        elif kind == "mamba2":
            prefix = f"{hf}.mamba."
            for key in [k for k in tensors if k.startswith(prefix)]:
                out[f"{node}.{key[len(prefix):]}"] = get(key)
        elif kind == "attention":
            for part in ("weight", "bias"):
                keys = [f"{hf}.self_attn.{p}_proj.{part}" for p in "qkv"]
                if keys[0] in tensors:
                    out[f"{node}.qkv.{part}"] = torch.cat([get(k) for k in keys])
                if f"{hf}.self_attn.o_proj.{part}" in tensors:
                    out[f"{node}.out.{part}"] = get(f"{hf}.self_attn.o_proj.{part}")
        elif kind == "mlp":
            gate = get(f"{hf}.feed_forward.gate_proj.weight")
            out[f"{node}.up.weight"] = torch.cat([gate * gate_mult if gate_mult != 1.0 else gate,
                                                  get(f"{hf}.feed_forward.up_proj.weight")])
            out[f"{node}.down.weight"] = get(f"{hf}.feed_forward.down_proj.weight")
    left = sorted(k for k in tensors if k not in used)
    if left:
        raise ValueError(f"checkpoint tensors the spec has no place for: {', '.join(left[:6])}"
                         + (f" and {len(left) - 6} more" if len(left) > 6 else ""))
    return out
