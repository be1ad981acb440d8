"""The decoder of a Hugging Face encoder-decoder used alone, as a causal LM, read from the model itself.

BartForCausalLM, and the classes like it (mBART, Marian, Pegasus, PLBart, Blenderbot, BigBird-Pegasus,
TrOCR ...), are the decoder stack of an encoder-decoder with a head: self-attention, cross-attention
to an encoder and a feed-forward per layer. Their forward runs each cross-attention block, its norm
included, only ``if encoder_hidden_states is not None``; so the spec is one stack whose cross-attention
blocks sit in ``with_memory: {needs: encoder}`` and whose ``memories`` declare the encoder's width. The
model then gives the same logits with no encoder states (a causal LM) and with them
(``model(tokens, memory={"encoder": (states, mask)})``, as TrOCR's image encoder feeds its decoder).

- **identify**: the layout is the tree: ``*.decoder.layers.N`` holding ``self_attn``, ``encoder_attn``,
  ``fc1``/``fc2`` and their norms (:data:`LAYER`), a token table, a position table and optional
  embedding and final norms in the decoder, and one linear head outside it. Another module is refused
  by name. Sizes come from the tree too (the table, the layers, the projections' shapes).
- **probe**: what the tree does not show is read by running a small random model of the class: a layer
  run alone is pre- or post-norm (compared with both, computed from its weights), the table's rows of
  the first position (BART's offset of 2), a fixed table's sinusoids, the embeddings' scale; then the
  whole description, built small and loaded with that model's weights, must give its logits with and
  without encoder states, else the refusal says by how much.
- **write / map**: the spec names its modules like the checkpoint (``embed_tokens``, ``self_attn``,
  ``encoder_attn``, ``final_layer_norm`` ...), so that the weights map by a table of names: q, k, v
  into the fused ``qkv``, k, v of the cross-attention into its ``kv``. Every archdsl parameter must be
  filled and every checkpoint tensor used.
"""
from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

# role -> the module inside a decoder layer
LAYER = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.out_proj",
         "attn_norm": "self_attn_layer_norm", "cq": "encoder_attn.q_proj", "ck": "encoder_attn.k_proj",
         "cv": "encoder_attn.v_proj", "co": "encoder_attn.out_proj", "cross_norm": "encoder_attn_layer_norm",
         "up": "fc1", "down": "fc2", "mlp_norm": "final_layer_norm"}
_DECODER_PARTS = {"embed_tokens", "embed_positions", "layers", "layernorm_embedding", "layer_norm"}


@dataclass
class DecoderDescription:
    """A lone decoder as archdsl needs it: found in the tree and by probes."""

    model_type: str
    model_class: str
    name: str
    prefix: str  # the decoder's module path: model.decoder
    head: str  # the head's module path: lm_head, output_projection, proj_out
    layers: int
    width: int
    memory_width: int | None  # None: no cross-attention (XGLM)
    heads: int
    ffn: int
    vocab: int
    activation: str
    eps: float
    arrangement: str  # pre | post
    positional: str  # learned | sinusoidal
    max_len: int
    offset: int
    spacing: str  # sinusoidal: "vaswani" (Marian's, Pegasus's frequencies) or "tensor2tensor" (fairseq's: XGLM)
    embed_scale: float
    embed_norm: bool
    final_norm: bool
    # where layernorm_embedding runs: "embeddings" (after the positions are added), "tokens" (before:
    # Blenderbot-small) or "last" (after the last layer: BigBird-Pegasus, whose name says otherwise); found by
    # running the small model
    embed_norm_at: str
    tied: bool
    padding_idx: int | None
    bias: bool = True  # on q, k, v (self- and cross-attention)
    out_bias: bool = True  # on the attention outputs
    key_bias: bool = True  # with bias: the keys' too (Whisper's have none)
    mlp_bias: bool = True
    dropout: float = 0.0
    attn_dropout: float = 0.0
    notes: list[str] = field(default_factory=list)


def _unsupported(cfg: Any, key: str, what: str, hint: str | None = None) -> Any:
    from .hf import _unsupported as unsupported

    return unsupported(cfg, key, what, hint)


