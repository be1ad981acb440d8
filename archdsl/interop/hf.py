"""Hugging Face ``transformers`` interop: configs become specs, checkpoints become ArchModels.

    from archdsl.interop import hf
    spec = hf.spec_from_config("path/to/config.json")     # an archdsl.Spec
    model = hf.from_hf(hf_model)                           # spec + weights of an in-memory model
    model = hf.from_pretrained("path/to/local/checkpoint") # config.json + *.safetensors, offline
    hf.import_hf_main("config.json", "spec.yaml")          # `archdsl import-hf` (readable YAML)

How a config becomes a spec
---------------------------
The config is first read into :class:`Features`: the architectural facts archdsl needs (norm
kind and epsilon, rotary base and fraction, how attention and MLP share the residual, biases,
grouped/multi-query heads, head width, sliding windows, experts, tied head, activation,
embedding scaling ...). Most come from the config's own keys under the names Hugging Face
uses across families (``rms_norm_eps``, ``rope_parameters``/``rope_theta``, ``partial_rotary_factor``,
``num_key_value_heads``, ``sliding_window``/``layer_types``, ``num_local_experts``,
``attention_bias``, ``tie_word_embeddings`` ...). A few facts live in a family's modelling
code rather than in its config (Gemma scales the embedding and stores norms as 1 + w; GPT-NeoX
interleaves its fused QKV per head; Qwen2 puts biases on q/k/v only); :data:`FAMILY_TRAITS`
lists those per ``model_type``. A family missing from that table converts from its config
alone with Llama-style defaults (a warning says so, and :func:`from_hf` then checks the logits
against the original by default). A feature archdsl cannot express raises a
:class:`~archdsl.SpecError` naming it, rather than producing a different model.

The spec is written as readable YAML (vars, one block per layer kind, ``repeat``), then loaded
with :func:`archdsl.load_spec`, so the text that ``archdsl import-hf`` writes and the Spec that
:func:`spec_from_config` returns are the same thing. Both then build the transformers model of
the config on the meta device and compare parameters role by role (:mod:`.hf_verify`): a family
whose code differs from what its config says is refused, naming the first role that differs.

How weights are mapped
----------------------
Each archdsl parameter is found by role (token embedding, layer *i*'s attention norm, its
query/key/value, ...) among the names the Hugging Face families use, and converted to
archdsl's layout: GPT-2's Conv1D weights are transposed; separate q/k/v projections are
concatenated into the fused ``qkv`` ([q; k; v], heads major); NeoX's fused projection,
interleaved per head as (heads, 3, head_dim), and Falcon's, grouped as (kv_heads,
group + 2, head_dim), are reordered; gate and up projections are concatenated into the gated
``up`` ([gate; up]); experts stored as 3-D tensors (transformers 5) load as they are into
archdsl's stacked experts, and one module per expert (checkpoints on disk) is stacked. Every
archdsl parameter must be filled and every checkpoint tensor used (up to rotary caches and
masks): anything left over is an error naming the tensor.
"""
from __future__ import annotations

import json
import math
import re
import textwrap
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from ..errors import ErrorItem, Loc, SpecError

__all__ = ["Features", "FAMILY_TRAITS", "features_from_config", "spec_yaml_from_config", "spec_from_config",
           "from_hf", "from_pretrained", "import_hf_main", "load_config", "load_safetensors", "Shards"]


# ---------------------------------------------------------------------------------------- traits
# Facts a family's modelling code fixes and its config does not state. Everything else is read
# from the config. Keys: gated (MLP has gate and up projections), qkv_bias / out_bias / mlp_bias
# (True, False, or the name of the config key that decides), parallel ("separate": NeoX's two
# norms, "shared": one norm for both branches), embed_scale (multiply by sqrt(width)),
# unit_offset (RMSNorm applies 1 + w), positional ("learned" for GPT-2), qkv_layout of a fused
# projection ("concat" [q; k; v] | "per_head" (heads, 3, hd)), qk_norm (an RMSNorm of queries and
# keys with the config's rms_norm_eps: "head" each head, Qwen3; "width" all heads together, OLMo 2),
# norms ("pre" | "sandwich": before and after attention and MLP, inside the residual, Gemma 2 |
# "post": after them only, inside the residual, OLMo 2), head_bias (the LM head has a bias: Phi,
# GPT-J), rotary_interleaved (rotate adjacent pairs rather than halves: GPT-J), always_parallel (the
# block is parallel whatever the config says: Phi, GPT-J, Cohere), norm_bias (False: LayerNorms
# without a shift, Cohere, MPT), positional "alibi" (BLOOM, MPT), embed_norm (a LayerNorm right after
# the token embedding: BLOOM), activation (the MLP's activation when the config does not name it).
FAMILY_TRAITS: dict[str, dict[str, Any]] = {
    "gpt2": dict(gated=False, qkv_bias=True, out_bias=True, mlp_bias=True, positional="learned"),
    # OPT: learned positions with 2 rows before position 0, biases everywhere, an ungated ReLU MLP (fc1/fc2)
    "opt": dict(gated=False, qkv_bias="enable_bias", out_bias="enable_bias", mlp_bias="enable_bias",
                positional="learned", position_offset=2),
    # GPT-1: norm(x + f(x)) after each residual (BERT's arrangement), no final norm, learned positions
    "openai-gpt": dict(gated=False, qkv_bias=True, out_bias=True, mlp_bias=True, positional="learned",
                       norms="post_residual", final_norm=False, activation="gelu_tanh"),  # its "gelu" is gelu_new
    # StarCoder 1 / SantaCoder: GPT-2's blocks with multi-query attention, c_attn a Linear of [q; k; v]
    # (with multi_query false, of (heads, 3, head_dim): set in features_from_config)
    "gpt_bigcode": dict(gated=False, qkv_bias=True, out_bias=True, mlp_bias=True, positional="learned"),
    "llama": dict(qkv_bias="attention_bias", out_bias="attention_bias", mlp_bias="mlp_bias"),
    "mistral": dict(),
    "mixtral": dict(),
    "qwen2": dict(qkv_bias=True, out_bias=False),
    "qwen3": dict(qkv_bias="attention_bias", out_bias="attention_bias", qk_norm="head"),
    "qwen3_moe": dict(qkv_bias="attention_bias", out_bias="attention_bias", qk_norm="head"),
    "qwen2_moe": dict(qkv_bias=True, out_bias=False),
    "gemma2": dict(embed_scale=True, unit_offset=True, norms="sandwich"),
    "olmo2": dict(qkv_bias="attention_bias", out_bias="attention_bias", qk_norm="width", norms="post"),
    "olmoe": dict(qkv_bias="attention_bias", out_bias="attention_bias", qk_norm="width"),
    "gemma3_text": dict(embed_scale=True, unit_offset=True, norms="sandwich", qk_norm="head",
                        qkv_bias="attention_bias", out_bias="attention_bias"),
    "phi3": dict(),
    "starcoder2": dict(gated=False, qkv_bias="use_bias", out_bias="use_bias", mlp_bias="use_bias"),
    "stablelm": dict(qkv_bias="use_qkv_bias", out_bias=False, parallel="shared"),
    "phi": dict(gated=False, qkv_bias=True, out_bias=True, mlp_bias=True, parallel="shared", always_parallel=True,
                head_bias=True),
    "cohere": dict(qkv_bias="attention_bias", out_bias="attention_bias", mlp_bias=False, parallel="shared",
                   always_parallel=True, rotary_interleaved=True, norm_bias=False),
    # Cohere2: Cohere's parallel block, sliding-window layers with rotary positions, full layers without (NoPE)
    "cohere2": dict(qkv_bias="attention_bias", out_bias="attention_bias", mlp_bias=False, parallel="shared",
                    always_parallel=True, rotary_interleaved=True, norm_bias=False, nope="unless_sliding"),
    "gptj": dict(gated=False, qkv_bias=False, out_bias=False, mlp_bias=True, parallel="shared", always_parallel=True,
                 head_bias=True, rotary_interleaved=True),
    # CodeGen: GPT-J's block with one fused qkv_proj laid out for 4-way model parallelism: (4, [q, v, k], heads/4 · hd)
    "codegen": dict(gated=False, qkv_bias=False, out_bias=False, mlp_bias=True, parallel="shared", always_parallel=True,
                    head_bias=True, rotary_interleaved=True, qkv_layout="codegen"),
    "gemma": dict(embed_scale=True, unit_offset=True),
    "gpt_neox": dict(gated=False, qkv_bias="attention_bias", out_bias="attention_bias", mlp_bias=True,
                     parallel="separate", qkv_layout="per_head"),
    "falcon": dict(gated=False, qkv_bias="bias", out_bias="bias", mlp_bias="bias"),
    "bloom": dict(gated=False, qkv_bias=True, out_bias=True, mlp_bias=True, positional="alibi", embed_norm=True,
                  qkv_layout="per_head", activation="gelu_tanh"),
    # transformers' MPT has no biases and LayerNorms without a shift whatever no_bias says
    # Granite: Llama blocks with four multipliers read from the config (embedding, residual, attention, logits)
    "granite": dict(qkv_bias="attention_bias", out_bias="attention_bias", mlp_bias="mlp_bias"),
    "granitemoe": dict(qkv_bias="attention_bias", out_bias="attention_bias"),
    # DeepSeek-V3 (and Kimi K2): latent attention, sigmoid-scored group-limited experts with an ungated shared
    # expert, the first layers dense; read from the config by _deepseek
    "deepseek_v3": dict(latent=True, handles=("n_shared_experts",)),
    "deepseek_v2": dict(latent=True, handles=("n_shared_experts",)),
    "mpt": dict(gated=False, qkv_bias=False, out_bias=False, mlp_bias=False, positional="alibi", norm_bias=False,
                activation="gelu"),
    # GLM and GLM-4: biases on q/k/v only, rotary on adjacent pairs of the first part of each head (partial
    # rotary); GLM-4 adds a norm after attention and after the MLP, inside each residual
    "glm": dict(qkv_bias="attention_bias", out_bias=False, mlp_bias=False, rotary_interleaved=True),
    "glm4": dict(qkv_bias="attention_bias", out_bias=False, mlp_bias=False, rotary_interleaved=True, norms="sandwich"),
    # GPT-Neo: learned positions, an ungated MLP with biases, q/k/v without biases, scores not scaled by
    # 1/sqrt(head_dim), global and local (sliding-window) layers as config.attention_layers says (_gpt_neo)
    "gpt_neo": dict(gated=False, qkv_bias=False, out_bias=True, mlp_bias=True, positional="learned"),
    # Ernie 4.5 and Helium: Llama blocks with rotary on adjacent pairs
    "ernie4_5": dict(qkv_bias="use_bias", out_bias="use_bias", mlp_bias="use_bias", rotary_interleaved=True),
    "helium": dict(qkv_bias="attention_bias", out_bias=False, mlp_bias="mlp_bias", rotary_interleaved=True),
    # VaultGemma: Gemma's embedding scale and (1 + w) norms, one norm per sub-layer, soft-capped scores
    "vaultgemma": dict(embed_scale=True, unit_offset=True, qkv_bias="attention_bias", out_bias="attention_bias"),
}

# Families transformers knows whose modelling code does something archdsl cannot express yet,
# though their configs look like supported ones.
UNSUPPORTED_FAMILIES: dict[str, str] = {
    "gemma3": "a vision tower (import the text model, model_type gemma3_text)",
}

# Behaviour that neither a family's config nor its module tree shows, for families read by probing
# (hf_probe): EXAONE 4's full-attention layers skip the rotary rotation (NoPE) when sliding-window
# layers are present.
# ... and traits of behaviour for probed families: MiniCPM3's latent attention rotates halves, not
# DeepSeek's adjacent pairs (its config has no rope_interleave to say so)
_PROBED_BEHAVIOUR: dict[str, dict[str, Any]] = {
    "minicpm3": dict(rotary_interleaved=False),
    # Nemotron's LayerNorm1P applies (1 + w); OLMo 1's LayerNorms have no parameters (its tree shows no norms)
    "nemotron": dict(unit_offset=True),
    "olmo": dict(norm_scale=False, norm_bias=False),
    # HunYuan normalises each head's queries and keys after the rotary rotation
    "hunyuan_v1_dense": dict(qk_norm_after_rotary=True),
    "hunyuan_v1_moe": dict(qk_norm_after_rotary=True),
    # nanochat: RMSNorms without parameters everywhere (the tree shows none), one of them on the embeddings,
    # each head's queries and keys divided by their RMS after the rotation (its rotation by -angle, rotate_half
    # being cat(x2, -x1), is read from behaviour: hf_probe.rotary_traits)
    "nanochat": dict(norm_scale=False, embed_norm=True, qk_norm="head", qk_norm_after_rotary=True,
                     qk_norm_scale=False),
    # Llama 4: rotation of adjacent pairs (as complex numbers), each head's queries and keys divided by their RMS
    # after it in the rotary layers only (its Llama4TextL2Norm has no parameters: the tree shows none), experts
    # whose routing weight scales their input
    "llama4_text": dict(rotary_interleaved=True, qk_norm="head", qk_norm_after_rotary=True, qk_norm_scale=False,
                        qk_norm_rope_only=True, moe_scale_inputs=True),
}

# config keys that switch on something archdsl cannot express: error when truthy
_UNSUPPORTED_KEYS = {
    "add_cross_attention": "cross-attention",
    "is_encoder_decoder": "an encoder-decoder laid out as neither T5 nor BART (their tensor names: hf_seq2seq._LAYOUT_MARKS)",
    "qk_layernorm": "qk-norm (a norm on queries and keys)",
    "use_qk_norm": "qk-norm (a norm on queries and keys)",
    "qk_norm": "qk-norm (a norm on queries and keys)",
    "alibi": "Falcon/BLOOM-style ALiBi (scaled and positioned differently from archdsl's alibi)",
    "scale_attn_by_inverse_layer_idx": "attention scores scaled by 1/(layer index + 1)",
    "clip_qkv": "clipping of the QKV projection",
    "n_shared_experts": "shared experts",
    "use_bidirectional_attention": "bidirectional attention in a causal LM",
    "use_post_norm": "post-norm residuals",
    "post_norm": "post-norm residuals",
}

# hidden_act -> archdsl activation (plain) ; gated form below
_ACTIVATIONS = {
    "gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh",
    "relu": "relu", "silu": "silu", "swish": "silu", "relu2": "relu2", "xielu": "xielu",
}
_GATED = {"silu": "swiglu", "gelu_tanh": "geglu", "gelu": "geglu_exact", "relu2": "relu2_glu"}
_ACT_NAMES = {"gelu": "GELU", "gelu_tanh": "GELU (tanh)", "relu": "ReLU", "relu2": "squared ReLU", "silu": "SiLU", "swiglu": "SwiGLU",
              "geglu": "GeGLU", "geglu_exact": "GeGLU (erf GELU)", "relu2_glu": "ReLU²-GLU", "xielu": "xIELU", "swiglu_clamped": "clamped SwiGLU"}


# ---------------------------------------------------------------------------------------- config
def _transformers():
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError("archdsl.interop.hf needs the transformers package: pip install 'transformers>=5.17,<6'") from exc
    return transformers


def load_config(config: Any) -> Any:
    """A transformers config from a config object, a dict, a config.json path or a checkpoint folder."""
    if hasattr(config, "to_dict") and hasattr(config, "model_type"):
        return config
    try:
        transformers = _transformers()
    except ImportError:  # read the keys as they are; spec_from_config and import-hf then say the spec is unverified
        transformers = None
    source, folder = "<dict>", None
    if isinstance(config, (str, Path)):
        path = Path(config)
        if path.is_dir():
            folder, path = path, path / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"no Hugging Face config at {path}")
        source = str(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            line, col = getattr(exc, "lineno", None), getattr(exc, "colno", None)
            raise SpecError([ErrorItem.at(Loc(source, line, col), "config", f"not a JSON file: {exc.args[0]}",
                                          "a Hugging Face config.json (or the folder that holds it)")]) from None
        if not isinstance(data, dict):
            raise SpecError([ErrorItem.at(Loc(source, 1, 1), "config", f"a config is a JSON object, this is a "
                                          f"{type(data).__name__}", "a Hugging Face config.json")])
        # transformers writes inf / nan as {"__float__": "Infinity"} (Mamba-2's time_step_limit)
        if transformers is not None:
            data = getattr(transformers.PretrainedConfig, "_decode_special_floats", lambda d: d)(data)
    elif isinstance(config, Mapping):
        data = dict(config)
    else:
        raise TypeError(f"expected a transformers config, a dict or a config.json path, not {type(config).__name__}")
    model_type = data.get("model_type")
    if not model_type:
        raise SpecError([ErrorItem.at(Loc(source), "model_type", "the config has no model_type",
                                      "a Hugging Face config.json names its model_type")])
    if transformers is None:
        cls: Any = PlainConfig
    else:
        try:
            cls = transformers.CONFIG_MAPPING[model_type]
        except KeyError:  # a family transformers does not know: read the keys as they are
            cls = transformers.PretrainedConfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            cfg = cls.from_dict(data)
        except Exception as exc:  # transformers validates its configs (types, heads dividing the width, ...)
            message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())[:400] or type(exc).__name__
            raise SpecError([ErrorItem.at(Loc(source), "config", f"transformers refuses this '{model_type}' config: "
                                          f"{message}", "fix the config's values")]) from None
    if getattr(cfg, "model_type", None) in (None, ""):
        cfg.model_type = model_type
    cfg._archdsl_source = source  # for error locations
    if folder is not None and not getattr(cfg, "name_or_path", None):
        # a checkpoint folder names the spec; a config.json given by itself is named by its _name_or_path or
        # model_type (the folder that happens to hold it, `path/to/config.json` -> "to", says nothing)
        cfg.name_or_path = folder.resolve().name
    return cfg


