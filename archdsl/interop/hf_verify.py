"""Check a spec made from a Hugging Face config against the transformers model of that config.

`spec_from_config` and `archdsl import-hf` read a config into features; a family whose modelling
code does something its config does not state (GLM-4's extra norms, GPT-Neo's ungated MLP) would
otherwise become a spec of a different model without a word. So whenever transformers can build
the model of the config, :func:`check` builds it on the ``meta`` device (no memory; about 0.04 s
for a 70B config once its modelling code is imported) together with the compiled archdsl model,
and compares their parameters role by role: the embedding, each layer's attention, feed-forward
and norms, the final norm and the head. The first role that differs is named with both sides'
tensors and shapes, e.g.

    layer 0 attention: archdsl has biases on q/k/v and o, transformers on q/k/v only
    (archdsl: qkv.weight (4608, 4096), qkv.bias (4608,), out.weight (4096, 4096), out.bias (4096,) ...)

Within a role, tensors are compared in a layout-free form, so that archdsl's fused ``qkv`` equals
separate q/k/v projections and a gated ``up`` equals gate and up projections: the number of
parameters, the number held in vectors (biases and norms), and for each input width the rows
that read it (a weight (out, in); GPT-2's Conv1D weights (in, out) are turned round). Equal
roles everywhere means equal parameter counts; the weights themselves are checked by
``from_hf`` / ``from_pretrained``, which map every tensor.
"""
from __future__ import annotations

import copy
import re
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from ..errors import ErrorItem, Loc, SpecError

__all__ = ["Verdict", "UnverifiedSpecWarning", "check", "transformers_model_on_meta"]


class UnverifiedSpecWarning(UserWarning):
    """A spec made from a config could not be compared with the transformers model of that config."""


@dataclass
class Verdict:
    """The outcome of :func:`check`: ``verified`` when every role matched; else ``reason`` says why
    no comparison was possible (transformers missing, or unable to build this config)."""

    verified: bool
    reason: str = ""
    model_class: str = ""
    parameters: int = 0
    by_role: bool = True  # compared role by role; False: by the parameter total (the importer maps every tensor)


# where a transformers parameter sits inside a layer, by the name of the layer's child module
_ATTN = ("self_attn", "attn", "attention", "self_attention", "SelfAttention", "multi_head_attention")
_FF = ("mlp", "feed_forward", "ffn", "block_sparse_moe", "moe", "fc1", "fc2")  # OPT: fc1/fc2 in the layer itself
_LAYER = re.compile(r"^(?:.*\.)?(?:layers|h|blocks)\.(\d+)\.(.+)$")
_TOP_ROLES = {
    "embedding": ("embed_tokens", "wte", "embed_in", "word_embeddings", "tokens_embed", "w"),  # CTRL's w
    "positions": ("wpe", "embed_positions", "positions_embed"),
    "embedding norm": ("word_embeddings_layernorm",),
    # LFM2 calls its final norm embedding_norm (it runs after the layers)
    "final norm": ("norm", "ln_f", "final_layer_norm", "final_layernorm", "norm_f", "embedding_norm", "layernorm"),
    "head": ("lm_head", "embed_out"),
}
# archdsl layout roles (_Mapper.layout) -> the role names shared with transformers'
_OUR_ROLES = {"attention": "attention", "latent_attention": "attention", "mlp": "feed-forward",
              "moe": "feed-forward", "embedding": "embedding", "positional": "positions", "embed_norm": "embedding norm",
              "final": "final norm", "lm_head": "head"}
_ORDER = ["embedding", "positions", "embedding norm", "attention", "feed-forward", "norms", "final norm", "head"]

# the sub-projections of an attention, by module name, for the bias message
_PROJ = {"q_proj": "q", "query": "q", "k_proj": "k", "key": "k", "v_proj": "v", "value": "v", "qkv": "q/k/v",
         "qkv_proj": "q/k/v", "c_attn": "q/k/v", "query_key_value": "q/k/v", "Wqkv": "q/k/v", "out": "o",
         "o_proj": "o", "out_proj": "o", "c_proj": "o", "dense": "o"}


def transformers_model_on_meta(cfg: Any) -> Any:
    """The transformers model of a config on the meta device (the class that spec_from_config describes)."""
    import torch
    import transformers

    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES)

    from . import hf_encoder, hf_seq2seq, hf_vision

    model_type = getattr(cfg, "model_type", None)
    if hf_encoder.is_encoder(cfg):  # its masked-LM (or causal-LM, or bare) class, as hf_encoder reads it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.device("meta"):
                return hf_encoder.model_class(cfg)._from_config(copy.deepcopy(cfg))
    if hf_seq2seq.is_seq2seq(cfg):
        auto: Any = transformers.AutoModelForSeq2SeqLM
    elif model_type in hf_vision.VISION_MODEL_TYPES:
        auto = transformers.AutoModelForImageClassification if hf_vision._is_classifier(cfg) else transformers.AutoModel
    elif model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        auto = transformers.AutoModelForMaskedLM  # a masked LM laid out as a decoder (EuroBERT)
    else:
        auto = transformers.AutoModelForCausalLM
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.device("meta"):
            return auto.from_config(copy.deepcopy(cfg))  # some models change the config they are given