def _causal_class(cfg: Any) -> Any:
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    name = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(str(getattr(cfg, "model_type", "")))
    return getattr(transformers, name, None) if name else None


def _meta(cfg: Any) -> Any:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.device("meta"):
            return _causal_class(cfg)._from_config(copy.deepcopy(cfg))


def _decoder_path(model: Any, cross: bool = True) -> str | None:
    """The module path of the decoder whose layers hold self-attention (and cross-attention, unless ``cross`` is
    False) and fc1/fc2 as BART's do, or None."""
    names = {n for n, _ in model.named_parameters()}
    own = getattr(model, "base_model_prefix", None) or "model"  # BioGPT's biogpt.layers
    for prefix in dict.fromkeys(("model.decoder", "decoder", "model", f"{own}.decoder", own)):
        marks = [f"{prefix}.layers.0.{LAYER[r]}.weight" for r in (("q", "cq", "up", "down") if cross else
                                                                   ("q", "attn_norm", "up", "down", "mlp_norm"))]
        if all(m in names for m in marks):
            return prefix
    return None


def _has_cross(model: Any, prefix: str) -> bool:
    return any(n.startswith(f"{prefix}.layers.0.encoder_attn.") for n, _ in model.named_parameters())


def is_lone_decoder(cfg: Any) -> bool:
    """A config whose causal-LM class is the decoder of an encoder-decoder laid out like BART's, or a decoder of
    the same layers without cross-attention (XGLM) of a family without a table entry (its model built on meta,
    once per config)."""
    cached = getattr(cfg, "_archdsl_lone_decoder", None)
    if cached is not None:
        return cached
    from .hf import FAMILY_TRAITS

    answer = False
    if not getattr(cfg, "is_encoder_decoder", False) and hasattr(cfg, "to_dict"):
        try:  # BART's decoder layers, with cross-attention or (XGLM) without; OPT's keep their own importer
            answer = _causal_class(cfg) is not None and _decoder_path(
                _meta(cfg), cross=getattr(cfg, "model_type", None) in FAMILY_TRAITS) is not None
        except Exception:  # noqa: BLE001 - transformers missing, or a class that cannot be built: not this module's
            answer = False
    try:
        cfg._archdsl_lone_decoder = answer
    except AttributeError:
        pass
    return answer


# ---------------------------------------------------------------------------------------- identify
def _tree(cfg: Any, model: Any) -> dict[str, Any]:
    """What the module tree says: the decoder's and the head's paths, sizes, norms, the tie; refuses modules
    with no role by name."""
    from torch import nn

    prefix = _decoder_path(model, cross=False)
    decoder = model.get_submodule(prefix)
    cross = _has_cross(model, prefix)
    extra = [n for n, m in decoder.named_children() if n not in _DECODER_PARTS and any(True for _ in m.parameters())]
    layer = decoder.layers[0]
    known = set(LAYER.values()) if cross else {m for r, m in LAYER.items() if not r.startswith("c")}
    extra += sorted({f"layers.0.{n.rsplit('.', 1)[0]}" for n, _ in layer.named_parameters()
                     if n.rsplit(".", 1)[0] not in known})
    heads = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and not n.startswith(prefix + ".")
             and n != prefix]
    outside = [n for n, m in model.named_modules() if not n.startswith(prefix) and n not in {h for h, _ in heads}
               and any(True for _ in m.parameters(recurse=False))]
    if extra or outside or len(heads) != 1:
        what = extra + outside + ([f"{len(heads)} linear modules outside the decoder"] if len(heads) != 1 else [])
        raise _unsupported(cfg, "model_type", f"'{cfg.model_type}' ({type(model).__name__}) has modules a decoder "
                           f"with a head has no role for: {', '.join(what[:6])}")
    head_name, head = heads[0]
    if head.bias is not None:
        raise _unsupported(cfg, "model_type", f"a head with a bias ({head_name}.bias)")
    attn = layer.get_submodule("self_attn")
    roles = [r for r in LAYER if "norm" not in r and (cross or not r.startswith("c"))]
    biased = {role: layer.get_submodule(LAYER[role]).bias is not None for role in roles}
    # the keys apart: Whisper's have no bias where its queries and values have one (key_bias: false)
    for group in (("q", "v", "cq", "cv"), ("k", "ck"), ("o", "co"), ("up", "down")):
        group = tuple(r for r in group if r in biased)
        if len({biased[r] for r in group}) > 1:
            missing = next(r for r in group if not biased[r])
            raise _unsupported(cfg, "model_type", f"a decoder layer whose {LAYER[missing]} has no bias while "
                               f"{', '.join(LAYER[r] for r in group if biased[r])} have one",
                               "archdsl's attention has one bias setting for its q and v projections, and key_bias")
    if biased["k"] and not biased["q"]:
        raise _unsupported(cfg, "model_type", "a decoder layer whose keys have a bias and queries and values none")
    table = decoder.embed_tokens
    return {"prefix": prefix, "head": head_name, "layers": len(decoder.layers), "width": int(table.embedding_dim),
            "vocab": int(table.num_embeddings), "heads": int(getattr(attn, "num_heads", 0) or cfg.decoder_attention_heads),
            "ffn": int(layer.fc1.out_features),
            "memory_width": int(layer.encoder_attn.k_proj.in_features) if cross else None,
            "tied": head.weight is table.weight, "embed_norm": getattr(decoder, "layernorm_embedding", None) is not None,
            "final_norm": getattr(decoder, "layer_norm", None) is not None, "eps": float(layer.self_attn_layer_norm.eps),
            "padding_idx": table.padding_idx, "bias": biased["q"], "out_bias": biased["o"], "mlp_bias": biased["up"],
            "key_bias": biased["k"]}


