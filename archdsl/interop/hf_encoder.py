"""Hugging Face encoders laid out like BERT, read from the model itself: identify → describe → write → map.

BERT, RoBERTa, XLM-R, CamemBERT, ELECTRA, ERNIE, Data2Vec, RemBERT, I-BERT, Megatron-BERT, the
pre-norm RoBERTa and XLM-R XL, DistilBERT and ALBERT are one arrangement of the same blocks with
different names, and BertModel, BertForMaskedLM and BertLMHeadModel one encoder with different
heads. So nothing here is per family:

- **identify**: the layers are the longest ``nn.ModuleList`` whose modules' parameters are
  exactly one of :data:`LAYER_LAYOUTS` (role → module inside the layer, and whether each norm
  comes before or after its residual); every other parameter must have one of the roles of
  :data:`TOP_ROLES` (embeddings, positions, token types, their norm and projection, a final norm,
  the pooler, the masked-LM head's transform and decoder), else the refusal names it. What the
  tree does not show is found by running modules on probe inputs: the feed-forward and head
  activations (the layer, or the head, is compared with each candidate computed from its own
  weights — RoBERTa's head applies GELU whatever ``hidden_act`` says), whether the layer is
  softmax attention at all (MRA, YOSO and Nyströmformer share BERT's tensor names but not its
  attention: refused), and the row of the position table that position 0 reads (RoBERTa:
  padding_idx + 1). A config alone (``spec_from_config``) is probed on a small random model of
  the same class, its sizes taken from the config.
- **describe**: :class:`EncoderDescription`, the facts above with the config's sizes.
- **write**: the description becomes spec data (vars, one layer block, ``repeat`` — ALBERT's one
  shared layer as ``repeat: {shared: true}``) written as YAML by :func:`archdsl.dump.data_to_yaml`.
- **map**: every archdsl parameter is filled from its role's tensors (q, k, v into the fused
  ``qkv``), every transformers parameter must be used; ``from_hf`` then compares the outputs
  (hidden states, pooled output or logits) with the original on a right-padded batch.
"""
from __future__ import annotations

import copy
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

from ..errors import SpecError

# role -> the module inside an encoder layer; "pre"/"post": a norm before its sub-layer (inside the residual)
# or after the residual's sum (BERT's LayerNorm(x + sublayer(x)))
LAYER_LAYOUTS: dict[str, dict[str, str]] = {
    "bert": dict(arrangement="post", q="attention.self.query", k="attention.self.key", v="attention.self.value",
                 o="attention.output.dense", attn_norm="attention.output.LayerNorm", up="intermediate.dense",
                 down="output.dense", mlp_norm="output.LayerNorm"),
    "bert-prenorm": dict(arrangement="pre", q="attention.self.query", k="attention.self.key",
                         v="attention.self.value", o="attention.output.dense", attn_norm="attention.LayerNorm",
                         up="intermediate.dense", down="output.dense", mlp_norm="intermediate.LayerNorm"),
    "megatron-bert": dict(arrangement="pre", q="attention.self.query", k="attention.self.key",
                          v="attention.self.value", o="attention.output.dense", attn_norm="attention.ln",
                          up="intermediate.dense", down="output.dense", mlp_norm="ln"),
    "xlm-roberta-xl": dict(arrangement="pre", q="attention.self.query", k="attention.self.key",
                           v="attention.self.value", o="attention.output.dense",
                           attn_norm="attention.self_attn_layer_norm", up="intermediate.dense", down="output.dense",
                           mlp_norm="LayerNorm"),
    "distilbert": dict(arrangement="post", q="attention.q_lin", k="attention.k_lin", v="attention.v_lin",
                       o="attention.out_lin", attn_norm="sa_layer_norm", up="ffn.lin1", down="ffn.lin2",
                       mlp_norm="output_layer_norm"),
    "albert": dict(arrangement="post", q="attention.query", k="attention.key", v="attention.value",
                   o="attention.dense", attn_norm="attention.LayerNorm", up="ffn", down="ffn_output",
                   mlp_norm="full_layer_layer_norm"),
    # BERT's post-norm layers under Llama's names, rotating queries and keys (their model's rotary_emb): Nomic
    # BERT's with a gated feed-forward, Jina Embeddings v3's with fc1/fc2
    "rotary-gated": dict(arrangement="post", rotary="rotary_emb", q="self_attn.q_proj", k="self_attn.k_proj",
                         v="self_attn.v_proj", o="self_attn.o_proj", attn_norm="post_attention_layernorm",
                         gate="mlp.gate_proj", up="mlp.up_proj", down="mlp.down_proj", mlp_norm="post_mlp_layernorm"),
    # FNet's: BERT's post-norm layers with a Fourier transform in place of attention (no projections)
    "fnet": dict(arrangement="post", mixer="fourier", attn_norm="fourier.output.LayerNorm", up="intermediate.dense",
                 down="output.dense", mlp_norm="output.LayerNorm"),
    # MPNet's: BERT's post-norm layers, attention.attn.{q,k,v,o}, under one relative position bias of the stack
    "mpnet": dict(arrangement="post", q="attention.attn.q", k="attention.attn.k", v="attention.attn.v",
                  o="attention.attn.o", attn_norm="attention.LayerNorm", up="intermediate.dense", down="output.dense",
                  mlp_norm="output.LayerNorm"),
    "rotary": dict(arrangement="post", rotary="rotary_emb", q="self_attn.q_proj", k="self_attn.k_proj",
                   v="self_attn.v_proj", o="self_attn.o_proj", attn_norm="post_attention_layernorm", up="mlp.fc1",
                   down="mlp.fc2", mlp_norm="post_mlp_layernorm"),
}
_LINEAR_ROLES = ("q", "k", "v", "o", "up", "down")
_NORM_ROLES = ("attn_norm", "mlp_norm")


def _roles_of(layout: dict[str, str]) -> tuple[str, ...]:
    """The roles with parameters of a layout: the projections (a gate, where the feed-forward is gated) and norms."""
    return tuple(r for r in _LINEAR_ROLES if r in layout) + (("gate",) if "gate" in layout else ()) + _NORM_ROLES

