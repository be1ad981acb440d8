"""IR -> ``nn.Module``: build the module tree that mirrors the spec, then initialise it.

The model's forward is plain PyTorch: each composite module loops over its children; nothing
reads the graph at run time.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import networkx as nx
import torch
from torch import nn

from .blocks import BUILDERS, ForwardContext
from .blocks.attention import Attention
from .blocks.embedding import Embedding, LearnedPositional
from .blocks.feedforward import MLP
from .blocks.heads import LMHead
from .generate import KVCache
from .generate import generate as _generate
from .ir import build_graph
from .loader import load_spec
from .spec import Spec


class EncoderOutput(NamedTuple):
    last_hidden_state: torch.Tensor  # (B, S, D)
    pooler_output: torch.Tensor  # (B, D)


class ArchModel(nn.Module):
    """A compiled archdsl spec. Its top-level children are the spec's top-level nodes."""

    def __init__(self, spec: Spec, graph: nx.DiGraph, children: list[tuple[str, nn.Module]]):
        super().__init__()
        for name, module in children:
            self.add_module(name, module)
        self.spec = spec
        self.graph = graph
        self.returns_logits = graph.graph["output"] == "logits"
        self.has_pooler = graph.graph["has_pooler"]
        self.max_positions = min((m.max_len for m in self.modules() if isinstance(m, LearnedPositional)), default=None)
        self.vocab = next((m.weight.shape[0] for m in self.modules() if isinstance(m, Embedding) and m.input == "tokens"), None)
        for slot, attention in enumerate(m for m in self.modules() if isinstance(m, Attention)):
            attention.cache_slot = slot  # where its keys/values live in a KVCache

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                position_ids: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
                cache: KVCache | None = None) -> Any:
        """tokens (B, S) -> logits (B, S, vocab) for a language model, hidden states (B, S, D) for an
        encoder, or EncoderOutput(hidden states, pooled) when the spec has a pooler.

        attention_mask: 1 for real tokens, 0 for padding; (B, S), or with a cache also (B, cached + S).
        position_ids (B, S): default 0..S-1, or cached..cached+S-1 with a cache.
        cache: a KVCache from new_cache(); the tokens continue the cached sequence, their keys and
        values are written into it, and its length advances by S (incremental decoding).
        """
        self._check_tokens(tokens, cache)
        return self._forward(tokens, attention_mask, position_ids, token_type_ids, cache)

    def _check_tokens(self, tokens: torch.Tensor, cache: KVCache | None = None) -> None:
        """Shape, length and vocabulary checks of forward (skipped for the steps of generate)."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be (batch, seq) integer ids, got shape {tuple(tokens.shape)}")
        B, S = tokens.shape
        end = S if cache is None else cache.length + S
        if self.max_positions is not None and end > self.max_positions:
            raise ValueError(f"sequence of {end} tokens is longer than the {self.max_positions} learned positions "
                             f"of '{self.spec.name}'")
        if cache is not None and (B != cache.batch or end > cache.max_len):
            raise ValueError(f"a cache of batch {cache.batch} holding {cache.length} of {cache.max_len} positions "
                             f"cannot take {S} more tokens in a batch of {B}")
        if self.vocab is not None and not torch.compiler.is_compiling() and tokens.numel():
            low, high = int(tokens.min()), int(tokens.max())
            if low < 0 or high >= self.vocab:
                raise ValueError(f"token ids must lie in [0, {self.vocab}) for '{self.spec.name}', got {low}..{high}")

    def _forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None, position_ids: torch.Tensor | None,
                 token_type_ids: torch.Tensor | None, cache: KVCache | None, last_only: bool = False) -> Any:
        B, S = tokens.shape
        if cache is None:
            if position_ids is None:
                position_ids = torch.arange(S, device=tokens.device).expand(B, S)
            key_padding = attention_mask.bool() if attention_mask is not None else None
        else:
            if position_ids is None:
                position_ids = torch.arange(cache.length, cache.length + S, device=tokens.device).expand(B, S)
            key_padding = cache.key_padding(attention_mask, S)
        ctx = ForwardContext(positions=position_ids, key_padding=key_padding, token_type_ids=token_type_ids,
                             cache=cache)
        x = tokens
        for module in self._modules.values():
            if last_only and isinstance(module, LMHead):
                x = x[:, -1:]  # generate needs the last position's logits only
            x = module(x, ctx)
        if cache is not None:
            cache.length += S
        if self.has_pooler:
            return EncoderOutput(x, ctx.pooled)  # type: ignore[arg-type]
        return x

    def new_cache(self, batch: int, max_len: int, device: Any = None, dtype: torch.dtype | None = None) -> KVCache:
        """An empty static KV cache for `batch` sequences of up to `max_len` positions (prompt + new tokens)."""
        layers = sorted(((m.cache_slot, m) for m in self.modules() if isinstance(m, Attention)), key=lambda t: t[0])
        reference = layers[0][1].qkv.weight if layers else next(self.parameters())
        return KVCache([(m.kv_heads, m.head_dim) for _, m in layers], batch, max_len,
                       device=reference.device if device is None else device,
                       dtype=reference.dtype if dtype is None else dtype)

    def generate(self, tokens: torch.Tensor, max_new_tokens: int, *, temperature: float = 0.0,
                 top_k: int | None = None, top_p: float | None = None, eos_token_id: int | list[int] | None = None,
                 pad_token_id: int | None = None, attention_mask: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Continue each prompt of tokens (B, S); returns (B, S + n) ids with n <= max_new_tokens.

        Greedy when temperature == 0, else sampling from softmax(logits / temperature) cut to
        top_k and to the top_p nucleus, drawn from `generator`. A row that emits eos_token_id (an
        id or a list) is done and padded with pad_token_id (default: the eos id); generation stops
        when every row is done. attention_mask (B, S) marks left padding (0): positions then count
        real tokens only. The prompt is run in one forward, then one token per step through a
        static KV cache; the model runs in eval mode (its mode is restored afterwards).
        """
        return _generate(self, tokens, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                         eos_token_id=eos_token_id, pad_token_id=pad_token_id, attention_mask=attention_mask,
                         generator=generator)

    def materialize(self, device: Any = "cpu") -> "ArchModel":
        """Allocate a meta-built model on a real device (uninitialised weights), keeping ties and derived buffers."""
        self.to_empty(device=device)
        _retie(self)
        for module in self.modules():
            if hasattr(module, "fill_buffers"):
                with torch.no_grad():
                    module.fill_buffers()
        return self

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save(self, path: str | Path) -> None:
        """Write spec and weights to one file; archdsl.load_model(path) restores an equal model."""
        torch.save({"archdsl": 1, "spec": self.spec.to_yaml(), "state_dict": self.state_dict()}, str(path))