def _probe_facts(cfg: Any, small: Any, model: Any) -> dict[str, Any]:
    """What running a small random model of the class shows: pre- or post-norm, the activation, the positions'
    kind and offset, the embeddings' scale."""
    import torch
    import torch.nn.functional as F

    from .hf import _ACTIVATIONS
    from .hf_encoder import _ACT_CANDIDATES, _reference_layer
    from .hf_seq2seq import fixed_positions, run_on_hidden

    prefix = _decoder_path(model, cross=False)
    decoder = model.get_submodule(prefix)
    layer = decoder.layers[0]
    heads = int(getattr(layer.self_attn, "num_heads", 0) or small.decoder_attention_heads)
    width = decoder.embed_tokens.embedding_dim
    x = torch.randn(2, 5, width, generator=torch.Generator().manual_seed(0)) * 2 + 0.5
    configured = _ACTIVATIONS.get(str(getattr(small, "activation_function", "")), None)
    with torch.no_grad():
        try:
            theirs = run_on_hidden(layer, x)
        except Exception as exc:  # noqa: BLE001 - a layer that needs more than hidden states
            raise _unsupported(cfg, "model_type", f"{type(layer).__name__} cannot be run on hidden states alone "
                               f"({type(exc).__name__}: {' '.join(str(exc).split())[:140]})") from None
        diffs = {}
        for act in ([configured] if configured else []) + [a for a in _ACT_CANDIDATES if a != configured]:
            for arrangement in ("post", "pre"):
                # causal, or over every position where the decoder's mask makes it causal (TrOCR's layer alone)
                for causal in (True, False):
                    ours = _reference_layer(layer, {**LAYER, "arrangement": arrangement}, heads, act, x, causal=causal)
                    diffs[(act, arrangement, causal)] = (ours - theirs).abs().max().item()
    (activation, arrangement, _), best = min(diffs.items(), key=lambda item: item[1])
    if best > 1e-4 * max(1.0, theirs.abs().max().item()):
        raise _unsupported(cfg, "model_type", f"{type(layer).__name__} without encoder states is neither a pre- nor a "
                           f"post-norm layer of causal softmax attention and a feed-forward (differs by {best:.3g} at "
                           "best)")
    positions = decoder.embed_positions
    table = getattr(positions, "weight", None)
    spacing = "vaswani"
    if table is not None and table.requires_grad:
        kind, offset = "learned", _position_offset(cfg, decoder)
        offsets = [offset]
    else:  # a fixed table: archdsl computes it, if it is one it knows
        fixed = fixed_positions(positions, decoder.embed_tokens.padding_idx)
        if fixed is None:
            raise _unsupported(cfg, "embed_positions", f"fixed positions that are not a [sin | cos] table of "
                               f"Marian's, Pegasus's or fairseq's ({type(positions).__name__})")
        kind, spacing, offsets = "sinusoidal", fixed["spacing"], fixed["offsets"]
    ids = torch.arange(3, 9).unsqueeze(0) % decoder.embed_tokens.num_embeddings
    with torch.no_grad():
        scaled = decoder.embed_tokens(ids)
        plain = F.embedding(ids, decoder.embed_tokens.weight)
    ratio = (scaled / plain).median().item()
    own = getattr(decoder, "embed_scale", None)
    if isinstance(own, (int, float)):  # a decoder that scales its embeddings in its forward
        ratio *= float(own)
    if abs(ratio - math.sqrt(width)) < 1e-3 * ratio:
        scale = "sqrt"
    elif abs(ratio - 1.0) < 1e-6:
        scale = 1.0
    else:
        raise _unsupported(cfg, "scale_embedding", f"embeddings scaled by {ratio:.4g}")
    return {"activation": activation, "arrangement": arrangement, "positional": kind, "offsets": offsets,
            "spacing": spacing, "embed_scale": scale}


