"""Hugging Face interop for the state-space families: Mamba, FalconMamba, Mamba-2, Jamba, Bamba, Nemotron-H,
Granite 4.0 (granitemoehybrid) and Falcon-H1.

    from archdsl.interop import hf_ssm
    spec = hf_ssm.spec_from_config(hf_model.config)     # the readable spec (a repeat pattern for hybrids)
    model = hf_ssm.from_hf(hf_model)                      # spec + weights
    model = hf_ssm.from_pretrained("path/to/checkpoint")  # config.json + *.safetensors, offline

archdsl.interop.hf dispatches here for these model types, so ``hf.from_hf`` / ``hf.spec_from_config``
/ ``hf.from_pretrained`` / ``archdsl import-hf`` work for them too.

A config becomes a list of layers, each a mixer (mamba, mamba2 or attention) and for the hybrids a
feed-forward (mlp or moe), or for Nemotron-H one of the four alone (its layers are each a single pre-norm
residual, squared-ReLU MLPs and MoE layers included); equal layers share a block, and the stack is one ``repeat`` cycling the
shortest period of the layers (Jamba: 8) or, when the layers have no short period (Bamba's
attention at 9, 18, 27), consecutive repeats whose layer numbers continue. Weights are mapped by
role, not by name: archdsl's layer i (ir.layer_numbering) is the checkpoint's layer i, its first
norm the input norm, its second the pre-feed-forward norm, its mixer and feed-forward the
checkpoint's; a mixer's tensors keep their names (the mamba kinds use transformers' names). Every
archdsl parameter must be filled and every checkpoint tensor used.

The mixers' own variants are fields (FalconMamba's unweighted and Jamba's weighted Δ/B/C norms,
Mamba-2's time_step_limit as dt_floor / dt_ceiling). Families whose layers archdsl cannot yet
write are refused by name (:data:`REFUSED`).
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Callable, Mapping

__all__ = ["SSM_MODEL_TYPES", "REFUSED", "is_ssm", "spec_yaml_from_config", "spec_from_config", "from_hf",
           "from_pretrained", "map_weights"]

SUPPORTED = ("mamba", "falcon_mamba", "mamba2", "jamba", "bamba", "nemotron_h", "granitemoehybrid",
             "falcon_h1")
# model type -> (config key, the feature archdsl lacks): refused with it named
REFUSED = {
    "zamba2": ("hybrid_layer_ids", "Zamba2's shared attention block reads the stream concatenated with the "
               "original embeddings and adds per-depth LoRA adapters to its shared weights; archdsl shares weights "
               "between positions of a stack (repeat: {shared: true}) but does not express per-depth adapters "
               "or that concatenated input yet"),
}
SSM_MODEL_TYPES = SUPPORTED + tuple(REFUSED)
_EMBED = {"mamba": "backbone.embeddings", "falcon_mamba": "backbone.embeddings", "mamba2": "backbone.embeddings",
          "jamba": "model.embed_tokens", "bamba": "model.embed_tokens", "nemotron_h": "model.embeddings",
          "granitemoehybrid": "model.embed_tokens", "falcon_h1": "model.embed_tokens"}
_FINAL = {"mamba": "backbone.norm_f", "falcon_mamba": "backbone.norm_f", "mamba2": "backbone.norm_f",
          "jamba": "model.final_layernorm", "bamba": "model.final_layernorm", "nemotron_h": "model.norm_f",
          "granitemoehybrid": "model.norm", "falcon_h1": "model.final_layernorm"}


def is_ssm(cfg: Any) -> bool:
    return getattr(cfg, "model_type", None) in SSM_MODEL_TYPES


def _unsupported(cfg: Any, key: str, what: str, hint: str | None = None):
    from .hf import _unsupported as named

    return named(cfg, key, what, hint)


def _silu(cfg: Any, key: str = "hidden_act") -> None:
    act = getattr(cfg, key, "silu")
    if act not in ("silu", "swish"):
        raise _unsupported(cfg, key, f"activation '{act}' in the Mamba mixer", "the mamba kinds use SiLU")


def _mixer_args(items: list[tuple[str, Any]]) -> str:
    from .hf import _args, _scalar

    return _args((k, _scalar(v)) for k, v in items)


# ----------------------------------------------------------------------------------------- layers
def _mamba1(cfg: Any, state: str, conv: str, expand: str, rank: str, conv_bias: str, bias: str,
            norm: str, eps: float | None, inner_key: str | None = None) -> str:
    _silu(cfg)
    width, inner = cfg.hidden_size, getattr(cfg, inner_key, None) if inner_key else None
    e = getattr(cfg, expand)
    if inner is not None and inner != e * width:
        raise _unsupported(cfg, "intermediate_size", f"a Mamba inner width {inner} that is not expand × hidden_size "
                           f"({e} × {width})")
    r = getattr(cfg, rank)
    r = math.ceil(width / 16) if r == "auto" else int(r)
    items = [("state", getattr(cfg, state)), ("expand", e), ("conv_kernel", getattr(cfg, conv)), ("dt_rank", r),
             ("conv_bias", bool(getattr(cfg, conv_bias))), ("bias", bool(getattr(cfg, bias)))]
    if norm != "none":
        items += [("dt_bc_norm", norm), ("norm_eps", float(eps))]
    return "mamba: " + _mixer_args(items)


def _mamba2(cfg: Any, heads: str, head_dim: str, state: str, groups: str, conv: str, expand: str | None,
            conv_bias: str, bias: str, eps: float, chunk: str, act: str = "hidden_act",
            limit: tuple[float, float] | None = None) -> str:
    """The mamba2 node; `expand` None: the inner width is heads × head_dim whatever expand says (Nemotron-H's
    mixer); `limit`: the Δ clamp when the family's mixer does not read time_step_limit."""
    _silu(cfg, act)
    h, p = int(getattr(cfg, heads)), getattr(cfg, head_dim)
    width, e = cfg.hidden_size, getattr(cfg, expand) if expand else None
    p = int(e * width // h) if p == "auto" else int(p)
    if e is not None and h * p != int(e * width):
        raise _unsupported(cfg, head_dim, f"Mamba-2 heads × head_dim = {h} × {p} that is not expand × hidden_size "
                           f"({e} × {width})", "transformers' own mixer needs them equal")
    items = [("heads", h), ("head_dim", p), ("state", getattr(cfg, state)), ("groups", getattr(cfg, groups)),
             ("conv_kernel", getattr(cfg, conv)), ("conv_bias", bool(getattr(cfg, conv_bias))),
             ("bias", bool(getattr(cfg, bias))), ("norm_eps", float(eps)), ("chunk", int(getattr(cfg, chunk)))]
    low, high = limit or (tuple(getattr(cfg, "time_step_limit", None) or (0.0, float("inf"))) + (float("inf"),))[:2]
    if low:
        items.append(("dt_floor", float(low)))
    if high is not None and math.isfinite(high):
        items.append(("dt_ceiling", float(high)))
    return "mamba2: " + _mixer_args(items)


def _attention(cfg: Any, scale: float | None = None) -> str:
    heads, kv = cfg.num_attention_heads, getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None)
    items = [("heads", heads)]
    if kv != heads:
        items.append(("kv_heads", kv))
    if head_dim and head_dim != cfg.hidden_size // heads:
        items.append(("head_dim", head_dim))
    items += [("causal", True), ("bias", bool(getattr(cfg, "attention_bias", False)))]
    if scale is not None:
        items.append(("scale", float(scale)))
    if getattr(cfg, "attention_dropout", 0.0):
        items.append(("dropout", float(cfg.attention_dropout)))
    return "attention: " + _mixer_args(items)


