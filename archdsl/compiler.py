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
from .blocks.attention import Attention, CrossAttention, LatentAttention
from .blocks.embedding import Embedding, LearnedPositional
from .blocks.feedforward import MLP, Experts
from .blocks.heads import LMHead
from .generate import KVCache
from .generate import generate as _generate
from .generate import generate_encoder_decoder as _generate_encoder_decoder
from .ir import build_graph
from .loader import load_spec
from .spec import Spec


def check_id_dtype(name: str, ids: torch.Tensor) -> None:
    """Ids are torch.long or torch.int32, as nn.Embedding (and so transformers) takes them. Other integer
    dtypes are refused by name: uint8 ids would index as a boolean mask, int8/int16 overflow silently."""
    if ids.dtype not in (torch.long, torch.int32):
        raise ValueError(f"{name} must be integer ids of dtype torch.long or torch.int32, got {ids.dtype} "
                         f"(hint: {name}.long())")


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
        stacks = spec.model.stacks()
        # graph models (encoder-decoder): stack name -> the input it reads; None for one stack
        self.stack_inputs = None if "" in stacks else {name: stacks[name].input for name in graph.graph["stacks"]}
        # with a cache, stacks that read decoder_tokens decode incrementally; the others run once per cache
        cached = [self] if self.stack_inputs is None else [
            self.get_submodule(name) for name, kind in self.stack_inputs.items() if kind == "decoder_tokens"]
        for slot, attention in enumerate(m for c in cached for m in c.modules()
                                         if isinstance(m, (Attention, LatentAttention))):
            attention.cache_slot = slot  # where its keys/values live in a KVCache
        for slot, cross in enumerate(m for m in self.modules() if isinstance(m, CrossAttention)):
            cross.cross_slot = slot  # where its memory keys/values live in a cache (computed once per cache)

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                position_ids: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
                cache: KVCache | None = None, decoder_tokens: torch.Tensor | None = None,
                decoder_attention_mask: torch.Tensor | None = None,
                decoder_position_ids: torch.Tensor | None = None) -> Any:
        """tokens (B, S) -> logits (B, S, vocab) for a language model, hidden states (B, S, D) for an
        encoder, or EncoderOutput(hidden states, pooled) when the spec has a pooler.

        attention_mask: 1 for real tokens, 0 for padding; (B, S), or with a cache also (B, cached + S).
        position_ids (B, S): default 0..S-1, or cached..cached+S-1 with a cache.
        cache: a KVCache from new_cache(); the tokens continue the cached sequence, their keys and
        values are written into it, and its length advances by S (incremental decoding).

        Graph models (encoder-decoder): tokens/attention_mask/position_ids feed the stacks with
        input: tokens (the encoder), decoder_tokens (B, T)/decoder_attention_mask/decoder_position_ids
        the stacks with input: decoder_tokens; the result is the output stack's (B, T, ...).
        decoder_tokens default to tokens (with their mask). With a cache, the encoder runs on the
        first call only (its output and the cross-attention keys/values stay in the cache; later
        calls may pass tokens=None) and decoder_tokens continue the cached decoder sequence.
        """
        if "image" in self.graph.graph["inputs"]:  # tokens are pixel values (B, C, H, W): blocks/vision.py
            from .blocks.vision import forward_image

            return forward_image(self, tokens, attention_mask, position_ids)
        if self.stack_inputs is not None:
            if decoder_tokens is None:
                decoder_tokens, decoder_attention_mask = tokens, attention_mask
            self._check_graph_inputs(tokens, decoder_tokens, cache)
            if tokens is not None:
                self._check_side_inputs(tokens, attention_mask, position_ids, token_type_ids, None, "")
            self._check_side_inputs(decoder_tokens, decoder_attention_mask, decoder_position_ids, None, cache,
                                    "decoder_")
            if tokens is not None and tokens.shape[0] != decoder_tokens.shape[0]:
                raise ValueError(f"tokens have batch {tokens.shape[0]} but decoder_tokens batch "
                                 f"{decoder_tokens.shape[0]}; they are the two halves of the same examples")
            return self._forward_graph(tokens, attention_mask, position_ids, token_type_ids, cache, decoder_tokens,
                                       decoder_attention_mask, decoder_position_ids)
        self._check_tokens(tokens, cache)
        self._check_side_inputs(tokens, attention_mask, position_ids, token_type_ids, cache, "")
        return self._forward(tokens, attention_mask, position_ids, token_type_ids, cache)

    def _check_side_inputs(self, tokens: torch.Tensor, attention_mask: Any, position_ids: Any, token_type_ids: Any,
                           cache: KVCache | None, prefix: str) -> None:
        """attention_mask, position_ids and token_type_ids must fit the tokens (B, S) they go with, so that
        a mistake is named here rather than surfacing as a shape error deep inside attention."""
        B, S = tokens.shape
        cached = cache.length if cache is not None else 0
        for name, value, shapes in ((f"{prefix}attention_mask", attention_mask, {(B, S), (B, cached + S)}),
                                    (f"{prefix}position_ids", position_ids, {(B, S), (1, S)}),
                                    ("token_type_ids", token_type_ids, {(B, S)})):
            if value is None:
                continue
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
            if tuple(value.shape) not in shapes:
                wanted = " or ".join(str(s) for s in sorted(shapes))
                raise ValueError(f"{name} must have shape {wanted} for {prefix or ''}tokens of shape {(B, S)}, got "
                                 f"{tuple(value.shape)}")
            if name != f"{prefix}attention_mask":
                check_id_dtype(name, value)
        if torch.compiler.is_compiling():
            return
        if position_ids is not None and self.max_positions is not None and position_ids.numel():
            low, high = torch.stack(torch.aminmax(position_ids)).tolist()
            if low < 0 or high >= self.max_positions:
                raise ValueError(f"position_ids must lie in [0, {self.max_positions}) (the learned positions of "
                                 f"'{self.spec.name}'), got {low}..{high}")
        if token_type_ids is not None:
            types = [m for m in self.modules() if isinstance(m, Embedding) and m.input == "token_type_ids"]
            if not types:
                raise ValueError(f"'{self.spec.name}' has no token-type embedding, so token_type_ids would be "
                                 "ignored; drop them, or add - embedding: {input: token_type_ids, vocab: 2}")
            low, high = torch.stack(torch.aminmax(token_type_ids)).tolist()
            if low < 0 or high >= types[0].weight.shape[0]:
                raise ValueError(f"token_type_ids must lie in [0, {types[0].weight.shape[0]}), got {low}..{high}")

    def _check_tokens(self, tokens: torch.Tensor, cache: KVCache | None = None) -> None:
        """Shape, length and vocabulary checks of forward (skipped for the steps of generate)."""
        if not isinstance(tokens, torch.Tensor):
            raise TypeError(f"tokens must be a torch.Tensor of integer ids (batch, seq), got {type(tokens).__name__}")
        check_id_dtype("tokens", tokens)
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
            low, high = torch.stack(torch.aminmax(tokens)).tolist()  # one reduction, one host sync
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

    # ------------------------------------------------------------------ graph models (encoder-decoder)
    def _check_graph_inputs(self, tokens: torch.Tensor | None, decoder_tokens: torch.Tensor,
                            cache: KVCache | None = None) -> None:
        """Shape, length and vocabulary checks of each stack's input (skipped for the steps of generate)."""
        for name, kind in self.stack_inputs.items():  # type: ignore[union-attr]
            ids = decoder_tokens if kind == "decoder_tokens" else tokens
            incremental = cache is not None and kind == "decoder_tokens"
            if ids is None:
                if cache is not None and name in cache.memory:
                    continue  # computed by an earlier call with this cache
                raise ValueError(f"stack '{name}' of '{self.spec.name}' reads {kind}, and none were given")
            if not isinstance(ids, torch.Tensor):
                raise ValueError(f"{kind} must be a torch.Tensor of integer ids (batch, seq), got {type(ids).__name__}")
            check_id_dtype(kind, ids)
            if ids.dim() != 2:
                raise ValueError(f"{kind} must be (batch, seq) integer ids, got shape {tuple(ids.shape)}")
            B, S = ids.shape
            end = S + (cache.length if incremental else 0)  # type: ignore[union-attr]
            stack = self.get_submodule(name)
            limit = min((m.max_len for m in stack.modules() if isinstance(m, LearnedPositional)), default=None)
            if limit is not None and end > limit:
                raise ValueError(f"{kind}: a sequence of {end} tokens is longer than the {limit} learned positions of "
                                 f"stack '{name}' of '{self.spec.name}'")
            if cache is not None and (B != cache.batch or (incremental and end > cache.max_len)):
                raise ValueError(f"a cache of batch {cache.batch} holding {cache.length} of {cache.max_len} positions "
                                 f"cannot take {S} more {kind} in a batch of {B}")
            vocab = next((m.weight.shape[0] for m in stack.modules() if isinstance(m, Embedding) and m.input == "tokens"),
                         None)
            if vocab is not None and not torch.compiler.is_compiling() and ids.numel():
                low, high = torch.stack(torch.aminmax(ids)).tolist()  # one reduction, one host sync
                if low < 0 or high >= vocab:
                    raise ValueError(f"{kind} must lie in [0, {vocab}) for stack '{name}' of '{self.spec.name}', "
                                     f"got {low}..{high}")

    def _forward_graph(self, tokens: torch.Tensor | None, attention_mask: torch.Tensor | None,
                       position_ids: torch.Tensor | None, token_type_ids: torch.Tensor | None, cache: KVCache | None,
                       decoder_tokens: torch.Tensor, decoder_attention_mask: torch.Tensor | None,
                       decoder_position_ids: torch.Tensor | None, last_only: bool = False) -> Any:
        """Run the stacks in dependency order, each with its own ForwardContext (positions, padding);
        a stack's output and padding become the memory that later stacks' cross-attention reads."""
        feeds = {"tokens": (tokens, attention_mask, position_ids),
                 "decoder_tokens": (decoder_tokens, decoder_attention_mask, decoder_position_ids)}
        memory: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        output, new = self.spec.model.output, 0  # type: ignore[union-attr]
        result, pooled = None, None
        for name, stack in self._modules.items():
            kind = self.stack_inputs[name]  # type: ignore[index]
            incremental = cache is not None and kind == "decoder_tokens"
            if cache is not None and not incremental and name in cache.memory:
                memory[name] = cache.memory[name]  # the encoder ran once, on this cache's first call
                continue
            ids, mask, positions = feeds[kind]
            B, S = ids.shape  # type: ignore[union-attr]
            if incremental:
                start = cache.length  # type: ignore[union-attr]
                key_padding = cache.key_padding(mask, S)  # type: ignore[union-attr]
                new = S
            else:
                start, key_padding = 0, mask.bool() if mask is not None else None
            if positions is None:
                positions = torch.arange(start, start + S, device=ids.device).expand(B, S)  # type: ignore[union-attr]
            ctx = ForwardContext(positions=positions, key_padding=key_padding,
                                 token_type_ids=token_type_ids if kind == "tokens" else None,
                                 cache=cache if incremental else None, memory=memory)
            x = ids
            for module in stack._modules.values():
                if last_only and name == output and isinstance(module, LMHead):
                    x = x[:, -1:]  # generate needs the last position's logits only
                x = module(x, ctx)
            memory[name] = (x, key_padding)
            if cache is not None and not incremental:
                cache.memory[name] = memory[name]
            if name == output:
                result, pooled = x, ctx.pooled
        if cache is not None:
            cache.length += new
        if self.has_pooler:
            return EncoderOutput(result, pooled)  # type: ignore[arg-type]
        return result

    def new_cache(self, batch: int, max_len: int, device: Any = None, dtype: torch.dtype | None = None) -> KVCache:
        """An empty static KV cache for `batch` sequences of up to `max_len` positions (prompt + new tokens).

        For an encoder-decoder, max_len counts decoder positions; the encoder's output and the
        cross-attention keys/values are added to the cache by its first forward."""
        if self.max_positions is not None and max_len > self.max_positions:
            raise ValueError(f"a cache of {max_len} positions is longer than the {self.max_positions} learned positions "
                             f"of '{self.spec.name}'")
        layers = sorted(((m.cache_slot, m) for m in self.modules() if isinstance(m, (Attention, LatentAttention))
                         and m.cache_slot is not None), key=lambda t: t[0])
        reference = layers[0][1].out.weight if layers else next(self.parameters())
        return KVCache([m.cache_shapes() for _, m in layers], batch, max_len,
                       device=reference.device if device is None else device,
                       dtype=reference.dtype if dtype is None else dtype)

    def generate(self, tokens: torch.Tensor, max_new_tokens: int, *, temperature: float = 0.0,
                 top_k: int | None = None, top_p: float | None = None, eos_token_id: int | list[int] | None = None,
                 pad_token_id: int | None = None, attention_mask: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, decoder_start_token_id: int | None = None) -> torch.Tensor:
        """Continue each prompt of tokens (B, S); returns (B, S + n) ids with n <= max_new_tokens.

        Encoder-decoder graphs: tokens (B, S) are the source, encoded once (attention_mask marks its
        padding); the decoder starts from decoder_start_token_id and the result is the decoder's
        (B, 1 + n) ids, starting with it, as Hugging Face's generate returns them. The decoder's
        self-attention is cached as for a decoder-only model, the cross-attention keys/values once.

        Greedy when temperature == 0, else sampling from softmax(logits / temperature) cut to
        top_k and to the top_p nucleus, drawn from `generator`. A row that emits eos_token_id (an
        id or a list) is done and padded with pad_token_id (default: the eos id); generation stops
        when every row is done. attention_mask (B, S) marks left padding (0): positions then count
        real tokens only. The prompt is run in one forward, then one token per step through a
        static KV cache; the model runs in eval mode (its mode is restored afterwards).
        """
        if self.stack_inputs is not None:
            return _generate_encoder_decoder(self, tokens, max_new_tokens, temperature=temperature, top_k=top_k,
                                             top_p=top_p, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                                             attention_mask=attention_mask, generator=generator,
                                             decoder_start_token_id=decoder_start_token_id)
        if decoder_start_token_id is not None:
            raise ValueError(f"decoder_start_token_id is for encoder-decoder models; '{self.spec.name}' has one stack")
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
        """Write spec and weights to one safetensors file (``.safetensors``), atomically and with checksums;
        archdsl.load_model(path) restores an equal model. See archdsl.checkpoint for the format."""
        from .checkpoint import save_model

        save_model(self, path)