def _position_offset(cfg: Any, decoder: Any) -> int:
    """The row of the learned table that position 0 reads: the table's rows beyond the positions the config
    allows (BART's 2), checked by running the table with position ids."""
    rows = decoder.embed_positions.weight.shape[0]
    limit = next((getattr(cfg, k) for k in ("max_position_embeddings", "max_target_positions")
                  if isinstance(getattr(cfg, k, None), int)), rows)
    offset = rows - limit
    if offset < 0:
        raise _unsupported(cfg, "max_position_embeddings", f"a position table of {rows} rows for {limit} positions")
    return offset


def describe(hf_model: Any, cfg: Any | None = None) -> DecoderDescription:
    """The description of a lone decoder (an in-memory model or one on meta); probed on a small random model of
    its class, which must then match its own description."""
    from .hf import _spec_name
    from .hf_probe import small_random_model

    cfg = cfg if cfg is not None else hf_model.config
    tree = _tree(cfg, hf_model)
    sizes = {"d_model": 32, "hidden_size": 32, "decoder_ffn_dim": 48, "decoder_layers": 2,
             "decoder_attention_heads": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 48,
             "cross_attention_hidden_size": 24, "vocab_size": 61}
    small_cfg, small = small_random_model(cfg, sizes, _causal_class(cfg)._from_config)
    small.eval()
    facts = _probe_facts(cfg, small_cfg, small)
    small_tree = _tree(small_cfg, small)
    placements = ["embeddings", "tokens"] + (["last"] if not small_tree["final_norm"] else [])
    diffs = {}
    for offset in facts["offsets"]:  # the first description that gives the small model's logits
        for at in placements if small_tree["embed_norm"] else ["embeddings"]:
            facts["embed_norm_at"], facts["offset"] = at, offset
            d = _description(small_cfg, small, small_tree, facts, _spec_name(small_cfg))
            diffs[(offset, at)] = _check_small(cfg, d, small)
            if diffs[(offset, at)] <= 1e-4:
                return _description(cfg, hf_model, tree, facts, _spec_name(cfg))
    raise _unsupported(cfg, "model_type", f"a small random '{cfg.model_type}' decoder differs from its description by "
                       f"{min(diffs.values()):.3g} of the largest logit: its code does something its tree and the "
                       "probes do not show")