def _mlp(cfg: Any) -> str:
    _silu(cfg)
    return "mlp: " + _mixer_args([("hidden", cfg.intermediate_size), ("activation", "swiglu"),
                                  ("bias", bool(getattr(cfg, "mlp_bias", False)))])


def _moe(cfg: Any) -> str:
    _silu(cfg)
    return "moe: " + _mixer_args([("experts", cfg.num_experts), ("top_k", cfg.num_experts_per_tok),
                                  ("hidden", cfg.intermediate_size), ("activation", "swiglu"), ("normalize", False)])


def _layers(cfg: Any) -> tuple[list[tuple[str, str, str | None]], str | None, float]:
    """[(block name, mixer node, feed-forward node or None)] per layer, the positional node, the norms' eps."""
    t = cfg.model_type
    if t in ("mamba", "falcon_mamba"):
        norm, eps = ("rmsnorm_unweighted", cfg.mixer_rms_eps) if t == "falcon_mamba" else ("none", None)
        mixer = _mamba1(cfg, "state_size", "conv_kernel", "expand", "time_step_rank", "use_conv_bias", "use_bias",
                        norm, eps, inner_key="intermediate_size")
        return [("mamba_layer", mixer, None)] * cfg.num_hidden_layers, None, cfg.layer_norm_epsilon
    if t == "mamba2":
        mixer = _mamba2(cfg, "num_heads", "head_dim", "state_size", "n_groups", "conv_kernel", "expand",
                        "use_conv_bias", "use_bias", cfg.layer_norm_epsilon, "chunk_size")
        return [("mamba_layer", mixer, None)] * cfg.num_hidden_layers, None, cfg.layer_norm_epsilon
    if t == "jamba":
        mamba = _mamba1(cfg, "mamba_d_state", "mamba_d_conv", "mamba_expand", "mamba_dt_rank", "mamba_conv_bias",
                        "mamba_proj_bias", "rmsnorm", cfg.rms_norm_eps)
        layers = []
        for kind, experts in zip(cfg.layers_block_type, cfg.layers_num_experts):
            ff = _moe(cfg) if experts > 1 else _mlp(cfg)
            layers.append((f"{kind}_{'moe' if experts > 1 else 'dense'}_layer",
                           mamba if kind == "mamba" else _attention(cfg), ff))
        return layers, None, cfg.rms_norm_eps  # Jamba's attention has no positions
    if t == "bamba":
        mamba = _mamba2(cfg, "mamba_n_heads", "mamba_d_head", "mamba_d_state", "mamba_n_groups", "mamba_d_conv",
                        "mamba_expand", "mamba_conv_bias", "mamba_proj_bias", cfg.rms_norm_eps, "mamba_chunk_size")
        attention = set(getattr(cfg, "attn_layer_indices", None) or ())
        layers = [("attention_layer", _attention(cfg), _mlp(cfg)) if i in attention else
                  ("mamba_layer", mamba, _mlp(cfg)) for i in range(cfg.num_hidden_layers)]
        return layers, _positional(cfg) if attention else None, cfg.rms_norm_eps
    if t == "granitemoehybrid":
        return _granite(cfg)
    if t == "falcon_h1":
        return _falcon_h1(cfg)
    if t == "nemotron_h":
        return _nemotron_h(cfg), None, cfg.layer_norm_epsilon  # its attention has no positions, as Jamba's
    raise AssertionError(t)


