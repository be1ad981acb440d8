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

import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable

SEQ2SEQ_FAMILIES = ("t5", "bart")


def is_seq2seq(cfg: Any) -> bool:
    """A config this module converts (an encoder-decoder of a supported family)."""
    return bool(getattr(cfg, "is_encoder_decoder", False)) and str(getattr(cfg, "model_type", "")) in SEQ2SEQ_FAMILIES


@dataclass
class Seq2SeqFeatures:
    model_type: str
    name: str
    architectures: list[str]
    vocab: int
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
    max_len: int | None = None
    offset: int = 0
    embed_norm: bool = False
    final_norm: bool = True
    embed_scale: bool = False
    bias: bool = False
    attn_scale: float | None = None
    tie: bool = True
    head_scale: bool = False
    padding_idx: int | None = None
    dropout: float = 0.0
    attn_dropout: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def gated(self) -> bool:
        return self.activation in ("swiglu", "geglu")


def seq2seq_features(cfg: Any) -> Seq2SeqFeatures:
    from .hf import _ACTIVATIONS, _GATED, _spec_name, _unsupported

    model_type = str(cfg.model_type)
    common = dict(model_type=model_type, name=_spec_name(cfg), architectures=list(getattr(cfg, "architectures", None) or []),
                  vocab=int(cfg.vocab_size), width=int(cfg.d_model))
    if model_type == "t5":
        proj = str(cfg.feed_forward_proj)
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
        # transformers 5 keeps the config's tie_word_embeddings as scale_decoder_outputs (and forces the tie)
        tied = bool(getattr(cfg, "scale_decoder_outputs", getattr(cfg, "tie_word_embeddings", True)))
        return Seq2SeqFeatures(
            **common, encoder_layers=int(cfg.num_layers), decoder_layers=int(cfg.num_decoder_layers or cfg.num_layers),
            heads=int(cfg.num_heads), head_dim=int(cfg.d_kv), ffn=int(cfg.d_ff), activation=activation,
            norm="rmsnorm", eps=float(cfg.layer_norm_epsilon), arrangement="pre", positional="relative",
            buckets=int(cfg.relative_attention_num_buckets), max_distance=int(cfg.relative_attention_max_distance),
            final_norm=True, bias=False, attn_scale=1.0, tie=tied, head_scale=tied,
            dropout=float(cfg.dropout_rate), attn_dropout=float(cfg.dropout_rate))
    # bart
    if cfg.encoder_attention_heads != cfg.decoder_attention_heads or cfg.encoder_ffn_dim != cfg.decoder_ffn_dim:
        raise _unsupported(cfg, "decoder_attention_heads", "different head counts or feed-forward widths in the "
                           "encoder and the decoder", "the imported spec shares one layer shape; write the spec by hand")
    act_name = cfg.activation_function
    if act_name not in _ACTIVATIONS:
        raise _unsupported(cfg, "activation_function", f"activation '{act_name}'")
    for key in ("add_final_layer_norm", "normalize_before", "add_bias_logits"):
        if getattr(cfg, key, False):
            raise _unsupported(cfg, key, f"{key} (mBART-style variants are not mapped)")
    return Seq2SeqFeatures(
        **common, encoder_layers=int(cfg.encoder_layers), decoder_layers=int(cfg.decoder_layers),
        heads=int(cfg.encoder_attention_heads), head_dim=int(cfg.d_model) // int(cfg.encoder_attention_heads),
        ffn=int(cfg.encoder_ffn_dim), activation=_ACTIVATIONS[act_name], norm="layernorm", eps=1e-5,
        arrangement="post", positional="learned", max_len=int(cfg.max_position_embeddings), offset=2,
        embed_norm=True, final_norm=False, embed_scale=bool(getattr(cfg, "scale_embedding", False)), bias=True,
        tie=bool(getattr(cfg, "tie_word_embeddings", True)), padding_idx=getattr(cfg, "pad_token_id", None),
        dropout=float(cfg.dropout or 0.0), attn_dropout=float(cfg.attention_dropout or 0.0))