def _description(cfg: Any, model: Any, tree: dict, facts: dict, name: str) -> DecoderDescription:
    scale = math.sqrt(tree["width"]) if facts["embed_scale"] == "sqrt" else 1.0
    positions = model.get_submodule(tree["prefix"]).embed_positions
    if facts["positional"] == "learned":
        max_len = positions.weight.shape[0] - facts["offset"]
    else:  # a fixed table's positions: the config's (fairseq's table grows with the sequence)
        max_len = next((getattr(cfg, k) for k in ("max_position_embeddings", "max_target_positions")
                        if isinstance(getattr(cfg, k, None), int)), 2048)
    return DecoderDescription(
        model_type=str(cfg.model_type), model_class=type(model).__name__, name=name, prefix=tree["prefix"],
        head=tree["head"], layers=tree["layers"], width=tree["width"], memory_width=tree["memory_width"],
        heads=tree["heads"], ffn=tree["ffn"], vocab=tree["vocab"], activation=facts["activation"], eps=tree["eps"],
        arrangement=facts["arrangement"], positional=facts["positional"], max_len=int(max_len), offset=facts["offset"],
        spacing=facts["spacing"],
        embed_scale=scale, embed_norm=tree["embed_norm"], final_norm=tree["final_norm"],
        embed_norm_at=facts["embed_norm_at"], tied=tree["tied"],
        padding_idx=tree["padding_idx"], bias=tree["bias"], out_bias=tree["out_bias"], mlp_bias=tree["mlp_bias"],
        key_bias=tree["key_bias"],
        dropout=float(getattr(cfg, "dropout", 0.0) or 0.0),
        attn_dropout=float(getattr(cfg, "attention_dropout", 0.0) or 0.0))


def _check_small(cfg: Any, d: DecoderDescription, small: Any) -> float:
    """How far the small model's description, built and loaded with its weights, is from its logits with and
    without encoder states (relative to the largest); a refusal when its weights do not map."""
    import torch

    from ..loader import load_spec
    from .hf import _assign, _build

    ours = _build(load_spec(spec_yaml(d), text_name=f"<{cfg.model_type} probe>"), torch.float32, "cpu")
    try:
        _assign(ours, map_weights(d, _tensors(small), ours))
    except ValueError as exc:
        raise _unsupported(cfg, "model_type", f"'{cfg.model_type}': {' '.join(str(exc).split())[:300]}") from None
    return _largest_difference(small, ours.eval(), d)


def _batch(d: DecoderDescription, vocab: int) -> tuple[Any, Any, Any, Any]:
    """Tokens (2, 6), encoder states (2, 5, memory width) and their mask (row 1: 3 real positions)."""
    import torch

    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(3, vocab, (2, 6), generator=g)
    if d.padding_idx is not None:
        tokens = torch.where(tokens == d.padding_idx, (d.padding_idx + 1) % vocab, tokens)
    states = torch.randn(2, 5, d.memory_width or 1, generator=g)
    mask = torch.ones(2, 5, dtype=torch.long)
    mask[1, 3:] = 0
    return tokens, None, states, mask


def _largest_difference(hf_model: Any, model: Any, d: DecoderDescription) -> float:
    """Max |archdsl - transformers| relative to the largest logit (when above 1), without and with encoder states."""
    import inspect

    import torch

    first = next(model.parameters())
    tokens, _, states, mask = (t.to(first.device) if t is not None else None for t in _batch(d, model.vocab))
    states = states.to(first.dtype)
    was_training = hf_model.training
    hf_model.eval()
    worst = 0.0
    # the encoder's states as the class takes them: with a padding mask, or (Whisper's) as encoder_outputs alone
    takes_states = "encoder_hidden_states" in inspect.signature(type(hf_model).forward).parameters
    if not takes_states:
        mask = torch.ones_like(mask)
    with torch.no_grad():
        for memory in (None, (states, mask)) if d.memory_width else (None,):
            given = {} if memory is None else {"encoder_hidden_states": states, "encoder_attention_mask": mask} \
                if takes_states else {"encoder_outputs": (states,)}
            theirs = hf_model(input_ids=tokens, use_cache=False, **given).logits.float()
            ours = model(tokens, memory=None if memory is None else {"encoder": memory}).float()
            worst = max(worst, (ours - theirs).abs().max().item() / max(1.0, theirs.abs().max().item()))
    hf_model.train(was_training)
    return worst