def _granite(cfg: Any) -> tuple[list[tuple[str, str | None, str | None]], str | None, float]:
    """Granite 4.0 (-H): Bamba's Mamba-2 mixer or attention whose score scale is attention_multiplier,
    then a MoE whose router takes the softmax of its top-k logits plus an always-on gated shared MLP
    (shared_intermediate_size), or that shared MLP alone when num_local_experts is 0; rotary positions
    only with position_embedding_type 'rope'. The multipliers on the embedding, residual branches and
    logits are written by spec_yaml_from_config (_GRANITE)."""
    mamba = _mamba2(cfg, "mamba_n_heads", "mamba_d_head", "mamba_d_state", "mamba_n_groups", "mamba_d_conv",
                    "mamba_expand", "mamba_conv_bias", "mamba_proj_bias", cfg.rms_norm_eps, "mamba_chunk_size")
    _silu(cfg)
    shared = int(cfg.shared_intermediate_size or 0)
    if cfg.num_local_experts:
        if not shared:
            raise _unsupported(cfg, "shared_intermediate_size", "a Granite layer whose shared MLP has width 0")
        items = [("experts", cfg.num_local_experts), ("top_k", cfg.num_experts_per_tok),
                 ("hidden", cfg.intermediate_size), ("activation", "swiglu"), ("shared_hidden", shared)]
        if cfg.router_aux_loss_coef:
            items.append(("aux_loss_coef", float(cfg.router_aux_loss_coef)))
        ff = "moe: " + _mixer_args(items)
    else:
        ff = "mlp: " + _mixer_args([("hidden", shared), ("activation", "swiglu"), ("bias", False)])
    attention = _attention(cfg, scale=float(cfg.attention_multiplier))
    kind = cfg.position_embedding_type
    if kind not in (None, "nope", "rope"):
        raise _unsupported(cfg, "position_embedding_type", f"position_embedding_type '{kind}'",
                           "Granite 4.0 uses 'rope' or none")
    layers = [("attention_layer", attention, ff) if t == "full_attention" else ("mamba_layer", mamba, ff)
              for t in cfg.layer_types]
    for i, t in enumerate(cfg.layer_types):
        if t not in ("full_attention", "linear_attention"):
            raise _unsupported(cfg, f"layer_types[{i}]", f"the Granite layer type '{t}'")
    rotary = kind == "rope" and any(t == "full_attention" for t in cfg.layer_types)
    return layers, _positional(cfg) if rotary else None, cfg.rms_norm_eps


