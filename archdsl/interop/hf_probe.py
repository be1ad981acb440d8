"""Traits of a transformers decoder read from what its model is: the module tree of its first layer.

A config says how big a model is; it often does not say what its modelling code fixes: whether
q/k/v and the output projection have biases, whether queries and keys are normalised (per head
or over all heads), where a layer's norms sit. ``archdsl.interop.hf.FAMILY_TRAITS`` records those
facts for the families written by hand. For any other family, :func:`traits_from_model` reads them
from the transformers model of the config, built on the ``meta`` device (no memory, no weights):
the parameters of layer 0's attention, feed-forward and norms. Only unambiguous evidence becomes a
trait; anything else is left to the defaults, and the role-by-role verification
(:mod:`.hf_verify`) and weight mapping then refuse a model whose layout still differs.

What the tree cannot show is behaviour (a norm applied after the rotary rotation rather than
before, a (1 + w) norm scale); the coverage sweep (``benchmarks/hf_coverage.py``) compares logits
for every probed family, and such behaviour is recorded per family in ``hf._PROBED_BEHAVIOUR`` (or
refused by name in ``hf.UNSUPPORTED_FAMILIES`` where archdsl cannot express it). ``from_hf`` also
compares logits with the original for every family outside FAMILY_TRAITS, by default.
"""
from __future__ import annotations

from typing import Any

__all__ = ["traits_from_model", "probe_config"]

_ATTN = ("self_attn", "attn", "attention", "self_attention", "multi_head_attention")  # CTRL's last
_MLP = ("mlp", "feed_forward", "ffn")
_OTHER_MIXERS = ("linear_attn", "linear_attention", "conv", "mamba", "mixer", "temporal_block")
_Q = ("q_proj", "query", "wq", "Wq")
_K = ("k_proj", "key", "wk", "Wk")
_V = ("v_proj", "value", "wv", "Wv")
_QKV = ("query_key_value", "qkv_proj", "Wqkv", "c_attn")
_O = ("o_proj", "out_proj", "dense", "wo", "Wo")
_Q_NORM = ("q_norm", "query_layernorm", "q_layernorm")
_K_NORM = ("k_norm", "key_layernorm", "k_layernorm")
# where a decoder layer's norms sit, by their names: pre-norm (Llama), norms after attention and
# MLP only (OLMo 2), or both (Gemma 2's sandwich)
_NORM_LAYOUTS = {
    frozenset({"input_layernorm", "post_attention_layernorm"}): "pre",
    frozenset({"layernorm1", "layernorm2"}): "pre",  # CTRL
    frozenset({"attention_layernorm", "feedforward_layernorm"}): "pre",  # Apertus
    frozenset({"post_attention_layernorm", "post_feedforward_layernorm"}): "post",
    frozenset({"input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
               "post_feedforward_layernorm"}): "sandwich",
    frozenset({"input_layernorm", "post_self_attn_layernorm", "post_attention_layernorm",  # GLM-4's names
               "post_mlp_layernorm"}): "sandwich",
    frozenset({"input_layernorm", "post_norm1", "post_attention_layernorm", "post_norm2"}): "sandwich",  # HyperCLOVA X
    frozenset({"input_layernorm", "post_attention_layernorm", "pre_mlp_layernorm", "post_mlp_layernorm"}): "sandwich",
    frozenset({"attn_norm", "mlp_norm"}): "pre",  # ModernBERT's
}


def _child(module: Any, names: tuple[str, ...]) -> Any:
    """The first of ``names`` that is a submodule of ``module``."""
    for name in names:
        child = getattr(module, name, None)
        if child is not None and hasattr(child, "named_parameters"):
            return child
    return None


def _has_bias(module: Any) -> bool | None:
    if module is None or getattr(module, "weight", None) is None:
        return None
    return getattr(module, "bias", None) is not None


def _base(model: Any) -> Any:
    """The decoder stack of a transformers model: model.model, model.transformer, or the module its class names
    as its base (base_model_prefix: ESM-C's esmc)."""
    from torch import nn

    found = getattr(model, "model", None) or getattr(model, "transformer", None)
    if found is None:
        prefix = getattr(type(model), "base_model_prefix", "")
        found = getattr(model, prefix, None) if isinstance(prefix, str) and prefix else None
    return found if isinstance(found, nn.Module) else model


def _layers(model: Any) -> list[Any]:
    base = _base(model)
    layers = getattr(base, "layers", None) or getattr(base, "h", None)
    return list(layers) if layers is not None else []


_SHARED = ("shared_expert", "shared_experts", "shared_mlp")
_CROSS = ("encoder_attn", "crossattention", "cross_attention", "EncDecAttention")


def _where_layers_are(model: Any) -> str:
    """Where a model's layers are and what they hold, when not under model.layers or transformer.h (the decoder
    of an encoder-decoder used alone as a causal LM keeps its cross-attention, which that forward never reads)."""
    from torch import nn

    found = max(((name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m)),
                key=lambda item: len(item[1]), default=None)
    if found is None:
        return "layers are not under model.layers or transformer.h (it has no list of layers)"
    name, layers = found
    children = [child for child, _ in layers[0].named_children()]
    cross = [c for c in children if c in _CROSS]
    text = f"layers are {name}.N (not model.layers or transformer.h), holding {', '.join(children)}"
    if cross:
        text += (f"; {cross[0]} is cross-attention to an encoder, whose weights this causal-LM class holds but never "
                 "reads: convert the encoder-decoder (its seq2seq class) instead")
    return text


def _first_layer(model: Any) -> Any:
    layers = _layers(model)
    return layers[0] if layers else None