def load_model(path: str | Path, *, device: Any = None) -> ArchModel:
    """Load a model written by ArchModel.save: safetensors, or a ``.pt`` file of an earlier archdsl
    (torch.load weights_only). Nothing in the file can run code; damage or tampering is a ModelFileError."""
    from .checkpoint import load_model as _load

    return _load(path, device=device)


def _retie(model: ArchModel) -> None:
    """to_empty() replaces Parameters one by one, which breaks sharing; tie heads and shared embeddings to
    their embeddings again."""
    g = model.graph
    for node, data in g.nodes(data=True):
        if data["kind"] in ("lm_head", "embedding") and data["spec"].tie:
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
    residual_out = {id(m.out) for m in model.modules() if isinstance(m, (Attention, CrossAttention, LatentAttention))}
    residual_out |= {id(m.down) for m in model.modules() if isinstance(m, MLP)}
    for module in model.modules():
        if isinstance(module, Experts):  # stacked expert MLPs: up as any projection, down writes the residual
            module.up.normal_(0.0, init.std, generator=generator)
            module.down.normal_(0.0, residual_std, generator=generator)
            for bias in (module.up_bias, module.down_bias):
                if bias is not None:
                    bias.zero_()
        elif isinstance(module, nn.Linear):
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


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


def compile_spec(source: Any, *, overrides: Mapping[str, Any] | None = None, device: Any = None,
                 dtype: torch.dtype | None = None, seed: int | None = None,
                 max_params: int | None = None) -> ArchModel:
    """Spec (path, YAML text, dict or Spec) -> initialised ArchModel.

    ``device="meta"`` builds the module tree without allocating weights (instant for 70B specs).
    ``seed`` makes initialisation deterministic (and independent of the global RNG).
    """
    if isinstance(dtype, str):  # "bfloat16", "float16", "float32" as on the command line
        if dtype not in _DTYPES:
            raise ValueError(f"dtype '{dtype}' is not one of {', '.join(_DTYPES)} (or a torch.dtype)")
        dtype = _DTYPES[dtype]
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype such as torch.bfloat16, got {dtype!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int, got {seed!r}")
    check_seed(seed)
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
        model = keep_derived_buffers_float32(model.to(dtype=dtype))
    return model


SEED_RANGE = (-(2 ** 63), 2 ** 64)  # what torch.Generator.manual_seed takes


def check_seed(seed: int | None) -> None:
    """A seed torch can use (it wraps negatives, refuses anything outside 64 bits with 'Overflow')."""
    if seed is not None and not SEED_RANGE[0] <= seed < SEED_RANGE[1]:
        shown = str(seed) if seed.bit_length() <= 128 else f"of {seed.bit_length()} bits"  # str() of huge ints fails
        raise ValueError(f"seed {shown} does not fit torch's 64-bit generator; use a seed in [-2**63, 2**64)")


def keep_derived_buffers_float32(model: ArchModel) -> ArchModel:
    """Derived buffers (rotary and sinusoidal frequencies, ALiBi slopes) back in float32 after a cast.

    A model cast to bf16/fp16 keeps its weights in that dtype but computes these from float32, as
    transformers does: rotary angles from bf16 frequencies drift by whole radians at long positions.
    On `meta` only the dtype changes; materialize() computes the values.
    """
    for module in model.modules():
        if not hasattr(module, "fill_buffers"):
            continue
        for name, buffer in list(module.named_buffers(recurse=False)):
            if buffer is not None and buffer.is_floating_point() and buffer.dtype != torch.float32:
                setattr(module, name, buffer.float())
        if all(b.device.type != "meta" for b in module.buffers(recurse=False)):
            with torch.no_grad():
                module.fill_buffers()
    return model
