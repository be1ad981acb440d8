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

from .blocks.context import BuildContext, ForwardContext, InitScheme
from .blocks.structure import Sequence
from .cache import KVCache
from .generate import generate as _generate
from .generate import generate_encoder_decoder as _generate_encoder_decoder
from .ir import build_graph
from .kinds import REGISTRY
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
        # per stack, the ranges of the inputs its nodes index (tokens: vocab, positions: learned max_len, ...)
        self._limits: dict[str, dict[str, int]] = graph.graph["limits"]
        self.max_positions = min((lim["positions"] for lim in self._limits.values() if "positions" in lim), default=None)
        self.vocab = next((lim["tokens"] for lim in self._limits.values() if "tokens" in lim), None)  # the first table
        stacks = spec.model.stacks()
        # graph models (encoder-decoder): stack name -> the input it reads; None for one stack
        self.stack_inputs = None if "" in stacks else {name: stacks[name].input for name in graph.graph["stacks"]}
        # with a cache, stacks that read decoder_tokens decode incrementally; the others run once per cache
        cached = [self] if self.stack_inputs is None else [
            self.get_submodule(name) for name, kind in self.stack_inputs.items() if kind == "decoder_tokens"]
        self._stateful = [m for c in cached for m in c.modules() if hasattr(m, "new_state")]
        for slot, module in enumerate(self._stateful):
            module.cache_slot = slot  # where its decode state lives in a KVCache
        # generate's default for `compile` (archdsl/decoding.py): False decodes eagerly
        self.compile_decoding: bool | str | dict = False

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                position_ids: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
                cache: KVCache | None = None, decoder_tokens: torch.Tensor | None = None,
                decoder_attention_mask: torch.Tensor | None = None,
                decoder_position_ids: torch.Tensor | None = None,
                memory: dict[str, Any] | None = None) -> Any:
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

        memory: the memories the spec declares (``memories``) that this call is given, name -> states
        (B, S_m, width) or (states, padding mask (B, S_m), 1 for real positions); the ``with_memory``
        blocks of a memory not given are skipped. With a cache, the first call's memory stays in it.
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
        given = self._check_memory(memory, tokens.shape[0], cache)
        return self._forward(tokens, attention_mask, position_ids, token_type_ids, cache, memory=given)

    def _check_memory(self, memory: Any, batch: int, cache: KVCache | None) -> dict:
        """The given memories as {name: (states, padding or None)}, checked against the spec's ``memories``;
        with a cache, those its first call stored."""
        declared = self.graph.graph.get("memories") or {}
        if memory is None:
            return dict(cache.memory) if cache is not None else {}
        if not isinstance(memory, dict):
            raise TypeError(f"memory must be a dict of name -> states, got {type(memory).__name__}")
        if cache is not None and cache.memory:
            raise ValueError("this cache already holds the memory its first call was given; pass memory on the "
                             "first call only")
        out = {}
        for name, value in memory.items():
            if name not in declared:
                raise ValueError(f"'{self.spec.name}' reads no memory '{name}' (memories: "
                                 f"{', '.join(declared) or 'none'}); declare it with memories: {{{name}: WIDTH}}")
            states, padding = value if isinstance(value, (tuple, list)) else (value, None)
            if not isinstance(states, torch.Tensor) or states.dim() != 3 or states.shape[0] != batch \
                    or states.shape[2] != declared[name]:
                shape = tuple(states.shape) if isinstance(states, torch.Tensor) else type(states).__name__
                raise ValueError(f"memory '{name}' must be states of shape ({batch}, length, {declared[name]}), got "
                                 f"{shape}")
            if padding is not None and (not isinstance(padding, torch.Tensor) or
                                        tuple(padding.shape) != tuple(states.shape[:2])):
                raise ValueError(f"the padding mask of memory '{name}' must have shape {tuple(states.shape[:2])}")
            out[name] = (states, padding.bool() if padding is not None else None)
        if cache is not None:
            cache.memory.update(out)
        return out

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
            types = next((lim["token_type_ids"] for lim in self._limits.values() if "token_type_ids" in lim), None)
            if types is None:
                raise ValueError(f"'{self.spec.name}' has no token-type embedding, so token_type_ids would be "
                                 "ignored; drop them, or add - embedding: {input: token_type_ids, vocab: 2}")
            low, high = torch.stack(torch.aminmax(token_type_ids)).tolist()
            if low < 0 or high >= types:
                raise ValueError(f"token_type_ids must lie in [0, {types}), got {low}..{high}")

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
                 token_type_ids: torch.Tensor | None, cache: KVCache | None, last_only: bool = False,
                 memory: dict | None = None) -> Any:
        B, S = tokens.shape
        if cache is None:
            if position_ids is None:
                position_ids = torch.arange(S, device=tokens.device).expand(B, S)
            key_padding = attention_mask.bool() if attention_mask is not None else None
        else:
            if position_ids is None:
                position_ids = torch.arange(cache.length, cache.length + S, device=tokens.device).expand(B, S)
            key_padding = cache.key_padding(attention_mask, S)
        if memory is None and cache is not None:
            memory = cache.memory  # given on the cache's first call
        ctx = ForwardContext(positions=position_ids, key_padding=key_padding, token_type_ids=token_type_ids,
                             cache=cache, memory=dict(memory or {}))
        x = self._run(tokens, ctx, last_only)
        if cache is not None:
            cache.length += S
        if self.has_pooler:
            return EncoderOutput(x, ctx.pooled)  # type: ignore[arg-type]
        return x

    def _run(self, x: torch.Tensor, ctx: ForwardContext, last_only: bool = False) -> torch.Tensor:
        """The top-level modules in order (one stack); with last_only, the head sees the last position only."""
        head = len(self._modules) - 1 if last_only and self.returns_logits else -1
        for i, module in enumerate(self._modules.values()):
            if i == head:
                x = x[:, -1:]  # generate needs the last position's logits only: slice before the head
            x = module(x, ctx)
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
            limit = self._limits.get(name, {}).get("positions")
            if limit is not None and end > limit:
                raise ValueError(f"{kind}: a sequence of {end} tokens is longer than the {limit} learned positions of "
                                 f"stack '{name}' of '{self.spec.name}'")
            if cache is not None and (B != cache.batch or (incremental and end > cache.max_len)):
                raise ValueError(f"a cache of batch {cache.batch} holding {cache.length} of {cache.max_len} positions "
                                 f"cannot take {S} more {kind} in a batch of {B}")
            vocab = self._limits.get(name, {}).get("tokens")
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
            head = len(stack._modules) - 1 if last_only and name == output and self.returns_logits else -1
            for i, module in enumerate(stack._modules.values()):
                if i == head:
                    x = x[:, -1:]  # generate needs the last position's logits only: slice before the head
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

    def new_cache(self, batch: int, max_len: int, device: Any = None, dtype: torch.dtype | None = None, *,
                  static: bool = False) -> KVCache:
        """An empty cache for `batch` sequences of up to `max_len` positions (prompt + new tokens): each
        stateful layer's decode state (attention keys/values, recurrent and convolution state), in the
        dtype of the layer's weights unless `dtype` is given. `static`: allocated whole and marked
        static for compiled decoding (archdsl/decoding.py).

        For an encoder-decoder, max_len counts decoder positions; the encoder's output and the
        cross-attention keys/values are added to the cache by its first forward."""
        if self.max_positions is not None and max_len > self.max_positions:
            raise ValueError(f"a cache of {max_len} positions is longer than the {self.max_positions} learned positions "
                             f"of '{self.spec.name}'")
        if device is None:
            device = next((p.device for p in self.parameters()), torch.device("cpu"))
        return KVCache.for_modules(self._stateful, batch, max_len, device=device, dtype=dtype, static=static)

    def generate(self, tokens: torch.Tensor, max_new_tokens: int, *, temperature: float = 0.0,
                 top_k: int | None = None, top_p: float | None = None, eos_token_id: int | list[int] | None = None,
                 pad_token_id: int | None = None, attention_mask: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, decoder_start_token_id: int | None = None,
                 compile: bool | str | dict | None = None, memory: dict[str, Any] | None = None) -> torch.Tensor:
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

        compile: decode with one torch.compile'd step of static shapes (archdsl/decoding.py): True
        (CUDA graphs on CUDA), a torch.compile mode, or a dict of torch.compile's mode/backend/options;
        None takes the model's ``compile_decoding`` (default False: eager). The same tokens as eager;
        the first call per (batch, cache bucket) compiles.

        memory: the memories (``memories`` of the spec) every step reads, as for forward; decoding
        with a memory is eager.
        """
        if compile is None:
            compile = self.compile_decoding
        if self.stack_inputs is not None:
            return _generate_encoder_decoder(self, tokens, max_new_tokens, temperature=temperature, top_k=top_k,
                                             top_p=top_p, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                                             attention_mask=attention_mask, generator=generator,
                                             decoder_start_token_id=decoder_start_token_id, compile=compile)
        if decoder_start_token_id is not None:
            raise ValueError(f"decoder_start_token_id is for encoder-decoder models; '{self.spec.name}' has one stack")
        return _generate(self, tokens, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                         eos_token_id=eos_token_id, pad_token_id=pad_token_id, attention_mask=attention_mask,
                         generator=generator, compile=compile, memory=memory)

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
    their embeddings again, and the copies of a shared repeat to its first cycle."""
    g = model.graph
    for node, data in g.nodes(data=True):
        tie = data["spec"].tied_to() if "spec" in data else None
        if tie:  # a kind that ties shares its table's Parameter as `weight`
            model.get_submodule(node).weight = model.get_submodule(g.graph["embeddings"][tie]).weight
    _share(model)