def _gate_candidates(cfg: Any, experts: Any) -> dict[str, Any]:
    """archdsl's gated activations as f(gate, up), GPT-OSS's clamped one with the experts' own constants."""
    from ..blocks.feedforward import ClampedSwiGLU, gated_combine

    alpha = getattr(experts, "alpha", None) or getattr(cfg, "swiglu_alpha", None) or 1.702
    limit = getattr(experts, "limit", None) or getattr(cfg, "swiglu_limit", None) or 7.0
    return {"swiglu": gated_combine("swiglu", (alpha, limit)), "geglu": gated_combine("geglu", (alpha, limit)),
            "geglu_exact": gated_combine("geglu_exact", (alpha, limit)),
            "swiglu_clamped": ClampedSwiGLU(float(alpha), float(limit))}


def is_transposed_experts(experts: Any, width: int | None) -> bool:
    """Whether stacked experts store (experts, in, out): their is_transposed flag (GPT-OSS), or, without one, a
    down projection of (experts, hidden, width) (Llama 4's) rather than transformers' usual (experts, width,
    hidden)."""
    if getattr(experts, "is_transposed", False):
        return True
    down = getattr(experts, "down_proj", None)
    return bool(getattr(down, "dim", lambda: 0)() == 3 and width and down.shape[2] == width and down.shape[1] != width)


def experts_traits(cfg: Any, experts: Any) -> dict[str, Any]:
    """How a transformers 5 experts module (``@use_experts_implementation``) stores and gates its MLPs: from its
    flags (is_transposed: (experts, in, out) weights; has_bias), and from behaviour: its ``_apply_gate`` run on
    probe values, matched against archdsl's gated activations with the gate and up halves concatenated
    ([gate; up]) or interleaved (gate0, up0, gate1, ...). experts_activation "unknown" when none matches."""
    import torch

    traits: dict[str, Any] = {}
    if is_transposed_experts(experts, getattr(cfg, "hidden_size", None)):
        traits["experts_transposed"] = True
    if getattr(experts, "has_bias", False):
        traits["experts_bias"] = True
    apply = getattr(type(experts), "_apply_gate", None)
    if apply is None or not getattr(experts, "has_gate", True) or not hasattr(experts, "gate_up_proj"):
        return traits
    values = torch.randn(3, 24, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 6  # past ±7
    try:
        out = apply(experts, values)
    except Exception:  # noqa: BLE001 - a gate that needs more than its input: left to the logits check
        return traits
    halves = {"concat": values.chunk(2, dim=-1), "interleaved": (values[..., ::2], values[..., 1::2])}
    for name, act in _gate_candidates(cfg, experts).items():
        for layout, (gate, up) in halves.items():
            # to float32's precision: Beam's gate computes in float32 whatever its input's dtype
            if out.shape == gate.shape and torch.allclose(out.double(), act(gate, up), rtol=1e-6, atol=1e-6):
                traits["experts_activation"] = name
                if layout == "interleaved":
                    traits["experts_interleaved"] = True
                return traits
    traits["experts_activation"] = "unknown"
    return traits


def _experts_layout(model: Any, moe: Any, transposed: bool) -> dict[str, Any]:
    """How many experts, how wide, and in which layers, from the tree: the experts' stacked tensors (or their
    list), each layer's feed-forward module (with experts or not), a dense layer's down projection."""
    from torch import nn

    experts = moe.experts
    traits: dict[str, Any] = {}
    if isinstance(experts, nn.ModuleList):
        down = _child(experts[0], ("down_proj", "w2")) if len(experts) else None
        if down is None:
            return {}
        traits["experts"], traits["moe_hidden"] = len(experts), int(down.weight.shape[-1])
    else:
        down = getattr(experts, "down_proj", None)
        if not isinstance(down, nn.Parameter) or down.dim() != 3:
            return {}
        traits["experts"] = int(down.shape[0])
        traits["moe_hidden"] = int(down.shape[1] if transposed else down.shape[2])  # (E, I, D) or (E, D, I)
    kinds = []
    for layer in _layers(model):
        ff = _child(layer, _MLP)
        kinds.append("moe" if ff is not None and hasattr(ff, "experts") else "dense")
        dense_down = _child(ff, ("down_proj", "fc2", "w2")) if kinds[-1] == "dense" and ff is not None else None
        if dense_down is not None and "dense_hidden" not in traits:
            traits["dense_hidden"] = int(dense_down.weight.shape[-1])
    traits["mlp_kinds"] = kinds
    router = getattr(moe, "gate", None) or getattr(moe, "router", None)
    if isinstance(getattr(router, "top_k", None), int):
        traits["top_k"] = int(router.top_k)
    return traits


def router_traits(cfg: Any, moe: Any) -> dict[str, Any]:
    """How a router routes, from behaviour: a copy of it on the CPU with random weights (and a random choice bias
    where the model has one) run on probe values; the experts and weights it returns are matched against archdsl's
    routings of its own logits (softmax / sigmoid / sparsemixer scores, a choice bias, renormalised or not, expert
    groups as the config sizes them), the weights' constant ratio being the routed scale. Empty when the router
    does not return (logits, weights, experts) (DeepSeek's returns logits; its block routes: the config decides);
    router "unknown" when no candidate matches."""
    import copy

    import torch

    from ..blocks.feedforward import MoE

    router = getattr(moe, "gate", None) or getattr(moe, "router", None)
    if router is None or not isinstance(getattr(router, "top_k", None), int):
        return {}
    g = torch.Generator().manual_seed(0)
    try:
        probe = copy.deepcopy(router).to_empty(device="cpu").float()
        bias = None
        with torch.no_grad():
            for name, t in [*probe.named_parameters(), *probe.named_buffers()]:
                t.copy_(torch.randn(t.shape, generator=g) * (0.1 if "bias" in name else 1.0))
                if name.endswith("e_score_correction_bias"):
                    bias = t.reshape(-1)
            own = {**dict(moe.named_buffers(recurse=False)), **dict(moe.named_parameters(recurse=False))}
            block_bias = own.get("e_score_correction_bias", own.get("expert_bias"))  # AFMoE's: a frozen parameter
            args = []
            if block_bias is not None:  # MiniMax-M2 / HY-V3 pass the block's bias to the router
                bias = torch.randn(block_bias.shape, generator=g) * 0.1
                args = [bias]
            width = next(t for t in probe.parameters() if t.dim() == 2).shape[-1]
            x = torch.randn(32, width, generator=g) / width ** 0.5  # logits of order 1 at any width
            probe.eval()
            try:
                out = probe(x, *args)
            except Exception:  # noqa: BLE001 - a router that takes (batch, seq, width) (AFMoE's)
                out = probe(x[None], *args)
    except Exception:  # noqa: BLE001 - a router that needs more than its input
        return {}
    k = int(router.top_k)
    if isinstance(out, tuple) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out) and \
            out[0].shape == out[1].shape and bool(((out[0] != 0).sum(-1) == k).all()):
        # (scores over every expert, zero where not chosen; logits): Llama 4's router
        scores, logits = out
        weights, chosen = torch.topk(scores.float(), k, dim=-1)
        out = (logits, weights, chosen)
    if not (isinstance(out, tuple) and len(out) == 3 and all(isinstance(t, torch.Tensor) for t in out)):
        return {}
    logits, weights, chosen = (t.reshape(x.shape[0], -1) for t in out)
    n, k = logits.shape[-1], chosen.shape[-1]
    order = chosen.argsort(dim=-1)
    theirs_ids, theirs_w = chosen.gather(1, order), weights.float().gather(1, order)
    groups = int(getattr(cfg, "n_group", 1) or 1)
    top_groups = getattr(cfg, "topk_group", None)
    eps = float(getattr(cfg, "router_jitter_noise", 0.0) or 0.01)
    # b: no choice bias, one added to the scores (DeepSeek-V3), or to the logits (Kolibri 1)
    candidates = [(s, b, norm, grp) for s in ("softmax", "sigmoid", "sparsemixer")
                  for b in ((True, "logits", False) if bias is not None else (False,)) for norm in (True, False)
                  for grp in sorted({1, groups} if groups > 1 and top_groups else {1})
                  if not (s == "sparsemixer" and (b or not norm))]
    for scoring, score_bias, normalize, grp in candidates:
        if grp > 1 and (n % grp or top_groups > grp):
            continue
        ours = MoE(1, n, k, 1, "swiglu", False, False, normalize, 0.0, True, scoring=scoring,
                   score_bias=bool(score_bias), groups=grp, top_groups=int(top_groups) if grp > 1 else None,
                   sparsemixer_eps=eps, bias_on_logits=score_bias == "logits")
        if score_bias:
            ours.score_bias.copy_(bias)
        w, ids = ours.choose(logits.float())
        o = ids.argsort(dim=-1)
        ids, w = ids.gather(1, o), w.gather(1, o)
        if not torch.equal(ids, theirs_ids):
            continue
        ratio = theirs_w / w
        scale = float(ratio.mean())
        if torch.allclose(ratio, torch.full_like(ratio, scale), rtol=1e-4, atol=0):
            return {"routing": dict(scoring=scoring, score_bias=bool(score_bias), normalize=normalize, groups=grp,
                                    routed_scale=round(scale, 6), eps=eps, bias_on_logits=score_bias == "logits")}
    return {"routing": "unknown"}


