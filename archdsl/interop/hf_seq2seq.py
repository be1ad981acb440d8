"""Hugging Face encoder-decoders (T5 v1.0 / v1.1, BART) as archdsl graph specs, and their weights.

Used through :mod:`archdsl.interop.hf` (``spec_from_config``, ``spec_yaml_from_config``,
``from_hf``, ``from_pretrained``, ``archdsl import-hf``), which hand configs with
``is_encoder_decoder`` of these families to this module.

How a config becomes a spec: the config is read into :class:`Seq2SeqFeatures` (widths, layers of
each stack, heads and head width, feed-forward activation, norm kind and eps, pre- or post-norm,
relative position buckets or learned positions with BART's offset of 2, embedding norm and scale,
final norms, biases, the tied head and T5 v1.0's rescaling of its input) and written as a readable
YAML graph spec: an ``encoder`` stack and a ``decoder`` stack (input ``decoder_tokens``) whose
cross-attention reads the encoder, one embedding table shared by both (``embedding: {tie: shared}``).

How weights are mapped: each archdsl parameter is found by role, read from the spec's structure
(stack, layer index, self-attention / cross-attention / MLP, the norm that belongs to each
sub-layer before it (pre-norm) or after it (post-norm), the embedding, positions, embedding
norm, final norm, head), then named the family's way (``encoder.block.3.layer.1.DenseReluDense.wi``,
``model.decoder.layers.3.encoder_attn.k_proj``). Separate q/k/v become the fused ``qkv`` of
self-attention ([q; k; v]), k/v the ``kv`` of cross-attention ([k; v]), T5 v1.1's wi_0/wi_1 the
gated ``up`` ([gate; up]). Every archdsl parameter must be filled and every checkpoint tensor used.

Transformers 5 ties T5's lm_head to the shared embedding whatever the config says and keeps
v1.1's missing rescaling in ``scale_decoder_outputs``; the spec follows the checkpoints (v1.1: an
untied head, as google/t5-v1_1-* store it), and a tied in-memory head loads into it as a copy.
"""
from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable

SEQ2SEQ_FAMILIES = ("t5", "bart")  # the two layouts: T5's blocks of sub-layers, BART's layers

# a tensor that marks each layout in the transformers model (T5, mT5, UMT5, LongT5, Switch; BART, mBART,
# PLBart, Blenderbot, Pegasus, Marian, M2M-100, ...): the layout is read from the model, not its model_type
_LAYOUT_MARKS = {"t5": ("encoder.block.0.layer.0.SelfAttention.q.weight", "decoder.block.0.layer.1.EncDecAttention.q.weight"),
                 "bart": ("model.encoder.layers.0.self_attn.q_proj.weight", "model.encoder.layers.0.fc1.weight",
                          "model.decoder.layers.0.encoder_attn.q_proj.weight")}


def _meta_model(cfg: Any) -> Any:
    import copy
    import warnings

    import torch
    import transformers

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.device("meta"):
            return transformers.AutoModelForSeq2SeqLM.from_config(copy.deepcopy(cfg))


def layout(cfg: Any) -> str | None:
    """'t5' or 'bart': how the config's transformers encoder-decoder names its tensors (its model built on
    meta, once per config), or None."""
    cached = getattr(cfg, "_archdsl_seq2seq_layout", "unset")
    if cached != "unset":
        return cached
    found = None
    if getattr(cfg, "is_encoder_decoder", False) and hasattr(cfg, "to_dict"):
        try:
            names = {n for n, _ in _meta_model(cfg).named_parameters()}
        except Exception:  # noqa: BLE001 - transformers missing, or no seq2seq class for this config
            names = set()
        found = next((name for name, marks in _LAYOUT_MARKS.items() if all(m in names for m in marks)), None)
    try:
        cfg._archdsl_seq2seq_layout = found
    except AttributeError:
        pass
    return found


def is_seq2seq(cfg: Any) -> bool:
    """A config this module converts: an encoder-decoder laid out as T5 or BART."""
    return layout(cfg) is not None


@dataclass
class Seq2SeqFeatures:
    model_type: str
    layout: str  # t5 | bart (_LAYOUT_MARKS)
    name: str
    architectures: list[str]
    vocab: int  # the source's (and, with one table, the target's)
    width: int
    encoder_layers: int
    decoder_layers: int
    heads: int
    head_dim: int
    ffn: int
    activation: str  # archdsl activation, gated ones included
    norm: str  # rmsnorm | layernorm
    eps: float
    arrangement: str  # pre | post
    positional: str  # relative | learned
    buckets: int = 32
    max_distance: int = 128
    relative_per_layer: bool = False  # each layer's own relative position bias (UMT5), not one per stack (T5)
    max_len: int | None = None
    offset: int = 0
    spacing: str = "vaswani"  # sinusoidal: Marian's frequencies, or fairseq's (tensor2tensor's: M2M-100)
    embed_norm: bool = False
    decoder_norm_first: bool = False  # the decoder's embedding norm before the positions are added (Blenderbot-small)
    final_norm: bool = True
    embed_scale: bool = False
    bias: bool = False
    attn_scale: float | None = None
    tie: bool = True
    head_scale: bool = False
    target_vocab: int | None = None  # a separate target table of this many rows (FSMT), not one shared table
    head_key: str = "lm_head.weight"  # the head's tensor (FSMT: model.decoder.output_projection.weight)
    experts: int = 0  # Switch Transformers: the experts of its sparse layers (top-1, capacity per sequence)
    capacity: int | None = None
    router_bias: bool = False
    jitter: float = 0.0
    aux_loss_coef: float = 0.0
    sparse: dict[str, list[bool]] = field(default_factory=dict)  # side -> which layers hold experts
    mlp_module: str = "DenseReluDense"  # the T5 layout's feed-forward (Switch Transformers': mlp)
    shared_key: str | None = None  # the one table's tensor where the model has no `shared` module (a tied FSMT)
    padding_idx: int | None = None
    dropout: float = 0.0
    attn_dropout: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def gated(self) -> bool:
        return self.activation in ("swiglu", "geglu", "geglu_exact")