# ---------------------------------------------------------------------------------------- write
def _describe(d: DecoderDescription) -> str:
    from .hf import _ACT_NAMES

    cross = (f"cross-attention to an encoder of width {d.memory_width} (run only when its states are given) and "
             if d.memory_width else "")
    what = "the decoder of an encoder-decoder, used alone" if d.memory_width else "a decoder laid out as BART's"
    sinusoids = ("fixed sinusoidal positions (sines, then cosines" + (", fairseq's frequencies" if
                 d.spacing == "tensor2tensor" else "") + (f", from row {d.offset})" if d.offset else ")"))
    parts = [f"{what}: {d.layers} {d.arrangement}-norm layers of causal self-attention, {cross}"
             f"a {_ACT_NAMES[d.activation]} feed-forward (hidden {d.ffn}), {d.heads} heads",
             sinusoids if d.positional == "sinusoidal" else
             f"learned positions ({d.max_len}" + (f", from row {d.offset})" if d.offset else ")")]
    if d.embed_scale != 1.0:
        parts.append("embeddings scaled by sqrt(d_model)" if d.embed_scale == math.sqrt(d.width)
                     else f"embeddings scaled by {d.embed_scale:g}")
    if d.embed_norm:
        parts.append({"last": "LayerNorm (layernorm_embedding) after the last layer",
                      "tokens": "LayerNorm on the token embeddings, before the positions are added"}.get(
                          d.embed_norm_at, "LayerNorm on the embeddings"))
    parts.append("tied head" if d.tied else "untied head")
    return f"Imported from a Hugging Face '{d.model_type}' model ({d.model_class}): " + "; ".join(parts) + "."


def spec_data(d: DecoderDescription) -> dict[str, Any]:
    """The spec (as data, with vars): one stack whose cross-attention blocks need the memory 'encoder'."""
    v: dict[str, Any] = {"vocab": d.vocab, "context": d.max_len, "d_model": d.width, "heads": d.heads,
                         "layers": d.layers, "ffn": d.ffn, "eps": d.eps}
    if d.memory_width and d.memory_width != d.width:
        v["encoder_width"] = d.memory_width
    if d.dropout:
        v["dropout"] = d.dropout
    if d.attn_dropout:
        v["attn_dropout"] = d.attn_dropout
    drop = [{"dropout": "$dropout"}] if d.dropout else []

    def attention(name: str, **extra: Any) -> dict:
        args: dict[str, Any] = {"heads": "$heads", **extra, "name": name}
        if not d.bias:
            args["bias"] = False
        if d.out_bias != d.bias:
            args["out_bias"] = d.out_bias
        if d.bias and not d.key_bias:
            args["key_bias"] = False
        if d.attn_dropout:
            args["dropout"] = "$attn_dropout"
        return {"attention": args}

    def norm(name: str) -> dict:
        return {"layernorm": {"eps": "$eps", "name": name}}

    def sublayer(node: dict, norm_name: str) -> list:
        if d.arrangement == "pre":
            return [{"residual": [norm(norm_name), node] + drop}]
        return [{"residual": [node] + drop}, norm(norm_name)]

    mlp = {"mlp": {"hidden": "$ffn", "activation": d.activation, **({} if d.mlp_bias else {"bias": False}),
                   "name": "mlp"}}
    cross = [{"with_memory": {"needs": "encoder", "body": sublayer(attention("encoder_attn", cross="encoder"),
                                                                  "encoder_attn_layer_norm")}}] if d.memory_width else []
    layer = (sublayer(attention("self_attn", causal=True), "self_attn_layer_norm") + cross
             + sublayer(mlp, "final_layer_norm"))
    embed: dict[str, Any] = {"name": "embed_tokens", "vocab": "$vocab"}
    if d.padding_idx is not None:
        embed["padding_idx"] = d.padding_idx
    if d.embed_scale != 1.0:
        embed["scale"] = "${d_model ** 0.5}" if d.embed_scale == math.sqrt(d.width) else d.embed_scale
    top: list[Any] = [{"embedding": embed}]
    if d.embed_norm and d.embed_norm_at == "tokens":
        top.append(norm("layernorm_embedding"))
    pos: dict[str, Any] = {"kind": d.positional, "max_len": "$context"}
    if d.positional == "sinusoidal":
        pos["halves"] = True
        if d.spacing != "vaswani":
            pos["spacing"] = d.spacing
    if d.offset:
        pos["offset"] = d.offset
    top.append({"positional": {**pos, "name": "embed_positions"}})
    if d.embed_norm and d.embed_norm_at == "embeddings":
        top.append(norm("layernorm_embedding"))
    top += drop
    top.append({"repeat": "$layers", "name": "layers", "body": "layer"})
    if d.embed_norm and d.embed_norm_at == "last":
        top.append(norm("layernorm_embedding"))
    if d.final_norm:
        top.append(norm("layer_norm"))
    head: dict[str, Any] = {"vocab": "$vocab", "name": "lm_head"}
    if d.tied:
        head["tie"] = "embed_tokens"
    top.append({"lm_head": head})
    memory = "$encoder_width" if "encoder_width" in v else "$d_model"
    model: dict[str, Any] = {"width": "$d_model"}
    if d.memory_width:
        model["memories"] = {"encoder": memory}
    return {"archdsl": 1, "name": d.name, "description": _describe(d), "vars": v, "blocks": {"layer": layer},
            "model": {**model, "layers": top}}