def rotary_traits(model: Any, attn: Any) -> dict[str, Any]:
    """How the model rotates queries, from behaviour: its rotary module rebuilt on the CPU gives cos/sin for a few
    positions, its modelling file's apply_rotary_pos_emb rotates probe queries, matched against archdsl's rotation
    of adjacent pairs or of halves, by +angle or -angle (nanochat), over the same frequencies. Empty when the
    model has no such pieces (the family's traits or Llama's halves decide, and the logits check)."""
    import sys

    import torch

    from ..blocks.embedding import apply_rotary

    base = _base(model)
    rotary, apply = getattr(base, "rotary_emb", None), getattr(sys.modules.get(type(attn).__module__), "apply_rotary_pos_emb", None)
    if rotary is None or apply is None:
        return {}
    g = torch.Generator().manual_seed(0)
    try:
        with torch.device("cpu"):
            table = type(rotary)(config=model.config)
        positions = torch.arange(1, 6)[None]
        x = torch.randn(1, 5, 8, generator=g)
        cos, sin = table(x, positions)
        q = torch.randn(1, 2, 5, getattr(attn, "head_dim", cos.shape[-1]), generator=g)
        theirs = apply(q, q.clone(), cos, sin)[0].float()
    except Exception:  # noqa: BLE001 - a rotary module or function with another signature
        return {}
    cos, sin = cos.float()[:, None], sin.float()[:, None]  # (1, 1, S, dims)
    half = cos.shape[-1] // 2
    if torch.allclose(cos[..., :half], cos[..., half:]):  # [f, f]: read the frequencies' angles from the first half
        angles_cos, angles_sin = cos[..., :half], sin[..., :half]
    elif torch.allclose(cos[..., 0::2], cos[..., 1::2]):  # [f0, f0, f1, f1, ...]
        angles_cos, angles_sin = cos[..., 0::2], sin[..., 0::2]
    else:
        return {}
    for interleaved in (False, True):
        for reverse in (False, True):
            c = angles_cos.repeat_interleave(2, -1) if interleaved else torch.cat([angles_cos] * 2, -1)
            s = (angles_sin.repeat_interleave(2, -1) if interleaved else torch.cat([angles_sin] * 2, -1)) * (
                -1 if reverse else 1)
            if theirs.shape == q.shape and torch.allclose(apply_rotary(q, c, s, interleaved), theirs, atol=1e-5):
                return {"rotary_interleaved": interleaved, "rotary_reverse": reverse}
    return {}


def _small_attention_config(cfg: Any) -> Any:
    """A copy of a decoder's config with its attention made small (width 64, 4 heads of 16, the kv heads'
    sharing kept), for building its attention modules alone on the CPU."""
    import copy

    small = copy.deepcopy(cfg)
    heads = getattr(cfg, "num_attention_heads", None)
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    sizes = {"hidden_size": 64, "num_attention_heads": 4, "head_dim": 16,
             "num_key_value_heads": 4 if kv == heads else 1 if kv == 1 else 2}
    for key, value in sizes.items():
        if isinstance(getattr(small, key, None), int) and not isinstance(getattr(small, key), bool):
            setattr(small, key, value)
    return small