def _falcon_h1(cfg: Any) -> tuple[list[tuple[str, str | None, str | None]], str | None, float]:
    """Falcon-H1: one norm, then Mamba-2 and attention side by side, their outputs × ssm_out_multiplier and
    × attention_out_multiplier summed into the residual (a parallel node with scales); the mixer's input ×
    ssm_in_multiplier and in_proj's five parts × ssm_multipliers (in_scale, projection_scales), the
    attention's input × attention_in_multiplier (in_scale) and its keys × key_multiplier, which scales the
    scores as a score scale of key_multiplier / sqrt(head_dim) does; a SwiGLU MLP whose gate ×
    mlp_multipliers[0] (gate_scale) and output × mlp_multipliers[1] (the residual's scale)."""
    from .hf import _multiplier

    inner = cfg.mamba_d_ssm or int(cfg.mamba_expand * cfg.hidden_size)
    heads, head_dim = int(cfg.mamba_n_heads), int(cfg.mamba_d_head)
    if heads * head_dim != inner:
        raise _unsupported(cfg, "mamba_d_head", f"Mamba-2 heads × head_dim = {heads} × {head_dim} that is not the "
                           f"inner width {inner}", "transformers' own mixer needs them equal")
    mamba = _mamba2(cfg, "mamba_n_heads", "mamba_d_head", "mamba_d_state", "mamba_n_groups", "mamba_d_conv", None,
                    "mamba_conv_bias", "mamba_proj_bias", cfg.rms_norm_eps, "mamba_chunk_size")[len("mamba2: "):-1]
    extra = [("out_bias", bool(cfg.projectors_bias))]
    if not cfg.mamba_rms_norm:
        extra.append(("gate_norm", "none"))
    elif cfg.mamba_norm_before_gate:
        extra.append(("gate_norm", "before_gate"))
    if _multiplier(cfg, "ssm_in_multiplier"):
        extra.append(("in_scale", float(cfg.ssm_in_multiplier)))
    if any(float(m) != 1.0 for m in cfg.ssm_multipliers):
        extra.append(("projection_scales", [float(m) for m in cfg.ssm_multipliers]))
    mamba = "{mamba2: " + mamba + ", " + _mixer_args(extra)[1:] + "}"
    head = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    key = _multiplier(cfg, "key_multiplier")
    attention = _attention(cfg, scale=key * head ** -0.5 if key else None)[len("attention: "):-1]
    if _multiplier(cfg, "attention_in_multiplier"):
        attention += f", in_scale: {float(cfg.attention_in_multiplier)}"
    attention = "{attention: " + attention + "}}"
    scales = [float(cfg.ssm_out_multiplier), float(cfg.attention_out_multiplier)]
    mixer = f"parallel: {{branches: [[{mamba}], [{attention}]]" + (
        f", scales: [{scales[0]}, {scales[1]}]}}" if scales != [1.0, 1.0] else "}")
    _silu(cfg)
    gate = float(cfg.mlp_multipliers[0])
    ff = "mlp: " + _mixer_args([("hidden", cfg.intermediate_size), ("activation", "swiglu"),
                                ("bias", bool(cfg.mlp_bias))] + ([("gate_scale", gate)] if gate != 1.0 else []))
    return [("parallel_layer", mixer, ff)] * cfg.num_hidden_layers, _positional(cfg), cfg.rms_norm_eps


def _nemotron_h(cfg: Any) -> list[tuple[str, str | None, str | None]]:
    """Nemotron-H: each layer one pre-norm residual around a Mamba-2 mixer ('M'), attention ('*'), a
    squared-ReLU MLP ('-') or a MoE ('E': DeepSeek-V3's sigmoid routing over squared-ReLU experts plus a
    shared expert); its mixer's Δ floor is time_step_min (transformers' NemotronHMamba2Mixer)."""
    if getattr(cfg, "mlp_hidden_act", "relu2") != "relu2":
        raise _unsupported(cfg, "mlp_hidden_act", f"activation '{cfg.mlp_hidden_act}' in Nemotron-H's MLPs",
                           "archdsl imports its squared-ReLU (relu2) MLPs")
    bias = bool(getattr(cfg, "mlp_bias", False))
    nodes: dict[str, str] = {}
    layers: list[tuple[str, str | None, str | None]] = []
    for kind in cfg.layers_block_type:
        if kind not in nodes:
            if kind == "linear_attention":
                nodes[kind] = _mamba2(cfg, "mamba_num_heads", "mamba_head_dim", "ssm_state_size", "n_groups",
                                      "conv_kernel", None, "use_conv_bias", "use_bias", cfg.layer_norm_epsilon,
                                      "chunk_size", act="mamba_hidden_act",
                                      limit=(float(cfg.time_step_min), float("inf")))
            elif kind == "full_attention":
                nodes[kind] = _attention(cfg)
            elif kind == "mlp":
                nodes[kind] = "mlp: " + _mixer_args([("hidden", cfg.intermediate_size), ("activation", "relu2"),
                                                     ("bias", bias)])
            elif kind == "moe":
                nodes[kind] = _nemotron_moe(cfg, bias)
            else:
                raise _unsupported(cfg, "layers_block_type", f"the Nemotron-H layer type '{kind}'")
        name = {"linear_attention": "mamba_layer", "full_attention": "attention_layer"}.get(kind, f"{kind}_layer")
        mixer = kind in ("linear_attention", "full_attention")
        layers.append((name, nodes[kind] if mixer else None, None if mixer else nodes[kind]))
    return layers


def _nemotron_moe(cfg: Any, bias: bool) -> str:
    if getattr(cfg, "moe_latent_size", None):
        raise _unsupported(cfg, "moe_latent_size", "a MoE whose experts work in a projected latent width "
                           "(fc1/fc2_latent_proj)")
    experts, groups = int(cfg.n_routed_experts), int(cfg.n_group or 1)
    items = [("experts", experts), ("top_k", cfg.num_experts_per_tok), ("hidden", cfg.moe_intermediate_size),
             ("activation", "relu2"), ("bias", bias), ("normalize", bool(cfg.norm_topk_prob)),
             ("scoring", "sigmoid"), ("score_bias", True), ("router_fp32", True),
             ("routed_scale", float(cfg.routed_scaling_factor))]
    if groups > 1:
        items += [("groups", groups), ("top_groups", int(cfg.topk_group))]
    if int(getattr(cfg, "n_shared_experts", 0) or 0):
        items.append(("shared_hidden", cfg.moe_shared_expert_intermediate_size))
    return "moe: " + _mixer_args(items)