def _share(model: ArchModel) -> None:
    """repeat: {shared: true}: each node marked ``shares`` (ir.share_copies) takes its counterpart's Parameter
    objects. The modules stay separate (each has its own name, so its own cache entry when decoding); only
    the parameters are one, so gradients from every use add up in them and state_dict lists them as ties."""
    for node, data in model.graph.nodes(data=True):
        source = data.get("shares")
        if source is None:
            continue
        mine, theirs = model.get_submodule(node), model.get_submodule(source)
        for path, module in mine.named_modules():
            owner = theirs.get_submodule(path) if path else theirs
            for name, p in list(module._parameters.items()):
                if p is not None:
                    module._parameters[name] = owner._parameters[name]


def _build(g: nx.DiGraph, node: str, built: dict[str, nn.Module]) -> nn.Module:
    """The module of one IR node, from its kind's builder (composites: after their children)."""
    data = g.nodes[node]
    children = [(child.rsplit(".", 1)[-1], _build(g, child, built)) for child in data.get("children", ())
                if "spec" in g.nodes[child] or g.nodes[child]["composite"]] if data["composite"] else []
    if "spec" not in data:  # a repeated layer, a parallel branch or a graph stack: its children in order
        module: nn.Module = Sequence(children)
    else:
        context = BuildContext(node, data["spec"], data.get("in_width"), data.get("out_width"), g, built, children)
        module = REGISTRY.get(data["kind"]).builder()(context)
        if not isinstance(module, nn.Module):
            raise TypeError(f"the builder of kind '{data['kind']}' returned {type(module).__name__} for {node}, "
                            "not a torch.nn.Module")
    built[node] = module
    return module