def load_model(path: str | Path, *, device: Any = None) -> ArchModel:
    """Load a model written by ArchModel.save (weights_only: the file cannot run code)."""
    payload = torch.load(str(path), map_location=device or "cpu", weights_only=True)
    model = compile_spec(payload["spec"], device="meta").materialize(device or "cpu")
    model.load_state_dict(payload["state_dict"], strict=True)
    return model.eval()


def _retie(model: ArchModel) -> None:
    """to_empty() replaces Parameters one by one, which breaks sharing; tie heads to their embeddings again."""
    g = model.graph
    for node, data in g.nodes(data=True):
        if data["kind"] == "lm_head" and data["spec"].tie:
            head = model.get_submodule(node)
            head.weight = model.get_submodule(g.graph["embeddings"][data["spec"].tie]).weight


def _build(g: nx.DiGraph, node: str, built: dict[str, nn.Module]) -> nn.Module:
    data = dict(g.nodes[node], id=node)
    if data["composite"]:
        children = [(child.rsplit(".", 1)[-1], _build(g, child, built)) for child in data.get("children", ())
                    if g.nodes[child]["kind"] not in ("add", "sum")]
        module = BUILDERS[data["kind"]](data, g, {"children": children})
    else:
        module = BUILDERS[data["kind"]](data, g, built)
    built[node] = module
    return module


@torch.no_grad()
def initialise(model: ArchModel, generator: torch.Generator | None = None) -> None:
    """GPT-2's scheme: N(0, std) for projections and embeddings, zero biases, unit norms, and
    projections that write into a residual scaled by 1/sqrt(number of residual branches)."""
    init = model.spec.model.init
    residual_std = init.std / math.sqrt(model.graph.graph["residual_branches"]) if init.residual_scaling else init.std
    residual_out = {id(m.out) for m in model.modules() if isinstance(m, Attention)}
    residual_out |= {id(m.down) for m in model.modules() if isinstance(m, MLP)}
    for module in model.modules():
        if isinstance(module, nn.Linear):
            std = residual_std if id(module) in residual_out else init.std
            module.weight.normal_(0.0, std, generator=generator)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, (Embedding, LearnedPositional)):
            module.weight.normal_(0.0, init.std, generator=generator)
            if getattr(module, "padding_idx", None) is not None:
                module.weight[module.padding_idx].zero_()
        elif hasattr(module, "init_weights"):  # blocks with their own scheme (conv1d, lstm, gru), seeded too
            module.init_weights(init.std, generator)
        elif hasattr(module, "weight") and isinstance(getattr(module, "weight"), nn.Parameter) and module.weight.dim() == 1:
            module.weight.fill_(1.0)  # norms
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
    for module in model.modules():  # LM-head biases (tied weights were set with the embedding)
        if module.__class__.__name__ == "LMHead":
            if not module.tied:
                module.weight.normal_(0.0, init.std, generator=generator)
            if module.bias is not None:
                module.bias.zero_()


def compile_spec(source: Any, *, overrides: Mapping[str, Any] | None = None, device: Any = None,
                 dtype: torch.dtype | None = None, seed: int | None = None,
                 max_params: int | None = None) -> ArchModel:
    """Spec (path, YAML text, dict or Spec) -> initialised ArchModel.

    ``device="meta"`` builds the module tree without allocating weights (instant for 70B specs).
    ``seed`` makes initialisation deterministic (and independent of the global RNG).
    """
    spec = source if isinstance(source, Spec) and not overrides else load_spec(source, overrides=overrides, max_params=max_params)
    g = build_graph(spec, max_params=max_params)
    device = torch.device(device) if device is not None else torch.device("cpu")
    with device if device.type != "cpu" else nullcontext():
        built: dict[str, nn.Module] = {}
        top = [(child, _build(g, child, built)) for child in g.nodes["model"]["children"]]
        model = ArchModel(spec, g, top)
    if device.type != "meta":
        generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
        initialise(model, generator)
    if dtype is not None:
        model = model.to(dtype=dtype)
    return model