def spec_yaml(d: DecoderDescription) -> str:
    from ..dump import data_to_yaml

    return data_to_yaml(spec_data(d), header="Written by archdsl import-hf from a Hugging Face model; edit freely.")


# ---------------------------------------------------------------------------------------- map
def _tensors(hf_model: Any) -> dict[str, Callable[[], Any]]:
    return {name: (lambda t=t: t.detach()) for name, t in hf_model.state_dict().items()}


def map_weights(d: DecoderDescription, tensors: dict[str, Callable[[], Any]], model: Any,
                what: str = "transformers model") -> dict[str, Any]:
    """archdsl parameter name -> tensor for every parameter of `model` (a spec written by spec_yaml, or one with
    its module names), from `tensors` (checkpoint name -> loader); raises ValueError naming what does not map."""
    import re

    import torch

    p = d.prefix
    used: set[str] = set()
    errors: list[str] = []

    def get(key: str) -> Any:
        if key not in tensors:
            errors.append(f"no tensor {key} in the {what}")
            return None
        used.add(key)
        return tensors[key]()

    def cat(keys: list[str]) -> Any:
        parts = [get(k) for k in keys]
        return None if any(t is None for t in parts) else torch.cat(parts) if len(parts) > 1 else parts[0]

    out: dict[str, Any] = {}
    for name, param in model.named_parameters():
        m = re.match(r"^layers\.(\d+)\.(?:.*\.)?(self_attn|encoder_attn|mlp|self_attn_layer_norm|encoder_attn_layer_norm|"
                     r"final_layer_norm)\.(qkv|q|kv|out|up|down|weight|bias)(?:\.(weight|bias))?$", name)
        if m:
            i, block, part, kind = int(m.group(1)), m.group(2), m.group(3), m.group(4)
            L = f"{p}.layers.{i}"
            if block.endswith("layer_norm"):
                out[name] = get(f"{L}.{block}.{part}")
                continue
            proj = {("self_attn", "qkv"): ["q", "k", "v"], ("self_attn", "out"): ["o"],
                    ("encoder_attn", "q"): ["cq"], ("encoder_attn", "kv"): ["ck", "cv"], ("encoder_attn", "out"): ["co"],
                    ("mlp", "up"): ["up"], ("mlp", "down"): ["down"]}.get((block, part))
            if proj is None or kind is None:
                errors.append(f"{name} has no counterpart in the {what}")
                continue
            if kind == "bias" and not d.key_bias:  # the keys have none (Whisper)
                proj = [r for r in proj if r not in ("k", "ck")]
            out[name] = cat([f"{L}.{LAYER[r]}.{kind}" for r in proj])
            continue
        top = {"embed_tokens.weight": f"{p}.embed_tokens.weight", "embed_positions.weight": f"{p}.embed_positions.weight",
               "lm_head.weight": f"{d.head}.weight"}
        norms = {"layernorm_embedding": f"{p}.layernorm_embedding", "layer_norm": f"{p}.layer_norm"}
        base, _, suffix = name.rpartition(".")
        if name in top:
            out[name] = get(top[name])
        elif base in norms:
            out[name] = get(f"{norms[base]}.{suffix}")
        else:
            errors.append(f"{name} has no counterpart in the {what}")
    positions = f"{p}.embed_positions.weight"
    if d.positional == "sinusoidal" and positions in tensors:  # computed by archdsl: a stored table must be it
        from .hf_seq2seq import sinusoid_spacing

        used.add(positions)
        if sinusoid_spacing(tensors[positions]()) != d.spacing:
            errors.append(f"{positions} is not the sinusoidal table the spec computes")
    head = f"{d.head}.weight"
    if d.tied and head in tensors:  # a stored copy of the tied table
        used.add(head)
        if not torch.equal(tensors[head](), tensors[f"{p}.embed_tokens.weight"]()):
            errors.append(f"the spec ties the head to the embedding, but {head} differs from it")
    unused = sorted(k for k in tensors if k not in used)
    if unused:
        errors.append(f"tensors the spec does not use: {', '.join(unused[:8])}"
                      + (f" and {len(unused) - 8} more" if len(unused) > 8 else ""))
    for name, tensor in out.items():
        shape = tuple(dict(model.named_parameters())[name].shape)
        if tensor is not None and tuple(tensor.shape) != shape:
            errors.append(f"{name} is {shape} in archdsl, {tuple(tensor.shape)} in the {what}")
    if errors:
        raise ValueError(f"cannot map the {what} onto the archdsl spec:\n  " + "\n  ".join(errors))
    return out