def _positional(cfg: Any) -> str:
    from .hf import _args, _rope, _rope_scaling, _scalar

    rope = _rope(cfg) or {"rope_theta": 10000.0, "rope_type": "default"}
    items = [("kind", "rotary"), ("base", _scalar(float(rope["rope_theta"])))]
    fraction = rope.get("partial_rotary_factor")
    if fraction not in (None, 1, 1.0):
        items.append(("fraction", _scalar(float(fraction))))
    items += [(k, _scalar(v) if not isinstance(v, str) else v) for k, v in _rope_scaling(cfg, rope)]
    return "positional: " + _args(items)


def _period(names: list[str]) -> int:
    return next(p for p in range(1, len(names) + 1) if all(names[i] == names[i % p] for i in range(len(names))))


# ----------------------------------------------------------------------------------------- spec
def spec_yaml_from_config(config: Any) -> str:
    """The readable YAML spec of a Mamba / FalconMamba / Mamba-2 / Jamba / Bamba config; SpecError naming
    the feature for what archdsl cannot express (REFUSED families, other activations, unequal widths)."""
    from .hf import _scalar, _spec_name, load_config

    cfg = load_config(config)
    t = cfg.model_type
    if t in REFUSED:
        key, what = REFUSED[t]
        raise _unsupported(cfg, key, what)
    if t not in SUPPORTED:
        raise _unsupported(cfg, "model_type", f"model type '{t}' in the state-space importer")
    layers, positional, eps = _layers(cfg)
    tie = bool(getattr(cfg, "tie_word_embeddings", False))
    blocks: dict[str, tuple[str | None, str | None]] = {}
    for name, mixer, ff in layers:
        if blocks.setdefault(name, (mixer, ff)) != (mixer, ff):
            raise AssertionError(f"two different layers named {name}")
    lines = ["archdsl: 1", f"name: {_scalar(_spec_name(cfg))}", "description: >"]
    counts: dict[str, int] = defaultdict(int)
    for _, mixer, ff in layers:
        counts[(mixer or ff).split(":")[0]] += 1  # type: ignore[union-attr]
    mix = ", ".join(f"{n} {k}" for k, n in counts.items())
    embed_scale, (mixer_scale, ff_scale), head_scale = _multipliers(cfg)
    same = mixer_scale == ff_scale
    scaled = [f"{what} × {_scalar(x)}" for what, x in (
        ("embedding", embed_scale), ("residual branches" if same else "the mixers' residual branches", mixer_scale),
        ("the feed-forward residual branches", None if same else ff_scale), ("logits", head_scale)) if x is not None]
    lines += [f"  Imported from a Hugging Face {t} config: {len(layers)} layers ({mix})"
              + (", each with a feed-forward" if all(ff and mixer for _, mixer, ff in layers) else
                 ", each one pre-norm residual" if not any(ff and mixer for _, mixer, ff in layers) else "")
              + (f"; {', '.join(scaled)}" if scaled else "") + (", tied head." if tie else "."),
              "vars:", f"  vocab: {cfg.vocab_size}", f"  d_model: {cfg.hidden_size}", f"  eps: {_scalar(float(eps))}"]
    scale_vars = {"mixer": "residual_scale" if same else "mixer_scale", "ff": "residual_scale" if same else "ff_scale"}
    for role, scale in (("mixer", mixer_scale), ("ff", ff_scale)):
        if scale is not None and f"  {scale_vars[role]}: {_scalar(scale)}" not in lines:
            lines.append(f"  {scale_vars[role]}: {_scalar(scale)}")
    lines += ["", "blocks:"]

    def residual(node: str, scale: float | None, var: str) -> list[str]:
        if scale is None:
            return ["    - residual:", "        - rmsnorm: {eps: $eps}", f"        - {node}"]
        return ["    - residual:", f"        scale: ${var}", "        body:", "          - rmsnorm: {eps: $eps}",
                f"          - {node}"]

    for name, (mixer, ff) in blocks.items():
        lines.append(f"  {name}:")
        if mixer:
            lines += residual(mixer, mixer_scale, scale_vars["mixer"])
        if ff:
            lines += residual(ff, ff_scale, scale_vars["ff"])
    names = [name for name, _, _ in layers]
    embed = "    - embedding: {name: embed, vocab: $vocab" + (f", scale: {_scalar(embed_scale)}}}" if embed_scale
                                                            else "}")
    lines += ["", "model:", "  width: $d_model", "  layers:", embed]
    if positional:
        lines.append(f"    - {positional}")
    period = _period(names)
    if period == 1:
        lines += [f"    - repeat: {len(names)}", "      name: layers", f"      body: {names[0]}"]
    elif period <= 8:
        lines += [f"    - repeat: {len(names)}", "      name: layers", f"      pattern: [{', '.join(names[:period])}]"]
    else:  # no short period: a repeat per run of equal layers (layer numbers continue across them)
        runs: list[list] = []
        for name in names:
            if runs and runs[-1][0] == name:
                runs[-1][1] += 1
            else:
                runs.append([name, 1])
        for j, (name, n) in enumerate(runs):
            lines += [f"    - repeat: {n}", f"      name: layers_{j}", f"      body: {name}"]
    lines += ["    - rmsnorm: {eps: $eps, name: final_norm}",
              "    - lm_head: {vocab: $vocab" + (", tie: embed" if tie else "")
              + (f", scale: {_scalar(head_scale)}}}" if head_scale is not None else "}")]
    return "\n".join(lines) + "\n"