@torch.no_grad()
def initialise(model: ArchModel, generator: torch.Generator | None = None) -> None:
    """GPT-2's scheme: N(0, std) for projections and embeddings, zero biases, unit norms, and
    projections that write into a residual scaled by 1/sqrt(number of residual branches).

    Modules are visited in order; one with its own ``init_weights(init)`` draws its parameters
    (and its children's) itself. Otherwise a Linear is N(0, std) (the residual std when it is
    marked ``writes_residual``) with a zero bias, and a 1-D ``weight`` (a norm) is one, its bias zero.
    """
    spec_init = model.spec.model.init
    residual_std = (spec_init.std / math.sqrt(model.graph.graph["residual_branches"]) if spec_init.residual_scaling
                    else spec_init.std)
    init = InitScheme(spec_init.std, residual_std, generator)
    done: set[int] = set()  # modules initialised by an ancestor's init_weights
    for module in model.modules():
        if id(module) in done:
            continue
        if hasattr(module, "init_weights"):
            module.init_weights(init)
            done.update(id(m) for m in module.modules())
        elif isinstance(module, nn.Linear):
            std = init.residual_std if getattr(module, "writes_residual", False) else init.std
            module.weight.normal_(0.0, std, generator=generator)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(getattr(module, "weight", None), nn.Parameter) and module.weight.dim() == 1:
            module.weight.fill_(1.0)  # norms
            if getattr(module, "bias", None) is not None:
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
        _share(model)
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