def check(cfg: Any, spec: Any) -> Verdict:
    """Compare ``spec`` with the transformers model of ``cfg``, role by role, on the meta device.

    Raises SpecError (at the config file) naming the first role that differs and both sides'
    shapes. Returns an unverified Verdict when transformers is missing or cannot build the config.
    """
    try:
        import transformers
    except ImportError:
        return Verdict(False, "transformers is not installed, so the spec was not compared with the model "
                              "(pip install 'archdsl[hf]')")
    if not isinstance(cfg, transformers.PretrainedConfig) or type(cfg) is transformers.PretrainedConfig:
        return Verdict(False, f"transformers {transformers.__version__} has no model for model_type "
                              f"'{getattr(cfg, 'model_type', None)}'")
    try:
        theirs = transformers_model_on_meta(cfg)
    except Exception as exc:  # an Auto class without this config, or modelling code that cannot run on meta
        message = " ".join(str(exc).split())[:300] or type(exc).__name__
        return Verdict(False, f"transformers {transformers.__version__} cannot build this "
                              f"'{cfg.model_type}' config ({message})")
    from ..compiler import compile_spec

    ours = compile_spec(spec, device="meta")
    name = type(theirs).__name__
    # a parameter transformers keeps fixed (requires_grad False: Marian's sinusoid table) archdsl computes
    total_ours, total_theirs = ours.num_parameters(), sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    head = getattr(theirs, "lm_head", None)
    ours_untied = any(n.endswith("lm_head.weight") for n, _ in ours.named_parameters())
    if ours.stack_inputs is not None and ours_untied and head is not None and \
            head.weight is theirs.get_input_embeddings().weight:
        total_theirs += head.weight.numel()  # transformers 5 ties T5 v1.1's and mT5's heads, stored apart in checkpoints
    by_role = _is_decoder(ours) and _roles_known(ours) and not ours.graph.graph.get("memories")
    if by_role:
        difference = _first_difference(_our_roles(ours), _their_roles(theirs))
    else:  # T5, BART (and its decoder alone), ViT, state-space and linear-recurrent mixers: their mappers check
        # the layout; here the totals
        difference = None
    if difference is None and total_ours != total_theirs:
        difference = "the total"
    if difference is not None:
        source = getattr(cfg, "_archdsl_source", None) or f"<{cfg.model_type} config>"
        raise SpecError([ErrorItem.at(
            Loc(source), "model_type",
            f"the spec made from this '{cfg.model_type}' config is not transformers' {name} of the same config "
            f"(archdsl {total_ours:,} parameters, transformers {total_theirs:,}): {difference}",
            "its modelling code does something the config does not state, which archdsl does not know for this "
            "family; --no-verify (verify=False) writes the spec anyway")])
    return Verdict(True, model_class=name, parameters=total_theirs, by_role=by_role)


# ---------------------------------------------------------------------------------------- roles
Role = tuple[int | None, str]  # (layer or None, role name)
Tensors = list[tuple[str, tuple[int, ...]]]  # (name inside the role's module, shape as (out, ..., in))


def _is_decoder(model: Any) -> bool:
    return model.stack_inputs is None and "image" not in model.graph.graph["inputs"]


def _roles_known(model: Any) -> bool:
    """True when every block of the model has a role the comparison knows (attention, feed-forward,
    embeddings, norms, head); a model with other mixers (Mamba, gated DeltaNet, ...) is compared by
    its total, its own importer mapping the rest."""
    from .hf import _Mapper

    layout = _Mapper(None, None, model).layout()  # type: ignore[arg-type]
    return all(role in _OUR_ROLES or role.endswith("norm") or not model.graph.nodes[node].get("params")
               for node, (_, role) in layout.items())


def _our_roles(model: Any) -> dict[Role, Tensors]:
    from .hf import _Mapper

    layout = _Mapper(None, None, model).layout()  # type: ignore[arg-type]
    roles: dict[Role, Tensors] = defaultdict(list)
    for name, p in model.named_parameters():
        parts = name.split(".")  # the owner: the longest module path in the layout that the name starts with
        owner = next((path for path in (".".join(parts[:k]) for k in range(len(parts) - 1, 0, -1)) if path in layout),
                     None)
        if owner is None:
            roles[(None, f"other ({name})")].append((name, tuple(p.shape)))
            continue
        i, role = layout[owner]
        role = _OUR_ROLES.get(role, "norms" if role.endswith("norm") else role)
        roles[(i, role)].append((owner.rsplit(".", 1)[-1] + name[len(owner):], tuple(p.shape)))  # attn_norm.weight
    return roles