def seq2seq_features(cfg: Any, probed: dict[str, Any] | None = None) -> Seq2SeqFeatures:
    """The features of an encoder-decoder config; what its config does not state is read from a small random
    model of its class (``probed``: those facts, given when describing that small model itself)."""
    from .hf import _ACTIVATIONS, _GATED, _spec_name, _unsupported

    model_type = str(cfg.model_type)
    kind = layout(cfg)
    if probed is None:
        probed = _probe(cfg)
    common = dict(model_type=model_type, layout=kind, name=_spec_name(cfg),
                  architectures=list(getattr(cfg, "architectures", None) or []),
                  vocab=int(cfg.vocab_size), width=int(cfg.d_model))
    if kind == "t5":
        proj = str(getattr(cfg, "feed_forward_proj", None) or getattr(cfg, "dense_act_fn", None) or "relu")
        gated = proj.startswith("gated-")
        act_name = getattr(cfg, "dense_act_fn", None) or proj.split("-")[-1]
        if act_name not in _ACTIVATIONS:
            raise _unsupported(cfg, "feed_forward_proj", f"feed-forward activation '{act_name}'")
        activation = _ACTIVATIONS[act_name]
        if gated:
            if activation not in _GATED:
                raise _unsupported(cfg, "feed_forward_proj", f"a gated feed-forward with '{act_name}'",
                                   "gated feed-forwards are gated-gelu (GeGLU) and gated-silu (SwiGLU)")
            activation = _GATED[activation]
        # transformers 5 keeps T5's tie_word_embeddings as scale_decoder_outputs (and forces the tie); mT5 never
        # scales: whether the head's input is scaled is read by running a small model of the class. A scaled
        # head is T5 v1.0's tied one; an unscaled one is v1.1's and mT5's, stored untied in their checkpoints
        tied = probed["head_scale"]
        moe = _switch_features(cfg)
        return Seq2SeqFeatures(**moe,
            **common, encoder_layers=int(cfg.num_layers), decoder_layers=int(cfg.num_decoder_layers or cfg.num_layers),
            heads=int(cfg.num_heads), head_dim=int(cfg.d_kv), ffn=int(cfg.d_ff), activation=activation,
            norm="rmsnorm", eps=float(cfg.layer_norm_epsilon), arrangement="pre", positional="relative",
            buckets=int(cfg.relative_attention_num_buckets), max_distance=int(cfg.relative_attention_max_distance),
            final_norm=True, bias=False, attn_scale=1.0, tie=tied, head_scale=tied,
            relative_per_layer=bool(probed.get("relative_per_layer", False)),
            dropout=float(cfg.dropout_rate), attn_dropout=float(cfg.dropout_rate))
    # bart
    if cfg.encoder_attention_heads != cfg.decoder_attention_heads or cfg.encoder_ffn_dim != cfg.decoder_ffn_dim:
        raise _unsupported(cfg, "decoder_attention_heads", "different head counts or feed-forward widths in the "
                           "encoder and the decoder", "the imported spec shares one layer shape; write the spec by hand")
    act_name = cfg.activation_function
    if act_name not in _ACTIVATIONS:
        raise _unsupported(cfg, "activation_function", f"activation '{act_name}'")
    if getattr(cfg, "add_bias_logits", False):
        raise _unsupported(cfg, "add_bias_logits", "add_bias_logits (a trained logits bias)")
    probe = probed
    if probe.get("target_vocab") is not None:  # two tables (FSMT): the source's and the target's
        common["vocab"] = probe["source_vocab"]
    return Seq2SeqFeatures(
        **common, target_vocab=probe.get("target_vocab"), head_key=probe.get("head_key", "lm_head.weight"),
        shared_key=probe.get("shared_key"),
        encoder_layers=int(cfg.encoder_layers), decoder_layers=int(cfg.decoder_layers),
        heads=int(cfg.encoder_attention_heads), head_dim=int(cfg.d_model) // int(cfg.encoder_attention_heads),
        ffn=int(cfg.encoder_ffn_dim), activation=_ACTIVATIONS[act_name], norm="layernorm", eps=probe["eps"],
        arrangement=probe["arrangement"], positional=probe["positional"], max_len=int(cfg.max_position_embeddings),
        offset=probe["offset"], spacing=probe.get("spacing", "vaswani"), embed_norm=probe["embed_norm"],
        final_norm=probe["final_norm"],
        decoder_norm_first=probe.get("decoder_norm_first", False),
        embed_scale=probe["embed_scale"], bias=True,
        tie=probe.get("head_tied", bool(getattr(cfg, "tie_word_embeddings", True))), padding_idx=getattr(cfg, "pad_token_id", None),
        dropout=float(cfg.dropout or 0.0), attn_dropout=float(cfg.attention_dropout or 0.0))


_SMALL = {"d_model": 32, "encoder_ffn_dim": 48, "decoder_ffn_dim": 48, "encoder_layers": 2, "decoder_layers": 2,
          "encoder_attention_heads": 2, "decoder_attention_heads": 2, "d_ff": 48, "d_kv": 16, "num_heads": 2,
          "num_layers": 2, "num_decoder_layers": 2}


def _switch_features(cfg: Any) -> dict[str, Any]:
    """A T5-layout model whose feed-forwards are experts in some layers (Switch Transformers): which layers, read
    from its module tree on meta (a feed-forward with a router), and its routing from the config: the top-1
    softmax router in float32, each expert's capacity per sequence. Empty for a T5 without experts."""
    from .hf import _unsupported

    experts = getattr(cfg, "num_experts", None)
    if not isinstance(experts, int) or experts < 1:
        return {}
    meta = _meta_model(cfg)
    sparse = {side: [hasattr(block.layer[-1].mlp, "router") for block in getattr(meta, side).block]
              for side in ("encoder", "decoder")}
    if str(getattr(cfg, "router_dtype", "float32")) != "float32":
        raise _unsupported(cfg, "router_dtype", f"a router in {cfg.router_dtype}", "archdsl's router_fp32 is float32")
    if getattr(cfg, "router_ignore_padding_tokens", False):
        raise _unsupported(cfg, "router_ignore_padding_tokens", "a router that leaves padding out of capacity")
    return {"experts": experts, "capacity": int(cfg.expert_capacity), "router_bias": bool(cfg.router_bias),
            "jitter": float(getattr(cfg, "router_jitter_noise", 0.0) or 0.0),
            "aux_loss_coef": float(getattr(cfg, "router_aux_loss_coef", 0.0) or 0.0), "sparse": sparse,
            "mlp_module": "mlp"}


def _small_model(cfg: Any) -> tuple[Any, Any]:
    """(a copy of the config at a small size, a random model of its class with every parameter perturbed)."""
    import transformers

    from .hf_probe import small_random_model

    return small_random_model(cfg, _SMALL, transformers.AutoModelForSeq2SeqLM.from_config)