# ---------------------------------------------------------------------------------------- YAML
def _describe(f: Seq2SeqFeatures) -> str:
    from .hf import _ACT_NAMES

    norm = "RMSNorm without mean or bias" if f.norm == "rmsnorm" else "LayerNorm"
    parts = [f"encoder-decoder ({f.encoder_layers} + {f.decoder_layers} layers), "
             f"{'pre' if f.arrangement == 'pre' else 'post'}-norm {norm} (eps {f.eps:g})"]
    if f.positional == "relative":
        parts.append(f"relative position bias ({f.buckets} buckets up to distance {f.max_distance}) per stack")
    else:
        parts.append(f"learned positions ({f.max_len}" + (f", offset {f.offset})" if f.offset else ")"))
    attn = f"{f.heads} heads of {f.head_dim}" + ("" if f.bias else ", no biases")
    if f.attn_scale == 1.0:
        attn += ", unscaled scores"
    parts.append(attn)
    parts.append(f"{_ACT_NAMES[f.activation]} feed-forward (hidden {f.ffn})")
    if f.embed_norm:
        parts.append("LayerNorm on the embeddings")
    if f.embed_scale:
        parts.append("embeddings scaled by sqrt(d_model)")
    parts.append("one embedding table for both stacks" + (", tied head" if f.tie else ", untied head"))
    if f.head_scale:
        parts.append("head input scaled by d_model^-0.5")
    arch = f" ({', '.join(f.architectures)})" if f.architectures else ""
    return f"Imported from a Hugging Face '{f.model_type}' config{arch}: " + "; ".join(parts) + "."


def seq2seq_yaml(f: Seq2SeqFeatures) -> str:
    from .hf import _args, _scalar

    v: dict[str, Any] = {"vocab": f.vocab}
    if f.positional == "learned":
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

    named = f.model_type == "bart"  # BART's module names read like Hugging Face's
    enc_self = attention(**({"name": "self_attn"} if named else {}))
    dec_self = attention(causal="true", **({"name": "self_attn"} if named else {}))
    dec_cross = attention(cross="encoder", **({"name": "encoder_attn"} if named else {}))
    encoder_layer = sublayer(enc_self, "self_attn_layer_norm") + sublayer(f"mlp: {_args(mlp)}", "final_layer_norm")
    decoder_layer = (sublayer(dec_self, "self_attn_layer_norm") + sublayer(dec_cross, "encoder_attn_layer_norm")
                     + sublayer(f"mlp: {_args(mlp)}", "final_layer_norm"))

    def stack(name: str, decoder: bool) -> list[str]:
        embed = [("name", "shared" if not decoder else "embed_tokens"), ("vocab", "$vocab")]
        if f.padding_idx is not None:
            embed.append(("padding_idx", _scalar(f.padding_idx)))
        if decoder:
            embed.append(("tie", "shared"))
        if f.embed_scale:
            embed.append(("scale", '"${d_model ** 0.5}"'))
        lines = [f"    {name}:", "      width: $d_model"] + (["      input: decoder_tokens"] if decoder else [])
        lines += ["      layers:", f"        - embedding: {_args(embed)}"]
        body: list[str] = []
        if f.positional == "learned":
            pos = [("kind", "learned"), ("max_len", "$context")] + ([("offset", str(f.offset))] if f.offset else [])
            body.append(f"- positional: {_args(pos + [('name', 'embed_positions')])}")
        if f.embed_norm:
            body.append(f"- {f.norm}: {_args([('eps', '$eps'), ('name', 'layernorm_embedding')])}")
        body += drop
        if f.positional == "relative":
            pos = [("kind", "relative"), ("heads", "$heads"), ("buckets", "$buckets"), ("max_distance", "$max_distance"),
                   ("name", "relative_bias")]
            body.append(f"- positional: {_args(pos)}")
        layers = "$decoder_layers" if decoder and "decoder_layers" in v else "$layers"
        body += [f"- repeat: {layers}", f"  name: {'block' if f.model_type == 't5' else 'layers'}",
                 f"  body: {'decoder_layer' if decoder else 'encoder_layer'}"]
        if f.final_norm:
            body.append(f"- {f.norm}: {_args([('eps', '$eps'), ('name', 'final_layer_norm')])}")
            body += drop
        if decoder:
            head = [("vocab", "$vocab")] + ([("tie", "shared")] if f.tie else [])
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
            if k in ("attention", "mlp"):
                role = block_role(node)
                if i is not None:
                    previous[i] = role
            elif k in ("layernorm", "rmsnorm"):
                if i is None:
                    role = "final_norm" if seen_layer else "embed_norm"
                else:
                    parent = data["parent"]
                    sibling = next((n for n in order if g.nodes[n]["parent"] == parent
                                    and g.nodes[n]["kind"] in ("attention", "mlp")), None)
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
        self.t5 = f.model_type == "t5"

    def prefix(self, side: str) -> str:
        return side if self.t5 else f"model.{side}"

    def embed(self) -> str:
        return "shared.weight" if self.t5 else "model.shared.weight"

    def aliases(self) -> list[str]:  # tied copies a checkpoint may store
        return [f"{self.prefix(s)}.embed_tokens.weight" for s in ("encoder", "decoder")]

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
            base = f"{self.sublayer(side, i, 'mlp')}.DenseReluDense"
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

    def relative(self, side: str) -> str:
        return f"{self.prefix(side)}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"