def rotation_traits(model: Any) -> dict[str, Any]:
    """Which layers rotate queries and keys, from behaviour: each layer's attention, built small on the CPU
    from its own class and a small copy of the config, run on the same input with the rotary tables of two
    position sequences spaced differently (a rotation makes the scores depend on the spacing; a NoPE layer's
    output is the same). Flint's code rotates only in its sliding-window layers, which its config does not
    say. Empty when the pieces cannot be built or run this way (the config then decides)."""
    import warnings

    import torch

    base = _base(model)
    rotary, layers = getattr(base, "rotary_emb", None), _layers(model)
    if rotary is None or not layers:
        return {}
    small = _small_attention_config(model.config)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 6, 64, generator=g)
    spacings = (torch.arange(6)[None], (torch.arange(6) * 3 + 1)[None])
    types = getattr(model.config, "layer_types", None)
    rotates = []
    try:
        with warnings.catch_warnings(), torch.no_grad(), torch.device("cpu"):
            warnings.simplefilter("ignore")
            table = type(rotary)(config=small)
            for i, layer in enumerate(layers):
                attn = _child(layer, _ATTN)
                if attn is None:
                    return {}
                module = type(attn)(small, i).eval()
                for p in module.parameters():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.3)
                outs = []
                for positions in spacings:
                    try:
                        cos, sin = table(x, positions)
                    except TypeError:  # one table per layer type (Gemma 3's)
                        cos, sin = table(x, positions, types[i])
                    out = module(hidden_states=x, position_embeddings=(cos, sin), attention_mask=None)
                    outs.append(out[0] if isinstance(out, tuple) else out)
                rotates.append(not torch.allclose(outs[0], outs[1], atol=1e-6))
    except Exception:  # noqa: BLE001 - an attention built or called another way: no evidence
        return {}
    return {"rotates": rotates}


# an MLP's activation by its module's class (CTRL's nn.Sequential)
_ACTIVATION_MODULES = {"ReLU": "relu", "GELU": "gelu", "SiLU": "silu", "Tanh": "tanh"}


def position_table_traits(model: Any) -> dict[str, Any]:
    """Fixed sinusoidal positions the model keeps as a buffer of its base (CTRL's pos_encoding), and whether the
    token embeddings are scaled by √width before they are added, from behaviour: a small random model of the class,
    its table matched against archdsl's [sin | cos] tables, its embedding output (hidden_states[0]) against
    s · embedding + table for s = 1 and √width. Empty when the base has no such buffer or nothing matches."""
    import math
    import warnings

    import torch

    width = getattr(model.config, "hidden_size", None)
    base = _base(model)
    names = [n for n, b in base.named_buffers(recurse=False) if b.dim() == 2 and width and b.shape[-1] == width]
    if not names:
        return {}
    try:
        import transformers

        from .hf_seq2seq import _is_sinusoid_halves, sinusoid_spacing

        sizes = {"hidden_size": 32, "num_attention_heads": 2, "num_hidden_layers": 1, "intermediate_size": 48,
                 "dff": 48}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            small, m = small_random_model(model.config, sizes, transformers.AutoModelForCausalLM.from_config)
        table = dict(_base(m).named_buffers(recurse=False))[names[0]].float()
        spacing = sinusoid_spacing(table) if _is_sinusoid_halves(table) else None
        if spacing is None:
            return {}
        ids = torch.arange(3, 9)[None] % int(small.vocab_size)
        with torch.no_grad():
            out = m(ids, output_hidden_states=True, use_cache=False).hidden_states[0]
            emb = m.get_input_embeddings()(ids)
        for scale in (1.0, math.sqrt(table.shape[-1])):
            if torch.allclose(out, emb * scale + table[:6], atol=1e-5):
                return {"positional": "sinusoidal", "sinusoid_spacing": spacing, "embed_scale": scale != 1.0}
    except Exception:  # noqa: BLE001 - a class that cannot be built or run small: no evidence
        return {}
    return {}


def window_traits(cfg: Any) -> dict[str, Any]:
    """Whether the modelling code applies the config's sliding_window, from behaviour: a small random model of
    the class with a window of 2 and the same with a window wider than the probe, run on 8 tokens (Moshi's
    code builds a plain causal mask whatever its sliding_window says). Only for configs without layer_types
    (whose windows the mask functions of transformers apply by type); empty when it cannot be run."""
    import copy

    import torch

    window = getattr(cfg, "sliding_window", None)
    if not isinstance(window, int) or isinstance(window, bool) or getattr(cfg, "layer_types", None):
        return {}
    try:
        import transformers

        outs = []
        for size in (2, 64):
            small = copy.deepcopy(cfg)
            small.sliding_window = size
            sizes = {"hidden_size": 64, "num_attention_heads": 4, "head_dim": 16, "num_hidden_layers": 1,
                     "intermediate_size": 64, "ffn_dim": 64,
                     "num_key_value_heads": 4 if getattr(cfg, "num_key_value_heads", None) in (
                         None, getattr(cfg, "num_attention_heads", None)) else 1}
            _, model = small_random_model(small, sizes, transformers.AutoModelForCausalLM.from_config)
            tokens = torch.arange(3, 11)[None] % int(model.config.vocab_size)
            with torch.no_grad():
                outs.append(model(tokens, use_cache=False).logits)
    except Exception:  # noqa: BLE001 - a class that cannot be built or run small: no evidence
        return {}
    return {} if not torch.allclose(outs[0], outs[1], atol=1e-6) else {"window_applied": False}