def _their_roles(model: Any) -> dict[Role, Tensors]:
    conv1d = {n for n, m in model.named_modules() if type(m).__name__ == "Conv1D"}  # GPT-2 stores (in, out)
    from .hf_probe import is_transposed_experts

    width = getattr(model.config, "hidden_size", None)  # GPT-OSS's experts, Llama 4's: (experts, in, out)
    transposed = {n for n, m in model.named_modules() if is_transposed_experts(m, width)}
    roles: dict[Role, Tensors] = defaultdict(list)
    experts_in = {int(m.group(1)) for m in (_LAYER.match(n) for n, _ in model.named_parameters())
                  if m and ".experts." in "." + m.group(2)}  # layers whose feed-forward routes to experts
    for name, p in model.named_parameters():
        shape = tuple(p.shape)
        if name.endswith(("e_score_correction_bias", "expert_bias")) and not p.requires_grad:
            continue  # a frozen parameter (ERNIE 4.5's, AFMoE's): archdsl's score_bias buffer
        if name.rsplit(".", 1)[0] in conv1d and len(shape) == 2:
            shape = shape[::-1]
        if name.rsplit(".", 1)[0] in transposed and len(shape) == 3:  # (experts, in, out)
            shape = (shape[0], shape[2], shape[1])
        m = _LAYER.match(name)
        if m:
            child, owner = m.group(2).split(".")[0], m.group(2).split(".")[-2] if "." in m.group(2) else ""
            if child in _FF and "norm" in owner and int(m.group(1)) in experts_in:  # of the experts' output (AX K1)
                child = owner
            role = "attention" if child in _ATTN else "feed-forward" if child in _FF else \
                "norms" if "norm" in child or child.startswith("ln") else f"other ({child})"
            roles[(int(m.group(1)), role)].append((m.group(2), shape))
            continue
        parts = name.split(".")
        module = parts[-2] if len(parts) > 1 else parts[0]
        role = next((r for r, names in _TOP_ROLES.items() if module in names), f"other ({name})")
        roles[(None, role)].append((parts[-2] + "." + parts[-1] if len(parts) > 1 else name, shape))
    return roles


def _sort_key(role: Role) -> tuple:
    i, name = role
    rank = _ORDER.index(name) if name in _ORDER else len(_ORDER)
    phase = 0 if i is None and rank < 3 else 2 if i is None else 1
    return (phase, i if i is not None else 0, rank, name)


def _signature(tensors: Tensors) -> tuple:
    """A layout-free form: parameters, parameters in vectors, and per input width the rows reading it."""
    rows: Counter = Counter()
    for _, shape in tensors:
        if len(shape) >= 2:
            n = 1
            for d in shape[:-1]:
                n *= d
            rows[shape[-1]] += n
    total = sum(_numel(s) for _, s in tensors)
    vectors = sum(_numel(s) for _, s in tensors if len(s) < 2)
    return total, vectors, tuple(sorted(rows.items()))


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _first_difference(ours: dict[Role, Tensors], theirs: dict[Role, Tensors]) -> str | None:
    for role in sorted(set(ours) | set(theirs), key=_sort_key):
        a, b = ours.get(role, []), theirs.get(role, [])
        if _signature(a) != _signature(b):
            i, name = role
            where = f"layer {i} {name}" if i is not None else name
            return f"{where}: {_headline(name, a, b)} (archdsl: {_listing(a)}; transformers: {_listing(b)})"
    return None


def _biases(tensors: Tensors) -> set[str]:
    out = set()
    for name, _ in tensors:
        parts = name.split(".")
        if parts[-1] == "bias" and len(parts) > 1 and parts[-2] in _PROJ:
            out.update(_PROJ[parts[-2]].split("/"))
    return out


def _bias_text(parts: set[str], only: bool = False) -> str:
    qkv = [p for p in "qkv" if p in parts]
    words = (["/".join(qkv)] if qkv else []) + (["o"] if "o" in parts else [])
    return "biases on " + " and ".join(words) + (" only" if only else "") if words else "no biases"


def _headline(role: str, ours: Tensors, theirs: Tensors) -> str:
    if role == "attention":
        a, b = _biases(ours), _biases(theirs)
        if a != b:
            return f"archdsl has {_bias_text(a)}, transformers has {_bias_text(b, only=bool(b) and b < a)}"
    if not ours:
        return f"archdsl has no such parameters, transformers has {_count(theirs)}"
    if not theirs:
        return f"archdsl has {_count(ours)}, transformers has none"
    return f"archdsl has {_count(ours)}, transformers {_count(theirs)}"


def _count(tensors: Tensors) -> str:
    n = sum(_numel(s) for _, s in tensors)
    return f"{len(tensors)} tensor{'s' if len(tensors) != 1 else ''} of {n:,} parameters"


def _listing(tensors: Tensors, limit: int = 8) -> str:
    """name (shape) of each tensor; numbered copies (experts.0, experts.1, ...) folded into one entry."""
    if not tensors:
        return "none"
    folded: Counter = Counter()
    for name, shape in tensors:
        folded[(re.sub(r"\.\d+\.", ".*.", name), shape)] += 1
    items = [f"{n} × {name} {shape}" if n > 1 else f"{name} {shape}" for (name, shape), n in folded.items()]
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")