def _token_range(model: Any) -> int:
    """Token ids valid for both the source and the target of a transformers model (FSMT's tables differ)."""
    return min(int(model.get_input_embeddings().weight.shape[0]), int(model.get_output_embeddings().weight.shape[0]))


def _probe_batch(vocab: int) -> tuple[Any, Any, Any]:
    import torch

    g = torch.Generator().manual_seed(2)
    src = torch.randint(3, vocab, (2, 7), generator=g)
    mask = torch.ones_like(src)
    mask[1, 5:] = 0
    return src, mask, torch.randint(3, vocab, (2, 5), generator=g)


# every tensor each layout's spec has a role for; another is named in the refusal (Switch Transformers' routers
# and experts, MVP's prompts, FSMT's separate tables; UMT5's relative bias in every layer is a role per layer)
_KNOWN = {
    "t5": re.compile(r"^(?:shared|lm_head|(?:encoder|decoder)\.(?:embed_tokens|final_layer_norm|block\.\d+\.layer\.0\."
                     r"SelfAttention\.relative_attention_bias|block\.\d+\.layer\.\d+\.(?:layer_norm|"
                     r"(?:SelfAttention|EncDecAttention)\.[qkvo]|DenseReluDense\.(?:wi|wi_0|wi_1|wo)|"
                     r"mlp\.(?:wi|wo|router\.classifier|experts\.expert_\d+\.(?:wi|wo)))))\.(?:weight|bias)$"),
    "bart": re.compile(r"^model\.(?:shared|(?:encoder|decoder)\.(?:embed_tokens|embed_positions|layernorm_embedding|"
                       r"layer_norm|layers\.\d+\.(?:self_attn|encoder_attn)\.(?:[qkv]_proj|out_proj)|layers\.\d+\."
                       r"(?:self_attn_layer_norm|encoder_attn_layer_norm|final_layer_norm|fc1|fc2)))\.(?:weight|bias)$"
                       r"|^(?:lm_head|model\.decoder\.output_projection)\.weight$"),
}


def _probe(cfg: Any) -> dict[str, Any]:
    """What the config does not state, read from a small random model of its class, and that model checked
    against its own description."""
    from .hf import _unsupported

    small, model = _small_model(cfg)
    kind = layout(cfg)
    unknown = sorted({n.rsplit(".", 1)[0] for n, _ in model.named_parameters() if not _KNOWN[kind].match(n)})
    if unknown:
        raise _unsupported(cfg, "model_type", f"'{cfg.model_type}' has modules a {kind.upper()}-layout spec has no "
                           "role for: " + ", ".join(unknown[:6]))
    facts = _bart_facts(small, model) if layout(cfg) == "bart" else {
        "head_scale": _t5_head_scale(small, model),
        # a relative position bias in every layer (UMT5), not only the first's shared by the stack (T5)
        "relative_per_layer": any(n.startswith("encoder.block.1.") and "relative_attention_bias" in n
                                  for n, _ in model.named_parameters())}
    # the decoder's embedding norm after the positions are added (BART), or before (Blenderbot-small): the
    # first that gives the small model's logits
    diffs = {}
    for offset in facts.get("offsets", [facts.get("offset", 0)]):  # fairseq's row of position 0
        for before in ([False, True] if facts.get("embed_norm") else [False]):
            facts["decoder_norm_first"], facts["offset"] = before, offset
            diffs[(offset, before)] = _check_small(cfg, small, model, facts)
            if diffs[(offset, before)] <= 1e-4:
                return facts
    raise _unsupported(cfg, "model_type", f"a small random '{cfg.model_type}' model differs from its description "
                       f"by {min(diffs.values()):.3g} of the largest logit: its code does something its tree and the "
                       "probes do not show")


def _t5_head_scale(small: Any, model: Any) -> bool:
    """Whether a T5-layout model multiplies the decoder's output by d_model^-0.5 before its head (T5 v1.0)."""
    import torch

    src, mask, tgt = _probe_batch(_token_range(model))
    with torch.no_grad():
        out = model(input_ids=src, attention_mask=mask, decoder_input_ids=tgt, output_hidden_states=True,
                    use_cache=False)
        h = out.decoder_hidden_states[-1]
        scaled = model.lm_head(h * small.d_model ** -0.5)
    return bool(torch.allclose(scaled, out.logits, atol=1e-5, rtol=1e-4))


def _check_small(cfg: Any, small: Any, model: Any, facts: dict[str, Any]) -> float:
    """How far the description of a small random model of the config's class, built and loaded with that
    model's weights, is from its logits (relative to the largest); a refusal when the weights do not map."""
    import torch

    from ..loader import load_spec
    from .hf import _assign, _build, _unsupported

    f = seq2seq_features(small, probed=facts)
    ours = _build(load_spec(seq2seq_yaml(f), text_name=f"<{cfg.model_type} probe>"), torch.float32, "cpu")
    try:
        state = model.state_dict()
        _assign(ours, map_seq2seq(f, {k: (lambda t=t: t) for k, t in state.items()}, ours))
    except ValueError as exc:
        raise _unsupported(cfg, "model_type", f"'{cfg.model_type}': {' '.join(str(exc).split())[:300]}") from None
    src, mask, tgt = _probe_batch(_token_range(model))
    with torch.no_grad():
        # use_cache=False: a whole target at once, as training sees it (FSMT drops its causal mask when caching)
        theirs = model(input_ids=src, attention_mask=mask, decoder_input_ids=tgt, use_cache=False).logits
        got = ours.eval()(src, mask, decoder_tokens=tgt)
    return (got - theirs).abs().max().item() / max(1.0, theirs.abs().max().item())


# a BART encoder layer's modules by role, for hf_encoder's reference computation of a layer
_BART_LAYER = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.out_proj",
               "attn_norm": "self_attn_layer_norm", "up": "fc1", "down": "fc2", "mlp_norm": "final_layer_norm"}