# tensors a checkpoint may carry that hold no parameter of the model
_IGNORED_SUFFIXES = ("EncDecAttention.relative_attention_bias.weight",)


def map_seq2seq(f: Seq2SeqFeatures, tensors: dict[str, Callable[[], Any]], model: Any,
                owned: bool = False) -> dict[str, Any]:
    """archdsl parameter name -> tensor, for every parameter of `model`; raises naming what does not map."""
    import torch

    from ..blocks.attention import Attention, CrossAttention
    from ..blocks.embedding import Embedding, LearnedPositional, RelativePositionBias
    from ..blocks.feedforward import MLP
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
                out[f"{name}.weight"] = get(names.embed())
        elif isinstance(module, LearnedPositional):
            out[f"{name}.weight"] = get(names.positions(side))
        elif isinstance(module, RelativePositionBias):
            out[f"{name}.weight"] = get(names.relative(side))
        elif isinstance(module, CrossAttention):
            (q, k, v), o = names.attention(side, i, "cross")  # type: ignore[arg-type]
            linear(f"{name}.q", [q], module.q.bias is not None)
            linear(f"{name}.kv", [k, v], module.kv.bias is not None)
            linear(f"{name}.out", [o], module.out.bias is not None)
        elif isinstance(module, Attention):
            qkv, o = names.attention(side, i, "self")  # type: ignore[arg-type]
            linear(f"{name}.qkv", qkv, module.qkv.bias is not None)
            linear(f"{name}.out", [o], module.out.bias is not None)
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
            key = "lm_head.weight"
            if module.tied:
                if key in tensors:  # a stored tied copy must equal the embedding
                    used.add(key)
                    if not torch.equal(tensors[key](), tensors[names.embed()]()):
                        errors.append("the spec ties the head to the embedding but lm_head.weight differs from it")
            elif key in tensors:
                out[f"{name}.weight"] = get(key)
            else:  # a checkpoint of a tied model stores the shared table only
                out[f"{name}.weight"] = get(names.embed()).clone()
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
    src = torch.randint(0, model.vocab, (1, length), generator=g).to(first.device)
    tgt = torch.randint(0, model.vocab, (1, length), generator=g).to(first.device)
    was_training = hf_model.training
    hf_model.eval()
    with torch.no_grad():
        ours = model(src, decoder_tokens=tgt).float()
        theirs = hf_model(input_ids=src, decoder_input_ids=tgt).logits.float()
    hf_model.train(was_training)
    diff = (ours - theirs).abs().max().item()
    tol = (1e-4 if first.dtype in (torch.float32, torch.float64) else 5e-2) * max(1.0, theirs.abs().max().item())
    if not diff <= tol:
        raise ValueError(f"the converted '{hf_model.config.model_type}' model differs from the original: logits "
                         f"differ by up to {diff:.3g} (tolerance {tol:.3g})")


__all__ = ["SEQ2SEQ_FAMILIES", "Seq2SeqFeatures", "is_seq2seq", "seq2seq_features", "seq2seq_yaml", "map_seq2seq",
           "verify_seq2seq"]