def _multipliers(cfg: Any) -> tuple[float | None, tuple[float | None, float | None], float | None]:
    """(embedding, (mixer residual branch, feed-forward residual branch), logit) multipliers, None where 1:
    Granite's (its logits divided by logits_scaling, which scaling the stream before the bias-free head
    does) and Falcon-H1's (the MLP's down_multiplier scales its whole branch)."""
    from .hf import _multiplier

    if cfg.model_type == "granitemoehybrid":
        logits = _multiplier(cfg, "logits_scaling")
        residual = _multiplier(cfg, "residual_multiplier")
        return _multiplier(cfg, "embedding_multiplier"), (residual, residual), 1.0 / logits if logits else None
    if cfg.model_type == "falcon_h1":
        down = float(cfg.mlp_multipliers[1])
        return (_multiplier(cfg, "embedding_multiplier"), (None, None if down == 1.0 else down),
                _multiplier(cfg, "lm_head_multiplier"))
    return None, (None, None), None


def spec_from_config(config: Any) -> Any:
    from ..loader import load_spec

    return load_spec(spec_yaml_from_config(config))


# ----------------------------------------------------------------------------------------- weights
def map_weights(model_type: str, tensors: Mapping[str, Callable[[], Any]], model: Any) -> dict[str, Any]:
    """archdsl parameter name -> tensor, from the checkpoint's tensors (name -> loader), by role."""
    import torch

    from ..ir import layer_numbering, leaves

    g = model.graph
    layer_of = layer_numbering(g)
    per_layer: dict[int, list[tuple[str, str]]] = defaultdict(list)
    top: list[tuple[str, str]] = []
    for node in leaves(g):
        data = g.nodes[node]
        if "spec" not in data:
            continue
        i = layer_of(node)
        (per_layer[i] if i is not None else top).append((node, data["kind"]))
    used: set[str] = set()
    out: dict[str, Any] = {}
    ssm_names = ("backbone" if model_type in ("mamba", "falcon_mamba", "mamba2") else "model")
    if model_type == "nemotron_h" and any(k.startswith("backbone.") for k in tensors):
        ssm_names = "backbone"  # Nemotron-H in memory is model.*, on disk (NVIDIA's names) backbone.*

    def get(key: str) -> Any:
        if key not in tensors:
            raise ValueError(f"the checkpoint has no tensor {key} (for {model_type})")
        used.add(key)
        return tensors[key]()

    def copy_under(prefix: str, ours: str) -> None:
        found = [k for k in tensors if k.startswith(prefix + ".")]
        if not found:
            raise ValueError(f"the checkpoint has no tensors under {prefix}")
        for key in found:
            out[f"{ours}.{key[len(prefix) + 1:]}"] = get(key)

    for i, nodes in sorted(per_layer.items()):
        hf = f"{ssm_names}.layers.{i}"
        if model_type == "falcon_h1":
            out.update(_falcon_h1_layer(get, copy_under, hf, nodes, g))
            continue
        norms = [n for n, k in nodes if k == "rmsnorm"]
        mixer = next(((n, k) for n, k in nodes if k in ("mamba", "mamba2", "attention")), None)
        ff = next(((n, k) for n, k in nodes if k in ("mlp", "moe")), None)
        hf_ff = f"{hf}.feed_forward"
        if ssm_names == "backbone" or model_type == "nemotron_h":  # one norm and one 'mixer' (of any kind)
            hf_norms, hf_mixer = [f"{hf}.norm"], f"{hf}.mixer"
            hf_ff = hf_mixer
        else:
            second = "post_attention_layernorm" if model_type == "granitemoehybrid" else "pre_ff_layernorm"
            hf_norms = [f"{hf}.input_layernorm", f"{hf}.{second}"]
            hf_mixer = f"{hf}.mamba" if mixer and mixer[1] != "attention" else f"{hf}.self_attn"
        if len(norms) != len(hf_norms):
            raise ValueError(f"layer {i}: the spec has {len(norms)} norms, the checkpoint {len(hf_norms)}")
        for ours, theirs in zip(norms, hf_norms):
            out[f"{ours}.weight"] = get(f"{theirs}.weight")
        if mixer is None:
            pass
        elif mixer[1] == "attention":
            for part in ("weight", "bias"):
                keys = [f"{hf_mixer}.{p}_proj.{part}" for p in "qkv"]
                if keys[0] in tensors:
                    out[f"{mixer[0]}.qkv.{part}"] = torch.cat([get(k) for k in keys])
                if f"{hf_mixer}.o_proj.{part}" in tensors:
                    out[f"{mixer[0]}.out.{part}"] = get(f"{hf_mixer}.o_proj.{part}")
        else:
            copy_under(hf_mixer, mixer[0])
        if ff is not None:
            spec = g.nodes[ff[0]]["spec"]
            if ff[1] == "mlp" and not spec.gated:  # Nemotron-H: up_proj, down_proj (biases with mlp_bias)
                for part in ("weight", "bias") if spec.bias else ("weight",):
                    out[f"{ff[0]}.up.{part}"] = get(f"{hf_ff}.up_proj.{part}")
                    out[f"{ff[0]}.down.{part}"] = get(f"{hf_ff}.down_proj.{part}")
            elif model_type == "granitemoehybrid":
                out.update(_granite_ff_weights(get, tensors, hf, ff[0], spec))
            elif ff[1] == "mlp":
                out[f"{ff[0]}.up.weight"] = torch.cat([get(f"{hf_ff}.gate_proj.weight"), get(f"{hf_ff}.up_proj.weight")])
                out[f"{ff[0]}.down.weight"] = get(f"{hf_ff}.down_proj.weight")
            elif model_type == "nemotron_h":
                out.update(_nemotron_moe_weights(get, tensors, hf_ff, ff[0], spec))
            else:
                out[f"{ff[0]}.router.weight"] = get(f"{hf_ff}.router.weight")
                if f"{hf_ff}.experts.gate_up_proj" in tensors:  # in memory: stacked experts
                    out[f"{ff[0]}.experts.up"] = get(f"{hf_ff}.experts.gate_up_proj")
                    out[f"{ff[0]}.experts.down"] = get(f"{hf_ff}.experts.down_proj")
                else:  # on disk: one gate/up/down per expert
                    n = g.nodes[ff[0]]["spec"].experts
                    e = [f"{hf_ff}.experts.{j}" for j in range(n)]
                    out[f"{ff[0]}.experts.up"] = torch.stack(
                        [torch.cat([get(f"{x}.gate_proj.weight"), get(f"{x}.up_proj.weight")]) for x in e])
                    out[f"{ff[0]}.experts.down"] = torch.stack([get(f"{x}.down_proj.weight") for x in e])
    embed = next(n for n, k in top if k == "embedding")
    rename = (lambda k: ssm_names + k[k.index("."):]) if model_type == "nemotron_h" else (lambda k: k)
    out[f"{embed}.weight"] = get(f"{rename(_EMBED[model_type])}.weight")
    final = [n for n, k in top if k == "rmsnorm"][-1]
    out[f"{final}.weight"] = get(f"{rename(_FINAL[model_type])}.weight")
    head = next(n for n, k in top if k == "lm_head")
    if g.nodes[head]["spec"].tie is None:
        out[f"{head}.weight"] = get("lm_head.weight")
    elif "lm_head.weight" in tensors:
        used.add("lm_head.weight")  # the tied copy transformers' state dict also lists
    left = sorted(k for k in tensors if k not in used)
    if left:
        raise ValueError(f"checkpoint tensors the spec has no place for: {', '.join(left[:6])}"
                         + (f" and {len(left) - 6} more" if len(left) > 6 else ""))
    return out