def qkv_layout_traits(model: Any) -> dict[str, Any]:
    """How a fused q/k/v projection orders its rows, from behaviour: layer 0's attention built small on the CPU
    from its own class, all weights zero but an identity output projection and, for each candidate layout
    (concat [q; k; v], per head (heads, 3, hd) as GPT-NeoX's, grouped (kv, h/kv + 2, hd) as Falcon's), rows that
    under that layout give zero queries and keys and values equal to the input; the layout whose output is the
    (causal or full) mean of the values is the model's. Empty when none can be built, run or matched."""
    import inspect
    import types
    import warnings

    import torch

    from .hf import _Mapper

    layers = _layers(model)
    attn = _child(layers[0], _ATTN) if layers else None
    if attn is None or _child(attn, _QKV) is None or _child(attn, _O) is None:
        return {}
    small = _small_attention_config(model.config)
    h, hd = 4, 16
    kv = int(getattr(small, "num_key_value_heads", None) or h)
    rows = (h + 2 * kv) * hd
    x = torch.randn(2, 5, 64, generator=torch.Generator().manual_seed(0))
    mean = torch.arange(1, 6, dtype=torch.float32)[None, :, None]
    group = h // kv
    v = torch.cat([x[..., (j // group) * hd:(j // group + 1) * hd] for j in range(h)], dim=-1)  # each head's values
    expected = (v.cumsum(dim=1) / mean, v.mean(dim=1, keepdim=True).expand_as(v))  # causal, or every position
    rotary = getattr(_base(model), "rotary_emb", None)
    try:
        with warnings.catch_warnings(), torch.no_grad(), torch.device("cpu"):
            warnings.simplefilter("ignore")
            module = type(attn)(small, 0).eval()
            qkv, out = _child(module, _QKV), _child(module, _O)
            if tuple(qkv.weight.shape) != (rows, 64) or tuple(out.weight.shape) != (64, h * hd):
                return {}
            for p in module.parameters():
                p.zero_()
            out.weight.copy_(torch.eye(64))
            kwargs: dict[str, Any] = {"attention_mask": None}
            params = inspect.signature(module.forward).parameters
            kwargs.update({n: None for n, p in params.items() if p.default is inspect.Parameter.empty
                           and n != "hidden_states" and p.kind is not p.VAR_KEYWORD and p.kind is not p.VAR_POSITIONAL})
            if rotary is not None:
                kwargs["position_embeddings"] = type(rotary)(config=small)(x, torch.arange(5)[None])
            for layout in ("concat", "per_head", "grouped"):
                if (layout == "per_head" and kv != h) or (layout == "grouped" and kv == h):
                    continue
                mapper = types.SimpleNamespace(f=types.SimpleNamespace(qkv_layout=layout))
                order, _ = _Mapper.reorder_qkv(mapper, torch.arange(rows, dtype=torch.float64)[:, None], None, h, kv, hd)
                concat = torch.zeros(rows, 64)
                concat[(h + kv) * hd:, :kv * hd] = torch.eye(kv * hd)  # values = the input's first kv * hd dims
                weight = torch.zeros(rows, 64)
                weight[order[:, 0].long()] = concat  # the rows that this layout reorders into `concat`
                qkv.weight.copy_(weight)
                got = module(hidden_states=x, **kwargs)
                got = got[0] if isinstance(got, tuple) else got
                if any(got.shape == e.shape and torch.allclose(got, e, atol=1e-5) for e in expected):
                    return {"qkv_layout": layout}
    except Exception:  # noqa: BLE001 - an attention built or called another way: no evidence
        return {}
    return {}


_HEAD_ACTIVATIONS = ("none", "gelu", "gelu_tanh", "relu", "silu", "tanh")


def head_traits(model: Any) -> dict[str, Any]:
    """A head that transforms the stream before the output projection (a masked LM's: UltraBERT's linear1, GELU,
    linear2, GELU; ESM-C's dense, GELU, LayerNorm), from the tree and behaviour: the model's child module outside
    the base model that ends in the vocabulary-wide Linear, its Linear and norm children in order, and the
    activation after each Linear found by running a CPU copy with random weights against each candidate. Empty
    when the output projection is a child of the model itself (lm_head) or the head is something else."""
    import copy
    import itertools

    import torch
    import torch.nn.functional as F
    from torch import nn

    vocab = getattr(model.config, "vocab_size", None)
    base = getattr(model, "base_model", None)
    if base is None or base is model:
        base = getattr(model, getattr(model, "base_model_prefix", "") or "", None)
    found = [(name, child) for name, child in model.named_children() if child is not base
             and not isinstance(child, nn.Linear) and any(isinstance(m, nn.Linear) and m.out_features == vocab
                                                          for m in child.modules())]
    beside = None  # a transform module beside a decoder of the model's own (ModernBERT's head, then decoder)
    if not found:
        decoders = [(n, c) for n, c in model.named_children() if isinstance(c, nn.Linear) and c.out_features == vocab]
        others = [(n, c) for n, c in model.named_children() if c is not base and not isinstance(c, nn.Linear)
                  and any(True for _ in c.parameters()) and not any(isinstance(m, nn.ModuleList) for m in c.modules())]
        if len(decoders) == 1 and len(others) == 1:
            found, beside = others, decoders[0]
    if len(found) != 1:
        return {}
    prefix, head = found[0]
    parts = [(n, m) for n, m in head.named_children() if any(True for _ in m.parameters())]
    if beside is not None:
        parts.append(beside)
    if not parts or not isinstance(parts[-1][1], nn.Linear) or parts[-1][1].out_features != vocab:
        return {"head_transform": "unknown"}
    steps = []
    for n, m in parts[:-1]:
        if isinstance(m, nn.Linear):
            steps.append({"kind": "linear", "name": n, "out": int(m.out_features), "bias": m.bias is not None})
        elif "norm" in type(m).__name__.lower() and getattr(m, "weight", None) is not None and m.weight.dim() == 1:
            norm = norm_traits(m)
            if not norm or norm.get("unit_offset"):
                return {"head_transform": "unknown"}
            steps.append({"kind": norm["norm"], "name": n, "bias": getattr(m, "bias", None) is not None,
                          "eps": float(getattr(m, "eps", None) or getattr(m, "variance_epsilon", 1e-5))})
        else:
            return {"head_transform": "unknown"}
    linears = [i for i, step in enumerate(steps) if step["kind"] == "linear"]
    if not linears:
        return {}
    g = torch.Generator().manual_seed(0)
    try:
        probe = copy.deepcopy(head).to_empty(device="cpu").float()
        outer = copy.deepcopy(beside[1]).to_empty(device="cpu").float() if beside is not None else None
        with torch.no_grad():
            for t in [*probe.parameters(), *(outer.parameters() if outer is not None else [])]:
                t.copy_(torch.randn(t.shape, generator=g) * 0.5)
            x = torch.randn(2, 3, parts[0][1].weight.shape[-1] if hasattr(parts[0][1], "weight") else 8, generator=g)
            theirs = probe(x)
            theirs = theirs[0] if isinstance(theirs, tuple) else theirs
            if outer is not None:
                theirs = outer(theirs)
    except Exception:  # noqa: BLE001 - a head whose forward needs more than the stream
        return {"head_transform": "unknown"}
    from ..blocks.feedforward import ACTIVATIONS

    acts = {"none": lambda t: t, "tanh": torch.tanh, **{a: ACTIVATIONS[a] for a in _HEAD_ACTIVATIONS[1:-1]}}
    for choice in itertools.product(_HEAD_ACTIVATIONS, repeat=len(linears)):
        with torch.no_grad():
            h = x
            for step, (n, _) in zip(steps, parts[:-1]):
                m = probe.get_submodule(n)
                if step["kind"] == "linear":
                    h = acts[choice[linears.index(steps.index(step))]](F.linear(h, m.weight, m.bias))
                else:
                    h = m(h)
            last = outer if outer is not None else probe.get_submodule(parts[-1][0])
            h = F.linear(h, last.weight, last.bias)
        if h.shape == theirs.shape and torch.allclose(h, theirs, atol=1e-5, rtol=1e-4):
            for i, act in zip(linears, choice):
                steps[i]["activation"] = act
            decoder = beside[0] if beside is not None else f"{prefix}.{parts[-1][0]}"
            return {"head_transform": {"module": prefix, "steps": steps, "decoder": decoder,
                                       "decoder_bias": parts[-1][1].bias is not None}}
    return {"head_transform": "unknown"}


def norm_traits(norm: Any) -> dict[str, Any]:
    """What a layer's norm computes, from behaviour: a copy of it on the CPU with a known weight (and a zero
    shift) run on probe values, matched against RMSNorm and LayerNorm scaled by w or by (1 + w) (Gemma's and
    Nemotron's). Empty when the norm has no 1-D weight or matches none (the defaults and the logits check decide)."""
    import copy

    import torch

    weight = getattr(norm, "weight", None)
    if weight is None or weight.dim() != 1:
        return {}
    g = torch.Generator().manual_seed(0)
    n = int(weight.shape[0])
    x, w = torch.randn(3, n, generator=g) + 0.5, torch.rand(n, generator=g) + 0.5
    try:
        probe = copy.deepcopy(norm).to_empty(device="cpu").float()
        with torch.no_grad():
            probe.weight.copy_(w)
            if getattr(probe, "bias", None) is not None:
                probe.bias.zero_()
            out = probe(x)
    except Exception:  # noqa: BLE001 - a norm whose forward needs more than its input
        return {}
    rms = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True))
    centred = x - x.mean(-1, keepdim=True)
    layer = centred * torch.rsqrt(centred.pow(2).mean(-1, keepdim=True))
    for kind, base in (("rmsnorm", rms), ("layernorm", layer)):
        for unit_offset, scale in ((False, w), (True, 1 + w)):
            if out.shape == base.shape and torch.allclose(out, base * scale, rtol=1e-3, atol=1e-4):  # any eps
                traits = {"norm": kind, "unit_offset": unit_offset}
                if kind == "layernorm":  # a LayerNorm's shift: a bias parameter, or none (Cohere's)
                    traits["norm_bias"] = getattr(norm, "bias", None) is not None
                return traits
    return {}


def traits_from_model(model: Any, head_dim: int) -> dict[str, Any]:
    """The FAMILY_TRAITS keys that layer 0 of ``model`` (a transformers causal LM, on any device) shows
    unambiguously: qkv_bias, out_bias, mlp_bias and gated (from the projections), qk_norm ("head" when
    the query norm's weight is head_dim wide, "width" when it spans all heads) and norms (from the
    layer's norm names); latent (DeepSeek's multi-head latent attention: a kv_a_proj_with_mqa); router "sigmoid_groups" when the first layer with experts routes them as
    DeepSeek-V3 does (a `gate` holding e_score_correction_bias), with router_fp32 when the model keeps
    that gate in float32. When the model has no such layer, only ``unreadable``: what it is instead."""
    from torch import nn

    layer = _first_layer(model)
    attn = _child(layer, _ATTN) if layer is not None else None
    if attn is None:  # not a decoder laid out as the importer reads one: say what it is instead, unless its
        # layer holds another sequence mixer, whose config keys (layer_types, ...) name the missing feature better
        children = [name for name, _ in layer.named_children()] if layer is not None else []
        if any(name in _OTHER_MIXERS for name in children):
            return {}
        return {"unreadable": f"{type(model).__name__}, whose " + (
            f"layers hold {', '.join(children)}" if layer is not None else _where_layers_are(model))}
    traits: dict[str, Any] = {}
    q, k, v, o = (_child(attn, names) for names in (_Q, _K, _V, _O))
    fused = _child(attn, _QKV)
    biases = [_has_bias(m) for m in (q, k, v)] if fused is None else [_has_bias(fused)]
    if None not in biases and len(set(biases)) == 1:
        traits["qkv_bias"] = biases[0]
    if _has_bias(o) is not None:
        traits["out_bias"] = _has_bias(o)
    last = _child(_layers(model)[-1], _ATTN)  # GPT-NeoX-Japanese: an output bias in the last layer alone
    width = getattr(o, "out_features", None)

    def own_out_bias(module: Any) -> bool:
        return any(n.endswith("bias") and tuple(p.shape) == (width,) for n, p in module.named_parameters(recurse=False))
    if last is not attn and last is not None and not _has_bias(o) and own_out_bias(last) and not own_out_bias(attn):
        traits["last_out_bias"] = True
    if "sinks" in dict(attn.named_parameters(recurse=False)):  # a logit per head in the softmax (GPT-OSS)
        traits["sinks"] = True
    gate = _child(attn, ("gate_proj",))
    if gate is not None and q is not None and getattr(gate, "weight", None) is not None and \
            tuple(gate.weight.shape) == tuple(q.weight.shape):  # one gate per query dim on the attention output (AFMoE)
        traits["output_gate"] = True
    if getattr(attn, "is_causal", None) is False and type(model).__name__.endswith("ForMaskedLM"):
        traits["bidirectional"] = True  # a masked LM laid out as a decoder (EuroBERT): every token sees every other
    if _child(attn, ("kv_a_proj_with_mqa",)) is not None:  # DeepSeek's latent attention, however named
        traits["latent"] = True
    q_norm, k_norm = _child(attn, _Q_NORM), _child(attn, _K_NORM)
    if q_norm is not None and k_norm is not None and getattr(q_norm, "weight", None) is not None:
        width = int(q_norm.weight.shape[-1])
        traits["qk_norm"] = "head" if width == head_dim else "width"
        if getattr(q_norm, "bias", None) is not None:  # a LayerNorm's shift (Persimmon)
            traits["qk_norm_centered"] = True
        elif isinstance(q_norm, nn.LayerNorm):  # a LayerNorm without one (ESM-C's)
            traits["qk_norm_centered"], traits["qk_norm_bias"] = True, False
    reads = getattr(o, "in_features", None)  # a norm of the heads' output before the output projection (BitNet)
    out_norm = next((name for name, child in attn.named_children() if "norm" in name and child is not q_norm and
                     child is not k_norm and getattr(child, "weight", None) is not None and reads is not None
                     and tuple(child.weight.shape) == (reads,)), None)
    if out_norm is not None:
        traits["attn_out_norm"] = out_norm
    mlp = _child(layer, _MLP)
    down = _child(mlp, ("down_proj", "fc2", "c_proj", "w2", "dense_4h_to_h", "Wo")) if mlp is not None else None
    if isinstance(mlp, nn.Sequential) and len(mlp) == 3 and isinstance(mlp[0], nn.Linear) and \
            isinstance(mlp[2], nn.Linear):  # CTRL's ffn: Linear, an activation module, Linear
        down = mlp[2]
        traits["mlp_hidden"] = int(down.in_features)
        act = _ACTIVATION_MODULES.get(type(mlp[1]).__name__)
        if act is not None:
            traits["mlp_activation"] = act
    hidden = getattr(down, "in_features", None) if isinstance(down, nn.Linear) else None
    inner_norm = next((name for name, child in mlp.named_children() if "norm" in name and hidden is not None
                       and getattr(child, "weight", None) is not None and tuple(child.weight.shape) == (hidden,)),
                      None) if mlp is not None else None
    if inner_norm is not None:  # a norm of the hidden units before the down-projection (BitNet's ffn_sub_norm)
        traits["mlp_inner_norm"] = inner_norm
    if down is not None and _has_bias(down) is not None:  # a dense MLP (experts keep their weights elsewhere)
        traits["mlp_bias"] = _has_bias(down)
        # a fused [gate; up] projection twice as wide as the down-projection reads (ModernBERT's Wi, Moshi's fc1)
        fused = [getattr(mlp, n, None) for n in ("Wi", "fc1")]
        traits["gated"] = any(getattr(mlp, n, None) is not None for n in ("gate_proj", "gate_up_proj", "w1", "w3")) or any(
            getattr(wi, "weight", None) is not None and wi.weight.shape[0] == 2 * down.weight.shape[1] for wi in fused)
        traits["gate_seen"] = traits["gated"]  # read from the tree, not a default
        if fused[1] is not None and traits["gated"]:  # fc1 fused: the config's width may be its output's
            traits["mlp_hidden"] = int(down.weight.shape[1])
    moe = next((m for m in (_child(lay, _MLP) for lay in _layers(model)) if m is not None and hasattr(m, "experts")), None)
    if moe is not None and getattr(moe, "experts", None) is not None and not isinstance(moe.experts, nn.ModuleList):
        traits.update(experts_traits(model.config, moe.experts))
    if moe is not None:
        traits.update(_experts_layout(model, moe, bool(traits.get("experts_transposed"))))
        traits.update(router_traits(model.config, moe))
    if moe is not None and any("norm" in name and any(True for _ in child.parameters())
                               for name, child in moe.named_children()):
        traits["moe_post_norm"] = True  # a norm of the experts' summed output (AX K1's post_mlp_layernorm)
    shared = _child(moe, _SHARED) if moe is not None else None
    shared_down = _child(shared, ("down_proj", "w2", "fc2")) if shared is not None else None
    if shared_down is not None:  # an always-on expert beside the routed ones (HunYuan's shared_mlp)
        traits["shared_hidden"] = int(shared_down.weight.shape[-1])
        traits["shared_gate"] = _child(moe, ("shared_expert_gate",)) is not None
    router = (getattr(moe, "gate", None) or getattr(moe, "router", None)) if moe is not None else None
    if router is not None and _has_bias(router):  # GPT-OSS's router bias
        traits["router_bias"] = True
    if router is not None and ("e_score_correction_bias" in dict(router.named_buffers()) or
                               "e_score_correction_bias" in dict(moe.named_buffers(recurse=False))):  # MiniMax-M2's
        traits["router"] = "sigmoid_groups"  # DeepSeek-V3's TopkRouter (GLM-4.5, Solar Open, ...)
        traits["router_fp32"] = "gate.weight" in (getattr(type(model), "_keep_in_fp32_modules_strict", None) or ())
    norm = next((child for name, child in layer.named_children() if "norm" in name
                 and sum(p.numel() for p in child.parameters()) > 0), None)
    if norm is not None:  # PhiMoE's nn.LayerNorm beside an rms_norm_eps key; MiniMax-M3's (1 + w) RMSNorm
        traits.update(norm_traits(norm))
    if not traits.get("latent"):  # latent attention rotates with functions of its own (DeepSeek's interleave)
        traits.update(rotary_traits(model, attn))
        traits.update(rotation_traits(model))
    traits.update(qkv_layout_traits(model))
    traits.update(position_table_traits(model))
    base = _base(model)
    inv_freq = dict(getattr(base, "rotary_emb", nn.Module()).named_buffers()).get("inv_freq")
    if inv_freq is not None and inv_freq.dim() == 1:  # the dims its rotary rotates, whatever rotary_dim says
        traits["rotary_dims"] = 2 * int(inv_freq.shape[0])
    head = getattr(model, "lm_head", None)
    if head is not None and getattr(head, "bias", None) is not None:  # lm_head_bias (PhiMoE)
        traits["head_bias"] = True
    traits.update(head_traits(model))
    table = getattr(model.get_input_embeddings(), "weight", None) if hasattr(model, "get_input_embeddings") else None
    vocab = getattr(model.config, "vocab_size", None)
    if table is not None and table.dim() == 2 and isinstance(vocab, int) and table.shape[0] != vocab:
        traits["embed_rows"] = int(table.shape[0])  # Moshi's table has a row more than the head's logits
    embeddings = getattr(base, "embeddings", None)  # ModernBERT's embeddings.norm after the token table
    embed_norm = _child(embeddings, ("norm", "LayerNorm")) if embeddings is not None else None
    if embed_norm is not None and getattr(embed_norm, "weight", None) is not None:
        traits["embed_norm"] = True
    final = _child(base, ("norm", "final_layernorm", "final_layer_norm", "ln_f", "norm_f"))
    if isinstance(final, nn.LayerNorm) and norm is not None and isinstance(norm, nn.LayerNorm) and \
            (final.bias is None) != (getattr(norm, "bias", None) is None):  # ESM-C's final norm has no shift
        traits["final_norm_bias"] = final.bias is not None
    factor = getattr(layer, "scaling_factor", None)  # ESM-C's residual branches divided by sqrt(layers / 36)
    if isinstance(factor, float) and factor > 0 and factor != 1.0:
        traits["residual_scale"] = 1.0 / factor
    norms = frozenset(name for name, child in layer.named_children() if "norm" in name
                      and sum(p.numel() for p in child.parameters()) > 0)
    later = _layers(model)[1:2]
    if later and attn is not None:  # ModernBERT's first layer has no norm before its attention (an Identity)
        norms_1 = frozenset(name for name, child in later[0].named_children() if "norm" in name
                            and sum(p.numel() for p in child.parameters()) > 0)
        if norms < norms_1 and len(norms_1 - norms) == 1 and norms_1 in _NORM_LAYOUTS and \
                _NORM_LAYOUTS[norms_1] == "pre" and next(iter(norms_1 - norms)) in ("attn_norm", "input_layernorm"):
            traits["first_attn_norm"], norms = False, norms_1
    if norms in _NORM_LAYOUTS:
        traits["norms"] = _NORM_LAYOUTS[norms]
    elif norms == frozenset({"input_layernorm"}) and mlp is not None:  # one norm feeding attention and MLP side
        traits.update(parallel="shared", always_parallel=True)  # by side (Cohere2-MoE); the logits check decides
    return traits


def probe_config(cfg: Any, head_dim: int) -> dict[str, Any]:
    """traits_from_model of the transformers model of ``cfg`` on meta; empty when transformers is not
    installed or cannot build this config (the defaults then apply, and verification says so)."""
    try:
        from .hf_verify import transformers_model_on_meta

        model = transformers_model_on_meta(cfg)
    except Exception:  # transformers missing, or a config its modelling code cannot build
        return {}
    return traits_from_model(model, head_dim)


def small_random_model(cfg: Any, sizes: Any, build: Any) -> tuple[Any, Any]:
    """(a copy of `cfg` with the integer keys of `sizes` set small, `build(copy)` with random weights): the model
    that the importers run their probes on when a config alone is given. Every trainable parameter is
    perturbed (norms start at 1 and biases at 0, where a misplaced one would not show; a frozen table such
    as Marian's sinusoids stays what its code computed). A config that refuses a size, or a class that
    cannot be built small, is a SpecError naming it."""
    import copy
    import warnings

    import torch

    from .hf import _unsupported

    small = copy.deepcopy(cfg)
    for key, value in sizes.items():
        if isinstance(getattr(small, key, None), int) and not isinstance(getattr(small, key), bool):
            try:
                setattr(small, key, value)
            except Exception as exc:  # noqa: BLE001 - a config that fixes its own sizes (Funnel's layers)
                raise _unsupported(cfg, key, f"a config whose {key} cannot be set ({type(exc).__name__}: "
                                   f"{' '.join(str(exc).split())[:120]}), so no small model of its class can be "
                                   "probed") from None
    for key in ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id",
                "decoder_start_token_id"):
        if isinstance(getattr(small, key, None), int) and getattr(small, key) >= small.vocab_size:
            setattr(small, key, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        try:
            model = build(small)
        except Exception as exc:  # noqa: BLE001 - transformers' own checks of the small config
            raise _unsupported(cfg, "model_type", f"transformers cannot build a small '{cfg.model_type}' model to "
                               f"probe ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})") from None
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype) * 0.05)
    return small, model.eval()
