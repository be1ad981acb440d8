"""What a block sees: while it is built (:class:`BuildContext`) and on every forward
(:class:`ForwardContext`: positions, padding and the masks built from them).

The forward context is built once per call of the model; attention layers ask it for masks so
that a 24-layer model builds each distinct mask once, not 24 times.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class ForwardContext:
    positions: torch.Tensor  # (B, S) position ids of the current tokens
    key_padding: torch.Tensor | None = None  # (B, S_k) True where a real token sits
    token_type_ids: torch.Tensor | None = None  # (B, S)
    rope: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # positional id -> (cos, sin)
    pooled: torch.Tensor | None = None
    cache: Any = None  # archdsl.generate.KVCache during cached (incremental) decoding, else None
    # encoder-decoder graphs: stack name -> (its output (B, S_m, D), its key padding (B, S_m) or None),
    # read by cross-attention; and the relative position bias modules of this stack, by node id
    memory: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = field(default_factory=dict)
    relative: dict[str, Any] = field(default_factory=dict)
    # static (compiled) decoding: the keys are the cache's whole buffers, the first query sits at index
    # `query_start` ((1,) tensor) of them and `key_mask` (B, max_len) marks real keys; None otherwise
    query_start: torch.Tensor | None = None
    key_mask: torch.Tensor | None = None
    _masks: dict[Any, Any] = field(default_factory=dict)

    def sequence_index(self, q_len: int) -> torch.Tensor:
        """(q_len,) index of each current token in the whole sequence, padding included: 0.. without a cache,
        continuing the cached ones with one (Llama 4's query temperature counts these, not position ids)."""
        device = self.positions.device
        if self.query_start is not None:  # a static decoding step: the first query's index in the buffers
            return self.query_start.to(device) + torch.arange(q_len, device=device)
        start = self.cache.length if self.cache is not None else 0
        return torch.arange(start, start + q_len, device=device)

    def attention_mask(self, q_len: int, k_len: int, causal: bool, window: int | None,
                       alibi_slopes: torch.Tensor | None, dtype: torch.dtype,
                       relative: Any = None, chunk: int | None = None) -> tuple[torch.Tensor | None, bool]:
        """(attn_mask, is_causal) for scaled_dot_product_attention.

        Queries are the last q_len positions of the k_len keys (bottom-right aligned, as in
        cached decoding). The common cases (no padding, no window, no bias; full-sequence or
        one-token queries) return no mask at all so SDPA can use its fastest kernel. Otherwise a
        boolean keep-mask, or a float bias for ALiBi and for a relative position bias (`relative`:
        a RelativePositionBias module; its bias is computed once per forward and shared by every
        layer it governs). In a static decoding step there is always a mask, built from the query's
        position tensor: it also hides the buffer positions not written yet.
        """
        if self.query_start is None and self.key_padding is None and window is None and alibi_slopes is None and relative is None and (
                chunk is None or k_len <= chunk) and (not causal or q_len == k_len or q_len == 1):
            return None, causal and q_len == k_len  # one query at the end sees every key: no mask
        key = (q_len, k_len, causal, window, None if alibi_slopes is None else id(alibi_slopes),
               None if relative is None else id(relative), dtype, chunk)
        if key not in self._masks:
            self._masks[key] = self._build(q_len, k_len, causal, window, alibi_slopes, dtype, relative, chunk)
        return self._masks[key], False

    def memory_mask(self, name: str) -> torch.Tensor | None:
        """Boolean keep-mask (B, 1, 1, S_m) over the keys of stack `name`'s output, or None without padding."""
        padding = self.memory[name][1]
        if padding is None:
            return None
        key = ("memory", name)
        if key not in self._masks:
            keep = padding.bool()
            keep = keep | ~keep.any(dim=-1, keepdim=True)  # an all-padding row attends anywhere, never NaN
            self._masks[key] = keep[:, None, None, :]
        return self._masks[key]

    def _build(self, q_len, k_len, causal, window, slopes, dtype, relative=None, chunk=None):
        device = self.positions.device
        i = torch.arange(q_len, device=device)[:, None]  # query index in the key timeline
        i = i + (self.query_start if self.query_start is not None else k_len - q_len)
        j = torch.arange(k_len, device=device)[None, :]
        keep = torch.ones(q_len, k_len, dtype=torch.bool, device=device)
        if causal:
            keep = keep & (j <= i)
        elif self.query_start is not None:
            keep = keep & (j < self.query_start + q_len)  # the buffer beyond what is written holds no keys
        if window is not None:
            keep = keep & (i - j < window) & (j - i < window)
        keep = keep[None, None]  # (1, 1, Sq, Sk)
        padding = self.key_padding if self.query_start is None else self.key_mask
        if chunk is not None:  # aligned chunks counted from each row's first real token (Llama 4, left padding)
            first = padding.long().argmax(-1)[:, None, None, None] if padding is not None else 0
            keep = keep & (torch.div(i - first, chunk, rounding_mode="floor")
                           == torch.div(j - first, chunk, rounding_mode="floor"))
        if padding is not None:
            keep = keep & padding[:, None, None, :].bool()
        keep = keep | ~keep.any(dim=-1, keepdim=True)  # fully masked rows (padding queries) attend anywhere, never NaN
        if relative is not None:  # (1, H, Sq, Sk) learned bias of the bucketed distance j - i
            bias = relative.bias(j - i, causal)
            return bias.masked_fill(~keep, float("-inf")).to(dtype)
        if slopes is None:
            return keep
        distance = (j - i).to(torch.float32)
        distance = distance if causal else -distance.abs()
        bias = slopes.to(torch.float32)[None, :, None, None] * distance[None, None]  # (1, H, Sq, Sk)
        return bias.masked_fill(~keep, float("-inf")).to(dtype)


@dataclass
class BuildContext:
    """What a kind's builder receives: one resolved IR node, and what it may need of the rest of the
    graph (the modules built before it, for tied weights; the positional node that governs it).

    ``build(node: BuildContext) -> nn.Module`` is the one place where a kind's configuration becomes
    constructor arguments; the module's ``forward(x, ctx: ForwardContext)`` then maps the stream.
    """

    id: str  # the IR node id = the module's path in the compiled model (h.3.attention)
    spec: Any  # the kind's validated NodeSpec
    in_width: int | None
    out_width: int | None
    graph: Any  # the resolved block graph (networkx.DiGraph), see archdsl.ir
    built: dict[str, Any]  # node id -> module, for the nodes built so far
    children: list[tuple[str, Any]] = field(default_factory=list)  # composites: (name, module) of the body

    @property
    def data(self) -> dict:
        """The IR node's attributes (params, shapes, loc, copy, ...)."""
        return self.graph.nodes[self.id]

    @property
    def positional_id(self) -> str | None:
        """Id of the rotary/alibi/relative node that governs this node (see NodeSpec.uses_positional)."""
        return self.data.get("positional")

    @property
    def positional(self) -> Any:
        """The spec of that positional node, or None."""
        return self.graph.nodes[self.positional_id]["spec"] if self.positional_id else None

    def memory_width(self) -> int:
        """Width of the stack output this node reads (cross-attention's memory)."""
        edges = [e["width"] for _, _, e in self.graph.in_edges(self.id, data=True) if e["role"] == "memory"]
        return edges[0] if edges else self.graph.graph["memories"][self.spec.memory()]  # one the model is given

    def tied_weight(self) -> Any:
        """The weight Parameter of the embedding table this node shares (NodeSpec.tied_to), or None."""
        name = self.spec.tied_to()
        return self.built[self.graph.graph["embeddings"][name]].weight if name else None

    def layer_index(self) -> int | None:
        """Which repeated layer of its stack the node sits in (0, 1, ..., counting the layers of every
        top-level repeat in order, as checkpoints number them), or None outside repeats. For blocks
        whose initialisation or constants depend on depth (DIFF Transformer's lambda_init)."""
        from ..ir import layer_numbering

        stack = self._stack()
        numberings = self.graph.graph.setdefault("_layer_numbering", {})
        if stack not in numberings:
            numberings[stack] = layer_numbering(self.graph, stack)
        return numberings[stack](self.id)

    def layer_count(self) -> int:
        """How many repeated layers the node's stack has (what layer_index counts), e.g. for a constant
        that depends on the relative depth layer_index() / (layer_count() - 1) (MiniMax's decay rates)."""
        stack = self._stack()
        return sum(1 for n, d in self.graph.nodes(data=True)
                   if d["kind"] == "layer" and self.graph.nodes[d["parent"]].get("parent") == stack)

    def _stack(self) -> str:
        stack, parent = "model", self.data.get("parent")
        while parent is not None and parent != "model":
            if self.graph.nodes[parent]["kind"] == "stack":
                stack = parent
                break
            parent = self.graph.nodes[parent].get("parent")
        return stack

    def governed(self) -> list[dict]:
        """The IR nodes this (positional) node governs, in order."""
        return [d for _, d in sorted(self.graph.nodes(data=True), key=lambda t: t[1].get("order", 0))
                if d.get("positional") == self.id]


@dataclass
class InitScheme:
    """How weights are drawn (GPT-2's scheme, from the spec's model.init): a module's
    ``init_weights(init)`` draws its own parameters from ``generator`` with these deviations;
    modules without one get the generic rules of archdsl.compiler.initialise."""

    std: float  # projections and embeddings
    residual_std: float  # projections that write into a residual (scaled by 1/sqrt(residual branches))
    generator: Any = None  # a torch.Generator, or None for the global RNG