# role -> a pattern of the module outside the layers (a full name within the transformers model), with the
# parameters each role's module holds; the first role whose pattern matches a module takes it
_P = r"(?:^|\.)"
TOP_ROLES: list[tuple[str, str]] = [
    ("embed", _P + r"embeddings\.word_embeddings$"),
    ("positions", _P + r"embeddings\.position_embeddings$"),
    ("token_types", _P + r"embeddings\.token_type_embeddings$"),
    ("embed_norm", _P + r"embeddings\.(?:LayerNorm|layer_norm)$"),
    ("embed_proj", _P + r"(?:embeddings_project|encoder\.embedding_hidden_mapping_in|embeddings\.projection)$"),
    ("pooler", _P + r"pooler(?:\.dense)?$"),
    ("head_dense", r"^(?:cls\.predictions\.transform\.dense|cls\.predictions\.dense|lm_head\.dense|"
                   r"generator_predictions\.dense|predictions\.dense|vocab_transform)$"),
    ("head_norm", r"^(?:cls\.predictions\.transform\.(?:LayerNorm|layer_norm)|cls\.predictions\.LayerNorm|lm_head\.layer_norm|"
                  r"generator_predictions\.LayerNorm|predictions\.LayerNorm|vocab_layer_norm)$"),
    ("head", r"^(?:cls\.predictions\.decoder|lm_head\.decoder|generator_lm_head|predictions\.decoder|"
             r"vocab_projector)$"),
    ("head_bias", r"^(?:cls\.predictions|lm_head|predictions)$"),  # the head's own bias parameter
    ("final_norm", r"^[a-z_0-9]+\.(?:LayerNorm|encoder\.ln|encoder\.LayerNorm)$"),
    ("rotary_table", _P + r"encoder\.embed_positions$"),  # RoFormer's fixed sinusoids, rotating queries and keys
    ("relative", _P + r"encoder\.relative_attention_bias$"),  # MPNet's T5-style bias, shared by the layers
]
_ACT_CANDIDATES = ("gelu", "gelu_tanh", "relu", "silu", "relu2")


def _unsupported(model_or_cfg: Any, key: str, what: str, hint: str | None = None) -> SpecError:
    from .hf import _unsupported as unsupported

    cfg = getattr(model_or_cfg, "config", model_or_cfg)
    return unsupported(cfg, key, what, hint)


# ---------------------------------------------------------------------------------------- identify
@dataclass
class EncoderDescription:
    """What an encoder is, as archdsl needs it: found in the module tree and by probes, sized by the config."""

    model_type: str
    model_class: str
    name: str
    layout: str
    arrangement: str  # pre | post
    layers: int
    shared: bool  # one set of layer weights for every layer (ALBERT)
    width: int
    heads: int
    head_dim: int
    ffn: int
    activation: str
    eps: float
    causal: bool
    bias: bool  # q/k/v and output projection, feed-forward
    vocab: int
    embed_dim: int | None  # width of the token table when it is projected to the model width
    max_len: int | None  # learned positions (rows after the offset)
    offset: int
    token_types: int | None
    padding_idx: int | None
    embed_norm_eps: float | None
    embed_proj: bool
    final_norm_eps: float | None
    pooler: bool
    mlp_bias: bool | None = None  # the feed-forward's projections, when they differ from the attention's
    down_bias: bool | None = None  # the feed-forward's down-projection, when it differs from its up (GTE)
    rotary: bool = False  # queries and keys rotated: by a fixed sinusoid table, adjacent pairs (RoFormer), or halves
    rotary_base: float = 10000.0
    rotary_interleaved: bool = False
    head: dict[str, Any] | None = None  # {"dense": out width, "activation", "norm_eps", "tied", "bias"}
    mixer: str = "attention"  # or "fourier" (FNet: Re(FFT) over positions and width in place of attention)
    relative_buckets: int | None = None  # a relative position bias over the stack (MPNet): its buckets
    relative_max_distance: int = 128
    roles: dict[str, str] = field(default_factory=dict)  # top role -> transformers module name
    layer_modules: list[str] = field(default_factory=list)  # transformers name of each layer (ALBERT: one)


def _layer_list(model: Any) -> tuple[str, str, list[Any]] | None:
    """(ModuleList name, layout name, layers) of the longest ModuleList whose layers match a layout."""
    from torch import nn

    best = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or not len(module):
            continue
        names = {n for n, _ in module[0].named_parameters()}
        for layout_name, layout in LAYER_LAYOUTS.items():
            wanted = {layout[r] + ".weight" for r in _roles_of(layout)}
            optional = {layout[r] + ".bias" for r in _roles_of(layout)}
            if wanted <= names and names <= wanted | optional and (best is None or len(module) > len(best[2])):
                best = (name, layout_name, list(module))
    return best


def _describe_layers_refusal(model: Any) -> str:
    """Why no layout matched: the parameters of the first layer-like ModuleList."""
    from torch import nn

    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) and any(True for _ in module[0].parameters()):
            names = sorted({re.sub(r"\.(weight|bias)$", "", n) for n, _ in module[0].named_parameters()})
            return (f"its layers ({name}.0: {', '.join(names[:12])}{' ...' if len(names) > 12 else ''}) are not laid "
                    "out as any encoder layer archdsl reads (separate query/key/value and output projections, a "
                    "two-layer feed-forward and a norm around each)")
    return "it has no list of layers"


def _top_roles(model: Any, layers_name: str) -> tuple[dict[str, str], list[str]]:
    """role -> module name for every module outside the layers that holds parameters; and the unknown ones."""
    roles: dict[str, str] = {}
    unknown = []
    for name, module in model.named_modules():
        if name == layers_name or name.startswith(layers_name + "."):
            continue
        if not any(True for _ in module.parameters(recurse=False)):
            continue
        role = next((r for r, pattern in TOP_ROLES if re.search(pattern, name)), None)
        if role is None or role in roles:
            unknown.append(name)
        else:
            roles[role] = name
    return roles, unknown


def _act(name: str) -> Any:
    from ..blocks.feedforward import ACTIVATIONS

    return ACTIVATIONS[name]


def _norm(x: Any, module: Any) -> Any:
    import torch.nn.functional as F

    return F.layer_norm(x, (x.shape[-1],), module.weight, module.bias, module.eps)


def _reference_layer(layer: Any, layout: dict[str, str], heads: int, activation: str, x: Any, causal: bool,
                     rotary: tuple[Any, Any] | None = None) -> Any:
    """The described layer computed from the transformers layer's own weights (softmax attention over every
    token, or every earlier one; queries and keys rotated by (cos, sin) as halves, where given)."""
    import torch
    import torch.nn.functional as F

    B, S, _ = x.shape

    def rotate(t: Any) -> Any:
        cos, sin = (r[:, None] for r in rotary)  # type: ignore[union-attr]
        a, b = t.chunk(2, dim=-1)
        return t * cos + torch.cat((-b, a), dim=-1) * sin

    def proj(role: str, h: Any) -> Any:  # the module's weights, not its forward (I-BERT's returns a scale too)
        module = layer.get_submodule(layout[role])
        return F.linear(h, module.weight, module.bias)

    def split(t: Any) -> Any:
        return t.view(B, S, heads, -1).transpose(1, 2)

    def attention(h: Any) -> Any:
        if layout.get("mixer") == "fourier":  # FNet: Re(FFT over positions and width)
            return torch.fft.fftn(h, dim=(1, 2)).real
        q, k, v = (split(proj(r, h)) for r in ("q", "k", "v"))
        if rotary is not None:
            q, k = rotate(q), rotate(k)
        return proj("o", F.scaled_dot_product_attention(q, k, v, is_causal=causal).transpose(1, 2).reshape(B, S, -1))

    def mlp(h: Any) -> Any:
        if "gate" in layout:
            return proj("down", _act(activation)(proj("gate", h)) * proj("up", h))
        return proj("down", _act(activation)(proj("up", h)))

    get = layer.get_submodule

    attn_norm, mlp_norm = get(layout["attn_norm"]), get(layout["mlp_norm"])
    if layout["arrangement"] == "post":
        h = _norm(x + attention(x), attn_norm)
        return _norm(h + mlp(h), mlp_norm)
    h = x + attention(_norm(x, attn_norm))
    return h + mlp(_norm(h, mlp_norm))