def _falcon_h1_layer(get: Callable[[str], Any], copy_under: Callable[[str, str], None], hf: str,
                     nodes: list[tuple[str, str]], g: Any) -> dict[str, Any]:
    """One Falcon-H1 layer: input_layernorm / pre_ff_layernorm, the mamba mixer (its names), self_attn's
    q/k/v fused, feed_forward's gate/up fused (biases with mlp_bias)."""
    import torch

    out: dict[str, Any] = {}
    norms = [n for n, k in nodes if k == "rmsnorm"]
    for ours, theirs in zip(norms, ("input_layernorm", "pre_ff_layernorm"), strict=True):
        out[f"{ours}.weight"] = get(f"{hf}.{theirs}.weight")
    for node, kind in nodes:
        spec = g.nodes[node]["spec"]
        if kind == "mamba2":
            copy_under(f"{hf}.mamba", node)
        elif kind == "attention":
            attn = f"{hf}.self_attn"
            for part in ("weight", "bias") if spec.bias else ("weight",):
                out[f"{node}.qkv.{part}"] = torch.cat([get(f"{attn}.{p}_proj.{part}") for p in "qkv"])
                out[f"{node}.out.{part}"] = get(f"{attn}.o_proj.{part}")
        elif kind == "mlp":
            ff = f"{hf}.feed_forward"
            for part in ("weight", "bias") if spec.bias else ("weight",):
                out[f"{node}.up.{part}"] = torch.cat([get(f"{ff}.gate_proj.{part}"), get(f"{ff}.up_proj.{part}")])
                out[f"{node}.down.{part}"] = get(f"{ff}.down_proj.{part}")
    return out