class PlainConfig:
    """A config.json read without transformers: its keys as attributes, no family defaults filled in."""

    def __init__(self, data: Mapping[str, Any]):
        self.__dict__.update(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PlainConfig":
        return cls(data)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


def _read_features(cfg: Any, read: Callable[[], Any]) -> Any:
    """read(), with a named error for a key a PlainConfig lacks (transformers would fill in its default)."""
    try:
        return read()
    except AttributeError as exc:
        if not isinstance(cfg, PlainConfig):
            raise
        key = getattr(exc, "name", None) or str(exc)
        raise SpecError([ErrorItem.at(Loc(getattr(cfg, "_archdsl_source", "<config>")), str(key),
                                      f"the config has no '{key}', and without transformers its family's default "
                                      "is unknown", "install transformers (pip install 'archdsl[hf]') or add the "
                                      "key to the config")]) from None


def _get(cfg: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        value = getattr(cfg, name, None)
        if value is not None:
            return value
    return default


_ROPE_SCALINGS = ("default", "linear", "llama3", "yarn")


def _rope_scaling(cfg: Any, rope: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The positional node's scaling args for rope_type linear or llama3; a named error for the rest
    (dynamic and longrope change the frequencies with the sequence length)."""
    kind = rope.get("rope_type", "default")
    if kind not in _ROPE_SCALINGS:
        raise _unsupported(cfg, "rope_parameters.rope_type", f"rotary scaling '{kind}'",
                           f"archdsl implements rope_type {', '.join(_ROPE_SCALINGS)}")
    if kind == "default":
        return ()
    args: list[tuple[str, Any]] = [("scaling", kind), ("factor", float(rope["factor"]))]
    if kind == "llama3":
        args += [("low_freq_factor", float(rope["low_freq_factor"])),
                 ("high_freq_factor", float(rope["high_freq_factor"])),
                 ("original_max_len", int(rope["original_max_position_embeddings"]))]
    if kind == "yarn":
        if rope.get("factor") is None:
            raise _unsupported(cfg, "rope_parameters.factor", "yarn scaling without a factor")
        args.append(("original_max_len", int(rope["original_max_position_embeddings"])))
        for key in ("beta_fast", "beta_slow"):
            if rope.get(key):
                args.append((key, float(rope[key])))
        factor, mscale, mscale_all = float(rope["factor"]), rope.get("mscale"), rope.get("mscale_all_dim")
        if rope.get("attention_factor") is not None:
            args.append(("attention_factor", float(rope["attention_factor"])))
        elif mscale and mscale_all:  # DeepSeek's ratio of two mscales
            def m(scale: float) -> float:
                return 0.1 * scale * math.log(factor) + 1.0 if factor > 1 else 1.0
            args.append(("attention_factor", m(float(mscale)) / m(float(mscale_all))))
        if rope.get("truncate") is False:
            args.append(("truncate", "false"))
    return tuple(args)


def _rope(cfg: Any) -> dict[str, Any] | None:
    """{rope_type, rope_theta, partial_rotary_factor} from transformers 5's rope_parameters or 4's keys."""
    params = getattr(cfg, "rope_parameters", None)
    if isinstance(params, Mapping) and params:
        per_type = None
        if "rope_type" not in params and all(isinstance(v, Mapping) for v in params.values()):
            kinds = {json.dumps(dict(v), sort_keys=True) for v in params.values()}
            if len(kinds) > 1:  # per-layer-type rope (Gemma 3): the full-attention layers' is the main one
                if set(params) != {"sliding_attention", "full_attention"}:
                    raise _unsupported(cfg, "rope_parameters", f"rotary settings for layer types {sorted(params)}")
                per_type = {k: dict(v) for k, v in params.items()}
                params = params["full_attention"]
            else:
                params = next(iter(params.values()))
        out = dict(params)
        if per_type:
            out["per_type"] = per_type
    else:
        theta = _get(cfg, "rope_theta", "rotary_emb_base")
        scaling = getattr(cfg, "rope_scaling", None)
        if theta is None and scaling is None and _get(cfg, "rotary_pct", "partial_rotary_factor", "rotary_dim") is None:
            return None
        out = dict(scaling or {})
        out.setdefault("rope_theta", theta if theta is not None else 10000.0)
    out.setdefault("rope_type", out.pop("type", "default"))
    if "partial_rotary_factor" not in out:
        fraction = _get(cfg, "partial_rotary_factor", "rotary_pct")
        if fraction is not None:
            out["partial_rotary_factor"] = fraction
    return out


def _unsupported(cfg: Any, key: str, what: str, hint: str | None = None) -> SpecError:
    """A SpecError naming the unsupported feature, located at the config file (or the config's model_type)."""
    source = getattr(cfg, "_archdsl_source", None) or f"<{getattr(cfg, 'model_type', None) or 'Hugging Face'} config>"
    return SpecError([ErrorItem.at(Loc(source), key, f"unsupported feature: {what}",
                                   hint or "archdsl cannot express this yet; the converted model would differ")])


# ---------------------------------------------------------------------------------------- features
@dataclass
class Features:
    """The architectural facts of a decoder, as archdsl needs them."""

    model_type: str
    name: str
    architectures: list[str]
    vocab: int
    width: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    norm: str  # layernorm | rmsnorm
    eps: float
    unit_offset: bool
    positional: str  # rotary | learned | alibi
    max_len: int | None
    rope_theta: float
    rotary_fraction: float
    block: str  # sequential | parallel (own norms) | parallel_shared (one norm)
    qkv_bias: bool
    out_bias: bool
    mlp_bias: bool
    activation: str  # archdsl activation, gated ones included
    windows: list[int | None]  # sliding window of each layer (None: full attention)
    tie: bool
    embed_scale: bool
    attn_scale: float | None
    experts: int | None = None
    shared_hidden: int | None = None  # a shared expert's inner width (Qwen2-MoE, with a sigmoid gate)
    nope: list[bool] | None = None  # per layer: attention without the rotary rotation (NoPE)
    position_offset: int = 0  # learned positions: rows before position 0 (OPT: 2)
    qk_norm_after_rotary: bool = False  # qk-norm per head after the rotation (HunYuan)
    qk_norm_scale: bool = True  # a learned qk-norm scale (nanochat's has none)
    qk_norm_centered: bool = False  # a LayerNorm qk-norm, with a shift (Persimmon)
    qk_norm_bias: bool = True  # qk_norm_centered's shift (ESM-C's LayerNorm has none)
    final_norm_bias: bool | None = None  # the final LayerNorm's shift, where it differs from the layers' (ESM-C)
    rotary_reverse: bool = False  # rotate by -angle (nanochat's rotate_half flips the signs)
    sinks: bool = False  # a learned logit per head in the softmax's denominator (GPT-OSS, Granite-SWA)
    moe_post_norm: bool = False  # a norm of the experts' summed output, inside its residual (AX K1)
    sinusoid_spacing: str = "vaswani"  # positional sinusoidal: the table's frequencies
    last_out_bias: bool = False  # the last layer's attention alone has an output bias (GPT-NeoX-Japanese)
    attn_out_norm: str | None = None  # the attention's norm before its output projection, by name (BitNet's)
    mlp_inner_norm: str | None = None  # the MLP's norm before its down-projection, by name (BitNet's)
    causal: bool = True  # False: a masked LM's layers attend to every token (EuroBERT's Llama-style layers)
    output_gate: bool = False  # attention outputs times sigmoid(gate_proj(x)) per head (AFMoE)
    first_attn_norm: bool = True  # False: the first layer has no norm before its attention (ModernBERT)
    chunks: list[int | None] | None = None  # per layer: chunked attention's chunk (Llama 4's chunked_attention)
    temperature: tuple[int, float] | None = None  # (floor, scale) of the NoPE layers' query temperature (Llama 4)
    qk_norm_rope_only: bool = False  # qk-norm in the rotary layers only (Llama 4)
    moe_scale_inputs: bool = False  # the routing weight scales each expert's input (Llama 4)
    # a masked LM's transform before the output projection (hf_probe.head_traits): its module, steps and decoder
    head_transform: dict[str, Any] | None = None
    final_norm: bool = True  # a norm after the layers (GPT-1 has none)
    shared_gate: bool = True  # the shared expert is scaled by a learned sigmoid gate (Qwen2-MoE; not DeepSeek's)
    top_k: int = 2
    normalize: bool = True
    jitter: float = 0.0
    aux_loss_coef: float = 0.0
    attn_dropout: float = 0.0
    resid_dropout: float = 0.0
    embed_dropout: float = 0.0
    qkv_layout: str = "concat"  # of a fused projection: concat | per_head | grouped
    known_family: bool = True
    qk_norm: str = ""  # "" | head | width
    head_bias: bool = False
    rotary_interleaved: bool = False
    norm_bias: bool = True  # of LayerNorms
    norm_scale: bool = True  # False: norms without parameters (OLMo 1's LayerNorms, nanochat's RMSNorms)
    embed_norm: bool = False  # a norm right after the token embedding (BLOOM)
    embed_rows: int | None = None  # the token table's rows where they are not the vocabulary's (Moshi: one more)
    logit_scale: float | None = None  # logits multiplied by this (Cohere; 1 / logits_scaling for Granite)
    embed_multiplier: float | None = None  # the embedding multiplied by this constant (Granite)
    latent: tuple[int | None, int, int, int, int] | None = None  # MLA (q_rank, kv_rank, head_dim, rope_dim, v_dim)
    mlp_kinds: list[str] | None = None  # per layer "dense" (an MLP of dense_ffn) or "moe", when they are mixed
    dense_ffn: int = 0
    scoring: str = "softmax"  # expert scores: softmax | sigmoid (DeepSeek-V3, with score_bias) | sparsemixer (PhiMoE)
    sparsemixer_eps: float = 0.01
    router_bias: bool = False
    experts_transposed: bool = False  # a checkpoint's expert weights stored (experts, in, out) (GPT-OSS)
    experts_interleaved: bool = False  # ... with gate and up rows interleaved, gate0, up0, gate1, ... (GPT-OSS)
    swiglu_clamp: tuple[float, float] = (1.702, 7.0)  # swiglu_clamped's (alpha, limit)
    score_bias: bool = False
    bias_on_logits: bool = False  # the choice bias added to the logits, not the scores (Kolibri 1)
    groups: int = 1
    top_groups: int | None = None
    group_score: str = "top2_sum"
    router_fp32: bool = False  # the router stays float32 in half-precision models (DeepSeek)
    routed_scale: float = 1.0
    residual_scale: float | None = None  # x + residual_scale * f(x) in every residual (Granite)
    norms: str = "pre"  # pre | sandwich (Gemma 2) | post (OLMo 2): where the layer norms sit in each residual
    attn_softcap: float | None = None
    final_softcap: float | None = None
    rope_scaling: tuple[tuple[str, Any], ...] = ()  # positional scaling args, e.g. (("scaling", "llama3"), ("factor", 8.0))
    local_rope: tuple[float, tuple[tuple[str, Any], ...]] | None = None  # (theta, scaling) of sliding layers
    notes: list[str] = field(default_factory=list)

    @property
    def gated(self) -> bool:
        return self.activation in ("swiglu", "geglu", "geglu_exact", "swiglu_clamped")


def _window_traits(cfg: Any) -> dict[str, Any]:
    from .hf_probe import window_traits

    return window_traits(cfg)


def _bias(cfg: Any, traits: dict, key: str, *config_keys: str) -> bool:
    """A family's fixed bias (True/False), the config key its code reads, or else the usual keys."""
    value = traits.get(key)
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return bool(getattr(cfg, value, False))
    return bool(_get(cfg, *config_keys, default=False))


def _float_or_none(value: Any) -> float | None:
    return float(value) if value else None


def _shared_expert(cfg: Any) -> int | None:
    """Qwen2-MoE's gated shared expert width; a width of 0 would keep a gate that gates nothing."""
    width = int(_get(cfg, "shared_expert_intermediate_size") or 0)
    if width == 0 and getattr(cfg, "shared_expert_intermediate_size", None) == 0:
        raise _unsupported(cfg, "shared_expert_intermediate_size", "a shared expert of width 0 with a gate "
                           "(transformers keeps its gate weights, which archdsl's moe cannot hold without an expert)")
    return width or None


def _mlp_layer_types(cfg: Any, layers: int) -> list[str] | None:
    """Which layers have experts, from a config's mlp_layer_types ("dense" / "sparse" per layer), or None."""
    types = getattr(cfg, "mlp_layer_types", None)
    if not types:
        return None
    if len(types) != layers or set(types) - {"dense", "sparse"}:
        raise _unsupported(cfg, "mlp_layer_types", f"MLP layer types {sorted(set(types))} for {layers} layers",
                           "one of 'dense' or 'sparse' per layer")
    if "sparse" not in types:
        raise _unsupported(cfg, "mlp_layer_types", "experts configured but no layer uses them")
    return ["moe" if t == "sparse" else "dense" for t in types]


def _residual_scale(cfg: Any, layers: int) -> float | None:
    """Granite's residual_multiplier, or MiniCPM's scale_depth / sqrt(layers), or None."""
    scale = _multiplier(cfg, "residual_multiplier")
    depth = _float_or_none(getattr(cfg, "scale_depth", None))
    if depth is not None and depth <= 0:
        raise _unsupported(cfg, "scale_depth", f"a non-positive scale_depth ({depth})")
    if scale is None and depth is not None and depth / math.sqrt(layers) != 1.0:
        scale = depth / math.sqrt(layers)
    return scale


def _multiplier(cfg: Any, key: str) -> float | None:
    """A constant multiplier from the config (Granite), or None where it is absent or 1."""
    value = getattr(cfg, key, None)
    if value is None or float(value) == 1.0:
        return None
    if float(value) <= 0:
        raise _unsupported(cfg, key, f"a non-positive {key} ({value})")
    return float(value)


_QK_NORM_KEYS = ("qk_layernorm", "use_qk_norm", "qk_norm")
_PROBED_KEYS = _QK_NORM_KEYS + ("n_shared_experts", "use_post_norm")  # for families outside FAMILY_TRAITS: hf_probe decides


def _refuse_keys(cfg: Any, traits: Mapping[str, Any], skip: tuple[str, ...] = (), only: tuple[str, ...] = ()) -> None:
    """A SpecError for the first truthy _UNSUPPORTED_KEYS key that the family's traits do not handle."""
    for key, what in _UNSUPPORTED_KEYS.items():
        if key in skip or (only and key not in only):
            continue
        value = getattr(cfg, key, None)
        if value and key not in traits.get("handles", ()):
            raise _unsupported(cfg, key, f"{what} ({key}={value!r})")


def features_from_config(config: Any) -> Features:
    """Read a config's architectural features; raises SpecError naming anything unsupported."""
    cfg = load_config(config)
    model_type = str(cfg.model_type)
    if model_type in UNSUPPORTED_FAMILIES:
        raise _unsupported(cfg, "model_type", f"'{model_type}' uses {UNSUPPORTED_FAMILIES[model_type]}")
    known = model_type in FAMILY_TRAITS
    _refuse_keys(cfg, FAMILY_TRAITS.get(model_type, {}), skip=() if known else _PROBED_KEYS)
    vocab = _get(cfg, "vocab_size")
    width = _get(cfg, "hidden_size", "n_embd", "d_model")
    layers = _get(cfg, "num_hidden_layers", "n_layer", "num_layers")
    heads = _get(cfg, "num_attention_heads", "n_head", "num_heads")
    if None in (vocab, width, layers, heads):
        raise _unsupported(cfg, "hidden_size", "a config without vocab_size, hidden_size, num_hidden_layers and "
                                               "num_attention_heads (not a decoder language model?)")
    head_dim = _get(cfg, "head_dim") or width // heads
    if known:
        traits = FAMILY_TRAITS[model_type]
    else:  # what the family's modelling code fixes, read from its model's module tree (hf_probe), else Llama's
        from .hf_probe import probe_config

        traits = {**FAMILY_TRAITS["llama"], **probe_config(cfg, int(head_dim)), **_PROBED_BEHAVIOUR.get(model_type, {})}
        if "unreadable" in traits:  # an encoder's or a seq2seq decoder's layers, or attention under another name
            raise _unsupported(cfg, "model_type", f"'{model_type}' is a {traits['unreadable']}: not a decoder whose "
                               "layers hold self-attention, an MLP and norms as the importer reads them",
                               "the importer reads decoders (model.layers / transformer.h), BERT-shaped encoders and "
                               "T5- and BART-layout encoder-decoders; this layout is none of them")
        # the config's qk-norm switch is handled when the probe saw the norms; its shared experts when the
        # router is DeepSeek-V3's, whose config keys size them
        handled = (_QK_NORM_KEYS if traits.get("qk_norm") else ()) + \
            (("n_shared_experts",) if traits.get("router") == "sigmoid_groups" or traits.get("shared_hidden") else ()) + \
            (("use_post_norm",) if traits.get("norms") == "sandwich" else ())  # HyperCLOVA X's norms after each block
        _refuse_keys(cfg, {"handles": handled}, only=_PROBED_KEYS)
    if model_type == "falcon":
        new_arch = bool(getattr(cfg, "new_decoder_architecture", False))
        kv_heads = cfg.num_kv_heads if new_arch else (1 if cfg.multi_query else heads)
        head_dim = width // heads
    else:
        kv_heads = _get(cfg, "num_key_value_heads", "num_kv_heads") or (1 if getattr(cfg, "multi_query", False) else heads)
    ffn = _get(cfg, "intermediate_size", "n_inner", "ffn_hidden_size", "ffn_dim") or 4 * width
    ffn = traits.get("mlp_hidden") or ffn  # what the down-projection reads (Moshi's ffn_dim is its fused gate + up)

    # norm
    if getattr(cfg, "rms_norm_eps", None) is not None:
        norm, eps = "rmsnorm", float(cfg.rms_norm_eps)
    else:
        norm = "layernorm"
        eps = float(_get(cfg, "layer_norm_eps", "layer_norm_epsilon", "norm_epsilon", "norm_eps", default=1e-5))
    unit_offset = bool(traits.get("unit_offset", False))

    # positions
    rope = _rope(cfg) if traits.get("positional") not in ("learned", "alibi", "sinusoidal") else None
    position_type = getattr(cfg, "position_embedding_type", None)
    if position_type not in (None, "absolute", "rope", "rotary"):
        raise _unsupported(cfg, "position_embedding_type", f"position embedding type '{position_type}'")
    max_len = _get(cfg, "n_positions", "max_position_embeddings", "max_seq_len")
    if rope is not None:
        rope_scaling = _rope_scaling(cfg, rope)
        positional, theta = "rotary", float(rope.get("rope_theta", 10000.0))
        local = rope.get("per_type", {}).get("sliding_attention")
        if local is not None:
            local_rope = (float(local.get("rope_theta", 10000.0)), _rope_scaling(cfg, local))
            if any(dict(args).get("scaling") == "llama3" for args in (rope_scaling, local_rope[1])):
                raise _unsupported(cfg, "rope_parameters", "llama3 rotary scaling that differs per layer type")
        fraction = float(rope.get("partial_rotary_factor", 1.0))
        rotary_dim = getattr(cfg, "rotary_dim", None)
        if rotary_dim and fraction == 1.0:
            fraction = rotary_dim / head_dim
        if traits.get("rotary_dims") and int(head_dim * fraction) % 2 == 0:  # the model's own rotary table
            fraction = int(traits["rotary_dims"]) / head_dim  # (hf_probe): MiniMax-M3 ignores its rotary_dim
            # (an odd count is left to be refused: its table has one pair more, its frequencies over the odd count)
        local_fraction = float(local.get("partial_rotary_factor", 1.0)) if local is not None else 1.0
    elif traits.get("positional") == "alibi":
        positional, theta, fraction, rope_scaling = "alibi", 10000.0, 1.0, ()
    elif traits.get("positional") == "sinusoidal":  # a fixed [sin | cos] table the model keeps (CTRL's)
        positional, theta, fraction, rope_scaling = "sinusoidal", 10000.0, 1.0, ()
    else:
        if max_len is None:
            raise _unsupported(cfg, "max_position_embeddings", "positions that are neither rotary nor learned")
        positional, theta, fraction, rope_scaling = "learned", 10000.0, 1.0, ()
    if rope is None or "per_type" not in rope:
        local_rope = None

    # block layout
    parallel = False
    if model_type == "falcon":
        new_arch = bool(getattr(cfg, "new_decoder_architecture", False))
        if new_arch:
            n_ln = getattr(cfg, "num_ln_in_parallel_attn", None) or 2
            block = "parallel" if n_ln == 2 else "parallel_shared"
        else:
            block = "parallel_shared" if cfg.parallel_attn else "sequential"
    else:
        parallel = bool(_get(cfg, "use_parallel_residual", "parallel_attn", "parallel_residual", default=False))
        if parallel or traits.get("always_parallel"):
            kind = traits.get("parallel")
            if kind is None:
                raise _unsupported(cfg, "use_parallel_residual",
                                   f"a parallel residual in '{model_type}', whose config does not say whether "
                                   "attention and MLP share one norm")
            block = "parallel" if kind == "separate" else "parallel_shared"
        else:
            block = "sequential"

    # activation
    act_name = _get(cfg, "hidden_act", "activation_function", "activation", "hidden_activation", default="gelu")
    act_name = traits.get("mlp_activation") or act_name  # the MLP's own activation module (CTRL's ReLU)
    if "activation" in traits:  # fixed by the family's code (BLOOM's tanh GELU, MPT's exact GELU)
        activation = traits["activation"]
    elif not isinstance(act_name, str) or act_name not in _ACTIVATIONS:
        raise _unsupported(cfg, "hidden_act", f"activation '{act_name}'",
                           "supported: " + ", ".join(sorted(_ACTIVATIONS)))
    else:
        activation = _ACTIVATIONS[act_name]
    if traits.get("gated", True):
        # squared ReLU gated only where the tree shows a gate (BitNet's); a config with no tree to read (Nemotron's
        # class default, which transformers cannot build) gets Llama's gated default, which this would not be
        if activation not in _GATED or (activation == "relu2" and not traits.get("gate_seen")):
            raise _unsupported(cfg, "hidden_act", f"a gated MLP with activation '{act_name}'",
                               "gated MLPs are swiglu (silu) and geglu (tanh GELU)")
        activation = _GATED[activation]

    # attention windows, per layer
    window = getattr(cfg, "sliding_window", None)
    if getattr(cfg, "use_sliding_window", True) is False:
        window = None
    if window and not known and _window_traits(cfg).get("window_applied") is False:
        window = None  # a window its config states and its code does not apply (Moshi's)
    layer_types = getattr(cfg, "layer_types", None)
    chunks = None
    if layer_types:
        unknown = sorted(set(layer_types) - {"full_attention", "sliding_attention", "chunked_attention"})
        if unknown:
            raise _unsupported(cfg, "layer_types", f"layer type(s) {', '.join(unknown)}")
        if "sliding_attention" in layer_types and not window:
            raise _unsupported(cfg, "sliding_window", "sliding-attention layers without a window size")
        windows = [window if t == "sliding_attention" else None for t in layer_types]
        if "chunked_attention" in layer_types:  # Llama 4: causal attention within aligned chunks
            size = getattr(cfg, "attention_chunk_size", None)
            if not isinstance(size, int) or size < 1:
                raise _unsupported(cfg, "attention_chunk_size", "chunked-attention layers without a chunk size")
            chunks = [size if t == "chunked_attention" else None for t in layer_types]
    else:
        windows = [window] * layers
    if len(windows) != layers:
        raise _unsupported(cfg, "layer_types", f"{len(windows)} layer types for {layers} layers")
    if local_rope is not None and not (any(windows) and not all(windows)):
        # rotary settings per layer type, but one type of layer: its settings are the model's (Laguna's full ones)
        if all(windows):
            (theta, rope_scaling), fraction = local_rope, local_fraction
        local_rope = None
    elif local_rope is not None and (fraction != 1.0 or local_fraction != 1.0):
        raise _unsupported(cfg, "partial_rotary_factor", "partial rotary with rotary settings per layer type")

    # experts
    experts = _get(cfg, "num_local_experts", "num_experts", "n_routed_experts") or traits.get("experts")
    top_k, normalize, mlp_kinds, dense_ffn = 2, True, None, int(ffn)
    if experts:
        top_k = int(_get(cfg, "num_experts_per_tok", "moe_top_k", default=2))
        normalize = bool(_get(cfg, "norm_topk_prob", default=True))
        if _get(cfg, "moe_intermediate_size") not in (None, ffn):
            ffn = cfg.moe_intermediate_size
        # Qwen2/3-MoE: layer i has experts when (i + 1) % decoder_sparse_step == 0 and i is not in mlp_only_layers
        sparse_step = int(getattr(cfg, "decoder_sparse_step", 1) or 1)
        only = set(getattr(cfg, "mlp_only_layers", None) or [])
        kinds = _mlp_layer_types(cfg, int(layers)) or \
            ["dense" if i in only or (i + 1) % sparse_step else "moe" for i in range(int(layers))]
        if "moe" not in kinds:
            raise _unsupported(cfg, "mlp_only_layers", "experts configured but no layer uses them")
        mlp_kinds = kinds if "dense" in kinds else None

    # attention scale
    attn_scale = None
    if getattr(cfg, "scale_attn_weights", True) is False:
        attn_scale = 1.0
    if getattr(cfg, "query_pre_attn_scalar", None):
        attn_scale = float(cfg.query_pre_attn_scalar) ** -0.5
    if getattr(cfg, "attention_multiplier", None) is not None:  # Granite: the score scale itself, not 1/sqrt(hd)
        attn_scale = float(cfg.attention_multiplier)
    logit_scale = _float_or_none(getattr(cfg, "logit_scale", None))
    if getattr(cfg, "logits_scaling", None):  # Granite divides the logits by it
        logit_scale = 1.0 / float(cfg.logits_scaling)

    f = Features(
        model_type=model_type,
        name=_spec_name(cfg),
        architectures=list(getattr(cfg, "architectures", None) or []),
        vocab=int(vocab), width=int(width), layers=int(layers), heads=int(heads), kv_heads=int(kv_heads),
        head_dim=int(head_dim), ffn=int(ffn), norm=norm, eps=eps, unit_offset=unit_offset,
        positional=positional, max_len=int(max_len) if max_len else None, rope_theta=theta, rotary_fraction=fraction,
        rope_scaling=rope_scaling, local_rope=local_rope, block=block,
        qkv_bias=_bias(cfg, traits, "qkv_bias", "attention_bias", "bias", "use_bias"),
        out_bias=_bias(cfg, traits, "out_bias", "attention_bias", "bias", "use_bias"),
        mlp_bias=_bias(cfg, traits, "mlp_bias", "mlp_bias", "bias", "use_bias"),
        activation=activation, windows=windows,
        tie=bool(getattr(cfg, "tie_word_embeddings", True)),
        # AFMoE's mup_enabled multiplies the embeddings by sqrt(hidden_size), as Gemma's code always does
        embed_scale=bool(traits.get("embed_scale", False) or getattr(cfg, "mup_enabled", False)), attn_scale=attn_scale,
        qk_norm=str(traits.get("qk_norm", "")), norms=str(traits.get("norms", "pre")),
        head_bias=bool(traits.get("head_bias", False)), rotary_interleaved=bool(traits.get("rotary_interleaved", False)),
        norm_bias=bool(traits.get("norm_bias", True)), norm_scale=bool(traits.get("norm_scale", True)),
        logit_scale=logit_scale,
        embed_multiplier=_multiplier(cfg, "embedding_multiplier") or _multiplier(cfg, "scale_emb"),  # Granite, MiniCPM
        residual_scale=_residual_scale(cfg, int(layers)),
        attn_softcap=_float_or_none(getattr(cfg, "attn_logit_softcapping", None)),
        final_softcap=_float_or_none(getattr(cfg, "final_logit_softcapping", None)),
        experts=int(experts) if experts else None, top_k=top_k, normalize=normalize,
        shared_hidden=_shared_expert(cfg) if experts else None,
        jitter=float(_get(cfg, "router_jitter_noise", default=0.0)),
        aux_loss_coef=float(_get(cfg, "router_aux_loss_coef", default=0.0)) if experts else 0.0,
        attn_dropout=float(_get(cfg, "attn_pdrop", "attention_dropout", default=0.0)),
        resid_dropout=float(_get(cfg, "resid_pdrop", "hidden_dropout", "residual_dropout", "resid_dropout", default=0.0)),
        embed_dropout=float(_get(cfg, "embd_pdrop", "embedding_dropout", "embed_dropout", default=0.0)),
        qkv_layout=traits.get("qkv_layout", "concat"),
        known_family=known,
    )
    f.embed_norm = bool(traits.get("embed_norm", False))
    f.embed_rows = traits.get("embed_rows")
    if f.embed_rows is not None and f.tie:
        raise _unsupported(cfg, "tie_word_embeddings", f"a head tied to a token table of {f.embed_rows} rows for "
                           f"{f.vocab} logits")
    f.mlp_kinds, f.dense_ffn = mlp_kinds, dense_ffn
    if model_type == "bloom" and getattr(cfg, "apply_residual_connection_post_layernorm", False):
        raise _unsupported(cfg, "apply_residual_connection_post_layernorm",
                           "residuals taken after the layer norm (apply_residual_connection_post_layernorm=True)")
    if model_type == "mpt":
        _mpt_attention(cfg, f)
    if model_type in ("deepseek_v2", "deepseek_v3"):
        _deepseek(cfg, f)
    else:
        if traits.get("latent"):
            _latent_attention(cfg, f, interleaved=bool(traits.get("rotary_interleaved", True)))
        if traits.get("router") == "sigmoid_groups" and experts and not traits.get("routing"):  # config-sized
            if (getattr(cfg, "n_group", None) is None) != (getattr(cfg, "topk_group", None) is None):
                present = "n_group" if getattr(cfg, "n_group", None) is not None else "topk_group"
                raise _unsupported(cfg, present, "a DeepSeek-V3-style router (a gate with e_score_correction_bias) "
                                   "whose config sizes its expert groups by only one of n_group and topk_group")
            # what such a config leaves out is what those routers do without it (MiniMax-M2, HY-V3: no groups,
            # normalised top-k weights, unscaled unless router_scaling_factor says); from_hf checks the logits
            _sigmoid_group_routing(cfg, f)
            f.router_fp32 = bool(traits.get("router_fp32"))
    if model_type == "gpt_neo":
        _gpt_neo(cfg, f)
    f.nope = _nope_layers(cfg, traits, f.windows)
    f.position_offset = int(traits.get("position_offset", 0))
    f.qk_norm_after_rotary = bool(traits.get("qk_norm_after_rotary", False)) and f.qk_norm == "head"
    f.qk_norm_scale = bool(traits.get("qk_norm_scale", True))
    f.qk_norm_centered = bool(traits.get("qk_norm_centered", False))
    f.qk_norm_bias = bool(traits.get("qk_norm_bias", True))
    f.final_norm_bias = traits.get("final_norm_bias")
    if traits.get("residual_scale") and f.residual_scale is None:  # the layer's own factor (ESM-C)
        f.residual_scale = float(traits["residual_scale"])
    if experts:  # what the module tree and the experts' own gate showed (hf_probe.experts_traits)
        _experts_from_traits(cfg, f, traits)
    if traits.get("norm") and traits["norm"] != f.norm:  # the layer's norm class, whatever the eps key's name
        f.norm = str(traits["norm"])
    if traits.get("head_bias"):
        f.head_bias = True
    if experts and traits.get("shared_hidden"):  # the module tree's shared expert (hf_probe), whatever keys size it
        f.shared_hidden, f.shared_gate = int(traits["shared_hidden"]), bool(traits["shared_gate"])
    f.rotary_reverse = bool(traits.get("rotary_reverse", False))
    f.sinks = bool(traits.get("sinks", False))
    f.sinusoid_spacing = str(traits.get("sinusoid_spacing", "vaswani"))
    f.last_out_bias = bool(traits.get("last_out_bias", False)) and not f.out_bias
    f.attn_out_norm, f.mlp_inner_norm = traits.get("attn_out_norm"), traits.get("mlp_inner_norm")
    if f.mlp_inner_norm and experts:
        raise _unsupported(cfg, "model_type", f"experts with a norm before their down-projection ({f.mlp_inner_norm})")
    f.moe_post_norm = bool(traits.get("moe_post_norm", False)) and bool(experts)
    f.causal = not traits.get("bidirectional", False)
    if not f.causal:  # transformers' bidirectional window is inclusive (|i - j| <= w); archdsl's exclusive
        f.windows = [w + 1 if w else w for w in f.windows]
    f.output_gate = bool(traits.get("output_gate", False))
    f.first_attn_norm = bool(traits.get("first_attn_norm", True))
    f.chunks = chunks if chunks and any(chunks) else None
    if getattr(cfg, "attn_temperature_tuning", False) and f.nope:  # Llama 4: the NoPE layers' query temperature
        f.temperature = (int(cfg.floor_scale), float(cfg.attn_scale))
    f.qk_norm_rope_only = bool(traits.get("qk_norm_rope_only", False)) and bool(f.qk_norm) and bool(f.nope)
    f.moe_scale_inputs = bool(traits.get("moe_scale_inputs", False))
    if traits.get("head_transform") == "unknown":
        raise _unsupported(cfg, "model_type", "a head transforming the stream before the output projection with "
                           "modules other than linear projections (with an activation) and norms")
    if traits.get("head_transform"):
        f.head_transform = dict(traits["head_transform"])
        f.head_bias = bool(f.head_transform["decoder_bias"])
    f.final_norm = bool(traits.get("final_norm", True))
    if model_type == "opt":  # the layouts of OPT-350m (post-norm, a projected embedding) are not written
        if not getattr(cfg, "do_layer_norm_before", True):
            raise _unsupported(cfg, "do_layer_norm_before", "OPT's post-norm layers (do_layer_norm_before=False)")
        if getattr(cfg, "word_embed_proj_dim", f.width) != f.width:
            raise _unsupported(cfg, "word_embed_proj_dim", f"an embedding of width {cfg.word_embed_proj_dim} projected "
                               f"to the model's {f.width} (project_in / project_out)")
    if model_type == "gpt_bigcode" and not getattr(cfg, "multi_query", True):
        f.qkv_layout = "per_head"  # with a head per key/value, c_attn's output is viewed as (heads, 3, head_dim)
    if model_type == "falcon":
        if getattr(cfg, "new_decoder_architecture", False):
            f.qkv_layout = "grouped"
        elif not cfg.multi_query:
            f.qkv_layout = "per_head"
    _check_shapes(cfg, f)
    return f


def _experts_from_traits(cfg: Any, f: Features, traits: Mapping[str, Any]) -> None:
    """The experts' activation, layout and biases as hf_probe read them from the model: its gate's behaviour
    decides the activation (GPT-OSS's clamped SwiGLU whatever hidden_act says); a gate matching none is refused."""
    if traits.get("routing") == "unknown":
        raise _unsupported(cfg, "model_type", "a router whose experts and weights, run on probe values, match none "
                           "of archdsl's routings (softmax, sigmoid or sparsemixer scores, with or without a choice "
                           "bias, renormalised or not, scaled)", "add the routing to archdsl's moe kind")
    if traits.get("experts"):  # the tree's experts: how many, how wide, in which layers (hf_probe._experts_layout)
        f.experts, f.ffn = int(traits["experts"]), int(traits["moe_hidden"])
        kinds = list(traits["mlp_kinds"])
        f.mlp_kinds = kinds if "dense" in kinds else None
        f.dense_ffn = int(traits.get("dense_hidden") or f.dense_ffn)
        f.top_k = int(traits.get("top_k") or f.top_k)
    routing = traits.get("routing")
    if isinstance(routing, dict):  # the router's own behaviour (hf_probe.router_traits)
        f.scoring, f.score_bias, f.normalize = routing["scoring"], routing["score_bias"], routing["normalize"]
        f.bias_on_logits = bool(routing.get("bias_on_logits", False))
        f.groups = int(routing["groups"])
        f.top_groups = int(cfg.topk_group) if f.groups > 1 else None
        f.group_score = "top2_sum"
        f.routed_scale = float(routing["routed_scale"]) if routing["routed_scale"] != 1.0 else \
            float(getattr(cfg, "routed_scaling_factor", None) or 1.0)  # a scale the block applies (MiniMax-M3)
        if f.scoring == "sparsemixer":
            f.sparsemixer_eps = float(routing["eps"])
            f.jitter = float(getattr(cfg, "input_jitter_noise", 0.0) or 0.0)
        if f.score_bias or f.scoring != "softmax":
            f.aux_loss_coef = 0.0
    act = traits.get("experts_activation")
    if act == "unknown":
        raise _unsupported(cfg, "hidden_act", "experts whose gated activation (their _apply_gate) matches none of "
                           "archdsl's swiglu, geglu or swiglu_clamped", "add the activation to archdsl's mlp kinds")
    if act:
        f.activation = str(act)
    if act == "swiglu_clamped":
        f.swiglu_clamp = (float(getattr(cfg, "swiglu_alpha", 1.702)), float(getattr(cfg, "swiglu_limit", 7.0)))
    f.experts_transposed = bool(traits.get("experts_transposed", False))
    f.experts_interleaved = bool(traits.get("experts_interleaved", False))
    if traits.get("experts_bias"):
        f.mlp_bias = True
    f.router_bias = bool(traits.get("router_bias", False))


def _nope_layers(cfg: Any, traits: Mapping[str, Any], windows: list[int | None]) -> list[bool] | None:
    """Which layers' attention skips the rotary rotation (NoPE), or None when every layer rotates: SmolLM3's
    no_rope_layers (0 marks one); Cohere2's full-attention layers always (its code rotates only in
    sliding-window layers); for a probed family, each layer's behaviour (EXAONE 4's and Flint's full-attention
    layers do not rotate, which their configs do not say)."""
    nope = None
    no_rope = getattr(cfg, "no_rope_layers", None)
    if no_rope and not all(no_rope):
        if len(no_rope) != len(windows):
            raise _unsupported(cfg, "no_rope_layers", f"{len(no_rope)} entries for {len(windows)} layers")
        nope = [not bool(x) for x in no_rope]
    if traits.get("nope") == "unless_sliding":
        nope = [w is None for w in windows]
    rotates = traits.get("rotates")
    if isinstance(rotates, list) and len(rotates) == len(windows):  # the layers' behaviour (hf_probe.rotation_traits)
        nope = [not r for r in rotates]
    return nope if nope and any(nope) else None


def _mpt_attention(cfg: Any, f: Features) -> None:
    """MPT keeps its attention settings in attn_config; transformers' MptAttention implements ALiBi
    with the standard slopes (alibi_bias_max 8), an optional softmax scale, and attn_pdrop used for
    the attention probabilities and both residual branches; anything else is refused."""
    attn = getattr(cfg, "attn_config", None)
    get = (lambda key, default=None: getattr(attn, key, default)) if attn is not None else (lambda key, default=None: default)
    if not get("alibi", True):
        raise _unsupported(cfg, "attn_config.alibi", "MPT without ALiBi (no positional information)")
    if get("alibi_bias_max", 8) != 8:
        raise _unsupported(cfg, "attn_config.alibi_bias_max", f"ALiBi slopes with alibi_bias_max={get('alibi_bias_max')}",
                           "archdsl's alibi slopes are those of alibi_bias_max 8")
    for key, what in (("clip_qkv", "clipping of the QKV projection"), ("qk_ln", "qk-norm (a LayerNorm on queries and keys)"),
                      ("prefix_lm", "a prefix LM"), ("attn_uses_sequence_id", "attention limited by sequence ids")):
        if get(key):
            raise _unsupported(cfg, f"attn_config.{key}", f"{what} ({key}={get(key)!r})")
    if get("attn_type", "multihead_attention") != "multihead_attention":
        raise _unsupported(cfg, "attn_config.attn_type", f"attention type '{get('attn_type')}'")
    if getattr(cfg, "expansion_ratio", 4) != 4:  # transformers' MptMLP is 4 x wide whatever the config says
        raise _unsupported(cfg, "expansion_ratio", f"an MLP expansion ratio of {cfg.expansion_ratio}",
                           "transformers' MPT always builds a 4x MLP, so such a checkpoint would not load there either")
    if get("softmax_scale"):
        f.attn_scale = float(get("softmax_scale"))
    f.attn_dropout = f.resid_dropout = float(get("attn_pdrop", 0.0) or 0.0)


def _gpt_neo(cfg: Any, f: Features) -> None:
    """GPT-Neo's attention: scores not scaled (softmax of q·k), and each layer global or local as
    config.attention_layers lists them, a local one seeing the last window_size tokens."""
    kinds = list(getattr(cfg, "attention_layers", None) or ["global"] * f.layers)
    unknown = sorted(set(kinds) - {"global", "local"})
    if unknown or len(kinds) != f.layers:
        raise _unsupported(cfg, "attention_types", f"attention layer kinds {kinds}",
                           "GPT-Neo layers are 'global' or 'local', one per layer")
    f.windows = [int(cfg.window_size) if kind == "local" else None for kind in kinds]
    f.attn_scale = 1.0


def _deepseek(cfg: Any, f: Features) -> None:
    """DeepSeek-V2/V3's latent attention and routing, as transformers' DeepseekV2/V3 models compute
    them: the softmax scale is 1/sqrt(qk_head_dim) times mscale(factor, mscale_all_dim)^2 under
    YaRN; n_shared_experts ungated shared experts act as one MLP of n_shared_experts *
    moe_intermediate_size; layers below first_k_dense_replace are dense. V3 scores experts by a
    sigmoid, chooses them with e_score_correction_bias within the topk_group best of n_group
    groups (a group's score: its two best), weights them by the unbiased scores (renormalised when
    norm_topk_prob); V2 takes the softmax's top k, within the best groups by their best score
    under topk_method group_limited_greedy, never renormalised. Both scale by routed_scaling_factor."""
    v3 = f.model_type == "deepseek_v3"
    method = getattr(cfg, "topk_method", None) or ("noaux_tc" if v3 else "greedy")
    if method not in (("noaux_tc",) if v3 else ("greedy", "group_limited_greedy")):
        raise _unsupported(cfg, "topk_method", f"expert choice '{method}' in '{f.model_type}'")
    _latent_attention(cfg, f)
    _sigmoid_group_routing(cfg, f, v3, method)
    f.router_fp32 = True  # transformers keeps DeepSeek's gate.weight in float32 (_keep_in_fp32_modules_strict)


def _latent_attention(cfg: Any, f: Features, interleaved: bool = True) -> None:
    """DeepSeek-V2/V3's multi-head latent attention as its config sizes it (see _deepseek); also any family
    whose attention is laid out as DeepSeek's (hf_probe: a kv_a_proj_with_mqa), such as GLM-4.7-Flash's."""
    if f.kv_heads != f.heads:  # transformers would repeat the per-head keys again: not a working model
        raise _unsupported(cfg, "num_key_value_heads", f"latent attention with {f.kv_heads} key/value heads for "
                           f"{f.heads} heads", "latent attention expands keys and values for every head")
    q_rank = getattr(cfg, "q_lora_rank", None)
    nope, rope, v = int(cfg.qk_nope_head_dim), int(cfg.qk_rope_head_dim), int(cfg.v_head_dim)
    f.latent = (int(q_rank) if q_rank else None, int(cfg.kv_lora_rank), nope, rope, v)
    f.head_dim, f.rotary_fraction = rope, 1.0
    f.rotary_interleaved = bool(getattr(cfg, "rope_interleave", interleaved))
    scale = (nope + rope) ** -0.5
    rope_params = _rope(cfg) or {}
    if rope_params.get("rope_type", "default") != "default" and rope_params.get("mscale_all_dim"):
        factor = float(rope_params["factor"])
        mscale = 0.1 * float(rope_params["mscale_all_dim"]) * math.log(factor) + 1.0 if factor > 1 else 1.0
        scale *= mscale * mscale
    f.attn_scale = scale


def _sigmoid_group_routing(cfg: Any, f: Features, v3: bool = True, method: str = "noaux_tc") -> None:
    """DeepSeek's experts as its config sizes them (see _deepseek): V3's sigmoid scores with a choice
    bias within the best expert groups, or V2's softmax; ungated shared experts; dense first layers.
    Also any family whose router is DeepSeek-V3's (hf_probe: a `gate` holding e_score_correction_bias),
    such as GLM-4.5's."""
    kinds = _mlp_layer_types(cfg, f.layers)
    if kinds is None:
        dense = min(int(getattr(cfg, "first_k_dense_replace", 0) or 0), f.layers)
        if dense == f.layers:
            raise _unsupported(cfg, "first_k_dense_replace", "experts configured but no layer uses them")
        kinds = ["dense"] * dense + ["moe"] * (f.layers - dense)
    f.mlp_kinds = kinds if "dense" in kinds else None
    f.dense_ffn = int(getattr(cfg, "intermediate_size", None) or f.dense_ffn)
    f.ffn = int(getattr(cfg, "moe_intermediate_size", None) or f.ffn)
    shared = int(getattr(cfg, "n_shared_experts", 0) or 0)
    f.shared_hidden, f.shared_gate = shared * f.ffn or None, False
    if not getattr(cfg, "num_experts_per_tok", None):
        raise _unsupported(cfg, "num_experts_per_tok", "experts without num_experts_per_tok")
    f.top_k = int(cfg.num_experts_per_tok)
    f.normalize = bool(getattr(cfg, "norm_topk_prob", True)) if v3 else False
    f.scoring, f.score_bias = ("sigmoid", True) if v3 else ("softmax", False)
    grouped = v3 or method == "group_limited_greedy"
    f.groups = int(getattr(cfg, "n_group", 1) or 1) if grouped else 1
    f.top_groups = int(cfg.topk_group) if f.groups > 1 else None
    f.group_score = "top2_sum" if v3 else "max"
    f.routed_scale = float(_get(cfg, "routed_scaling_factor", "router_scaling_factor", default=1.0) or 1.0)
    per_group = (f.experts or 0) // f.groups if f.groups > 1 else 0
    if f.groups > 1 and (f.experts % f.groups or f.top_k > f.top_groups * per_group):
        raise _unsupported(cfg, "n_group", f"expert groups that do not fit: n_group={cfg.n_group} for {f.experts} "
                           f"experts, topk_group={cfg.topk_group}, num_experts_per_tok={f.top_k}",
                           "n_group must divide the experts and the kept groups must hold num_experts_per_tok")
    f.aux_loss_coef = 0.0


def _check_shapes(cfg: Any, f: Features) -> None:
    if f.heads % f.kv_heads:
        raise _unsupported(cfg, "num_key_value_heads", f"{f.kv_heads} key/value heads for {f.heads} query heads")
    if f.positional == "rotary":
        rotated = int(f.head_dim * f.rotary_fraction)
        if rotated <= 0 or rotated % 2:
            raise _unsupported(cfg, "partial_rotary_factor", f"rotary over {rotated} of {f.head_dim} head dims")


def _spec_name(cfg: Any) -> str:
    raw = getattr(cfg, "name_or_path", None) or getattr(cfg, "_name_or_path", None) or ""
    name = Path(str(raw)).name if raw else ""
    if not name or name in (".", "config.json"):
        name = str(cfg.model_type)
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name) or "imported"


# ---------------------------------------------------------------------------------------- YAML
def _scalar(value: Any) -> str:
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True).strip()
    return text[:-4].strip() if text.endswith("\n...") else text.replace("\n...", "").strip()


def _args(items: Iterable[tuple[str, Any]]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"


def _describe(f: Features) -> str:
    parts = []
    norm = "RMSNorm" + (" with a (1 + w) scale" if f.unit_offset else "") if f.norm == "rmsnorm" else "LayerNorm"
    layout = {"sequential": "pre-norm decoder", "parallel": "parallel attention and MLP with their own norms",
              "parallel_shared": "parallel attention and MLP sharing one norm"}[f.block]
    if f.norms != "pre":
        layout = {"sandwich": "decoder with sandwich norms (before and after attention and MLP)",
                  "post": "decoder with norms after attention and MLP, inside the residual",
                  "post_residual": "post-norm decoder (a norm after each residual's sum)"}[f.norms]
    if not f.final_norm:
        layout += ", no final norm"
    if not f.causal:  # a masked LM's layers, laid out as a decoder's but attending to every token
        layout = layout.replace("decoder", "encoder") + " (bidirectional attention)"
    parts.append(f"{layout}, {norm} (eps {f.eps:g})")
    if f.positional == "rotary":
        rot = f"rotary positions (theta {f.rope_theta:g}"
        rot += f", {f.rope_scaling[0][1]} scaling ×{f.rope_scaling[1][1]:g}" if f.rope_scaling else ""
        parts.append(rot + (f", on {f.rotary_fraction:g} of each head)" if f.rotary_fraction != 1 else ")"))
    elif f.positional == "alibi":
        parts.append("ALiBi attention biases instead of positions")
    else:
        parts.append(f"learned positions ({f.max_len})")
    if f.kv_heads == f.heads:
        attn = f"multi-head attention ({f.heads} heads"
    elif f.kv_heads == 1:
        attn = f"multi-query attention ({f.heads} query heads, 1 key/value head"
    else:
        attn = f"grouped-query attention ({f.heads} heads, {f.kv_heads} key/value heads"
    if f.head_dim * f.heads != f.width:
        attn += f", {f.head_dim} wide"
    if f.latent is not None:
        q_rank, kv_rank, nope, rope, v_dim = f.latent
        attn = (f"multi-head latent attention ({f.heads} heads from a {kv_rank}-wide key/value latent"
                + (f" and a {q_rank}-wide query latent" if q_rank else "") + f", {nope} + {rope} rotary dims per "
                f"query/key head, {v_dim} per value head")
    parts.append(attn + (f", qk-norm {'per head' if f.qk_norm == 'head' else 'over all heads'}" if f.qk_norm else "")
                 + (f", scores soft-capped at {f.attn_softcap:g}" if f.attn_softcap else "") + ")")
    windows = {w for w in f.windows if w}
    if windows:
        every = all(f.windows)
        parts.append(f"sliding window {', '.join(map(str, sorted(windows)))}" + ("" if every else " on some layers"))
    ff = f"{_ACT_NAMES[f.activation]} MLP (hidden {f.ffn})"
    if f.experts:
        routing = ("" if f.scoring == "softmax" else f", {f.scoring} scores" + (" with a choice bias" if f.score_bias else ""))
        routing += (f" within the best {f.top_groups} of {f.groups} groups"
                    + (" (by their best score)" if f.group_score == "max" else "")) if f.groups > 1 else ""
        routing += f", weights × {f.routed_scale:g}" if f.routed_scale != 1.0 else ""
        routing += f", plus a shared expert (hidden {f.shared_hidden})" if f.shared_hidden else ""
        ff = f"mixture of {f.experts} {_ACT_NAMES[f.activation]} experts (top {f.top_k}{routing}, hidden {f.ffn})"
        if f.mlp_kinds:
            dense, first = f.mlp_kinds.count("dense"), _leading_dense(f.mlp_kinds)
            ff += (f", the first {dense} layers dense" if dense == first else f", {dense} of {f.layers} layers "
                   "dense") + f" (hidden {f.dense_ffn})"
    parts.append(ff)
    biases = [n for n, b in (("q/k/v", f.qkv_bias), ("attention output", f.out_bias), ("MLP", f.mlp_bias)) if b]
    parts.append("biases on " + ", ".join(biases) if biases else "no biases")
    if f.embed_scale:
        parts.append("embedding scaled by sqrt(d_model)")
    if f.embed_norm:
        parts.append("a LayerNorm right after the embedding")
    multipliers = [f"{what} × {value:g}" for what, value in (
        ("embedding", f.embed_multiplier), ("residual branches", f.residual_scale),
        ("attention scores", f.attn_scale if f.model_type.startswith("granite") else None),
        ("logits", f.logit_scale)) if value is not None]
    if multipliers:
        parts.append("multipliers: " + ", ".join(multipliers))
    parts.append("head tied to the embedding" if f.tie else "untied head")
    if f.final_softcap:
        parts.append(f"logits soft-capped at {f.final_softcap:g}")
    arch = f" ({', '.join(f.architectures)})" if f.architectures else ""
    return f"Imported from a Hugging Face '{f.model_type}' config{arch}: " + "; ".join(parts) + "."


def _is_ssm(cfg: Any) -> bool:
    from .hf_ssm import is_ssm
    return is_ssm(cfg)


def _is_vision(cfg: Any) -> bool:
    from .hf_vision import VISION_MODEL_TYPES
    return getattr(cfg, "model_type", None) in VISION_MODEL_TYPES


def _is_linear(cfg: Any) -> bool:
    from .hf_linear import is_linear
    return is_linear(cfg)


def _is_encoder(cfg: Any) -> bool:
    from .hf_encoder import is_encoder
    return is_encoder(cfg)


def _is_lone_decoder(cfg: Any) -> bool:
    from .hf_decoder import is_lone_decoder
    return is_lone_decoder(cfg)


def spec_yaml_from_config(config: Any, *, verify: bool = True) -> str:
    """The readable YAML spec (vars, blocks, repeat) of a transformers config.

    Given a config (not Features), the spec is compared with the transformers model of the
    config on the meta device unless ``verify=False``, as spec_from_config does."""
    from .hf_seq2seq import Seq2SeqFeatures

    if isinstance(config, (Features, Seq2SeqFeatures)) or not verify:  # features: already read, by from_hf
        return _spec_yaml(config)
    cfg = load_config(config)
    text = _read_features(cfg, lambda: _spec_yaml(cfg))
    if _is_encoder(cfg) or _is_lone_decoder(cfg):
        from ..loader import load_spec
        from . import hf_decoder, hf_encoder
        (hf_encoder if _is_encoder(cfg) else hf_decoder).check_counts(cfg, load_spec(text))
    else:
        _verify_spec(cfg, text)
    return text


def _spec_yaml(config: Any) -> str:
    from .hf_seq2seq import Seq2SeqFeatures, is_seq2seq, seq2seq_features, seq2seq_yaml

    if isinstance(config, Seq2SeqFeatures):
        return seq2seq_yaml(config)
    if not isinstance(config, Features):
        cfg = load_config(config)
        if is_seq2seq(cfg):  # T5, BART: an encoder and a decoder stack (hf_seq2seq.py)
            return seq2seq_yaml(seq2seq_features(cfg))
        if _is_vision(cfg):  # ViT: an image stack (hf_vision.py)
            from . import hf_vision
            return hf_vision.spec_yaml_from_config(cfg)
        if _is_ssm(cfg):  # Mamba, Mamba-2 and their hybrids (hf_ssm.py)
            from . import hf_ssm
            return hf_ssm.spec_yaml_from_config(cfg)
        if _is_linear(cfg):  # Qwen3-Next, LFM2, RecurrentGemma: linear/recurrent hybrids (hf_linear.py)
            from . import hf_linear
            return hf_linear.spec_yaml_from_config(cfg)
        if _is_encoder(cfg):  # BERT and the encoders laid out like it, read from the model (hf_encoder.py)
            from . import hf_encoder
            return hf_encoder.spec_yaml_from_config(cfg)
        if _is_lone_decoder(cfg):  # BartForCausalLM and the like: a decoder used alone (hf_decoder.py)
            from . import hf_decoder
            return hf_decoder.spec_yaml_from_config(cfg)
    f = config if isinstance(config, Features) else features_from_config(cfg)
    v: dict[str, Any] = {"vocab": f.vocab}
    if f.max_len:
        v["context"] = f.max_len
    v.update(d_model=f.width, layers=f.layers, heads=f.heads)
    if f.latent is not None:  # DeepSeek-V3's latent attention
        q_rank, kv_rank, nope, rope, v_dim = f.latent
        v.update(kv_rank=kv_rank, **({"q_rank": q_rank} if q_rank else {}), head_dim=nope, rope_dim=rope, v_dim=v_dim)
    else:
        if f.kv_heads != f.heads:
            v["kv_heads"] = f.kv_heads
        if f.head_dim * f.heads != f.width:
            v["head_dim"] = f.head_dim
    if f.mlp_kinds:
        if f.mlp_kinds.count("dense") == _leading_dense(f.mlp_kinds):
            v["dense_layers"] = _leading_dense(f.mlp_kinds)
        v["dense_ffn"] = f.dense_ffn
    v["ffn"] = f.ffn
    if f.experts:
        v.update(experts=f.experts, top_k=f.top_k)
        if f.groups > 1:
            v.update(groups=f.groups, top_groups=f.top_groups)
        if f.shared_hidden:
            v["shared_ffn"] = f.shared_hidden
    if f.positional == "rotary":
        v["rope_theta"] = f.rope_theta
        if f.local_rope is not None:
            v["local_rope_theta"] = f.local_rope[0]
        if f.rotary_fraction != 1.0:
            v["rotary_fraction"] = f.rotary_fraction
    windows = sorted({w for w in f.windows if w})
    if len(windows) > 1:
        raise _unsupported(None, "sliding_window", f"several different window sizes ({windows})")
    if windows:
        v["local_window"] = windows[0]
    v["eps"] = f.eps
    dropouts = {"dropout": f.resid_dropout, "attn_dropout": f.attn_dropout, "embed_dropout": f.embed_dropout}
    for key, value in dropouts.items():
        if value:
            v[key] = value

    attn: list[tuple[str, Any]] = [("heads", "$heads")]
    if f.kv_heads != f.heads:
        attn.append(("kv_heads", "$kv_heads"))
    if "head_dim" in v:
        attn.append(("head_dim", "$head_dim"))
    if f.causal:
        attn.append(("causal", "true"))
    per_layer_window = bool(windows) and not all(f.windows)
    if windows:
        attn.append(("window", "$window" if per_layer_window else "$local_window"))
    nope = f.nope or [False] * f.layers
    per_layer_nope = len(set(nope)) > 1
    if per_layer_nope:
        attn.append(("nope", "$nope"))
    elif nope[0]:
        attn.append(("nope", "true"))
    per_layer = per_layer_window or per_layer_nope
    # the kind of each layer when layers differ: sliding-window or full attention, with or without positions
    kinds = [("local" if w and per_layer_window else "global") + ("_nope" if n and per_layer_nope else "")
             for w, n in zip(f.windows, nope)]
    if f.qkv_bias != f.out_bias:
        attn += [("bias", _scalar(f.qkv_bias)), ("out_bias", _scalar(f.out_bias))]
    elif not f.qkv_bias:
        attn.append(("bias", "false"))
    if f.attn_scale is not None:
        attn.append(("scale", _scalar(f.attn_scale)))
    if f.attn_dropout:
        attn.append(("dropout", "$attn_dropout"))
    qk: list[tuple[str, Any]] = []
    if f.qk_norm:
        qk += [("qk_norm", "true"), ("qk_norm_eps", "$eps")] + ([("qk_norm_over", "width")] if f.qk_norm == "width" else [])
        if f.unit_offset:
            qk.append(("qk_norm_unit_offset", "true"))
        if f.qk_norm_after_rotary:
            qk.append(("qk_norm_after_rotary", "true"))
        if not f.qk_norm_scale:
            qk.append(("qk_norm_scale", "false"))
        if f.qk_norm_centered:
            qk.append(("qk_norm_centered", "true"))
            if not f.qk_norm_bias:
                qk.append(("qk_norm_bias", "false"))
    qk_at = len(attn)
    attn += qk
    if f.last_out_bias:  # a block parameter: false in every layer but the last
        if per_layer or f.mlp_kinds or not f.first_attn_norm or f.latent is not None:
            raise _unsupported(None, "model_type", "an output bias in the last layer alone, among layers that differ "
                               "otherwise")
        attn.append(("out_bias", "$out_bias"))
    if f.attn_out_norm:
        attn += [("out_norm", "true"), ("out_norm_eps", "$eps")]
    if f.attn_softcap:
        attn.append(("softcap", _scalar(f.attn_softcap)))
    if f.sinks:
        attn.append(("sinks", "true"))
    if f.output_gate:
        attn.append(("output_gate", "true"))
    attention = f"attention: {_args(attn)}"
    # Llama 4's layers differ in more than block parameters carry (qk-norm in the rotary layers only, chunks, the
    # NoPE layers' temperature): each kind of layer gets a body of its own, its attention written out
    chunks = f.chunks or [None] * f.layers
    distinct = per_layer and (f.qk_norm_rope_only or f.temperature is not None or len(set(chunks)) > 1)
    if f.chunks and not distinct:  # one chunk size for every layer
        attention = f"attention: {_args(attn + [('chunk', '$chunk')])}"
        v["chunk"] = chunks[0]
    if distinct:
        if len({c for c in chunks if c}) > 1:
            raise _unsupported(None, "attention_chunk_size", "several chunk sizes")
        if any(chunks):
            v["chunk"] = next(c for c in chunks if c)
        if f.temperature is not None:
            v.update(temperature_floor=f.temperature[0], temperature_scale=f.temperature[1])
        kinds = [k + ("_chunked" if c and len(set(chunks)) > 1 else "") for k, c in zip(kinds, chunks)]
        base = [a for a in attn[:qk_at] if a[0] not in ("window", "nope")]
        rest = attn[qk_at + len(qk):]

        def attention_for(kind: str) -> str:
            is_nope = kind.endswith("_nope") or "_nope_" in kind
            args = list(base) + ([("window", "$local_window")] if kind.startswith("local") else []) + (
                [("nope", "true")] if is_nope else []) + ([("chunk", "$chunk")] if "chunked" in kind or (
                    any(chunks) and len(set(chunks)) == 1) else [])
            args += [] if (is_nope and f.qk_norm_rope_only) else qk
            if is_nope and f.temperature is not None:
                args += [("temperature_floor", "$temperature_floor"), ("temperature_scale", "$temperature_scale")]
            return f"attention: {_args(args + rest)}"
    if f.latent is not None:
        latent = [("heads", "$heads"), ("kv_rank", "$kv_rank")] + ([("q_rank", "$q_rank")] if f.latent[0] else []) + [
            ("head_dim", "$head_dim"), ("rope_dim", "$rope_dim"), ("v_dim", "$v_dim"), ("causal", "true")]
        if f.qkv_bias:
            latent.append(("bias", "true"))
        if f.attn_scale is not None and abs(f.attn_scale - (f.latent[2] + f.latent[3]) ** -0.5) > 1e-12:
            latent.append(("scale", _scalar(f.attn_scale)))  # YaRN's mscale² on top of 1/sqrt(qk dims)
        if f.attn_dropout:
            latent.append(("dropout", "$attn_dropout"))
        attention = f"latent_attention: {_args(latent)}"
    if f.experts:
        moe = [("experts", "$experts"), ("top_k", "$top_k"), ("hidden", "$ffn"), ("activation", f.activation)]
        if f.mlp_bias:
            moe.append(("bias", "true"))
        if not f.normalize:
            moe.append(("normalize", "false"))
        if f.jitter:
            moe.append(("jitter", _scalar(f.jitter)))
        if f.aux_loss_coef:
            moe.append(("aux_loss_coef", _scalar(f.aux_loss_coef)))
        if f.scoring != "softmax":
            moe.append(("scoring", f.scoring))
        if f.scoring == "sparsemixer":
            moe.append(("sparsemixer_eps", _scalar(f.sparsemixer_eps)))
        if f.router_bias:
            moe.append(("router_bias", "true"))
        if f.activation == "swiglu_clamped":
            moe += [("swiglu_alpha", _scalar(f.swiglu_clamp[0])), ("swiglu_limit", _scalar(f.swiglu_clamp[1]))]
        if f.score_bias:
            moe.append(("score_bias", "true"))
            if f.bias_on_logits:
                moe.append(("bias_on_logits", "true"))
        if f.groups > 1:
            moe += [("groups", "$groups"), ("top_groups", "$top_groups")]
            if f.group_score != "top2_sum":
                moe.append(("group_score", f.group_score))
        if f.routed_scale != 1.0:
            moe.append(("routed_scale", _scalar(f.routed_scale)))
        if f.router_fp32:
            moe.append(("router_fp32", "true"))
        if f.moe_scale_inputs:
            moe.append(("scale_inputs", "true"))
        if f.shared_hidden:
            moe += [("shared_hidden", "$shared_ffn")] + ([("shared_gate", "true")] if f.shared_gate else [])
        ffn_node = f"moe: {_args(moe)}"
    else:
        mlp = [("hidden", "$ffn"), ("activation", f.activation)]
        if not f.mlp_bias:
            mlp.append(("bias", "false"))
        if f.mlp_inner_norm:
            mlp += [("inner_norm", "true"), ("inner_norm_eps", "$eps")]
        ffn_node = f"mlp: {_args(mlp)}"

    def norm(name: str, bias: bool | None = None) -> str:
        args = [("eps", "$eps")]
        if f.unit_offset:
            args.append(("unit_offset", "true"))
        if f.norm == "layernorm" and not (f.norm_bias if bias is None else bias):
            args.append(("bias", "false"))
        if not f.norm_scale:
            args.append(("scale", "false"))
        return f"{f.norm}: {_args(args + [('name', name)])}"

    drop = ["- dropout: $dropout"] if f.resid_dropout else []
    if f.block == "sequential" and f.norms == "post_residual":  # GPT-1: norm(x + attention(x)), norm(h + mlp(h))
        body = (["- residual:", f"    - {attention}"] + ["    " + d for d in drop] + [f"- {norm('attn_norm')}"]
                + ["- residual:", f"    - {ffn_node}"] + ["    " + d for d in drop] + [f"- {norm('mlp_norm')}"])
    elif f.block == "sequential" and f.norms != "pre":
        # Gemma 2: x + norm(attention(norm(x))); OLMo 2: x + norm(attention(x)); the same for the MLP
        pre = f.norms == "sandwich"
        body = (["- residual:"] + ([f"    - {norm('attn_norm')}"] if pre else [])
                + [f"    - {attention}", f"    - {norm('post_attn_norm')}"] + ["    " + d for d in drop]
                + ["- residual:"] + ([f"    - {norm('mlp_norm')}"] if pre else [])
                + [f"    - {ffn_node}", f"    - {norm('post_mlp_norm')}"] + ["    " + d for d in drop])
    elif f.block == "sequential":
        body = (["- residual:", f"    - {norm('attn_norm')}", f"    - {attention}"] + ["    " + d for d in drop]
                + ["- residual:", f"    - {norm('mlp_norm')}", f"    - {ffn_node}"] + ["    " + d for d in drop])
    elif f.block == "parallel":
        body = ["- residual:", "    - parallel:",
                f"        - - {norm('attn_norm')}", f"          - {attention}"] + ["          " + d for d in drop] + [
                f"        - - {norm('mlp_norm')}", f"          - {ffn_node}"] + ["          " + d for d in drop]
    else:
        body = ["- residual:", f"    - {norm('norm')}", "    - parallel:",
                f"        - - {attention}"] + ["          " + d for d in drop] + [
                f"        - - {ffn_node}"] + ["          " + d for d in drop]

    if f.moe_post_norm:  # the experts' output normed inside the residual (AX K1); dense layers have no such norm
        body = [part for line in body for part in (
            [line, line[:len(line) - len(line.lstrip())] + f"- {norm('post_moe_norm')}"]
            if line.strip() == f"- {ffn_node}" else [line])]
    if f.residual_scale is not None:  # x + s * f(x): each residual takes its mapping form, {scale, body}
        v["residual_scale"] = f.residual_scale
        body = [part for line in body for part in (
            [line, "    scale: $residual_scale", "    body:"] if line == "- residual:" else ["  " + line])]

    lines = ["# Written by archdsl import-hf from a Hugging Face config; edit freely.", "archdsl: 1",
             f"name: {_scalar(f.name)}", "description: >"]
    lines += ["  " + line for line in textwrap.wrap(_describe(f), 94)]
    lines.append("vars:")
    lines += [f"  {k}: {_scalar(val)}" for k, val in v.items()]
    lines += ["", "blocks:"]
    if per_layer and distinct:  # a body for each kind of layer (Llama 4's)
        if per_layer_window and f.local_rope is not None:
            raise _unsupported(None, "rope_parameters", "rotary settings per layer type in layers that differ in "
                               "qk-norm, chunks or temperature")
        dense = f"mlp: {_args([('hidden', '$dense_ffn'), ('activation', f.activation)] + ([] if f.mlp_bias else [('bias', 'false')]))}"
        mlp_kinds = f.mlp_kinds or ["moe"] * f.layers
        names = [("dense_" if m == "dense" else "") + k for k, m in zip(kinds, mlp_kinds)]
        for name in dict.fromkeys(names):
            kind = name.removeprefix("dense_")
            lines_of = [line.replace(attention, attention_for(kind)) for line in body]
            if name.startswith("dense_"):
                lines_of = [line.replace(ffn_node, dense) for line in _without_moe_norm(lines_of)]
            lines += [f"  {name}:"] + ["    " + line for line in lines_of]
        kinds = names
    elif per_layer:  # a decoder_layer with the parameters that differ, and a block for each kind of layer
        rope_each = per_layer_window and f.local_rope is not None  # each layer has its own rotary settings (Gemma 3)

        def rope_args(theta: str, scaling: tuple) -> list[str]:
            d = dict(scaling)
            return [f"rope_theta: {theta}"] + ([f"rope_scaling: {d['scaling']}", f"rope_factor: {_scalar(d['factor'])}"]
                                               if d else [])
        params = (["window: null"] if per_layer_window else []) + (["nope: false"] if per_layer_nope else []) + (
            ["rope_theta: null", "rope_scaling: none", "rope_factor: null"] if rope_each else [])
        # with dense layers among the experts' (EXAONE-MoE, AFMoE), a dense_layer block of the same parameters too
        dense = f"mlp: {_args([('hidden', '$dense_ffn'), ('activation', f.activation)] + ([] if f.mlp_bias else [('bias', 'false')]))}"
        layer_blocks = [("decoder_layer", body)] + ([("dense_layer", [line.replace(ffn_node, dense) for line in _without_moe_norm(body)])]
                                                    if f.mlp_kinds else [])
        if not f.first_attn_norm:  # ModernBERT: the first layer without the norm before its attention
            if f.mlp_kinds:
                raise _unsupported(None, "model_type", "a first layer without an attention norm among dense and "
                                   "sparse layers")
            layer_blocks.append(("first_layer", [line for line in body if "name: attn_norm}" not in line]))
        for block, lines_of in layer_blocks:
            lines += [f"  {block}:", f"    params: {{{', '.join(params)}}}", "    layers:"]
            if rope_each:
                lines.append("      - positional: {kind: rotary, base: $rope_theta, scaling: $rope_scaling, factor: "
                             "$rope_factor" + (", max_len: $context}" if f.max_len else "}"))
            lines += ["      " + line for line in lines_of]
        mlp_kinds = f.mlp_kinds or ["moe"] * f.layers
        names = [("dense_" if m == "dense" else "") + k for k, m in zip(kinds, mlp_kinds)]
        if not f.first_attn_norm:
            names[0] = "first_" + names[0]
        for name in dict.fromkeys(names):
            kind = name.removeprefix("first_").removeprefix("dense_")
            local = kind.startswith("local")
            args = (["window: $local_window"] if local else []) + (["nope: true"] if kind.endswith("_nope") else [])
            if rope_each:
                args += rope_args("$local_rope_theta", f.local_rope[1]) if local else rope_args("$rope_theta", f.rope_scaling)
            block = ("first_layer" if name.startswith("first_") else "dense_layer" if name.startswith("dense_")
                     else "decoder_layer")
            lines += [f"  {name}:", f"    - {block}" + (f": {{{', '.join(args)}}}" if args else "")]
        kinds = names
    elif f.mlp_kinds:  # some layers have a dense MLP in place of the experts (DeepSeek's first ones, Qwen-MoE's)
        dense = f"mlp: {_args([('hidden', '$dense_ffn'), ('activation', f.activation)] + ([] if f.mlp_bias else [('bias', 'false')]))}"
        split = max(i for i, line in enumerate(body) if line.startswith("- residual:"))  # the feed-forward residual
        lines += ["  attention_block:"] + ["    " + line for line in body[:split]]
        lines += ["  dense_layer:", "    - attention_block"] + ["    " + line.replace(ffn_node, dense) for line in _without_moe_norm(body[split:])]
        lines += ["  decoder_layer:", "    - attention_block"] + ["    " + line for line in body[split:]]
    elif f.last_out_bias:
        lines += ["  decoder_layer:", "    params: {out_bias: false}", "    layers:"] + ["      " + line for line in body]
        lines += ["  last_layer:", "    - decoder_layer: {out_bias: true}"]
    else:
        lines += ["  decoder_layer:"] + ["    " + line for line in body]
        if not f.first_attn_norm:  # ModernBERT: the first layer without the norm before its attention
            lines += ["  first_layer:"] + ["    " + line for line in body if "name: attn_norm}" not in line]
    if not f.first_attn_norm and (distinct or (f.mlp_kinds and not per_layer)):
        raise _unsupported(None, "model_type", "a first layer without an attention norm in layers that differ otherwise")

    embed = [("name", "embed_tokens"), ("vocab", "$vocab" if f.embed_rows is None else str(f.embed_rows))]
    if f.embed_scale:
        embed.append(("scale", '"${d_model ** 0.5}"'))
    elif f.embed_multiplier is not None:
        embed.append(("scale", _scalar(f.embed_multiplier)))
    model = ["model:", "  width: $d_model", "  layers:", f"    - embedding: {_args(embed)}"]
    if f.embed_norm:
        model.append(f"    - {norm('embed_norm')}")
    if f.positional == "rotary" and f.local_rope is not None:
        pass  # a positional node in every layer (above)
    elif f.positional == "alibi":
        model.append("    - positional: " + (_args([("kind", "alibi"), ("max_len", "$context")]) if f.max_len else "alibi"))
    elif f.positional == "sinusoidal":  # sines of every frequency, then cosines (CTRL's table)
        spacing = [("spacing", f.sinusoid_spacing)] if f.sinusoid_spacing != "vaswani" else []
        model.append(f"    - positional: {_args([('kind', 'sinusoidal'), ('max_len', '$context'), ('halves', 'true')] + spacing)}")
    elif f.positional == "rotary":
        pos = [("kind", "rotary"), ("base", "$rope_theta")] + ([("max_len", "$context")] if f.max_len else [])
        if f.rotary_fraction != 1.0:
            pos.append(("fraction", "$rotary_fraction"))
        if f.rotary_interleaved:
            pos.append(("interleaved", "true"))
        if f.rotary_reverse:
            pos.append(("reverse", "true"))
        pos += list(f.rope_scaling)
        model.append(f"    - positional: {_args(pos)}")
    else:
        learned = [("kind", "learned"), ("max_len", "$context"), ("name", "positions")]
        model.append(f"    - positional: {_args(learned + ([('offset', f.position_offset)] if f.position_offset else []))}")
    if f.embed_dropout:
        model.append("    - dropout: $embed_dropout")
    if per_layer:
        model += _pattern_repeats(kinds)
    elif f.mlp_kinds:
        model += _mixed_repeats(f.mlp_kinds)
    elif f.last_out_bias:
        model += ['    - repeat: "${layers - 1}"', "      name: layers", "      body: decoder_layer",
                  "    - repeat: 1", "      name: last_layer", "      body: last_layer"]
    else:
        model += (["    - repeat: $layers", "      name: layers", "      body: decoder_layer"] if f.first_attn_norm else
                  ["    - repeat: 1", "      name: first_layer", "      body: first_layer",
                   '    - repeat: "${layers - 1}"', "      name: layers", "      body: decoder_layer"])
    if f.final_norm:
        model.append(f"    - {norm('norm', f.final_norm_bias)}")
    for j, step in enumerate((f.head_transform or {}).get("steps", [])):  # a masked LM's head transform
        if step["kind"] == "linear":
            args = [("out", "$d_model" if step["out"] == f.width else str(step["out"]))]
            args += ([("activation", step["activation"])] if step["activation"] != "none" else [])
            args += [] if step["bias"] else [("bias", "false")]
        else:
            args = [("eps", _scalar(step["eps"]))] + ([] if step["bias"] or step["kind"] == "rmsnorm" else [("bias", "false")])
        model.append(f"    - {'linear' if step['kind'] == 'linear' else step['kind']}: {_args(args + [('name', f'head_{j}')])}")
    head = [("vocab", "$vocab")] + ([("tie", "embed_tokens")] if f.tie else []) + ([("bias", "true")] if f.head_bias else [])
    if f.logit_scale is not None and f.logit_scale != 1.0:
        if f.head_bias:
            raise _unsupported(None, "logit_scale", "a logit scale with a biased LM head")
        head.append(("scale", _scalar(f.logit_scale)))  # scaling the stream before a bias-free head scales the logits
    if f.final_softcap:
        head.append(("softcap", _scalar(f.final_softcap)))
    model.append(f"    - lm_head: {_args(head)}")
    return "\n".join(lines + [""] + model) + "\n"


def _leading_dense(kinds: list[str]) -> int:
    return next((i for i, kind in enumerate(kinds) if kind != "dense"), len(kinds))


def _without_moe_norm(lines: list[str]) -> list[str]:
    """A layer's lines without the norm of the experts' output (moe_post_norm), for its dense form."""
    return [line for line in lines if "name: post_moe_norm}" not in line]


def _mixed_repeats(kinds: list[str]) -> list[str]:
    """Repeats for layers whose MLP is dense in some and experts in others: the first k dense then the
    rest (DeepSeek), one repeat cycling a short pattern (Qwen-MoE's decoder_sparse_step), or else a
    repeat per run of equal layers. Layer numbers continue across repeats."""
    blocks = {"dense": "dense_layer", "moe": "decoder_layer"}
    first = _leading_dense(kinds)
    if kinds.count("dense") == first:
        return ["    - repeat: $dense_layers", "      name: dense_layers", "      body: dense_layer",
                '    - repeat: "${layers - dense_layers}"', "      name: layers", "      body: decoder_layer"]
    period = _period(kinds)
    if period <= 8:
        return ["    - repeat: $layers", "      name: layers",
                f"      pattern: [{', '.join(blocks[k] for k in kinds[:period])}]"]
    runs: list[list] = []  # [kind, count] of each run of equal layers
    for kind in kinds:
        if runs and runs[-1][0] == kind:
            runs[-1][1] += 1
        else:
            runs.append([kind, 1])
    return [line for j, (kind, n) in enumerate(runs)
            for line in (f"    - repeat: {n}", f"      name: layers_{j}", f"      body: {blocks[kind]}")]


def _pattern_repeats(names: list[str]) -> list[str]:
    """Repeats over the layers' block names: one cycling the shortest pattern when it is short; else the first
    layers that break the cycle (EXAONE-MoE's dense first layer before its sliding/full pattern), one repeat
    each run, then the cycle; else a repeat per run of equal layers. Layer numbers continue across repeats."""
    def runs(part: list[str], start: int) -> list[str]:
        groups: list[list] = []
        for name in part:
            if groups and groups[-1][0] == name:
                groups[-1][1] += 1
            else:
                groups.append([name, 1])
        return [line for j, (name, n) in enumerate(groups, start)
                for line in (f"    - repeat: {n}", f"      name: layers_{j}", f"      body: {name}")]

    for first in range(len(names)):
        period = _period(names[first:])
        if period <= 8:
            if not first:
                return ["    - repeat: $layers", "      name: layers", f"      pattern: [{', '.join(names[:period])}]"]
            head = runs(names[:first], 0)
            return head + [f'    - repeat: "${{layers - {first}}}"', "      name: layers",
                           f"      pattern: [{', '.join(names[first:first + period])}]"]
    return runs(names, 0)


def _period(kinds: list[str]) -> int:
    """The shortest p with kinds[i] == kinds[i % p] for every layer i."""
    return next(p for p in range(1, len(kinds) + 1) if all(kinds[i] == kinds[i % p] for i in range(len(kinds))))


def spec_from_config(config: Any, *, verify: bool = True) -> Any:
    """An archdsl.Spec from a transformers config object, a dict, or a config.json path (or its folder).

    Raises SpecError naming the feature when the config uses something archdsl cannot express.
    A model_type outside FAMILY_TRAITS converts from its config features with a warning. Unless
    ``verify=False``, the spec is compared with the transformers model of the same config, built
    on the meta device (hf_verify.check): a SpecError names the first role whose parameters
    differ; an UnverifiedSpecWarning says when transformers cannot build the config.
    """
    from ..loader import load_spec
    from .hf_seq2seq import is_seq2seq

    cfg = load_config(config)
    if _is_encoder(cfg):  # probed on a small model of its class; its parameter count checked at full size
        from . import hf_encoder
        spec = load_spec(_spec_yaml(cfg))
        if verify:
            hf_encoder.check_counts(cfg, spec)
        return spec
    if _is_lone_decoder(cfg):  # probed on a small model of its class; its parameter count checked at full size
        from . import hf_decoder
        spec = load_spec(_read_features(cfg, lambda: _spec_yaml(cfg)))
        if verify:
            hf_decoder.check_counts(cfg, spec)
        return spec
    if is_seq2seq(cfg) or _is_vision(cfg) or _is_ssm(cfg) or _is_linear(cfg):
        text = _read_features(cfg, lambda: _spec_yaml(cfg))
    else:
        f = _read_features(cfg, lambda: features_from_config(cfg))
        if not f.known_family:
            warnings.warn(f"model_type '{f.model_type}' is not one of archdsl's tested families "
                          f"({', '.join(FAMILY_TRAITS)}); it was converted from its config features and its model's "
                          "module tree (hf_probe), with Llama-style defaults for what neither shows. Check the converted model "
                          "against the original (from_hf verifies logits by default for such families).",
                          stacklevel=2)
        text = _spec_yaml(f)
    return _verify_spec(cfg, text) if verify else load_spec(text)


def _verify_spec(cfg: Any, text: str) -> Any:
    """The Spec of `text`, compared with the transformers model of `cfg` (a SpecError if they differ)."""
    from ..loader import load_spec
    from .hf_verify import UnverifiedSpecWarning, check

    spec = load_spec(text)
    verdict = check(cfg, spec)
    if not verdict.verified:
        warnings.warn(f"the spec is unverified: {verdict.reason}", UnverifiedSpecWarning, stacklevel=3)
    return spec


# ---------------------------------------------------------------------------------------- weights
_IGNORED = re.compile(r"(rotary_emb|inv_freq|\.attn\.bias$|\.attn\.masked_bias$|embed_scale$|\.cos_cached|\.sin_cached)")
_LAYER = re.compile(r"^(?:.*\.)?(?:layers|h|blocks)\.(\d+)\.(.+)$")

_TOP = {
    "embed": ["embed_tokens.weight", "wte.weight", "embed_in.weight", "word_embeddings.weight", "tokens_embed.weight",
              "tok_embeddings.weight", "transformer.w.weight"],  # ModernBERT's, CTRL's
    "positions": ["wpe.weight", "embed_positions.weight", "positions_embed.weight"],
    "head": ["lm_head.weight", "embed_out.weight"],
    "head_bias": ["lm_head.bias", "embed_out.bias"],
}
_TOP_NORMS = {
    "final": ["final_norm", "norm", "ln_f", "final_layer_norm", "final_layernorm", "norm_f",
              "transformer.layernorm"],  # ModernBERT's first, CTRL's last
    "embed_norm": ["word_embeddings_layernorm", "embeddings.norm"],
}
_LAYER_NORMS = {
    "attn_norm": ["input_layernorm", "ln_1", "ln_attn", "attention_norm", "norm_1", "self_attn_layer_norm",
                  "attention_layernorm", "attn_norm", "layernorm1"],  # Apertus', ModernBERT's, CTRL's
    # a checkpoint with pre_feedforward_layernorm (Gemma 2) uses post_attention_layernorm after the attention
    "mlp_norm": ["pre_feedforward_layernorm", "pre_mlp_layernorm", "post_attention_layernorm", "ln_2", "ln_mlp",
                 "layernorm2",  # CTRL's
                 "ffn_norm", "norm_2",
                 "feedforward_layernorm", "mlp_norm",  # ModernBERT's
                 "final_layer_norm"],  # OPT's layer i: self_attn_layer_norm, then final_layer_norm before fc1
    # GLM-4's first, HyperCLOVA X's (whose post_attention_layernorm comes before the MLP), then Gemma 2's
    "post_attn_norm": ["post_self_attn_layernorm", "post_norm1", "post_attention_layernorm"],
    "post_mlp_norm": ["post_feedforward_layernorm", "post_mlp_layernorm", "post_norm2",
                      "mlp.post_mlp_layernorm"],  # AX K1's, of its experts' output
    "post_res_attn_norm": ["ln_1"],  # GPT-1's norm(x + attention(x))
    "post_res_mlp_norm": ["ln_2"],
}
_ATTN = ["attn.attention", "self_attn", "attn", "attention", "self_attention", "multi_head_attention"]  # GPT-Neo's first
_QKV_SPLIT = [("q_proj", "k_proj", "v_proj"), ("Wq", "Wk", "Wv")]  # CTRL's last
_QKV_FUSED = ["qkv_proj", "c_attn", "query_key_value", "Wqkv"]
_OUT = ["o_proj", "c_proj", "dense", "out_proj", "Wo"]
_MLP = ["mlp", "feed_forward", "ffn"]
_MLP_OR_LAYER = [m + "." for m in _MLP] + [""]  # prefixes of an ungated MLP's projections; OPT's sit in the layer
_GATE_UP = [("gate_proj", "up_proj"), ("w1", "w3")]
_GATE_UP_FUSED = ["gate_up_proj", "Wi", "fc1"]  # ModernBERT's [input; gate]: archdsl's [gate; up]; Moshi's fc1
_UP = ["c_fc", "dense_h_to_4h", "fc1", "fc_in", "up_proj", "0"]  # "0", "2": an nn.Sequential's (CTRL's ffn)
_DOWN = ["down_proj", "c_proj", "dense_4h_to_h", "fc2", "fc_out", "w2", "Wo", "2"]
_CONV1D = {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"}  # GPT-2's Conv1D modules


class _Source:
    """The tensors of a checkpoint by key, read on demand; remembers which were used."""

    def __init__(self, tensors: Mapping[str, Callable[[], Any]], conv1d: set[str] | None):
        self.loaders = dict(tensors)
        self.shapes: Mapping[str, tuple] | None = getattr(tensors, "shapes", None)  # a checkpoint folder's, unread
        self.shards = tensors if isinstance(tensors, Shards) else None
        self.used: set[str] = set()
        self.conv1d = conv1d  # exact module names when known (from_hf); else inferred from shapes
        self.top: dict[str, str] = {}
        self.top_keys: list[str] = []  # every key outside the layers (two may end alike: embeddings.norm, lm_head.norm)
        self.layer: dict[tuple[int, str], str] = {}
        for key in self.loaders:
            m = _LAYER.match(key)
            if m:
                suffix = m.group(2).replace("block_sparse_moe.", "mlp.").replace("_proj.linear.", "_proj.")  # Moshi's
                suffix = suffix.replace("attention.dense_bias", "attention.dense.bias")  # GPT-NeoX-Japanese's
                if suffix.startswith("feed_forward."):  # Llama 4's feed-forward, dense or experts
                    suffix = "mlp." + suffix[len("feed_forward."):]
                self.layer[(int(m.group(1)), suffix)] = key
            else:
                self.top[".".join(key.split(".")[-2:])] = key
                self.top_keys.append(key)

    def get(self, key: str) -> Any:
        self.used.add(key)
        return self.loaders[key]()

    def find_top(self, names: list[str]) -> str | None:
        """The first name found: as the last two parts of a key, or (a longer name, embeddings.norm.weight) as the
        end of exactly one key outside the layers."""
        for n in names:
            if n in self.top:
                return self.top[n]
            if n.count(".") > 1:
                ends = [k for k in self.top_keys if k == n or k.endswith("." + n)]
                if len(ends) == 1:
                    return ends[0]
        return None

    def find(self, i: int, names: Iterable[str]) -> str | None:
        return next((self.layer[(i, n)] for n in names if (i, n) in self.layer), None)

    def is_conv1d(self, key: str) -> bool:
        """Is this weight stored (in, out), as GPT-2's Conv1D modules store it?"""
        if self.conv1d is not None:  # the module types of an in-memory model
            return key.rsplit(".", 1)[0] in self.conv1d
        m = _LAYER.match(key)  # a checkpoint on disk: GPT-2 naming, and c_attn's shape tells (in, 3*in) from (3*in, in)
        if not m or m.group(2).rsplit(".", 1)[0] not in _CONV1D:
            return False
        c_attn = self.find(int(m.group(1)), ["attn.c_attn.weight"])
        if c_attn is None:
            return False
        shape = self.shape(c_attn)
        return shape[0] < shape[1]

    def cat(self, keys: list[str]) -> Any:
        """torch.cat of the tensors along dim 0. From a checkpoint folder each part is read straight into
        its slice of the result (no parts in memory next to it, no copy)."""
        import torch

        shapes = [self.shape(k) for k in keys]
        if (self.shards is None or any(len(s) < 1 or s[1:] != shapes[0][1:] for s in shapes)
                or len({self.shards.dtype(k) for k in keys}) != 1):
            return torch.cat([self.get(k) for k in keys])  # (raises its own error for parts that do not fit)
        out = torch.empty((sum(s[0] for s in shapes), *shapes[0][1:]), dtype=self.shards.dtype(keys[0]))
        start = 0
        for key, shape in zip(keys, shapes):
            self.used.add(key)
            self.shards.read_into(key, out[start:start + shape[0]])
            start += shape[0]
        return out

    def shape(self, key: str) -> tuple:
        return tuple(self.shapes[key]) if self.shapes is not None else tuple(self.loaders[key]().shape)


class _Mapper:
    def __init__(self, f: Features, src: _Source, model: Any, owned: bool = False):
        self.f, self.src, self.model = f, src, model
        self.out: dict[str, Any] = _Sink(model, owned)  # owned: the tensors are fresh reads of a checkpoint
        self.errors: list[str] = []

    # -- helpers ------------------------------------------------------------------------------
    def linear(self, key: str) -> Any:
        w = self.src.get(key)
        return w.t().contiguous() if self.src.is_conv1d(key) else w

    def need(self, what: str, key: str | None) -> str | None:
        if key is None:
            self.errors.append(f"no tensor for {what}")
        return key

    def put(self, name: str, tensor: Any) -> None:
        self.out[name] = tensor

    def bias(self, i: int, prefixes: list[str], bias_wanted: bool, what: str) -> Any:
        keys = [self.src.find(i, [p + ".bias"]) for p in prefixes]
        if bias_wanted and any(k is None for k in keys):
            self.errors.append(f"layer {i}: {what} expects a bias the checkpoint lacks")
            return None
        if not bias_wanted:
            for k in keys:
                if k is not None:
                    self.errors.append(f"layer {i}: the checkpoint has a bias {k} that the spec lacks")
            return None
        return self.src.cat(keys)  # type: ignore[arg-type]

    # -- roles --------------------------------------------------------------------------------
    def norm(self, name: str, i: int | None, role: str, module: Any) -> None:
        if getattr(module, "weight", None) is None and getattr(module, "bias", None) is None:
            return  # a norm without parameters (OLMo 1): nothing in the checkpoint either
        if i is None:  # the final norm, or a norm right after the embedding (BLOOM)
            what = "the final norm" if role == "final" else "the norm after the embedding"
            key = self.src.find_top([f"{n}.weight" for n in _TOP_NORMS[role]])  # embeddings.norm: by its end
            if self.need(what, key) is None:
                return
            self.put(f"{name}.weight", self.src.get(key))
            if getattr(module, "bias", None) is not None:
                bkey = key[: -len("weight")] + "bias" if key[: -len("weight")] + "bias" in self.src.loaders else None
                if self.need(f"{what}'s bias", bkey):
                    self.put(f"{name}.bias", self.src.get(bkey))
            return
        prefix = next((p for p in _LAYER_NORMS[role] if (i, f"{p}.weight") in self.src.layer), None)
        if self.need(f"layer {i}'s {role}", prefix) is None:
            return
        self.put(f"{name}.weight", self.src.get(self.src.layer[(i, f"{prefix}.weight")]))
        if getattr(module, "bias", None) is not None:
            bkey = self.src.find(i, [f"{prefix}.bias"])
            if self.need(f"layer {i}'s {role} bias", bkey):
                self.put(f"{name}.bias", self.src.get(bkey))

    def attention(self, name: str, i: int, module: Any) -> None:

        h, kv, hd = module.heads, module.kv_heads, module.head_dim
        qkv_bias = module.qkv.bias is not None
        split = next(((a, s) for a in _ATTN for s in _QKV_SPLIT if (i, f"{a}.{s[0]}.weight") in self.src.layer), None)
        if split is not None:
            a, (q, k, v) = split
            ws = [self.src.find(i, [f"{a}.{p}.weight"]) for p in (q, k, v)]
            if any(w is None for w in ws):
                self.errors.append(f"layer {i}: incomplete q/k/v projections under {a}")
                return
            if module.output_gate:  # the gate's rows follow q, k and v (AFMoE's gate_proj)
                gkey = self.src.find(i, [f"{a}.gate_proj.weight"])
                if self.need(f"layer {i}'s attention output gate", gkey) is None:
                    return
                ws.append(gkey)
            self.put(f"{name}.qkv.weight", self.src.cat(ws))  # type: ignore[arg-type]
            b = self.bias(i, [f"{a}.{p}" for p in (q, k, v)], qkv_bias, "the qkv projection")
            if b is not None:
                self.put(f"{name}.qkv.bias", b)
        else:
            fused = next(((a, p) for a in _ATTN for p in _QKV_FUSED if (i, f"{a}.{p}.weight") in self.src.layer), None)
            if self.need(f"layer {i}'s attention projections", fused) is None:
                return
            a, p = fused  # type: ignore[misc]
            key = self.src.layer[(i, f"{a}.{p}.weight")]
            w = self.linear(key)
            bkey = self.src.find(i, [f"{a}.{p}.bias"])
            b = self.src.get(bkey) if bkey else None
            w, b = self.reorder_qkv(w, b, h, kv, hd)
            self.put(f"{name}.qkv.weight", w)
            if qkv_bias != (b is not None):
                self.errors.append(f"layer {i}: qkv bias is {'missing from' if qkv_bias else 'extra in'} the checkpoint")
            elif b is not None:
                self.put(f"{name}.qkv.bias", b)
        a = split[0] if split else fused[0]  # type: ignore[index]
        okey = self.src.find(i, [f"{a}.{o}.weight" for o in _OUT])
        if self.need(f"layer {i}'s attention output projection", okey) is None:
            return
        self.put(f"{name}.out.weight", self.linear(okey))
        o_name = next(o for o in _OUT if self.src.find(i, [f"{a}.{o}.weight"]) == okey)
        obkey = self.src.find(i, [f"{a}.{o_name}.bias"])  # by its suffix: GPT-NeoX-Japanese's dense_bias
        if module.out.bias is not None:
            if obkey is None:
                self.errors.append(f"layer {i}: the attention output bias is missing from the checkpoint")
            else:
                self.put(f"{name}.out.bias", self.src.get(obkey))
        elif obkey is not None:
            self.errors.append(f"layer {i}: the checkpoint has a bias {obkey} that the spec lacks")
        if module.sinks is not None:  # one logit per head (GPT-OSS, Granite-SWA)
            skey = self.src.find(i, [f"{a}.sinks"])
            if self.need(f"layer {i}'s attention sinks", skey):
                self.put(f"{name}.sinks", self.src.get(skey))  # type: ignore[arg-type]
        if module.q_norm is not None and module.q_norm.weight is not None:  # per-head RMSNorm weights (Qwen3)
            for norm, aliases in (("q_norm", ("query_layernorm", "q_layernorm")),  # HunYuan's, Persimmon's names
                                  ("k_norm", ("key_layernorm", "k_layernorm"))):
                for param in ("weight", "bias") if getattr(getattr(module, norm), "bias", None) is not None else ("weight",):
                    nkey = self.src.find(i, [f"{a}.{n}.{param}" for n in (norm, *aliases)])
                    if self.need(f"layer {i}'s attention {norm} {param}", nkey):
                        self.put(f"{name}.{norm}.{param}", self.src.get(nkey))  # type: ignore[arg-type]
        if getattr(module, "out_norm", None) is not None:  # BitNet's attn_sub_norm, before the output projection
            nkey = self.src.find(i, [f"{a}.{self.f.attn_out_norm}.weight"])
            if self.need(f"layer {i}'s attention norm before its output projection", nkey):
                self.put(f"{name}.out_norm.weight", self.src.get(nkey))  # type: ignore[arg-type]

    def latent_attention(self, name: str, i: int, module: Any) -> None:
        """DeepSeek's module names: q_proj or q_a_proj/q_a_layernorm/q_b_proj, kv_a_proj_with_mqa,
        kv_a_layernorm, kv_b_proj, o_proj (the same layouts as archdsl's, so no reordering)."""
        ours = {"kv_a": "kv_a_proj_with_mqa", "kv_norm": "kv_a_layernorm", "kv_b": "kv_b_proj", "out": "o_proj"}
        ours.update({"q": "q_proj"} if module.q is not None else {"q_a": "q_a_proj", "q_norm": "q_a_layernorm",
                                                                  "q_b": "q_b_proj"})
        for mine, theirs in ours.items():
            sub = getattr(module, mine)
            for part in ("weight", "bias"):
                key = self.src.find(i, [f"{a}.{theirs}.{part}" for a in _ATTN])
                if getattr(sub, part, None) is None:
                    if key is not None:
                        self.errors.append(f"layer {i}: the checkpoint has a bias {key} that the spec lacks")
                elif self.need(f"layer {i}'s {theirs}.{part}", key):
                    self.put(f"{name}.{mine}.{part}", self.src.get(key))  # type: ignore[arg-type]

    def reorder_qkv(self, w: Any, b: Any, h: int, kv: int, hd: int) -> tuple[Any, Any]:
        layout = self.f.qkv_layout
        width = w.shape[-1]
        if layout == "concat":
            return w, b
        if layout == "codegen":  # (4, [q, v, k], heads/4 · hd): CodeGen's rows for 4-way model parallelism
            import torch

            mp = 4
            t = w.view(mp, 3, h * hd // mp, width)
            w = torch.cat([t[:, 0].reshape(-1, width), t[:, 2].reshape(-1, width), t[:, 1].reshape(-1, width)])
            if b is not None:
                tb = b.view(mp, 3, -1)
                b = torch.cat([tb[:, 0].reshape(-1), tb[:, 2].reshape(-1), tb[:, 1].reshape(-1)])
            return w.contiguous(), b
        if layout == "per_head":  # (heads, 3, hd): NeoX, Falcon without multi-query
            w = w.view(h, 3, hd, width).transpose(0, 1).reshape(3 * h * hd, width)
            b = None if b is None else b.view(h, 3, hd).transpose(0, 1).reshape(-1)
            return w.contiguous(), b
        # grouped (kv, h/kv + 2, hd): Falcon's new decoder architecture
        g = h // kv

        def regroup(t: Any, tail: tuple) -> Any:
            t = t.view(kv, g + 2, hd, *tail)
            q, k, v = t[:, :g].reshape(h * hd, *tail), t[:, g].reshape(kv * hd, *tail), t[:, g + 1].reshape(kv * hd, *tail)
            import torch
            return torch.cat([q, k, v]).contiguous()
        return regroup(w, (width,)), None if b is None else regroup(b, ())

    def mlp(self, name: str, i: int, module: Any) -> None:

        bias = module.up.bias is not None
        if module.gated:
            pair = next(((m, g, u) for m in _MLP for g, u in _GATE_UP if (i, f"{m}.{g}.weight") in self.src.layer), None)
            if pair is not None:
                m, g, u = pair
                gk, uk = self.src.find(i, [f"{m}.{g}.weight"]), self.src.find(i, [f"{m}.{u}.weight"])
                if self.need(f"layer {i}'s up projection", uk) is None:
                    return
                self.put(f"{name}.up.weight", self.src.cat([gk, uk]))  # type: ignore[arg-type]
                b = self.bias(i, [f"{m}.{g}", f"{m}.{u}"], bias, "the gated up projection")
                if b is not None:
                    self.put(f"{name}.up.bias", b)
            else:
                fused = next(((m, p) for m in _MLP for p in _GATE_UP_FUSED if (i, f"{m}.{p}.weight") in self.src.layer), None)
                if self.need(f"layer {i}'s gate and up projections", fused) is None:
                    return
                m, p = fused  # type: ignore[misc]
                self.put(f"{name}.up.weight", self.src.get(self.src.layer[(i, f"{m}.{p}.weight")]))
                b = self.bias(i, [f"{m}.{p}"], bias, "the gated up projection")
                if b is not None:
                    self.put(f"{name}.up.bias", b)
        else:
            found = next(((m, p) for m in _MLP_OR_LAYER for p in _UP if (i, f"{m}{p}.weight") in self.src.layer), None)
            if self.need(f"layer {i}'s up projection", found) is None:
                return
            m, p = found  # type: ignore[misc]
            self.put(f"{name}.up.weight", self.linear(self.src.layer[(i, f"{m}{p}.weight")]))
            b = self.bias(i, [f"{m}{p}"], bias, "the up projection")
            if b is not None:
                self.put(f"{name}.up.bias", b)
        dk = next(((m, p) for m in _MLP_OR_LAYER for p in _DOWN if (i, f"{m}{p}.weight") in self.src.layer), None)
        if self.need(f"layer {i}'s down projection", dk) is None:
            return
        m, p = dk  # type: ignore[misc]
        self.put(f"{name}.down.weight", self.linear(self.src.layer[(i, f"{m}{p}.weight")]))
        b = self.bias(i, [f"{m}{p}"], bias, "the down projection")
        if b is not None:
            self.put(f"{name}.down.bias", b)
        if getattr(module, "inner_norm", None) is not None:  # BitNet's ffn_sub_norm, before the down-projection
            nkey = self.src.find(i, [f"{mm}.{self.f.mlp_inner_norm}.weight" for mm in _MLP])
            if self.need(f"layer {i}'s feed-forward norm before its down-projection", nkey):
                self.put(f"{name}.inner_norm.weight", self.src.get(nkey))  # type: ignore[arg-type]
        if hasattr(module.act, "alpha_p"):  # a learned activation (xIELU): its scalars, its constants
            for param in ("alpha_p", "alpha_n"):
                key = self.src.find(i, [f"{mm}act_fn.{param}" for mm in _MLP_OR_LAYER])
                if self.need(f"layer {i}'s activation {param}", key):
                    self.put(f"{name}.act.{param}", self.src.get(key).reshape(1))  # type: ignore[arg-type]
            for const in ("beta", "eps"):
                key = self.src.find(i, [f"{mm}act_fn.{const}" for mm in _MLP_OR_LAYER])
                if key is not None:
                    stored = float(self.src.get(key))
                    if abs(stored - getattr(module.act, const)) > 1e-8 + 1e-2 * abs(stored):  # bf16-stored constants
                        self.errors.append(f"layer {i}: the activation's {const} is {stored:g}, the spec's "
                                           f"{getattr(module.act, const):g}")

    def moe(self, name: str, i: int, module: Any) -> None:
        import torch

        rkey = self.src.find(i, ["mlp.gate.weight", "mlp.router.weight", "mlp.router.layer.weight", "mlp.gate.wg.weight",
                                 "mlp.router.gate.weight"])  # AFMoE's last
        if self.need(f"layer {i}'s router", rkey) is None:
            return
        self.put(f"{name}.router.weight", self.src.get(rkey))
        rb = rkey[: -len(".weight")] + ".bias"
        if module.router.bias is not None:
            if self.need(f"layer {i}'s router bias", rb if rb in self.src.loaders else None):
                self.put(f"{name}.router.bias", self.src.get(rb))
        elif rb in self.src.loaders:
            self.errors.append(f"layer {i}: the checkpoint has a router bias {rb} that the spec lacks")
        if module.score_bias is not None:  # DeepSeek-V3's e_score_correction_bias (a buffer)
            bkey = self.src.find(i, ["mlp.gate.e_score_correction_bias", "mlp.e_score_correction_bias",
                                     "mlp.gate.moe_statics.e_score_correction_bias",  # ERNIE 4.5's, (1, experts)
                                     "mlp.expert_bias"])  # AFMoE's
            if self.need(f"layer {i}'s expert score bias", bkey):
                self.put(f"{name}.score_bias", self.src.get(bkey).reshape(-1))  # type: ignore[arg-type]
        if module.shared is not None:  # Qwen2-MoE: mlp.shared_expert.*, mlp.shared_expert_gate; DeepSeek: shared_experts
            keys = [self.src.find(i, [f"mlp.{s}.{p}.weight" for s in ("shared_expert", "shared_experts", "shared_mlp")])
                    for p in ("gate_proj", "up_proj", "down_proj", "gate_up_proj")]
            if keys[3] is not None and keys[0] is None and keys[1] is None and keys[2] is not None:
                self.put(f"{name}.shared.up.weight", self.src.get(keys[3]))  # fused [gate; up] (MiniMax-M3)
                self.put(f"{name}.shared.down.weight", self.src.get(keys[2]))  # type: ignore[arg-type]
            elif any(k is None for k in keys[:3]):
                self.errors.append(f"layer {i}: the shared expert's projections are missing from the checkpoint")
            else:
                up_keys = keys[:2] if module.shared.gated else [keys[1]]
                self.put(f"{name}.shared.up.weight", self.src.cat(up_keys))  # type: ignore[arg-type]
                self.put(f"{name}.shared.down.weight", self.src.get(keys[2]))  # type: ignore[arg-type]
            if module.shared_gate is not None:
                gkey = self.src.find(i, ["mlp.shared_expert_gate.weight"])
                if self.need(f"layer {i}'s shared expert gate", gkey):
                    self.put(f"{name}.shared_gate.weight", self.src.get(gkey))  # type: ignore[arg-type]
        experts = module.num_experts
        if module.experts.up_bias is not None and not self.f.experts_transposed:
            self.errors.append(f"layer {i}: experts with biases are not mapped")
            return
        # transformers 5 in memory, and GraniteMoE on disk (input_linear/output_linear): (E, 2I, D), (E, D, I)
        fused = self.src.find(i, ["mlp.experts.gate_up_proj", "mlp.input_linear.weight"])
        if fused is not None:
            gate_up = self.src.get(fused)
            down_key = self.src.find(i, ["mlp.experts.down_proj", "mlp.output_linear.weight"])
            if self.need(f"layer {i}'s expert down projections", down_key) is None:
                return
            down = self.src.get(down_key)
            if self.f.experts_transposed:  # (E, in, out), GPT-OSS: archdsl's are (E, out, in)
                gate_up, down = gate_up.transpose(1, 2), down.transpose(1, 2)
            self.put(f"{name}.experts.up", self.deinterleave(gate_up, 1).contiguous())
            self.put(f"{name}.experts.down", down.contiguous())
            if module.experts.up_bias is not None:
                for mine, theirs, interleaved in (("up_bias", "gate_up_proj_bias", True), ("down_bias", "down_proj_bias", False)):
                    bkey = self.src.find(i, [f"mlp.experts.{theirs}"])
                    if self.need(f"layer {i}'s expert {theirs}", bkey):
                        b = self.src.get(bkey)  # type: ignore[arg-type]
                        self.put(f"{name}.experts.{mine}", self.deinterleave(b, 1) if interleaved else b)
            return
        ups, downs = [], []
        for e in range(experts):
            pair = next(((g, u, d) for g, u, d in (("w1", "w3", "w2"), ("gate_proj", "up_proj", "down_proj"))
                         if (i, f"mlp.experts.{e}.{g}.weight") in self.src.layer), None)
            if self.need(f"layer {i}'s expert {e}", pair) is None:
                return
            g, u, d = pair  # type: ignore[misc]
            keys = [self.src.find(i, [f"mlp.experts.{e}.{p}.weight"]) for p in (g, u, d)]
            if any(k is None for k in keys):
                self.errors.append(f"layer {i}: expert {e} is incomplete")
                return
            ups.append(self.src.cat([keys[0], keys[1]]))  # type: ignore[arg-type]
            downs.append(self.src.get(keys[2]))  # type: ignore[arg-type]
        self.put(f"{name}.experts.up", torch.stack(ups))
        self.put(f"{name}.experts.down", torch.stack(downs))

    def deinterleave(self, t: Any, dim: int) -> Any:
        """[gate; up] from gate and up rows interleaved along dim (GPT-OSS), else t itself."""
        if not self.f.experts_interleaved:
            return t
        import torch
        n = t.shape[dim]
        return t.index_select(dim, torch.cat([torch.arange(0, n, 2), torch.arange(1, n, 2)]).to(t.device))

    def layout(self) -> dict[str, tuple[int | None, str]]:
        """Module path -> (Hugging Face layer index or None, role), read from the spec's structure.

        Layers are the bodies of the top-level repeats, numbered across repeats. A norm's role is
        that of the block it feeds: "attn_norm" before an attention, "mlp_norm" before an mlp or
        moe (a norm shared by a parallel attention and MLP feeds the attention first), "final"
        after the layers and "embed_norm" before them. So specs written by hand map as well as imported ones.
        """
        from ..ir import layer_numbering, leaves

        g = self.model.graph
        layer_of = layer_numbering(g)

        order = [n for n in leaves(g) if g.nodes[n]["kind"] not in ("add", "sum", "dropout")]
        out: dict[str, tuple[int | None, str]] = {}
        for pos, node in enumerate(order):
            kind, i = g.nodes[node]["kind"], layer_of(node)
            role = kind
            if kind in ("layernorm", "rmsnorm"):
                following = next((g.nodes[n]["kind"] for n in order[pos + 1:] if layer_of(n) == i), None)
                previous = next((n for n in reversed(order[:pos]) if layer_of(n) == i), None)
                if i is None:  # before every layer (BLOOM's norm of the embedding) or after them
                    role = "embed_norm" if all(layer_of(n) is None for n in order[:pos]) else "final"
                else:
                    role = {"attention": "attn_norm", "latent_attention": "attn_norm", "mlp": "mlp_norm",
                            "moe": "mlp_norm"}.get(following or "", "unknown_norm")
                if (i is not None and previous is not None and g.nodes[previous]["kind"] in ("attention", "mlp", "moe")
                        and g.nodes[previous]["parent"] == g.nodes[node]["parent"]):
                    # after a sublayer in the same residual body: a post-norm (Gemma 2's sandwich, OLMo 2)
                    role = "post_attn_norm" if g.nodes[previous]["kind"] == "attention" else "post_mlp_norm"
                elif (i is not None and previous is not None and g.nodes[previous]["kind"] in ("attention", "mlp")
                      and g.nodes[g.nodes[node]["parent"]]["kind"] not in ("residual", "parallel")
                      and g.nodes[g.nodes[previous]["parent"]]["kind"] == "residual"):
                    # after the residual's sum, at the layer's level: norm(x + f(x)) (GPT-1, BERT)
                    role = "post_res_attn_norm" if g.nodes[previous]["kind"] == "attention" else "post_res_mlp_norm"
            out[node] = (i, role)
        return out

    def run(self) -> dict[str, Any]:
        import torch

        from ..blocks.embedding import Embedding, LearnedPositional
        from ..blocks.heads import LMHead

        for name, (i, role) in self.layout().items():
            module = self.model.get_submodule(name)
            if re.fullmatch(r"head_\d+", name) and self.f.head_transform:  # a masked LM's head transform
                theirs = f"{self.f.head_transform['module']}.{self.f.head_transform['steps'][int(name[5:])]['name']}"
                for part in ("weight", "bias"):
                    if getattr(module, part, None) is not None and self.need(f"{theirs}.{part}", theirs + f".{part}"
                                                                             if theirs + f".{part}" in self.src.loaders else None):
                        self.put(f"{name}.{part}", self.src.get(f"{theirs}.{part}"))
                continue
            if role in ("attention", "latent_attention", "mlp", "moe", "attn_norm", "mlp_norm", "unknown_norm") and i is None:
                self.errors.append(f"{name}: a {role} outside the repeated layers has no Hugging Face counterpart")
                continue
            if isinstance(module, Embedding):
                key = self.need("the token embedding", self.src.find_top(_TOP["embed"]))
                if key:
                    self.put(f"{name}.weight", self.src.get(key))
            elif isinstance(module, LearnedPositional):
                key = self.need("the position embedding", self.src.find_top(_TOP["positions"]))
                if key:
                    self.put(f"{name}.weight", self.src.get(key))
            elif role == "unknown_norm":
                self.errors.append(f"{name}: a norm that feeds neither an attention nor an MLP has no Hugging Face counterpart")
            elif role in ("attn_norm", "mlp_norm", "post_attn_norm", "post_mlp_norm", "post_res_attn_norm",
                          "post_res_mlp_norm", "final", "embed_norm"):
                self.norm(name, i, role, module)
            elif role == "attention":
                self.attention(name, i, module)  # type: ignore[arg-type]
            elif role == "latent_attention":
                self.latent_attention(name, i, module)  # type: ignore[arg-type]
            elif role == "moe":
                self.moe(name, i, module)  # type: ignore[arg-type]
            elif role == "mlp":
                self.mlp(name, i, module)  # type: ignore[arg-type]
            elif isinstance(module, LMHead):
                key = self.src.find_top(_TOP["head"])
                if self.f.head_transform:  # the transform's decoder is the output projection
                    decoder = self.f.head_transform["decoder"] + ".weight"
                    key = decoder if decoder in self.src.loaders else None
                if module.tied:
                    if key is not None:  # the checkpoint stores the tied copy: it must equal the embedding
                        head, embed = self.src.get(key), self.src.get(self.src.find_top(_TOP["embed"]))  # type: ignore[arg-type]
                        if head.shape != embed.shape or not torch.equal(head, embed):
                            self.errors.append(f"the config ties the head to the embedding but {key} differs from it")
                elif self.need("the output head", key):
                    self.put(f"{name}.weight", self.src.get(key))  # type: ignore[arg-type]
                bkey = self.src.find_top(_TOP["head_bias"])
                if self.f.head_transform:
                    decoder_bias = self.f.head_transform["decoder"] + ".bias"
                    bkey = decoder_bias if decoder_bias in self.src.loaders else None
                if module.bias is not None:
                    if self.need("the output head's bias", bkey):
                        self.put(f"{name}.bias", self.src.get(bkey))  # type: ignore[arg-type]
                elif bkey is not None:
                    self.errors.append(f"the checkpoint has an output bias {bkey} that the spec lacks")
        unused = sorted(k for k in self.src.loaders if k not in self.src.used and not _IGNORED.search(k)
                        and math.prod(self.src.shape(k)) > 0)  # a zero-width part (n_shared_experts: 0) holds nothing
        if unused:
            shown = ", ".join(unused[:8]) + (f" and {len(unused) - 8} more" if len(unused) > 8 else "")
            self.errors.append(f"checkpoint tensors the spec does not use: {shown}")
        if self.errors:
            raise ValueError("cannot map the checkpoint onto the archdsl spec:\n  " + "\n  ".join(self.errors))
        return self.out


class _Sink(dict):
    """archdsl name -> tensor for the mappers, put into the model the moment it is set and not kept:
    a checkpoint is never held in memory next to the model, and each tensor is converted to the
    model's dtype on its own.

    With ``owned`` (tensors freshly read from files, or computed from such), a tensor of the model's
    dtype and device that owns its whole storage becomes the parameter's storage (``p.data = t``:
    the Parameter object stays, so ties stay; the allocated but never touched storage it replaces
    was never resident); the peak is then the model plus the inputs of one fused tensor. Otherwise
    (tensors of a live transformers model) the values are copied."""

    def __init__(self, model: Any, owned: bool = False):
        super().__init__()
        self.owned = owned
        self.taken: set[int] = set()  # storages already given to a parameter: never two parameters on one
        # parameters, and the buffers that belong to a checkpoint (persistent ones: DeepSeek's expert score bias)
        persistent = set(model.state_dict())
        self.params = {**{k: b for k, b in model.named_buffers() if k in persistent}, **dict(model.named_parameters())}

    def __setitem__(self, name: str, tensor: Any) -> None:
        import torch

        if name not in self.params:
            raise ValueError(f"{name}: no such archdsl parameter to load a checkpoint tensor into")
        if tensor is None:  # a tensor the checkpoint lacks: the mapper has recorded the error it raises
            return
        p = self.params[name]
        if tuple(p.shape) != tuple(tensor.shape):
            raise ValueError(f"{name}: the checkpoint gives shape {tuple(tensor.shape)}, the spec {tuple(p.shape)}")
        with torch.no_grad():
            if self.owned:
                t = tensor.to(device=p.device, dtype=p.dtype)
                storage = t.untyped_storage()
                if (t.is_contiguous() and storage.nbytes() == t.numel() * t.element_size()
                        and storage.data_ptr() not in self.taken):
                    if t.numel():
                        self.taken.add(storage.data_ptr())
                    p.data = t
                    super().__setitem__(name, None)
                    return
            p.copy_(tensor)  # copy_ converts dtype and device on the way, without a converted copy first
        super().__setitem__(name, None)

    def missing(self) -> list[str]:
        return sorted(set(self.params) - set(self))


def _assign(model: Any, tensors: dict[str, Any]) -> None:
    """Put mapped tensors into the model (a _Sink has done so already) and require every parameter."""
    sink = tensors if isinstance(tensors, _Sink) else _Sink(model)
    if sink is not tensors:
        for name, tensor in tensors.items():
            sink[name] = tensor
    missing = sink.missing()
    if missing:
        raise ValueError("archdsl parameters left without a checkpoint tensor: " + ", ".join(missing[:8]))


def _read_dtype(model: Any) -> Any:
    """The dtype to read a checkpoint's floating-point tensors in: the model's, when every floating-point
    tensor it loads has that one dtype (the mappers of from_pretrained only rearrange values, and
    rounding commutes with rearranging); None (read as stored, convert each tensor as it is placed)
    when some keep another, such as DeepSeek's float32 router in a bfloat16 model."""
    dtypes = {t.dtype for t in model.state_dict().values() if t.dtype.is_floating_point}
    return dtypes.pop() if len(dtypes) == 1 else None


def _build(spec: Any, dtype: Any, device: Any) -> Any:
    """The archdsl model on `device` with parameters in `dtype`; derived buffers stay float32
    (compile_spec does that for any dtype), as transformers keeps them in half precision."""
    from ..compiler import compile_spec

    return compile_spec(spec, device="meta", dtype=dtype).materialize(device)


def _conv1d_modules(hf_model: Any) -> set[str]:
    names = set()
    for name, module in hf_model.named_modules():
        if type(module).__name__ == "Conv1D":
            names.add(name)
    return names


def _target_spec(f: Features, cfg: Any, spec: Any, overrides: Mapping[str, Any] | None) -> Any:
    from ..loader import load_spec

    if spec is not None:
        return load_spec(spec, overrides=overrides)
    if overrides:
        raise TypeError("overrides apply to a spec given with spec=")
    if not getattr(f, "known_family", True):
        warnings.warn(f"model_type '{f.model_type}' is not one of archdsl's tested families "
                      f"({', '.join(FAMILY_TRAITS)}); converted from its config features and its model's module "
                      "tree (hf_probe), with Llama-style defaults for what neither shows", stacklevel=3)
    return load_spec(spec_yaml_from_config(f))


def from_hf(hf_model: Any, *, spec: Any = None, overrides: Mapping[str, Any] | None = None, dtype: Any = None,
            device: Any = None, verify: bool | None = None) -> Any:
    """An ArchModel with the architecture and weights of an in-memory transformers causal LM.

    The spec is spec_from_config(hf_model.config), or ``spec`` (a path, YAML text or Spec, with
    ``overrides`` for its vars) to load the weights into a spec of your own with the same
    structure, e.g. ``specs/mistral-7b.yaml``. ``dtype``/``device`` default to those of the
    Hugging Face weights. ``verify`` runs both models on a short random sequence and raises if
    the logits differ; by default it runs when ``spec`` is given (its settings that carry no
    weights, such as eps, rotary base or window, are yours) and for families outside
    FAMILY_TRAITS.
    """
    from . import hf_seq2seq

    if _is_vision(hf_model.config):  # ViTModel, ViTForImageClassification
        from . import hf_vision
        return hf_vision.from_hf(hf_model, spec=spec, overrides=overrides, dtype=dtype, device=device,
                                 verify=True if verify is None else verify)
    if _is_ssm(hf_model.config):  # Mamba, Mamba-2, Jamba, Bamba
        from . import hf_ssm
        return hf_ssm.from_hf(hf_model, spec=spec, overrides=overrides, dtype=dtype, device=device, verify=verify)
    if _is_linear(hf_model.config):  # Qwen3-Next, LFM2, RecurrentGemma
        from . import hf_linear
        return hf_linear.from_hf(hf_model, spec=spec, overrides=overrides, dtype=dtype, device=device, verify=verify)
    if _is_encoder(hf_model.config):  # BertModel, BertForMaskedLM, RobertaForCausalLM, ...: verified by default
        from . import hf_encoder
        return hf_encoder.from_hf(hf_model, spec=spec, overrides=overrides, dtype=dtype, device=device,
                                  verify_outputs=verify)
    if _is_lone_decoder(hf_model.config):  # BartForCausalLM, TrOCR, ...: verified by default
        from . import hf_decoder
        return hf_decoder.from_hf(hf_model, spec=spec, overrides=overrides, dtype=dtype, device=device, verify=verify)
    if hf_seq2seq.is_seq2seq(hf_model.config):  # T5, BART
        f2s = hf_seq2seq.seq2seq_features(hf_model.config)
        target = _target_spec(f2s, hf_model.config, spec, overrides)
        first = next(hf_model.parameters())
        state = hf_model.state_dict()
        model = _build(target, dtype or first.dtype, device or first.device)
        _assign(model, hf_seq2seq.map_seq2seq(f2s, {k: (lambda t=t: t) for k, t in state.items()}, model))
        model.eval()
        if verify if verify is not None else spec is not None:
            hf_seq2seq.verify_seq2seq(hf_model, model)
        return model
    f = features_from_config(hf_model.config)
    target = _target_spec(f, hf_model.config, spec, overrides)
    first = next(hf_model.parameters())
    state = hf_model.state_dict()
    src = _Source({k: (lambda t=t: t) for k, t in state.items()}, _conv1d_modules(hf_model))
    model = _build(target, dtype or first.dtype, device or first.device)
    _assign(model, _Mapper(f, src, model).run())
    model.eval()
    if verify if verify is not None else (spec is not None or not f.known_family):
        _verify(hf_model, model)
    return model


def _verify(hf_model: Any, model: Any, length: int = 8) -> None:
    import torch

    first = next(model.parameters())
    tokens = torch.randint(0, model.vocab, (1, length), generator=torch.Generator().manual_seed(0)).to(first.device)
    was_training = hf_model.training
    hf_model.eval()
    with torch.no_grad():
        ours = model(tokens).float()
        theirs = hf_model(tokens).logits.float()
    hf_model.train(was_training)
    diff = (ours - theirs).abs().max().item()
    tol = (1e-4 if first.dtype in (torch.float32, torch.float64) else 5e-2) * max(1.0, theirs.abs().max().item())
    if not diff <= tol:
        raise ValueError(f"the converted '{hf_model.config.model_type}' model differs from the original: logits "
                         f"differ by up to {diff:.3g} (tolerance {tol:.3g}); its modelling code does something "
                         "its config does not state")


def _shard_names(index: Path) -> list[str]:
    """The shard files named by a model.safetensors.index.json; a malformed index is an error naming it."""
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise ValueError(f"{index}: not valid JSON ({exc}); re-download the checkpoint or remove the index "
                         "of a single-file checkpoint") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{index}: a shard index needs a non-empty 'weight_map' mapping tensor names to "
                         "shard files")
    values = list(weight_map.values())
    bad = [repr(n)[:80] for n in values if not isinstance(n, str) or Path(n).name != n or not n.endswith(".safetensors")]
    if bad:
        raise ValueError(f"{index}: 'weight_map' names shards that are not .safetensors files in the same "
                         f"folder: {', '.join(sorted(set(bad))[:3])}")
    return sorted(set(values))


class Shards(dict):
    """Tensor name -> a function that reads it, over a checkpoint folder's *.safetensors files (each
    opened once, read with plain reads: archdsl.checkpoint.TensorFile). A context manager; close()
    closes the files.

    With ``dtype``, floating-point tensors are read converted to it (chunk by chunk, never a whole
    tensor in the stored dtype), for mappers that only rearrange values: rounding each element
    commutes with transposes, slices and concatenation, so the model is the same as converting last."""

    def __init__(self, files: list[Any], dtype: Any = None):
        super().__init__()
        self.files = files
        self.shapes: dict[str, tuple[int, ...]] = {}  # known without reading a tensor
        self.owner: dict[str, Any] = {}
        self.convert_to = dtype
        for file in files:
            for key in file.keys():
                self[key] = (lambda k=key, file=file: file.read(k, dtype=self.dtype(k)))
                self.shapes[key] = file.shape(key)
                self.owner[key] = file

    def read_into(self, key: str, out: Any) -> None:
        """Read tensor `key` straight into `out` (contiguous, CPU, of its shape; a floating-point
        tensor may be read into another floating-point dtype)."""
        self.owner[key].read(key, out=out)

    def dtype(self, key: str) -> Any:
        """The dtype tensor `key` is read as: its stored one, or ``convert_to`` for floating point."""
        stored = self.owner[key].dtype(key)
        if self.convert_to is not None and stored.is_floating_point and self.convert_to.is_floating_point:
            return self.convert_to
        return stored

    def close(self) -> None:
        for file in self.files:
            file.close()

    def __enter__(self) -> "Shards":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def load_safetensors(local_dir: str | Path, dtype: Any = None) -> Shards:
    """Lazy loaders for every tensor of a folder's *.safetensors files (following the shard index if
    any); floating-point tensors read as ``dtype`` if given (see Shards)."""
    from ..checkpoint import TensorFile

    root = Path(local_dir)
    index = root / "model.safetensors.index.json"
    if index.is_file():
        paths = sorted({root / name for name in _shard_names(index)})
    else:
        paths = sorted(root.glob("*.safetensors"))
    if not paths:
        raise FileNotFoundError(f"no *.safetensors files in {root}")
    files: list[Any] = []
    try:
        for path in paths:
            if not path.is_file():
                raise FileNotFoundError(f"{path} is named in the shard index but missing")
            files.append(TensorFile(path))
    except BaseException:
        for file in files:
            file.close()
        raise
    return Shards(files, dtype)


def from_pretrained(local_dir: str | Path, *, spec: Any = None, overrides: Mapping[str, Any] | None = None,
                    dtype: Any = None, device: Any = "cpu") -> Any:
    """An ArchModel from a local Hugging Face checkpoint folder: config.json and *.safetensors (one
    file, or shards listed in model.safetensors.index.json). Reads nothing from the network and
    never builds the transformers model.

    The model is built on `meta` and allocated without being touched; each checkpoint tensor is read
    (plain reads, no memory map) in the model's dtype (converted while it is read, a few MiB at a
    time) and becomes its parameter's storage before the next is read, so the peak memory is the
    model plus about one tensor of the model's dtype.

    ``spec``/``overrides`` as for from_hf. ``dtype``: a torch dtype, ``"auto"`` for the config's
    dtype, or None for float32.
    """
    import torch

    from . import hf_seq2seq

    cfg = load_config(Path(local_dir))
    if dtype == "auto":
        dtype = _get(cfg, "dtype", "torch_dtype") or torch.float32
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if _is_encoder(cfg):  # BERT and the encoders laid out like it (hf_encoder.py)
        from . import hf_encoder
        return hf_encoder.from_pretrained(local_dir, spec=spec, overrides=overrides, dtype=dtype, device=device)
    if _is_lone_decoder(cfg):  # BartForCausalLM, TrOCR, ... (hf_decoder.py)
        from . import hf_decoder
        return hf_decoder.from_pretrained(local_dir, spec=spec, overrides=overrides, dtype=dtype, device=device)
    if _is_ssm(cfg):  # Mamba, Mamba-2, Jamba, Bamba
        from . import hf_ssm
        return hf_ssm.from_pretrained(local_dir, spec=spec, overrides=overrides, dtype=dtype, device=device)
    if _is_linear(cfg):  # Qwen3-Next, LFM2, RecurrentGemma
        from . import hf_linear
        return hf_linear.from_pretrained(local_dir, spec=spec, overrides=overrides, dtype=dtype, device=device)
    seq2seq = hf_seq2seq.is_seq2seq(cfg)
    f: Any = hf_seq2seq.seq2seq_features(cfg) if seq2seq else features_from_config(cfg)
    target = _target_spec(f, cfg, spec, overrides)
    model = _build(target, dtype or torch.float32, device)
    with load_safetensors(local_dir, _read_dtype(model)) as shards:
        if seq2seq:
            _assign(model, hf_seq2seq.map_seq2seq(f, shards, model, owned=True))
        else:
            _assign(model, _Mapper(f, _Source(shards, None), model, owned=True).run())
    return model.eval()


# ---------------------------------------------------------------------------------------- CLI
def import_hf_main(config_json: str | Path, output_path: str | Path | None = None, *, verify: bool = True) -> int:
    """`archdsl import-hf CONFIG_JSON -o spec.yaml`: write the readable spec of a Hugging Face config.

    Without output_path (or with "-") the YAML goes to stdout. The spec is compared with the
    transformers model of the same config on the meta device (hf_verify.check) unless ``verify``
    is False: a difference raises SpecError and nothing is written. What was or was not verified
    is said on stderr (stdout stays the YAML alone). Returns 0.
    """
    import sys

    from .. import summary
    from ..atomic import write_text
    from ..loader import load_spec
    from .hf_verify import check

    cfg = load_config(config_json)
    text = _read_features(cfg, lambda: spec_yaml_from_config(cfg, verify=False))
    spec = load_spec(text)
    total = summary(spec).total_params
    if verify:
        verdict = check(cfg, spec)
        how = "role by role" if verdict.by_role else "in total (the importer maps each tensor when it loads weights)"
        note = (f"verified: the same parameters, {how}, as transformers' {verdict.model_class} of this config"
                if verdict.verified else f"warning: the spec is unverified: {verdict.reason}")
    else:
        note = "warning: not compared with the transformers model (--no-verify); the spec may describe a different model"
    if output_path in (None, "-"):
        sys.stdout.write(text)
        print(note, file=sys.stderr)
        return 0
    write_text(output_path, text)
    print(f"wrote {output_path}: {spec.name}, {total:,} parameters")
    print(note, file=sys.stdout if verify and verdict.verified else sys.stderr)
    return 0