def sinusoid_spacing(table: Any) -> str | None:
    """Which of archdsl's [sin | cos] tables a fixed (positions, width) table is, row r at angle r: "vaswani"
    (Marian's, Pegasus's), "tensor2tensor" (fairseq's: M2M-100, XGLM; its padding row, zeroed, is skipped), or
    None."""
    import torch

    from ..blocks.context import ForwardContext
    from ..blocks.embedding import SinusoidalPositional

    rows, dim = table.shape
    table = table.detach().float()
    ctx = ForwardContext(positions=torch.arange(rows).unsqueeze(0), key_padding=None, token_type_ids=None, cache=None)
    kept = table.abs().amax(-1) > 0  # fairseq zeroes the padding row
    for spacing in ("vaswani", "tensor2tensor"):
        if spacing == "tensor2tensor" and dim < 4:
            continue
        with torch.no_grad():
            expected = SinusoidalPositional(dim, halves=True, spacing=spacing)(torch.zeros(1, rows, dim), ctx)[0]
        if torch.allclose(table[kept], expected[kept], atol=1e-5):
            return spacing
    return None


def _is_sinusoid_halves(table: Any) -> bool:
    """Whether a fixed (positions, width) table is the sines then cosines of the standard frequencies."""
    return sinusoid_spacing(table) == "vaswani"


def fixed_positions(module: Any, padding_idx: int | None) -> dict[str, Any] | None:
    """A position module's fixed table as archdsl's sinusoids: {"spacing", "offsets"} with the rows position 0 may
    read (0 for a table indexed by position; for fairseq's, its own offset or padding_idx + 1, which its code
    uses as it numbers positions after the padding id: the small model's logits decide); None if it is none."""
    table = getattr(module, "weight", None)
    if table is None or table.requires_grad:
        table = getattr(module, "weights", None)  # fairseq's tables: a buffer, grown on demand
    if table is None or getattr(table, "requires_grad", False) or table.dim() != 2 or table.device.type == "meta":
        return None
    spacing = sinusoid_spacing(table)
    if spacing is None:
        return None
    offsets = [0] if spacing == "vaswani" else sorted({int(getattr(module, "offset", 0) or 0),
                                                        (padding_idx + 1) if isinstance(padding_idx, int) else 0})
    return {"spacing": spacing, "offsets": offsets}


def _bart_facts(small: Any, model: Any) -> dict[str, Any]:
    """What a BART-layout model's tree and behaviour say and its config does not (mBART, Blenderbot and Pegasus
    are pre-norm with final norms, BART and Blenderbot-small post-norm; some scale the embeddings, some
    norm them), read from a small random model of its class (its tree, its encoder layer run on probe input).
    Refuses what the spec cannot express (sinusoidal position tables, modules with no role) by name."""
    import torch
    import torch.nn.functional as F

    from .hf import _ACTIVATIONS, _unsupported
    from .hf_encoder import _reference_layer

    cfg = small
    activation = _ACTIVATIONS.get(str(small.activation_function), "gelu")
    base = model.get_submodule("model")
    encoder = base.encoder
    positions = encoder.embed_positions
    table = getattr(positions, "weight", None)
    spacing, offsets = "vaswani", [0]
    if table is None or not table.requires_grad:  # a fixed table: archdsl computes it, if it is one it knows
        fixed = fixed_positions(positions, getattr(small, "pad_token_id", None))
        if fixed is None:
            raise _unsupported(cfg, "embed_positions", f"fixed positions that are not a [sin | cos] table of "
                               f"Marian's, Pegasus's or fairseq's ({type(positions).__name__})",
                               "archdsl's sinusoidal tables: interleaved sin/cos, or halves: true")
        kind, offset, spacing, offsets = "sinusoidal", fixed["offsets"][0], fixed["spacing"], fixed["offsets"]
    else:
        kind, rows = "learned", table.shape[0]
        offset = rows - int(cfg.max_position_embeddings)
        if offset < 0:
            raise _unsupported(cfg, "max_position_embeddings", f"a position table of {rows} rows for "
                               f"{cfg.max_position_embeddings} positions")
        offsets = [offset]
    ids = torch.arange(3, 9).unsqueeze(0) % _token_range(model)
    with torch.no_grad():
        scaled = encoder.embed_tokens(ids)
        plain = F.embedding(ids, encoder.embed_tokens.weight)
    ratio = (scaled / plain).median().item()
    outside = getattr(encoder, "embed_scale", None)  # applied by the stack's forward (FSMT), not the table's
    if abs(ratio - 1.0) < 1e-6 and isinstance(outside, (int, float)) and not isinstance(outside, bool):
        ratio = float(outside)
    embed_scale = abs(ratio - small.d_model ** 0.5) < 1e-3
    if not (embed_scale or abs(ratio - 1.0) < 1e-6):
        raise _unsupported(cfg, "scale_embedding", f"embeddings scaled by {ratio:.4g}")
    layer = encoder.layers[0]
    x = torch.randn(2, 5, small.d_model, generator=torch.Generator().manual_seed(0)) * 2 + 0.5

    n1 = layer.self_attn_layer_norm
    with torch.no_grad():
        try:
            # batch-first, or time-first as fairseq's layers (FSMT) take it
            runs = [run_on_hidden(layer, x), run_on_hidden(layer, x.transpose(0, 1)).transpose(0, 1)]
        except Exception as exc:  # noqa: BLE001 - a layer that needs more than hidden states
            raise _unsupported(cfg, "model_type", f"{type(layer).__name__} cannot be run on hidden states alone "
                               f"({type(exc).__name__}: {' '.join(str(exc).split())[:140]})") from None
        post, pre = (_reference_layer(layer, {**_BART_LAYER, "arrangement": a}, small.encoder_attention_heads,
                                      activation, x, causal=False) for a in ("post", "pre"))
    diffs = {"post": min((post - t).abs().max().item() for t in runs),
             "pre": min((pre - t).abs().max().item() for t in runs)}
    arrangement = min(diffs, key=diffs.get)  # type: ignore[arg-type]
    theirs = runs[0]
    if diffs[arrangement] > 1e-4 * max(1.0, theirs.abs().max().item()):
        raise _unsupported(cfg, "model_type", f"{type(layer).__name__} is neither a pre- nor a post-norm layer of "
                           f"softmax attention and a feed-forward (differs by {min(diffs.values()):.3g} at best)")
    final = getattr(encoder, "layer_norm", None)
    return {**_tables(model), "arrangement": arrangement, "positional": kind, "offset": offset, "spacing": spacing,
            "offsets": offsets, "embed_scale": embed_scale,
            "eps": float(n1.eps),
            "embed_norm": getattr(encoder, "layernorm_embedding", None) is not None,
            "final_norm": final is not None}