def _granite_ff_weights(get: Callable[[str], Any], tensors: Mapping[str, Any], hf: str, ours: str,
                        spec: Any) -> dict[str, Any]:
    """Granite 4.0's feed-forward: shared_mlp (input_linear = [gate; up], output_linear) as the MLP or the
    MoE's shared expert; the routed experts under block_sparse_moe, stacked (experts.gate_up_proj /
    down_proj in memory, input_linear / output_linear on disk) with the router's weight."""
    shared = {"up.weight": get(f"{hf}.shared_mlp.input_linear.weight"),
              "down.weight": get(f"{hf}.shared_mlp.output_linear.weight")}
    if not hasattr(spec, "experts"):
        return {f"{ours}.{k}": t for k, t in shared.items()}
    moe = f"{hf}.block_sparse_moe"
    on_disk = f"{moe}.input_linear.weight" in tensors
    fused = f"{moe}.input_linear.weight" if on_disk else f"{moe}.experts.gate_up_proj"
    down = f"{moe}.output_linear.weight" if on_disk else f"{moe}.experts.down_proj"
    router = f"{moe}.router.layer.weight" if f"{moe}.router.layer.weight" in tensors else f"{moe}.router.weight"
    return {f"{ours}.router.weight": get(router), f"{ours}.experts.up": get(fused), f"{ours}.experts.down": get(down),
            **{f"{ours}.shared.{k}": t for k, t in shared.items()}}


def _nemotron_moe_weights(get: Callable[[str], Any], tensors: Mapping[str, Any], hf: str, ours: str,
                          spec: Any) -> dict[str, Any]:
    """Nemotron-H's MoE: the router (gate.weight, gate.e_score_correction_bias), ungated experts stacked
    (experts.up_proj / down_proj in memory) or one module per expert (on disk), the shared expert's MLP."""
    import torch

    out = {f"{ours}.router.weight": get(f"{hf}.gate.weight"),
           f"{ours}.score_bias": get(f"{hf}.gate.e_score_correction_bias")}
    if f"{hf}.experts.up_proj" in tensors:
        out[f"{ours}.experts.up"] = get(f"{hf}.experts.up_proj")
        out[f"{ours}.experts.down"] = get(f"{hf}.experts.down_proj")
    else:
        e = [f"{hf}.experts.{j}" for j in range(spec.experts)]
        out[f"{ours}.experts.up"] = torch.stack([get(f"{x}.up_proj.weight") for x in e])
        out[f"{ours}.experts.down"] = torch.stack([get(f"{x}.down_proj.weight") for x in e])
    if spec.shared_hidden:
        for part in ("weight", "bias") if spec.bias else ("weight",):
            out[f"{ours}.shared.up.{part}"] = get(f"{hf}.shared_experts.up_proj.{part}")
            out[f"{ours}.shared.down.{part}"] = get(f"{hf}.shared_experts.down_proj.{part}")
    return out


def from_hf(hf_model: Any, *, spec: Any = None, overrides: Mapping[str, Any] | None = None, dtype: Any = None,
            device: Any = None, verify: bool | None = None) -> Any:
    """An ArchModel with the architecture and weights of an in-memory transformers Mamba / FalconMamba /
    Mamba2 / Jamba / Bamba causal LM (``spec=`` a spec of your own with the same layers; ``verify`` compares
    logits, by default when ``spec`` is given)."""
    from ..loader import load_spec
    from .hf import _assign, _build, _verify

    cfg = hf_model.config
    target = load_spec(spec, overrides=overrides) if spec is not None else spec_from_config(cfg)
    first = next(hf_model.parameters())
    state = {k: t for k, t in hf_model.state_dict().items()}
    model = _build(target, dtype or first.dtype, device or first.device)
    _assign(model, map_weights(cfg.model_type, {k: (lambda t=t: t) for k, t in state.items()}, model))
    model.eval()
    if verify if verify is not None else spec is not None:
        _verify(hf_model, model)
    return model


def from_pretrained(local_dir: Any, *, spec: Any = None, overrides: Mapping[str, Any] | None = None,
                    dtype: Any = None, device: Any = "cpu") -> Any:
    """An ArchModel from a local checkpoint folder of one of these families (config.json + *.safetensors)."""
    import torch

    from ..loader import load_spec
    from .hf import _assign, _build, _get, load_config, load_safetensors

    cfg = load_config(local_dir)
    target = load_spec(spec, overrides=overrides) if spec is not None else spec_from_config(cfg)
    if dtype == "auto":
        dtype = _get(cfg, "dtype", "torch_dtype") or torch.float32
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    model = _build(target, dtype or torch.float32, device)
    with load_safetensors(local_dir) as shards:
        _assign(model, map_weights(cfg.model_type, shards, model))
    return model.eval()