def _run_layer(layer: Any, x: Any, rotary: tuple[Any, Any] | None = None) -> Any:
    """The layer's output on hidden states x with no padding, however its forward takes the mask: none, an
    explicit None second argument (I-BERT's scaling factor), an additive (B, 1, 1, S) mask or a (B, S) one;
    given the rotary (cos, sin) where its model computes them."""
    import torch

    B, S, _ = x.shape
    attempts = [((x,), {}), ((x, None), {}), ((x,), {"attention_mask": torch.zeros(B, 1, 1, S)}),
                ((x,), {"attention_mask": torch.ones(B, S)})]
    if rotary is not None:
        attempts = [((x,), {"position_embeddings": rotary}), ((x, None), {"position_embeddings": rotary})]
    error: Exception | None = None
    for args, kwargs in attempts:
        try:
            out = layer(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the next way of calling it
            error = error or exc
            continue
        out = out[0] if isinstance(out, tuple) else out
        if isinstance(out, torch.Tensor) and out.shape == x.shape:
            return out
    raise error or TypeError("no tensor output")


def _rotary_tables(model: Any, layout: dict[str, str], x: Any) -> tuple[Any, Any] | None:
    """(cos, sin) of positions 0.. from the model's own rotary module, for a layout that rotates; else None."""
    import torch

    if "rotary" not in layout:
        return None
    module = next((m for n, m in model.named_modules() if n.rsplit(".", 1)[-1] == layout["rotary"]), None)
    if module is None:
        raise _unsupported(model, "layers", f"layers laid out to rotate queries and keys, but no {layout['rotary']} "
                           "module computing the rotation")
    return module(x, torch.arange(x.shape[1])[None])


def _probe_layer(model: Any, layer: Any, layout: dict[str, str], heads: int, causal: bool) -> str:
    """The feed-forward activation with which the described layer reproduces the transformers layer; a
    SpecError when none does (attention other than softmax over every token, or a different arrangement)."""
    import torch

    g = torch.Generator().manual_seed(0)
    width = layer.get_submodule(layout["q" if "q" in layout else "up"]).weight.shape[1]
    x = torch.randn(2, 7, width, generator=g) * 2 + 0.5
    with torch.no_grad():
        rotary = _rotary_tables(model, layout, x)
        try:
            theirs = _run_layer(layer, x, rotary)
        except Exception as exc:  # noqa: BLE001 - a layer that needs more than hidden states
            raise _unsupported(model, "layers", f"{type(layer).__name__} cannot be run on hidden states alone "
                               f"({type(exc).__name__}: {' '.join(str(exc).split())[:160]})") from None
        diffs = {}
        for act in _ACT_CANDIDATES:
            diffs[act] = (_reference_layer(layer, layout, heads, act, x, causal, rotary) - theirs).abs().max().item()
    best = min(diffs, key=diffs.get)  # type: ignore[arg-type]
    if diffs[best] <= 1e-4 * max(1.0, theirs.abs().max().item()):
        return best
    raise _unsupported(model, "layers", f"{type(layer).__name__} does not compute softmax attention over every "
                       f"{'earlier ' if causal else ''}token "
                       f"followed by a feed-forward, each {layout['arrangement']}-normed (its output differs from "
                       f"that by {diffs[best]:.3g} at best): its attention is something archdsl does not express")


def _probe_head_activation(model: Any, roles: dict[str, str]) -> str | None:
    """The head transform's activation, by running the smallest module that holds the transform's dense and
    norm (BERT's transform, RoBERTa's lm_head, ELECTRA's generator_predictions); None if no such module runs
    by itself (DistilBERT's head sits in the model)."""
    import torch

    dense, norm = model.get_submodule(roles["head_dense"]), model.get_submodule(roles["head_norm"])
    owner_name = _common_parent(roles["head_dense"], roles["head_norm"])
    if not owner_name:
        return None
    owner = model.get_submodule(owner_name)
    decoder = model.get_submodule(roles["head"]) if "head" in roles else None
    bias = model.get_submodule(roles["head_bias"]).bias if "head_bias" in roles else None
    x = torch.randn(2, 5, dense.weight.shape[1], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        try:
            theirs = _first(owner(x))
        except Exception:  # noqa: BLE001
            return None
        for act in _ACT_CANDIDATES:
            ours = _norm(_act(act)(dense(x)), norm)
            if theirs.shape[-1] != ours.shape[-1] and decoder is not None:  # the owner includes the decoder
                ours = torch.nn.functional.linear(ours, decoder.weight, bias if bias is not None else decoder.bias)
            if ours.shape == theirs.shape and torch.allclose(ours, theirs, atol=1e-5, rtol=1e-4):
                return act
    return None


def _first(out: Any) -> Any:
    """A module's output tensor (I-BERT's modules return it with a scaling factor)."""
    return out[0] if isinstance(out, tuple) else out


def _common_parent(a: str, b: str) -> str:
    pa, pb = a.split("."), b.split(".")
    common = []
    for x, y in zip(pa, pb):
        if x != y:
            break
        common.append(x)
    return ".".join(common)


def _position_offset(model: Any, roles: dict[str, str], padding_idx: int | None) -> int:
    """The row of the position table that the first token reads: 0, or padding_idx + 1 for models that count
    positions after the padding id (RoBERTa); found by running the embeddings with and without position ids."""
    import torch

    emb_name = roles["positions"].rsplit(".", 1)[0]
    emb = model.get_submodule(emb_name)
    vocab = model.get_submodule(roles["embed"]).weight.shape[0]
    low = 0 if padding_idx is None else padding_idx + 1
    ids = torch.arange(low, low + 4).clamp(max=vocab - 1).unsqueeze(0) % vocab
    if padding_idx is not None:
        ids = torch.where(ids == padding_idx, (padding_idx + 1) % vocab, ids)
    with torch.no_grad():
        try:
            default = _first(emb(input_ids=ids))
        except Exception:  # noqa: BLE001 - embeddings that take other arguments: positions from 0
            return 0
        for offset in sorted({0, low}):
            try:
                given = _first(emb(input_ids=ids, position_ids=torch.arange(4).unsqueeze(0) + offset))
            except TypeError:
                return 0
            if torch.equal(default, given):
                return offset
    raise _unsupported(model, "position_embedding_type", "positions that are neither counted from 0 nor from "
                       "padding_idx + 1")


# the config keys a probe model is shrunk by (those a config has)
_PROBE_SIZES = {"hidden_size": 32, "intermediate_size": 48, "num_attention_heads": 2, "num_hidden_layers": 2,
                "embedding_size": 16, "input_embedding_size": 16, "output_embedding_size": 16, "dim": 32,
                "hidden_dim": 48, "n_heads": 2, "n_layers": 2}


def _probe_model(cfg: Any, cls: Any) -> Any:
    """A small random model of the class, for the probes (the config's sizes made small, its structure kept)."""
    from .hf_probe import small_random_model

    sizes = {**_PROBE_SIZES, "vocab_size": min(getattr(cfg, "vocab_size", 64) or 64, 256)}
    for key in ("embedding_size", "input_embedding_size", "output_embedding_size"):  # as wide as the stream, or not
        if getattr(cfg, key, None) == getattr(cfg, "hidden_size", None):
            sizes[key] = sizes["hidden_size"]
    return small_random_model(cfg, sizes, cls._from_config)[1]


def model_class(cfg: Any) -> Any:
    """The transformers class a config describes: its `architectures`, else the masked-LM, causal-LM or bare
    model of its type (in that order)."""
    import transformers
    from transformers.models.auto import modeling_auto as auto

    for arch in getattr(cfg, "architectures", None) or []:
        if hasattr(transformers, arch):
            return getattr(transformers, arch)
    model_type = cfg.model_type
    for mapping in ("MODEL_FOR_MASKED_LM_MAPPING_NAMES", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "MODEL_MAPPING_NAMES"):
        name = getattr(auto, mapping).get(model_type)
        if name and hasattr(transformers, name):
            return getattr(transformers, name)
    raise _unsupported(cfg, "model_type", f"transformers has no model class for '{model_type}'")


def is_encoder(cfg: Any) -> bool:
    """A config this module reads: one whose transformers model (built on meta, once per config) holds its
    layers as one of LAYER_LAYOUTS. An encoder-only type of the masked-LM registry that does not is this
    module's too, so that its refusal names its layers (BertLMHeadModel is BERT's encoder with a head, run
    causally: the causal-LM registry's BERT-shaped types come here by their layers)."""
    cached = getattr(cfg, "_archdsl_is_encoder", None)
    if cached is not None:
        return cached
    try:
        import torch
        import transformers  # noqa: F401
        from transformers.models.auto.modeling_auto import (MODEL_FOR_MASKED_LM_MAPPING_NAMES,
                                                            MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES)
    except ImportError:
        return False
    if getattr(cfg, "is_encoder_decoder", False) or not hasattr(cfg, "to_dict"):
        return False
    model_type = str(getattr(cfg, "model_type", ""))  # BART's masked-LM class is its seq2seq model: not an encoder
    answer = model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and model_type not in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES
    if answer and _decoder_layout(cfg):  # a masked LM whose layers are a decoder's (EuroBERT): hf.py reads it
        answer = False
    elif not answer:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with torch.device("meta"):
                    meta = model_class(cfg)._from_config(copy.deepcopy(cfg))
            answer = _layer_list(meta) is not None
        except Exception:  # noqa: BLE001 - no class, or one that cannot be built: not an encoder this module reads
            answer = False
    try:
        cfg._archdsl_is_encoder = answer
    except AttributeError:
        pass
    return answer


def _decoder_layout(cfg: Any) -> bool:
    """Whether the masked-LM model of the config holds no BERT-layout layers but Llama-style ones (self_attn with
    separate q/k/v/o projections beside a norm before each sub-layer), which the decoder importer reads."""
    import torch

    from .hf_probe import _ATTN, _MLP, _O, _Q, _QKV, _child, _layers

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.device("meta"):
                meta = model_class(cfg)._from_config(copy.deepcopy(cfg))
    except Exception:  # noqa: BLE001 - no class, or one that cannot be built
        return False
    if _layer_list(meta) is not None:
        return False
    layers = _layers(meta)
    layer = layers[min(1, len(layers) - 1)] if layers else None  # ModernBERT's first lacks its attention norm
    attn = _child(layer, _ATTN) if layer is not None else None
    mlp = _child(layer, _MLP) if layer is not None else None
    norms = [n for n, c in layer.named_children() if "norm" in n and any(True for _ in c.parameters())] if layer else []
    return attn is not None and mlp is not None and len(norms) == 2 and \
        (_child(attn, _Q) is not None or _child(attn, _QKV) is not None) and _child(attn, _O) is not None


def identify(hf_model: Any, cfg: Any | None = None) -> EncoderDescription:
    """The description of a transformers encoder; a model on the meta device is probed through a small random
    model of its class. The model is probed in eval mode (no dropout) and left in the mode it was in."""
    cfg = cfg if cfg is not None else hf_model.config
    _refuse_config(cfg)
    first = next(hf_model.parameters(), None)
    probe = hf_model if first is not None and first.device.type != "meta" else _probe_model(cfg, type(hf_model))
    was_training = probe.training
    probe.eval()
    try:
        return _identify(hf_model, cfg, probe)
    finally:
        probe.train(was_training)


def _identify(hf_model: Any, cfg: Any, probe: Any) -> EncoderDescription:
    from .hf import _spec_name

    found = _layer_list(probe)
    if found is None:
        raise _unsupported(cfg, "model_type", f"'{cfg.model_type}' ({type(hf_model).__name__}): "
                           + _describe_layers_refusal(probe))
    layers_name, layout_name, layers = found
    layout = LAYER_LAYOUTS[layout_name]
    roles, unknown = _top_roles(probe, layers_name)
    if unknown:
        raise _unsupported(cfg, "model_type", f"'{cfg.model_type}' ({type(hf_model).__name__}) has modules archdsl's "
                           f"encoder has no role for: {', '.join(unknown[:6])}",
                           "an embedding, projection or head other than BERT's needs its own node kind")
    for needed in ("embed",):
        if needed not in roles:
            raise _unsupported(cfg, "model_type", f"'{cfg.model_type}' has no word embedding table")
    mixer = layout.get("mixer", "attention")  # FNet's: a Fourier transform, no heads
    probe_heads = _heads(probe.config) if mixer == "attention" else 1
    causal = bool(getattr(cfg, "is_decoder", False))
    activation = _probe_layer(probe, layers[0], layout, probe_heads, causal)
    if "gate" in layout:  # the activation of the gate: archdsl's gated form of it
        gated = {"silu": "swiglu", "gelu_tanh": "geglu", "gelu": "geglu_exact"}
        if activation not in gated:
            raise _unsupported(cfg, "hidden_act", f"a gated feed-forward with activation '{activation}'",
                               "archdsl's gated feed-forwards are swiglu (SiLU), geglu (tanh GELU) and geglu_exact")
        activation = gated[activation]

    # sizes from the real config, structure from the probe
    width = _int(cfg, "hidden_size", "dim")
    heads = _heads(cfg) if mixer == "attention" else 1
    ffn = _int(cfg, "intermediate_size", "hidden_dim")
    n_layers = _int(cfg, "num_hidden_layers", "n_layers")
    shared = len(layers) == 1 and _int(probe.config, "num_hidden_layers", "n_layers") > 1
    if getattr(cfg, "num_hidden_groups", 1) not in (1, None) or getattr(cfg, "inner_group_num", 1) not in (1, None):
        raise _unsupported(cfg, "num_hidden_groups", "ALBERT with several layer groups or inner layers "
                           f"(num_hidden_groups={cfg.num_hidden_groups}, inner_group_num={cfg.inner_group_num})",
                           "archdsl shares one layer across the stack (repeat: {shared: true})")
    layer0 = layers[0]
    mixing = ("q", "k", "v", "o") if "q" in layout else ()  # FNet's Fourier transform has no projections
    mlp_bias = layer0.get_submodule(layout["up"]).bias is not None
    bias = layer0.get_submodule(layout["q"]).bias is not None if mixing else mlp_bias
    down_bias = layer0.get_submodule(layout["down"]).bias is not None  # GTE: the down-projection's alone
    if any((layer0.get_submodule(layout[r]).bias is not None) != bias for r in mixing) or \
            ("gate" in layout and (layer0.get_submodule(layout["gate"]).bias is not None) != mlp_bias):
        raise _unsupported(cfg, "bias", "biases on some of the attention's projections only")
    eps = float(layer0.get_submodule(layout["attn_norm"]).eps)

    def eps_of(role: str) -> float | None:
        return float(probe.get_submodule(roles[role]).eps) if role in roles else None

    padding_idx = getattr(cfg, "pad_token_id", None)
    embed = probe.get_submodule(roles["embed"])
    embed_dim = embed.weight.shape[1] if embed.weight.shape[1] != _int(probe.config, "hidden_size", "dim") else None
    if embed_dim is not None:
        embed_dim = _int(cfg, "embedding_size", "input_embedding_size")
    offset = _position_offset(probe, roles, padding_idx) if "positions" in roles else 0
    max_len = None
    if "positions" in roles:
        max_len = _int(cfg, "max_position_embeddings") - offset
    rotary = "rotary_table" in roles or "rotary" in layout
    rotary_base = 10000.0
    if "rotary_table" in roles:
        _check_rotary_table(cfg, probe.get_submodule(roles["rotary_table"]), _int(probe.config, "hidden_size", "dim")
                            // probe_heads)
    elif rotary:  # the model's rotary module (its settings: the config's, checked against the layer just run)
        from .hf import _rope

        rope = _rope(cfg) or {}
        if float(rope.get("partial_rotary_factor", 1.0)) != 1.0 or rope.get("rope_type", "default") != "default":
            raise _unsupported(cfg, "rope_parameters", "rotary settings other than plain rotation of whole heads")
        rotary_base = float(rope.get("rope_theta", 10000.0))
    buckets = None
    if "relative" in roles:  # a table of (buckets, heads); T5's bucketing, from the config where it names it
        table = probe.get_submodule(roles["relative"]).weight
        if table.shape[1] != probe_heads:
            raise _unsupported(cfg, "relative_attention_num_buckets", "a relative position bias not of one value "
                               f"per head ({tuple(table.shape)} for {probe_heads} heads)")
        buckets = _int(cfg, "relative_attention_num_buckets")
    head = None
    if "head" in roles and "head_dense" not in roles and "head_norm" not in roles:  # a decoder alone
        decoder = probe.get_submodule(roles["head"])
        head = {"dense": None, "activation": None, "norm_eps": None, "tied": decoder.weight is embed.weight,
                "bias": "head_bias" in roles or decoder.bias is not None}
    elif "head_dense" in roles:
        act = _probe_head_activation(probe, roles)
        if act is None:
            act = _config_activation(cfg)
        dense = probe.get_submodule(roles["head_dense"])
        head_width = width if dense.weight.shape[0] == dense.weight.shape[1] else _int(
            cfg, "embedding_size", "output_embedding_size")
        decoder = probe.get_submodule(roles["head"]) if "head" in roles else None
        tied = decoder is None or decoder.weight is embed.weight
        has_bias = "head_bias" in roles or (decoder is not None and decoder.bias is not None)
        head = {"dense": head_width, "activation": act, "norm_eps": eps_of("head_norm"), "tied": tied,
                "bias": has_bias}
        if "head_norm" not in roles:
            raise _unsupported(cfg, "model_type", "a masked-LM head transform without a norm")
    elif "head" in roles or "head_norm" in roles:
        raise _unsupported(cfg, "model_type", "a head with a norm but no transform projection")
    return EncoderDescription(
        model_type=cfg.model_type, model_class=type(hf_model).__name__, name=_spec_name(cfg), layout=layout_name,
        arrangement=layout["arrangement"], layers=n_layers, shared=shared, width=width, heads=heads,
        head_dim=width // heads, ffn=ffn, activation=activation, eps=eps, causal=causal, bias=bias,
        vocab=_int(cfg, "vocab_size"), embed_dim=embed_dim, max_len=max_len, offset=offset,
        token_types=_int(cfg, "type_vocab_size") if "token_types" in roles else None,
        padding_idx=padding_idx if isinstance(padding_idx, int) and 0 <= padding_idx < _int(cfg, "vocab_size") else None,
        embed_norm_eps=eps_of("embed_norm"), embed_proj="embed_proj" in roles, final_norm_eps=eps_of("final_norm"),
        pooler="pooler" in roles, mlp_bias=mlp_bias if mlp_bias != bias else None,
        down_bias=down_bias if down_bias != mlp_bias else None, rotary=rotary,
        rotary_base=rotary_base, relative_buckets=buckets, mixer=mixer,
        rotary_interleaved="rotary_table" in roles, head=head, roles=roles, layer_modules=[f"{layers_name}.{i}" for i in range(len(layers))])


def _check_rotary_table(cfg: Any, module: Any, head_dim: int) -> None:
    """RoFormer's position table is a fixed [sin | cos] table over one head's dims, which its attention turns into a
    rotation of adjacent pairs of the queries and keys (archdsl's rotary, interleaved, base 10000); refused unless
    it is that table, and when the values rotate too (rotary_value)."""
    from .hf_seq2seq import sinusoid_spacing

    table = getattr(module, "weight", None)
    if table is None or table.dim() != 2 or table.shape[1] != head_dim or sinusoid_spacing(table) != "vaswani":
        raise _unsupported(cfg, "model_type", f"'{cfg.model_type}': a position table ({type(module).__name__}) that is "
                           "not the fixed [sin | cos] table of one head's dims")
    if getattr(cfg, "rotary_value", False):
        raise _unsupported(cfg, "rotary_value", "values rotated with the queries and keys (rotary_value=True)")


def _int(cfg: Any, *keys: str) -> int:
    for key in keys:
        value = getattr(cfg, key, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    raise _unsupported(cfg, keys[0], f"the config has no integer {' or '.join(keys)}")


def _heads(cfg: Any) -> int:
    return _int(cfg, "num_attention_heads", "n_heads")


def _config_activation(cfg: Any) -> str:
    from .hf import _ACTIVATIONS

    name = str(getattr(cfg, "hidden_act", None) or getattr(cfg, "activation", None) or "gelu")
    if name not in _ACTIVATIONS:
        raise _unsupported(cfg, "hidden_act", f"activation '{name}'")
    return _ACTIVATIONS[name]


def _refuse_config(cfg: Any) -> None:
    """Config settings that change what the (same) tensors compute, which the probes would not all see."""
    if getattr(cfg, "add_cross_attention", False):
        raise _unsupported(cfg, "add_cross_attention", "cross-attention in an encoder used as a decoder",
                           "an encoder-decoder graph spec expresses it; the importer reads the encoder alone")
    kind = getattr(cfg, "position_embedding_type", "absolute")
    if kind not in (None, "absolute", "rotary", "rope"):  # rotary: its layers say so (LAYER_LAYOUTS' rotary ones)
        raise _unsupported(cfg, "position_embedding_type", f"position_embedding_type '{kind}' (relative position "
                           "embeddings inside the attention scores)")
    attention = getattr(cfg, "attention_type", None)
    what = {"block_sparse": "BigBird's block-sparse attention over long sequences",
            "relative_shift": "Funnel's relative positional attention (relative_shift) over pooled sequences",
            "factorized": "Funnel's factorized relative positional attention"}
    if attention not in (None, "original_full"):
        raise _unsupported(cfg, "attention_type", f"attention_type '{attention}' ("
                           + what.get(str(attention), "attention other than softmax over every token") + ")",
                           "attention_type: original_full is BERT's attention" if attention == "block_sparse" else None)
    if getattr(cfg, "quant_mode", False):
        raise _unsupported(cfg, "quant_mode", "I-BERT's integer-only quantised arithmetic (quant_mode=True)")


# ---------------------------------------------------------------------------------------- write
def _describe(d: EncoderDescription) -> str:
    from .hf import _ACT_NAMES

    parts = [f"{d.layers} {'shared ' if d.shared else ''}{d.arrangement}-norm layers",
             "a Fourier transform over positions and width in place of attention (FNet)" if d.mixer == "fourier"
             else f"{'causal' if d.causal else 'bidirectional'} attention, {d.heads} heads",
             f"{_ACT_NAMES[d.activation]} feed-forward (hidden {d.ffn})"]
    if d.max_len:
        parts.append(f"learned positions ({d.max_len}" + (f", from row {d.offset})" if d.offset else ")"))
    if d.rotary:
        parts.append("rotary positions (" + ("adjacent pairs" if d.rotary_interleaved else "halves")
                     + f" of each head's queries and keys, theta {d.rotary_base:g})")
    if d.relative_buckets:
        parts.append(f"a relative position bias over the stack ({d.relative_buckets} buckets up to distance "
                     f"{d.relative_max_distance})")
    if d.token_types:
        parts.append(f"{d.token_types} token types")
    if d.embed_dim:
        parts.append(f"{d.embed_dim}-wide embeddings projected to {d.width}")
    if d.head:
        transform = f"{_ACT_NAMES[d.head['activation']]} transform, " if d.head["dense"] else ""
        parts.append(f"LM head ({transform}{'tied' if d.head['tied'] else 'untied'} decoder)")
    if d.pooler:
        parts.append("tanh pooler over the first token")
    return f"Imported from a Hugging Face '{d.model_type}' model ({d.model_class}): " + "; ".join(parts) + "."


def spec_data(d: EncoderDescription) -> dict[str, Any]:
    """The spec (as data, with vars) of a description: one layer block, repeated."""
    v: dict[str, Any] = {"vocab": d.vocab}
    if d.max_len:
        v["context"] = d.max_len
    v.update(d_model=d.width, heads=d.heads, layers=d.layers, ffn=d.ffn, eps=d.eps)
    if d.embed_dim:
        v["embed_dim"] = d.embed_dim
    attention: dict[str, Any] = {"heads": "$heads", "name": "attention"}
    if d.causal:
        attention["causal"] = True
    if not d.bias:
        attention["bias"] = False
    mlp: dict[str, Any] = {"hidden": "$ffn", "activation": d.activation, "name": "mlp"}
    if not (d.bias if d.mlp_bias is None else d.mlp_bias):
        mlp["bias"] = False
    if d.down_bias is not None:
        mlp["down_bias"] = d.down_bias

    def norm(name: str, eps: str | float = "$eps") -> dict:
        return {"layernorm": {"eps": "$eps" if eps == d.eps else eps, "name": name}}

    mixing: dict[str, Any] = {"attention": attention} if d.mixer == "attention" else {d.mixer: {"name": d.mixer}}
    if d.mixer != "attention":
        del v["heads"]
    if d.arrangement == "post":
        layer = [{"residual": [mixing]}, norm("attn_norm"),
                 {"residual": [{"mlp": mlp}]}, norm("mlp_norm")]
    else:
        layer = [{"residual": [norm("attn_norm"), mixing]},
                 {"residual": [norm("mlp_norm"), {"mlp": mlp}]}]
    embed: dict[str, Any] = {"name": "word_embeddings", "vocab": "$vocab"}
    if d.embed_dim:
        embed["dim"] = "$embed_dim"
    if d.padding_idx is not None:
        embed["padding_idx"] = d.padding_idx
    top: list[Any] = [{"embedding": embed}]
    if d.max_len:
        pos: dict[str, Any] = {"kind": "learned", "max_len": "$context"}
        if d.offset:
            pos["offset"] = d.offset
        top.append({"positional": {**pos, "name": "position_embeddings"}})
    if d.token_types:
        top.append({"embedding": {"name": "token_type_embeddings", "vocab": d.token_types, "input": "token_type_ids"}})
    if d.embed_norm_eps is not None:
        top.append(norm("embeddings_norm", d.embed_norm_eps))
    if d.embed_proj:
        top.append({"linear": {"out": "$d_model", "name": "embeddings_project"}})
    if d.rotary:
        rot: dict[str, Any] = {"kind": "rotary"}
        if d.rotary_base != 10000.0:
            rot["base"] = d.rotary_base
        if d.rotary_interleaved:
            rot["interleaved"] = True
        top.append({"positional": {**rot, "name": "embed_positions"}})
    if d.relative_buckets:
        top.append({"positional": {"kind": "relative", "heads": "$heads", "buckets": d.relative_buckets,
                                   "max_distance": d.relative_max_distance, "name": "relative_attention_bias"}})
    repeat: dict[str, Any] = {"repeat": "$layers", "name": "encoder", "body": "layer"}
    if d.shared:
        repeat = {"repeat": {"times": "$layers", "body": "layer", "shared": True, "name": "encoder"}}
    top.append(repeat)
    if d.final_norm_eps is not None:
        top.append(norm("final_norm", d.final_norm_eps))
    if d.pooler:  # of the final hidden states, before any head (FNet's masked LM keeps its pooler)
        top.append({"pooler": {"reduce": "first", "activation": "tanh"}})
    if d.head:
        h = d.head
        dense: dict[str, Any] = {"out": "$d_model" if h["dense"] == d.width else "$embed_dim"
                                 if d.embed_dim and h["dense"] == d.embed_dim else h["dense"],
                                 "name": "head_transform"}
        if h["dense"]:
            dense["activation"] = h["activation"]
            top += [{"linear": dense}, norm("head_norm", h["norm_eps"])]
        lm: dict[str, Any] = {"vocab": "$vocab"}
        if h["tied"]:
            lm["tie"] = "word_embeddings"
        if h["bias"]:
            lm["bias"] = True
        top.append({"lm_head": lm})
    return {"archdsl": 1, "name": d.name, "description": _describe(d), "vars": v, "blocks": {"layer": layer},
            "model": {"width": "$d_model", "layers": top}}


def spec_yaml(d: EncoderDescription) -> str:
    from ..dump import data_to_yaml

    return data_to_yaml(spec_data(d), header="Written by archdsl import-hf from a Hugging Face model; edit freely.")


def check_counts(cfg: Any, spec: Any) -> None:
    """The spec's parameter count equals the transformers model's of the same config (built on meta)."""
    import torch

    from ..compiler import compile_spec

    cls = model_class(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.device("meta"):
            theirs = cls._from_config(copy.deepcopy(cfg))
    n_theirs = sum(p.numel() for p in theirs.parameters() if p.requires_grad)  # RoFormer's fixed table: computed
    n_ours = compile_spec(spec, device="meta").num_parameters()
    if n_ours != n_theirs:
        raise _unsupported(cfg, "model_type", f"the spec has {n_ours:,} parameters, transformers' {cls.__name__} "
                           f"{n_theirs:,}", "a module the importer does not read")


# ---------------------------------------------------------------------------------------- map
def model_tensors(hf_model: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """A transformers model's parameters as map_weights reads them (name -> loader), and each tied name's
    canonical name (the first name of the same parameter)."""
    tensors, canonical, first_of = {}, {}, {}
    for name, p in hf_model.named_parameters(remove_duplicate=False):
        tensors[name] = lambda p=p: p.detach()
        canonical[name] = first_of.setdefault(id(p), name)
    return tensors, canonical


# buffers a checkpoint may hold that are no parameter (BERT's position_ids, token_type_ids)
_BUFFERS = re.compile(r"(?:^|\.)(?:position_ids|token_type_ids)$")


def map_weights(d: EncoderDescription, tensors: Any, model: Any, canonical: dict[str, str] | None = None,
                what: str = "transformers model") -> dict[str, Any]:
    """archdsl parameter name -> tensor for every parameter of `model`, from `tensors` (transformers name ->
    a loader: an in-memory model's parameters or a checkpoint's shards). Every archdsl parameter is filled
    and every tensor used (a tied name through its canonical one), else a ValueError names them."""
    import torch

    layout = LAYER_LAYOUTS[d.layout]
    canonical = canonical or {}
    used: set[str] = set()
    errors: list[str] = []

    def get(name: str) -> Any:
        if name not in tensors:
            errors.append(f"no tensor {name} in the {what}")
            return None
        used.add(canonical.get(name, name))
        return tensors[name]()

    out: dict[str, Any] = {}

    def linear(ours: str, modules: list[str]) -> None:
        weights = [get(m + ".weight") for m in modules]
        if all(w is not None for w in weights):
            out[ours + ".weight"] = torch.cat(weights) if len(weights) > 1 else weights[0]
        if ours + ".bias" in params:
            biases = [get(m + ".bias") for m in modules]
            if all(b is not None for b in biases):
                out[ours + ".bias"] = torch.cat(biases) if len(biases) > 1 else biases[0]

    def norm(ours: str, module: str) -> None:
        out[ours + ".weight"] = get(module + ".weight")
        if ours + ".bias" in params:
            out[ours + ".bias"] = get(module + ".bias")

    params = dict(model.named_parameters())
    layer_pattern = re.compile(r"^encoder\.(\d+)\.(?:.*\.)?(attention|mlp|attn_norm|mlp_norm)\.(qkv|out|up|down)?")
    done_layers: set[tuple[int, str]] = set()
    for name in params:
        m = layer_pattern.match(name)
        if m:
            i, block = int(m.group(1)), m.group(2)
            if (i, block) in done_layers:
                continue
            done_layers.add((i, block))
            theirs_layer = d.layer_modules[0 if d.shared else i]
            prefix = name[: name.index("." + block) + len(block) + 1]
            L = lambda role: f"{theirs_layer}.{layout[role]}"  # noqa: E731
            if block == "attention":
                linear(prefix + ".qkv", [L("q"), L("k"), L("v")])
                linear(prefix + ".out", [L("o")])
            elif block == "mlp":
                linear(prefix + ".up", [L("gate"), L("up")] if "gate" in layout else [L("up")])  # [gate; up]
                linear(prefix + ".down", [L("down")])
            else:
                norm(prefix, L(block))
    for ours, role in (("word_embeddings", "embed"), ("position_embeddings", "positions"),
                       ("token_type_embeddings", "token_types"), ("relative_attention_bias", "relative")):
        if ours + ".weight" in params:
            out[ours + ".weight"] = get(d.roles[role] + ".weight")
    for ours, role in (("embeddings_project", "embed_proj"), ("pooler.dense", "pooler"), ("head_transform", "head_dense")):
        if ours + ".weight" in params:
            linear(ours, [d.roles[role]])
    for ours, role in (("embeddings_norm", "embed_norm"), ("final_norm", "final_norm"), ("head_norm", "head_norm")):
        if ours + ".weight" in params:
            norm(ours, d.roles[role])
    if d.rotary and "rotary_table" in d.roles:  # computed by archdsl; the stored table must be the one it computes
        from .hf_seq2seq import sinusoid_spacing

        key = d.roles["rotary_table"] + ".weight"
        table = get(key)
        if table is not None and sinusoid_spacing(table) != "vaswani":
            errors.append(f"{key} is not the sinusoid table whose rotation the spec computes")
    if d.head:
        decoder = d.roles.get("head")
        if "lm_head.weight" in params:
            out["lm_head.weight"] = get(decoder + ".weight")
        elif decoder is not None and decoder + ".weight" in tensors:  # a stored copy of the tied table
            w = get(decoder + ".weight")
            if w is not None and not torch.equal(w, out["word_embeddings.weight"]):
                errors.append(f"the spec ties the head to the word embeddings, but {decoder}.weight differs")
        if "lm_head.bias" in params:
            owner = d.roles.get("head_bias")
            key = owner + ".bias" if owner and owner + ".bias" in tensors else decoder + ".bias"
            out["lm_head.bias"] = get(key)
            other = decoder + ".bias" if decoder else None
            if other and other != key and other in tensors:  # the decoder's bias, tied to the head's (or a copy)
                if not torch.equal(get(other), out["lm_head.bias"]):
                    errors.append(f"{other} differs from the head's bias {key}")
    missing = sorted(set(params) - set(out))
    if missing:
        errors.append(f"archdsl parameters with no transformers tensor: {', '.join(missing[:8])}")
    unused = sorted(n for n in tensors if canonical.get(n, n) not in used and not _BUFFERS.search(n))
    if unused:
        errors.append(f"tensors the spec does not use: {', '.join(unused[:8])}"
                      + (f" and {len(unused) - 8} more" if len(unused) > 8 else ""))
    if errors:
        raise ValueError(f"cannot map the {what} onto the archdsl spec:\n  " + "\n  ".join(errors))
    for name, tensor in out.items():
        if tuple(tensor.shape) != tuple(params[name].shape):
            raise ValueError(f"cannot map the transformers encoder: {name} is {tuple(params[name].shape)} in archdsl, "
                             f"{tuple(tensor.shape)} from transformers")
    return out


def _outputs(hf_model: Any, model: Any, tokens: Any, mask: Any, types: Any | None) -> list[tuple[str, Any, Any]]:
    """(what, archdsl, transformers) pairs to compare, on the real tokens."""
    import torch

    kwargs = {"token_type_ids": types} if types is not None else {}
    with torch.no_grad():
        ours = model(tokens, mask, **kwargs)
        theirs = hf_model(input_ids=tokens, attention_mask=mask, **kwargs)
    real = mask.bool()
    if getattr(theirs, "logits", None) is not None:  # a masked LM (FNet's keeps a pooler beside its head)
        logits = ours if isinstance(ours, torch.Tensor) else ours.last_hidden_state
        return [("logits", logits[real], theirs.logits[real])]
    pairs = [("hidden states", ours.last_hidden_state[real], theirs.last_hidden_state[real])]
    if getattr(ours, "pooler_output", None) is not None and getattr(theirs, "pooler_output", None) is not None:
        pairs.append(("pooled output", ours.pooler_output, theirs.pooler_output))
    return pairs


def probe_batch(d: EncoderDescription, vocab: int) -> tuple[Any, Any, Any]:
    """Tokens (3, 10) right-padded (left-padded for a causal model), their mask, and token types."""
    import torch

    g = torch.Generator().manual_seed(0)
    low = 3 if vocab > 6 else 0
    tokens = torch.randint(low, vocab, (3, 10), generator=g)
    if d.padding_idx is not None:
        tokens = torch.where(tokens == d.padding_idx, (d.padding_idx + 1) % vocab, tokens)
    mask = torch.ones(3, 10, dtype=torch.long)
    if d.causal:
        mask[1, :3] = 0
        mask[2, :6] = 0
    else:
        mask[1, 7:] = 0
        mask[2, 4:] = 0
    if d.padding_idx is not None:
        tokens = tokens.masked_fill(mask == 0, d.padding_idx)
    types = None
    if d.token_types and d.token_types > 1:
        types = torch.zeros_like(tokens)
        types[:, 5:] = 1
    return tokens, mask, types


def verify(d: EncoderDescription, hf_model: Any, model: Any) -> float:
    """The largest difference (relative to the largest value, when above 1) of the compared outputs; raises if
    above 1e-4 (float32) or 5e-2 (half precision)."""
    import torch

    tokens, mask, types = probe_batch(d, d.vocab)
    first = next(model.parameters())
    tokens, mask = tokens.to(first.device), mask.to(first.device)
    types = types.to(first.device) if types is not None else None
    was_training = hf_model.training
    hf_model.eval()
    if d.causal:  # positions counting the real tokens, as generation gives them
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        pairs = _causal_outputs(d, hf_model, model, tokens, mask, types, positions)
    else:
        pairs = _outputs(hf_model, model, tokens, mask, types)
    hf_model.train(was_training)
    tol = 1e-4 if first.dtype in (torch.float32, torch.float64) else 5e-2
    worst = 0.0
    for what, ours, theirs in pairs:
        diff = (ours.float() - theirs.float()).abs().max().item() / max(1.0, theirs.float().abs().max().item())
        worst = max(worst, diff)
        if not diff <= tol:
            raise ValueError(f"the converted '{d.model_type}' encoder differs from the original: its {what} differ by "
                             f"{diff:.3g} of the largest value (tolerance {tol:g})")
    return worst


def _causal_outputs(d: EncoderDescription, hf_model: Any, model: Any, tokens: Any, mask: Any, types: Any,
                    positions: Any) -> list:
    """A decoder's logits on a left-padded batch: archdsl given position ids counting the real tokens, and
    transformers too unless it numbers them itself from the padding id (RoBERTa: the probed offset)."""
    import inspect

    import torch

    kwargs = {"token_type_ids": types} if types is not None else {}
    theirs_kwargs = dict(kwargs)
    if "position_ids" in inspect.signature(type(hf_model).forward).parameters and not d.offset:
        theirs_kwargs["position_ids"] = positions
    with torch.no_grad():
        ours = model(tokens, mask, position_ids=positions, **kwargs)
        theirs = hf_model(input_ids=tokens, attention_mask=mask, **theirs_kwargs).logits
    real = mask.bool()
    return [("logits", ours[real], theirs[real])]


# ---------------------------------------------------------------------------------------- from_hf
def from_hf(hf_model: Any, *, spec: Any = None, overrides: Any = None, dtype: Any = None, device: Any = None,
            verify_outputs: bool | None = None) -> Any:
    """An archdsl model with the architecture and weights of an in-memory transformers encoder."""
    from ..loader import load_spec
    from .hf import _assign, _build

    d = identify(hf_model)
    target = load_spec(spec, overrides=overrides) if spec is not None else load_spec(
        spec_yaml(d), text_name=f"<{d.model_type} import>")
    first = next(hf_model.parameters())
    model = _build(target, dtype or first.dtype, device or first.device)
    tensors, canonical = model_tensors(hf_model)
    _assign(model, map_weights(d, tensors, model, canonical))
    model.eval()
    if verify_outputs is None or verify_outputs:
        verify(d, hf_model, model)
    return model


def from_pretrained(local_dir: Any, *, spec: Any = None, overrides: Any = None, dtype: Any = None,
                    device: Any = "cpu") -> Any:
    """An archdsl model from a local checkpoint folder of an encoder (config.json and safetensors), without
    building the transformers model: its class is identified on meta (probed small), the tensors read from
    the shards in the model's dtype."""
    import torch

    from ..loader import load_spec
    from .hf import _assign, _build, _read_dtype, load_config, load_safetensors

    cfg = load_config(local_dir)
    cls = model_class(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.device("meta"):
            meta = cls._from_config(copy.deepcopy(cfg))
    d = identify(meta, cfg)
    target = load_spec(spec, overrides=overrides) if spec is not None else load_spec(
        spec_yaml(d), text_name=f"<{d.model_type} import>")
    model = _build(target, dtype or torch.float32, device)
    with load_safetensors(local_dir, _read_dtype(model)) as shards:
        _assign(model, map_weights(d, shards, model, what=f"checkpoint {local_dir}"))
    return model.eval()


def spec_yaml_from_config(cfg: Any) -> str:
    """The spec of a config: its class (architectures, else the masked-LM model of its type) probed small."""
    import torch

    cls = model_class(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.device("meta"):
            meta = cls._from_config(copy.deepcopy(cfg))
    return spec_yaml(identify(meta, cfg))


__all__ = ["LAYER_LAYOUTS", "TOP_ROLES", "EncoderDescription", "identify", "is_encoder", "spec_data", "spec_yaml",
           "map_weights", "verify", "from_hf", "spec_yaml_from_config", "check_counts", "model_class"]