def _tables(model: Any) -> dict[str, Any]:
    """How a BART-layout model's embeddings and head are laid out, read from its modules: one table shared
    by both stacks (BART, Marian) or a source and a target table (FSMT); which tensor the head is, and
    whether it is the (target) embedding's."""
    base = model.get_submodule("model")
    source, target = base.encoder.embed_tokens, base.decoder.embed_tokens
    import torch

    # the projection onto the target's vocabulary (FSMT's get_output_embeddings names its embedding instead)
    rows, width = target.weight.shape
    heads = [(name, module) for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)
             and tuple(module.weight.shape) == (rows, width)]
    head = heads[0][1] if len(heads) == 1 else model.get_output_embeddings()
    head_key = next(name for name, module in model.named_modules() if module is head) + ".weight"
    facts: dict[str, Any] = {"head_key": head_key, "head_tied": head.weight is target.weight}
    if getattr(base, "shared", None) is None:  # no model.shared: the encoder's table, or one per stack (FSMT)
        if source.weight is target.weight:
            facts["shared_key"] = "model.encoder.embed_tokens.weight"
        else:
            facts.update(source_vocab=int(source.num_embeddings), target_vocab=int(target.num_embeddings))
    return facts


def run_on_hidden(layer: Any, x: Any) -> Any:
    """A transformers layer run on hidden states alone (no mask): its other required arguments, such
    as MVP's prompts where the config has none, are given as None. Returns the output hidden states."""
    import inspect

    params = list(inspect.signature(layer.forward).parameters.values())[1:]  # after hidden_states
    extra = {p.name: None for p in params if p.default is inspect.Parameter.empty
             and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if any(p.name == "attention_mask" or p.kind is p.VAR_KEYWORD for p in params):
        extra["attention_mask"] = None
    out = layer(x, **extra)
    return out[0] if isinstance(out, tuple) else out


# ---------------------------------------------------------------------------------------- YAML
def _describe(f: Seq2SeqFeatures) -> str:
    from .hf import _ACT_NAMES

    norm = "RMSNorm without mean or bias" if f.norm == "rmsnorm" else "LayerNorm"
    parts = [f"encoder-decoder ({f.encoder_layers} + {f.decoder_layers} layers), "
             f"{'pre' if f.arrangement == 'pre' else 'post'}-norm {norm} (eps {f.eps:g})"]
    if f.positional == "relative":
        parts.append(f"relative position bias ({f.buckets} buckets up to distance {f.max_distance}) "
                     + ("in every layer" if f.relative_per_layer else "per stack"))
    elif f.positional == "sinusoidal":
        parts.append("fixed sinusoidal positions (sines, then cosines" + (", fairseq's frequencies" if
                     f.spacing == "tensor2tensor" else "") + (f", from row {f.offset})" if f.offset else ")"))
    else:
        parts.append(f"learned positions ({f.max_len}" + (f", offset {f.offset})" if f.offset else ")"))
    attn = f"{f.heads} heads of {f.head_dim}" + ("" if f.bias else ", no biases")
    if f.attn_scale == 1.0:
        attn += ", unscaled scores"
    parts.append(attn)
    parts.append(f"{_ACT_NAMES[f.activation]} feed-forward (hidden {f.ffn})")
    if f.embed_norm:
        parts.append("LayerNorm on the embeddings" + (" (the decoder's before its positions are added)"
                                                      if f.decoder_norm_first else ""))
    if f.embed_scale:
        parts.append("embeddings scaled by sqrt(d_model)")
    parts.append(("a source and a target embedding table" if f.target_vocab is not None else
                  "one embedding table for both stacks") + (", tied head" if f.tie else ", untied head"))
    if f.head_scale:
        parts.append("head input scaled by d_model^-0.5")
    arch = f" ({', '.join(f.architectures)})" if f.architectures else ""
    return f"Imported from a Hugging Face '{f.model_type}' config{arch}: " + "; ".join(parts) + "."


def seq2seq_yaml(f: Seq2SeqFeatures) -> str:
    from .hf import _args, _period, _scalar, _unsupported

    v: dict[str, Any] = {"vocab": f.vocab}
    separate = f.target_vocab is not None  # a source and a target table (FSMT)
    if separate:
        v["target_vocab"] = f.target_vocab
    if f.positional in ("learned", "sinusoidal"):
        v["context"] = f.max_len
    v.update(d_model=f.width, heads=f.heads)
    if f.head_dim * f.heads != f.width:
        v["head_dim"] = f.head_dim
    v["layers"] = f.encoder_layers
    if f.decoder_layers != f.encoder_layers:
        v["decoder_layers"] = f.decoder_layers
    v["ffn"] = f.ffn
    if f.positional == "relative":
        v.update(buckets=f.buckets, max_distance=f.max_distance)
    if f.experts:
        v.update(experts=f.experts, capacity=f.capacity)
    if f.dropout:
        v["dropout"] = f.dropout
    if f.attn_dropout:
        v["attn_dropout"] = f.attn_dropout
    v["eps"] = f.eps

    def attention(**extra: str) -> str:
        args = [("heads", "$heads")] + ([("head_dim", "$head_dim")] if "head_dim" in v else [])
        args += list(extra.items())
        if not f.bias:
            args.append(("bias", "false"))
        if f.attn_scale is not None:
            args.append(("scale", _scalar(f.attn_scale)))
        if f.attn_dropout:
            args.append(("dropout", "$attn_dropout"))
        return f"attention: {_args(args)}"

    mlp = [("hidden", "$ffn"), ("activation", f.activation)] + ([] if f.bias else [("bias", "false")])
    norm = f"{f.norm}: {_args([('eps', '$eps')])}"
    drop = ["- dropout: $dropout"] if f.dropout else []

    def sublayer(node: str, name: str) -> list[str]:
        if f.arrangement == "pre":
            return ["- residual:", f"    - {norm}", f"    - {node}"] + ["    " + d for d in drop]
        return (["- residual:", f"    - {node}"] + ["    " + d for d in drop]
                + [f"- {f.norm}: {_args([('eps', '$eps'), ('name', name)])}"])

    named = f.layout == "bart"  # BART's module names read like Hugging Face's
    enc_self = attention(**({"name": "self_attn"} if named else {}))
    dec_self = attention(causal="true", **({"name": "self_attn"} if named else {}))
    dec_cross = attention(cross="encoder", **({"name": "encoder_attn"} if named else {}))
    encoder_layer = sublayer(enc_self, "self_attn_layer_norm") + sublayer(f"mlp: {_args(mlp)}", "final_layer_norm")
    decoder_layer = (sublayer(dec_self, "self_attn_layer_norm") + sublayer(dec_cross, "encoder_attn_layer_norm")
                     + sublayer(f"mlp: {_args(mlp)}", "final_layer_norm"))
    # Switch Transformers: top-1 experts in some layers, each taking at most $capacity tokens of a sequence
    moe = [("experts", "$experts"), ("top_k", "1"), ("hidden", "$ffn"), ("activation", f.activation),
           ("normalize", "false"), ("capacity", "$capacity"), ("router_fp32", "true")]
    moe += ([("router_bias", "true")] if f.router_bias else []) + ([("jitter", _scalar(f.jitter))] if f.jitter else [])
    moe += [("aux_loss_coef", _scalar(f.aux_loss_coef))] if f.aux_loss_coef else []
    attention_parts = {"encoder": sublayer(enc_self, "self_attn_layer_norm"),
                       "decoder": sublayer(dec_self, "self_attn_layer_norm") + sublayer(dec_cross, "encoder_attn_layer_norm")}
    sparse_layers: dict[str, list[str]] = {}
    for side in ("encoder", "decoder"):  # the attention shared by a side's dense and sparse blocks, written once
        if any(f.sparse.get(side, [])):
            sparse_layers[f"{side}_attention"] = attention_parts[side]
            sparse_layers[f"{side}_sparse_layer"] = [f"- {side}_attention"] + sublayer(f"moe: {_args(moe)}",
                                                                                     "final_layer_norm")
            dense = [f"- {side}_attention"] + sublayer(f"mlp: {_args(mlp)}", "final_layer_norm")
            encoder_layer, decoder_layer = (dense, decoder_layer) if side == "encoder" else (encoder_layer, dense)
    relative = _args([("kind", "relative"), ("heads", "$heads"), ("buckets", "$buckets"),
                      ("max_distance", "$max_distance"), ("name", "relative_bias")])
    if f.positional == "relative" and f.relative_per_layer:  # UMT5: each layer's own bias, before its attention
        encoder_layer, decoder_layer = ([f"- positional: {relative}"] + encoder_layer,
                                        [f"- positional: {relative}"] + decoder_layer)

    def stack(name: str, decoder: bool) -> list[str]:
        if separate:
            embed = [("name", "decoder_embed" if decoder else "encoder_embed"),
                     ("vocab", "$target_vocab" if decoder else "$vocab")]
        else:
            embed = [("name", "shared" if not decoder else "embed_tokens"), ("vocab", "$vocab")]
        if f.padding_idx is not None:
            embed.append(("padding_idx", _scalar(f.padding_idx)))
        if decoder and not separate:
            embed.append(("tie", "shared"))
        if f.embed_scale:
            embed.append(("scale", '"${d_model ** 0.5}"'))
        lines = [f"    {name}:", "      width: $d_model"] + (["      input: decoder_tokens"] if decoder else [])
        lines += ["      layers:", f"        - embedding: {_args(embed)}"]
        body: list[str] = []
        norm_first = f.embed_norm and decoder and f.decoder_norm_first
        if norm_first:
            body.append(f"- {f.norm}: {_args([('eps', '$eps'), ('name', 'layernorm_embedding')])}")
        if f.positional == "learned":
            pos = [("kind", "learned"), ("max_len", "$context")] + ([("offset", str(f.offset))] if f.offset else [])
            body.append(f"- positional: {_args(pos + [('name', 'embed_positions')])}")
        if f.positional == "sinusoidal":
            pos = [("kind", "sinusoidal"), ("max_len", "$context"), ("halves", "true")]
            pos += ([("spacing", f.spacing)] if f.spacing != "vaswani" else []) + (
                [("offset", str(f.offset))] if f.offset else [])
            body.append(f"- positional: {_args(pos + [('name', 'embed_positions')])}")
        if f.embed_norm and not norm_first:
            body.append(f"- {f.norm}: {_args([('eps', '$eps'), ('name', 'layernorm_embedding')])}")
        body += drop
        if f.positional == "relative" and not f.relative_per_layer:
            body.append(f"- positional: {relative}")
        layers = "$decoder_layers" if decoder and "decoder_layers" in v else "$layers"
        side = "decoder" if decoder else "encoder"
        kinds = [f"{side}_sparse_layer" if s else f"{side}_layer" for s in f.sparse.get(side, [])] or [f"{side}_layer"]
        body += [f"- repeat: {layers}", f"  name: {'block' if f.layout == 't5' else 'layers'}"]
        if len(set(kinds)) == 1:
            body.append(f"  body: {kinds[0]}")
        else:
            period = _period(kinds)
            if period > 8:
                raise _unsupported(None, f"{side}_sparse_step", f"{side} layers with experts in no short pattern")
            body.append(f"  pattern: [{', '.join(kinds[:period])}]")
        if f.final_norm:
            body.append(f"- {f.norm}: {_args([('eps', '$eps'), ('name', 'final_layer_norm')])}")
            body += drop
        if decoder:
            head = [("vocab", "$target_vocab" if separate else "$vocab")]
            head += [("tie", "decoder_embed" if separate else "shared")] if f.tie else []
            if f.head_scale:
                head.append(("scale", '"${d_model ** -0.5}"'))
            body.append(f"- lm_head: {_args(head)}")
        return lines + ["        " + line for line in body]

    lines = ["# Written by archdsl import-hf from a Hugging Face config; edit freely.", "archdsl: 1",
             f"name: {_scalar(f.name)}", "description: >"]
    lines += ["  " + line for line in textwrap.wrap(_describe(f), 94)]
    lines.append("vars:")
    lines += [f"  {k}: {_scalar(val)}" for k, val in v.items()]
    lines += ["", "blocks:", "  encoder_layer:"] + ["    " + line for line in encoder_layer]
    lines += ["  decoder_layer:"] + ["    " + line for line in decoder_layer]
    for name, block in sparse_layers.items():
        lines += [f"  {name}:"] + ["    " + line for line in block]
    lines += ["", "model:", "  graph:"] + stack("encoder", False) + stack("decoder", True) + ["  output: decoder"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------- weights
def _roles(model: Any) -> list[tuple[str, str, int | None, str]]:
    """(module path, stack kind 'encoder'|'decoder', layer index or None, role) of every leaf with weights.

    Roles: embed, positions, relative, embed_norm, final_norm, head, and per layer self, cross, mlp and
    self_norm / cross_norm / mlp_norm: a norm belongs to the sub-layer inside its residual (pre-norm) or,
    standing between residuals, to the sub-layer before it (post-norm)."""
    from ..ir import layer_numbering, leaves

    g = model.graph
    out = []
    for stack, kind in model.stack_inputs.items():
        side = "decoder" if kind == "decoder_tokens" else "encoder"
        layer_of = layer_numbering(g, stack)

        def block_role(node: str) -> str:
            data = g.nodes[node]
            return "cross" if data["kind"] == "attention" and data["spec"].cross else \
                "self" if data["kind"] == "attention" else "mlp"

        order = [n for n in leaves(g) if n.startswith(stack + ".") and g.nodes[n]["kind"] not in ("add", "sum", "dropout")]
        seen_layer = False
        previous: dict[int, str] = {}
        for pos, node in enumerate(order):
            data, i = g.nodes[node], layer_of(node)
            k = data["kind"]
            seen_layer = seen_layer or i is not None
            if k in ("attention", "mlp", "moe"):
                role = block_role(node)
                if i is not None:
                    previous[i] = role
            elif k in ("layernorm", "rmsnorm"):
                if i is None:
                    role = "final_norm" if seen_layer else "embed_norm"
                else:
                    parent = data["parent"]
                    sibling = next((n for n in order if g.nodes[n]["parent"] == parent
                                    and g.nodes[n]["kind"] in ("attention", "mlp", "moe")), None)
                    if g.nodes[parent]["kind"] == "residual" and sibling is not None:
                        role = block_role(sibling) + "_norm"
                    else:
                        role = previous.get(i, "unknown") + "_norm"
            elif k == "embedding":
                role = "embed"
            elif k == "positional":
                role = {"learned": "positions", "relative": "relative"}.get(data["spec"].type, "none")
            elif k == "lm_head":
                role = "head"
            else:
                role = k
            out.append((node, side, i, role))
    return out


class _Names:
    """Hugging Face tensor names of each role, per family."""

    def __init__(self, f: Seq2SeqFeatures):
        self.f = f
        self.t5 = f.layout == "t5"

    def prefix(self, side: str) -> str:
        return side if self.t5 else f"model.{side}"

    def embed(self, side: str = "encoder") -> str:
        if self.f.target_vocab is not None:  # each stack's own table (FSMT)
            return f"{self.prefix(side)}.embed_tokens.weight"
        return self.f.shared_key or ("shared.weight" if self.t5 else "model.shared.weight")

    def aliases(self) -> list[str]:  # tied copies a checkpoint may store
        if self.f.target_vocab is not None:
            return []
        return [key for key in (f"{self.prefix(s)}.embed_tokens.weight" for s in ("encoder", "decoder"))
                if key != self.embed()]

    def sublayer(self, side: str, i: int, role: str) -> str:
        p = self.prefix(side)
        if self.t5:
            j = {"self": 0, "cross": 1, "mlp": 1 if side == "encoder" else 2}[role]
            return f"{p}.block.{i}.layer.{j}"
        return f"{p}.layers.{i}"

    def attention(self, side: str, i: int, role: str) -> tuple[list[str], str]:
        """Names (without .weight) of q, k, v and the output projection."""
        base = self.sublayer(side, i, role)
        if self.t5:
            a = f"{base}.{'SelfAttention' if role == 'self' else 'EncDecAttention'}"
            return [f"{a}.q", f"{a}.k", f"{a}.v"], f"{a}.o"
        a = f"{base}.{'self_attn' if role == 'self' else 'encoder_attn'}"
        return [f"{a}.q_proj", f"{a}.k_proj", f"{a}.v_proj"], f"{a}.out_proj"

    def mlp(self, side: str, i: int) -> tuple[list[str], str]:
        if self.t5:
            base = f"{self.sublayer(side, i, 'mlp')}.{self.f.mlp_module}"
            return ([f"{base}.wi_0", f"{base}.wi_1"] if self.f.gated else [f"{base}.wi"]), f"{base}.wo"
        base = self.sublayer(side, i, "mlp")
        return [f"{base}.fc1"], f"{base}.fc2"

    def norm(self, side: str, i: int | None, role: str) -> str:
        p = self.prefix(side)
        if i is None:
            return {"embed_norm": f"{p}.layernorm_embedding", "final_norm": f"{p}.final_layer_norm" if self.t5
                    else f"{p}.layer_norm"}[role]
        if self.t5:
            return f"{self.sublayer(side, i, role[:-len('_norm')])}.layer_norm"
        return f"{p}.layers.{i}." + {"self_norm": "self_attn_layer_norm", "cross_norm": "encoder_attn_layer_norm",
                                     "mlp_norm": "final_layer_norm"}[role]

    def positions(self, side: str) -> str:
        return f"{self.prefix(side)}.embed_positions.weight"

    def relative(self, side: str, i: int | None = None) -> str:
        """The stack's bias (T5: in block 0), or layer i's own (UMT5)."""
        return f"{self.prefix(side)}.block.{i or 0}.layer.0.SelfAttention.relative_attention_bias.weight"


# tensors a checkpoint may carry that hold no parameter of the model
_IGNORED_SUFFIXES = ("EncDecAttention.relative_attention_bias.weight",)


def map_seq2seq(f: Seq2SeqFeatures, tensors: dict[str, Callable[[], Any]], model: Any,
                owned: bool = False) -> dict[str, Any]:
    """archdsl parameter name -> tensor, for every parameter of `model`; raises naming what does not map."""
    import torch

    from ..blocks.attention import Attention, CrossAttention
    from ..blocks.embedding import Embedding, LearnedPositional, RelativePositionBias, SinusoidalPositional
    from ..blocks.feedforward import MLP, MoE
    from ..blocks.heads import LMHead

    from .hf import _Sink

    names = _Names(f)
    used: set[str] = set()
    out: dict[str, Any] = _Sink(model, owned)  # puts each tensor into the model as it goes
    errors: list[str] = []

    def get(key: str) -> Any:
        if key not in tensors:
            errors.append(f"no tensor {key} in the checkpoint")
            return None
        used.add(key)
        return tensors[key]()

    def linear(module_name: str, keys: list[str], bias: bool) -> None:
        ws = [get(k + ".weight") for k in keys]
        if any(w is None for w in ws):
            return
        out[f"{module_name}.weight"] = torch.cat(ws) if len(ws) > 1 else ws[0]
        has = [k + ".bias" in tensors for k in keys]
        if bias:
            bs = [get(k + ".bias") for k in keys]
            if all(b is not None for b in bs):
                out[f"{module_name}.bias"] = torch.cat(bs) if len(bs) > 1 else bs[0]
        elif any(has):
            errors.append(f"the checkpoint has biases for {keys[0]} that the spec lacks")

    def norm(module_name: str, module: Any, key: str) -> None:
        w = get(key + ".weight")
        if w is not None:
            out[f"{module_name}.weight"] = w
        if getattr(module, "bias", None) is not None:
            b = get(key + ".bias")
            if b is not None:
                out[f"{module_name}.bias"] = b
        elif key + ".bias" in tensors:
            errors.append(f"the checkpoint has a bias {key}.bias that the spec's norm lacks")

    for name, side, i, role in _roles(model):
        module = model.get_submodule(name)
        if role in ("self", "cross", "mlp", "self_norm", "cross_norm", "mlp_norm") and i is None:
            errors.append(f"{name}: a {role} outside the repeated layers has no Hugging Face counterpart")
            continue
        if isinstance(module, Embedding):
            if not module.tied:
                out[f"{name}.weight"] = get(names.embed(side))
        elif isinstance(module, LearnedPositional):
            out[f"{name}.weight"] = get(names.positions(side))
        elif isinstance(module, SinusoidalPositional):  # computed; a stored table must be the one computed
            key = names.positions(side)
            if key in tensors:
                used.add(key)
                if sinusoid_spacing(tensors[key]()) != module.spacing:
                    errors.append(f"{key} is not the sinusoidal table the spec computes")
        elif isinstance(module, RelativePositionBias):
            out[f"{name}.weight"] = get(names.relative(side, i))
        elif isinstance(module, CrossAttention):
            (q, k, v), o = names.attention(side, i, "cross")  # type: ignore[arg-type]
            linear(f"{name}.q", [q], module.q.bias is not None)
            linear(f"{name}.kv", [k, v], module.kv.bias is not None)
            linear(f"{name}.out", [o], module.out.bias is not None)
        elif isinstance(module, Attention):
            qkv, o = names.attention(side, i, "self")  # type: ignore[arg-type]
            linear(f"{name}.qkv", qkv, module.qkv.bias is not None)
            linear(f"{name}.out", [o], module.out.bias is not None)
        elif isinstance(module, MoE):  # Switch Transformers' router and experts, each expert stacked
            base = f"{names.sublayer(side, i, 'mlp')}.mlp"  # type: ignore[arg-type]
            linear(f"{name}.router", [f"{base}.router.classifier"], module.router.bias is not None)
            for ours, theirs in (("up", "wi"), ("down", "wo")):
                parts = [get(f"{base}.experts.expert_{e}.{theirs}.weight") for e in range(module.num_experts)]
                if all(p is not None for p in parts):
                    out[f"{name}.experts.{ours}"] = torch.stack(parts)
        elif isinstance(module, MLP):
            up, down = names.mlp(side, i)  # type: ignore[arg-type]
            if module.gated != (len(up) == 2):
                errors.append(f"{name}: the spec's feed-forward is {'' if module.gated else 'not '}gated, the "
                              "checkpoint's is the other way")
                continue
            linear(f"{name}.up", up, module.up.bias is not None)
            linear(f"{name}.down", [down], module.down.bias is not None)
        elif role.endswith("_norm") and role != "unknown_norm":
            norm(name, module, names.norm(side, i, role))
        elif isinstance(module, LMHead):
            key, table = f.head_key, names.embed("decoder")
            if module.tied:
                if key in tensors:  # a stored tied copy must equal the embedding
                    used.add(key)
                    if not torch.equal(tensors[key](), tensors[table]()):
                        errors.append(f"the spec ties the head to the embedding but {key} differs from it")
            elif key in tensors:
                out[f"{name}.weight"] = get(key)
            else:  # a checkpoint of a tied model stores the shared table only
                out[f"{name}.weight"] = get(table).clone()
            if module.bias is not None:
                errors.append(f"{name}: a head bias has no Hugging Face counterpart here")
        elif any(True for _ in module.parameters(recurse=False)):
            errors.append(f"{name}: a {role} has no Hugging Face counterpart in a '{f.model_type}' model")
    for alias in names.aliases():  # tied copies of the shared embedding
        if alias in tensors:
            used.add(alias)
            if not torch.equal(tensors[alias](), tensors[names.embed()]()):
                errors.append(f"{alias} differs from {names.embed()}; the spec shares one table")
    if "final_logits_bias" in tensors:  # BART's logit bias: a buffer, zero in every released checkpoint
        used.add("final_logits_bias")
        if bool(tensors["final_logits_bias"]().ne(0).any()):
            errors.append("final_logits_bias is not zero; the spec's head has no bias")
    unused = sorted(k for k in tensors if k not in used and not k.endswith(_IGNORED_SUFFIXES))
    if unused:
        shown = ", ".join(unused[:8]) + (f" and {len(unused) - 8} more" if len(unused) > 8 else "")
        errors.append(f"checkpoint tensors the spec does not use: {shown}")
    if errors:
        raise ValueError("cannot map the checkpoint onto the archdsl spec:\n  " + "\n  ".join(errors))
    return out


def verify_seq2seq(hf_model: Any, model: Any, length: int = 8) -> None:
    """Raise if the converted model's logits differ from the original's on a random source/target."""
    import torch

    first = next(model.parameters())
    g = torch.Generator().manual_seed(0)
    vocab = _token_range(hf_model)
    src = torch.randint(0, vocab, (1, length), generator=g).to(first.device)
    tgt = torch.randint(0, vocab, (1, length), generator=g).to(first.device)
    was_training = hf_model.training
    hf_model.eval()
    with torch.no_grad():
        ours = model(src, decoder_tokens=tgt).float()
        theirs = hf_model(input_ids=src, decoder_input_ids=tgt, use_cache=False).logits.float()
    hf_model.train(was_training)
    diff = (ours - theirs).abs().max().item()
    tol = (1e-4 if first.dtype in (torch.float32, torch.float64) else 5e-2) * max(1.0, theirs.abs().max().item())
    if not diff <= tol:
        raise ValueError(f"the converted '{hf_model.config.model_type}' model differs from the original: logits "
                         f"differ by up to {diff:.3g} (tolerance {tol:.3g})")


__all__ = ["SEQ2SEQ_FAMILIES", "Seq2SeqFeatures", "is_seq2seq", "seq2seq_features", "seq2seq_yaml", "map_seq2seq",
           "verify_seq2seq"]
