"""Torch modules for every node kind, and the one registry that maps a kind to its builder.

A builder receives the resolved IR node (its Pydantic spec, widths and context) and returns
a module; it is the only place where configuration becomes constructor arguments.
"""
from __future__ import annotations

from typing import Any, Callable

import networkx as nx
from torch import nn

from .attention import Attention, CrossAttention, LatentAttention
from .context import ForwardContext
from .embedding import (Embedding, LearnedPositional, PositionMarker, RelativePositionBias, Rotary,
                        RotaryScaling, SinusoidalPositional)
from .feedforward import MLP, Dropout, Linear, MoE, router_aux_loss
from .heads import LMHead, Pooler
from .norm import LayerNorm, RMSNorm
from .sequence import build_conv1d, build_recurrent
from .structure import Parallel, Residual, Sequence
from .vision import build_classifier, build_patch_embedding

Builder = Callable[[dict, nx.DiGraph, dict], nn.Module]


def _embedding(d: dict, g: nx.DiGraph, built: dict) -> nn.Module:
    s = d["spec"]
    tied = built[g.graph["embeddings"][s.tie]].weight if s.tie else None  # one table shared across stacks
    return Embedding(s.vocab, d["out_width"], input=s.input, scale=s.scale, padding_idx=s.padding_idx, tied=tied)


def _positional(d: dict, g: nx.DiGraph, built: dict) -> nn.Module:
    s, width = d["spec"], d["in_width"]
    if s.type == "learned":
        return LearnedPositional(s.max_len, width, s.offset)
    if s.type == "relative":
        return RelativePositionBias(d["id"], s.heads, s.buckets, s.max_distance)
    if s.type == "sinusoidal":
        return SinusoidalPositional(width)
    if s.type == "rotary":
        scaling = None if s.scaling == "none" else RotaryScaling(
            s.scaling, s.factor, s.low_freq_factor, s.high_freq_factor, s.original_max_len, s.beta_fast, s.beta_slow,
            s.attention_factor, s.truncate)
        return Rotary(d["id"], _rotary_dim(g, d["id"]), s.base, s.interleaved, scaling)
    return PositionMarker()


def _rotary_dim(g: nx.DiGraph, positional_id: str) -> int:
    """Rotated dims per head, from the head size of the attention layers this node governs."""
    for _, data in g.nodes(data=True):
        if data.get("positional") == positional_id:
            if data["kind"] == "latent_attention":  # only its rope_dim dims rotate
                return data["spec"].rope_dim
            _, _, head_dim = data["spec"].dims(data["in_width"])
            return int(head_dim * g.nodes[positional_id]["spec"].fraction)
    return 2  # governs no attention: any even size will do


def _attention(d: dict, g: nx.DiGraph, built: dict) -> nn.Module:
    s = d["spec"]
    heads, kv_heads, head_dim = s.dims(d["in_width"])
    out_bias = s.bias if s.out_bias is None else s.out_bias
    if s.cross:
        memory_width = next(e["width"] for _, _, e in g.in_edges(d["id"], data=True) if e["role"] == "memory")
        return CrossAttention(d["in_width"], memory_width, heads, kv_heads, head_dim, memory=s.cross,
                              dropout=s.dropout, bias=s.bias, out_bias=out_bias, scale=s.scale)
    pos = g.nodes[d["positional"]]["spec"] if d.get("positional") else None
    rotary = (d["positional"], pos.interleaved) if pos is not None and pos.type == "rotary" else None
    return Attention(d["in_width"], heads, kv_heads, head_dim, causal=s.causal, window=s.window, dropout=s.dropout,
                     bias=s.bias, out_bias=out_bias, scale=s.scale, rotary=rotary,
                     alibi=pos is not None and pos.type == "alibi",
                     relative=d["positional"] if pos is not None and pos.type == "relative" else None,
                     qk_norm_eps=s.qk_norm_eps if s.qk_norm else None, qk_norm_over=s.qk_norm_over,
                     qk_norm_unit_offset=s.qk_norm_unit_offset,
                     softcap=s.softcap)


def _latent_attention(d: dict, g: nx.DiGraph, built: dict) -> nn.Module:
    s = d["spec"]
    interleaved = g.nodes[d["positional"]]["spec"].interleaved  # the validator guarantees a rotary node governs it
    return LatentAttention(d["in_width"], s.heads, kv_rank=s.kv_rank, q_rank=s.q_rank, head_dim=s.head_dim,
                           rope_dim=s.rope_dim, v_dim=s.value_dim, causal=s.causal, dropout=s.dropout, bias=s.bias,
                           scale=s.scale, latent_eps=s.latent_eps, rotary=(d["positional"], interleaved))


def _lm_head(d: dict, g: nx.DiGraph, built: dict) -> nn.Module:
    s = d["spec"]
    tied = built[g.graph["embeddings"][s.tie]].weight if s.tie else None
    return LMHead(d["in_width"], s.vocab, s.bias, tied, s.scale, s.softcap)


BUILDERS: dict[str, Builder] = {
    "embedding": _embedding,
    "positional": _positional,
    "attention": _attention,
    "latent_attention": _latent_attention,
    "mlp": lambda d, g, b: MLP(d["in_width"], d["spec"].hidden, d["spec"].activation, d["spec"].bias,
                               d["spec"].dropout, d["spec"].gated),
    "moe": lambda d, g, b: MoE(d["in_width"], d["spec"].experts, d["spec"].top_k, d["spec"].hidden, d["spec"].activation,
                               d["spec"].bias, d["spec"].router_bias, d["spec"].normalize, d["spec"].jitter,
                               d["spec"].gated, d["spec"].aux_loss_coef, d["spec"].shared_hidden, d["spec"].shared_gate,
                               d["spec"].scoring, d["spec"].score_bias, d["spec"].groups, d["spec"].top_groups,
                               d["spec"].routed_scale, d["spec"].group_score, d["spec"].router_fp32),
    "linear": lambda d, g, b: Linear(d["in_width"], d["spec"].out, bias=d["spec"].bias),
    "dropout": lambda d, g, b: Dropout(d["spec"].p),
    "layernorm": lambda d, g, b: LayerNorm(d["in_width"], d["spec"].eps, d["spec"].bias),
    "rmsnorm": lambda d, g, b: RMSNorm(d["in_width"], d["spec"].eps, d["spec"].unit_offset),
    "lm_head": _lm_head,
    "pooler": lambda d, g, b: Pooler(d["in_width"], d["spec"].reduce, d["spec"].dense, d["spec"].activation),
    "conv1d": build_conv1d,
    "lstm": build_recurrent,
    "gru": build_recurrent,
    "patch_embedding": build_patch_embedding,
    "classifier": build_classifier,
    # composites: their children are built first and passed in `b` as (name, module) pairs
    "residual": lambda d, g, b: Residual(b["children"], d["spec"].scale),
    "parallel": lambda d, g, b: Parallel(b["children"]),
    "repeat": lambda d, g, b: Sequence(b["children"]),
    "layer": lambda d, g, b: Sequence(b["children"]),
    "stack": lambda d, g, b: Sequence(b["children"]),  # one stack of a graph model (encoder, decoder)
    "branch": lambda d, g, b: Sequence(b["children"]),
}

__all__ = ["BUILDERS", "ForwardContext", "Sequence", "router_aux_loss"]