# ---------------------------------------------------------------------------------------- from_hf
def spec_yaml_from_config(cfg: Any) -> str:
    return spec_yaml(describe(_meta(cfg), cfg))


def check_counts(cfg: Any, spec: Any) -> None:
    """The spec's parameter count equals the transformers model's of the same config (built on meta)."""
    from ..compiler import compile_spec

    theirs = _meta(cfg)
    n_theirs = sum(p.numel() for p in theirs.parameters() if p.requires_grad)  # a fixed sinusoid table: computed
    n_ours = compile_spec(spec, device="meta").num_parameters()
    if n_ours != n_theirs:
        raise _unsupported(cfg, "model_type", f"the spec has {n_ours:,} parameters, transformers' "
                           f"{type(theirs).__name__} {n_theirs:,}", "a module the importer does not read")


def from_hf(hf_model: Any, *, spec: Any = None, overrides: Any = None, dtype: Any = None, device: Any = None,
            verify: bool | None = None) -> Any:
    """An archdsl model with the architecture and weights of an in-memory lone decoder; its logits with and
    without encoder states are compared with the original's unless ``verify=False``."""
    from ..loader import load_spec
    from .hf import _assign, _build

    d = describe(hf_model)
    target = load_spec(spec, overrides=overrides) if spec is not None else load_spec(
        spec_yaml(d), text_name=f"<{d.model_type} import>")
    first = next(hf_model.parameters())
    model = _build(target, dtype or first.dtype, device or first.device)
    _assign(model, map_weights(d, _tensors(hf_model), model))
    model.eval()
    if verify is None or verify:
        tol = 1e-4 if first.dtype.is_floating_point and first.element_size() >= 4 else 5e-2
        diff = _largest_difference(hf_model, model, d)
        if not diff <= tol:
            raise ValueError(f"the converted '{d.model_type}' decoder differs from the original: its logits differ by "
                             f"{diff:.3g} of the largest (tolerance {tol:g})")
    return model


def from_pretrained(local_dir: Any, *, spec: Any = None, overrides: Any = None, dtype: Any = None,
                    device: Any = "cpu") -> Any:
    """An archdsl model from a local checkpoint folder of a lone decoder, without building the transformers model
    (its class is identified on meta, probed small)."""
    import torch

    from ..loader import load_spec
    from .hf import _assign, _build, _read_dtype, load_config, load_safetensors

    cfg = load_config(local_dir)
    d = describe(_meta(cfg), cfg)
    target = load_spec(spec, overrides=overrides) if spec is not None else load_spec(
        spec_yaml(d), text_name=f"<{d.model_type} import>")
    model = _build(target, dtype or torch.float32, device)
    with load_safetensors(local_dir, _read_dtype(model)) as shards:
        _assign(model, map_weights(d, shards, model, what=f"checkpoint {local_dir}"))
    return model.eval()


__all__ = ["LAYER", "DecoderDescription", "is_lone_decoder", "describe", "spec_data", "spec_yaml", "map_weights",
           "spec_yaml_from_config", "check_counts", "from_hf", "from_pretrained"]
