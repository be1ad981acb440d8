"""Compiled decoding: one torch.compile'd step, with static shapes, reused for every token.

    out = model.generate(prompt, 128, compile=True)     # the first call compiles (the warm-up)
    out = model.generate(prompt2, 100, compile=True)    # same bucket: the same compiled step, no recompile

Eager decoding (archdsl/generate.py) runs each step's ops one by one; on a GPU a small model's step
is then mostly kernel-launch overhead, and on a CPU the elementwise ops between the matmuls cost
what they do. Here the prompt runs eagerly (its length varies), then every step is the same
compiled graph: the cache is allocated whole for a *bucket* of positions (the total rounded up to
64, 96, 128, 192, 256, ...: see :func:`bucket`) and marked static, the step's token is written at a position held in a
tensor (``index_copy_``), attention reads the whole buffers through a mask built from that tensor,
fixed-size states (convolutions, recurrent and state-space layers) are overwritten in place, and the
step advances its position tensors itself. So nothing in the graph depends on Python ints that
change between steps, and prompts of different lengths in one bucket share one compiled step.

torch.compile's standard machinery does the work: ``mode="reduce-overhead"`` (CUDA graphs) on CUDA,
the default inductor mode elsewhere; ``fullgraph=True``, so a graph break is an error, not a silent
slowdown. A model whose decoding cannot be static (an encoder-decoder, image input) decodes eagerly
with a warning. Each (batch, bucket, device, dtype, options) gets its own compiled decoder, kept on
the model (at most ``KEEP``); its first step is the compile (``compile_seconds``).
"""
from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Any

import torch

from .blocks.context import ForwardContext
from .cache import KVCache, ValueState

if TYPE_CHECKING:  # pragma: no cover
    from .compiler import ArchModel

MIN_BUCKET = 64
KEEP = 4  # compiled decoders kept per model (each holds a cache for its bucket)


def bucket(total: int, max_positions: int | None = None) -> int:
    """The cache length compiled decoding allocates for `total` positions: the first of 64, 96, 128,
    192, 256, 384, ... (powers of two and 1.5 times them) that holds it, capped at the model's learned
    positions. Every step attends over the whole bucket, so a tight bucket reads fewer unwritten keys;
    two sizes per octave keep the number of compiled steps small when totals vary."""
    size = MIN_BUCKET
    while size < total:
        size = size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3
    return min(size, max_positions) if max_positions is not None else size


def compile_options(compile: Any, device: torch.device) -> dict[str, Any]:
    """torch.compile keyword arguments from generate's `compile`: True (reduce-overhead on CUDA, the
    default mode elsewhere), a mode name, or a dict of torch.compile arguments (e.g. a backend)."""
    if compile is True:
        return {"mode": "reduce-overhead"} if device.type == "cuda" else {}
    if isinstance(compile, str):
        return {"mode": compile}
    if isinstance(compile, dict):
        unknown = set(compile) - {"mode", "backend", "options"}
        if unknown:
            raise ValueError(f"compile takes torch.compile's mode, backend and options; got {sorted(unknown)}")
        return dict(compile)
    raise TypeError(f"compile must be True, False, a torch.compile mode or a dict of its arguments, got {compile!r}")


def static_refusal(model: "ArchModel") -> str | None:
    """Why this model cannot decode with static shapes, or None when it can."""
    if model.stack_inputs is not None:
        return "it is an encoder-decoder graph (its encoder runs once per sequence)"
    if "image" in model.graph.graph["inputs"]:
        return "its input is an image"
    return None


class _Decoders(dict):
    """A model's compiled decoders by key. Not copied with the model: compiled code belongs to one object."""

    def __deepcopy__(self, memo: dict) -> "_Decoders":
        return _Decoders()

    def __reduce__(self) -> Any:
        return (_Decoders, ())


class CompiledDecoder:
    """A static cache of `max_len` positions for `batch` rows and the compiled step that decodes into it.

    ``prefill(tokens, mask, positions)`` runs the prompt eagerly into the reset cache and returns the
    last logits; ``step(token)`` (B,) -> logits (B, vocab) of the next position, compiled.
    """

    def __init__(self, model: "ArchModel", batch: int, max_len: int, device: torch.device, options: dict[str, Any]):
        self.model, self.options = model, options
        self.cache: KVCache = model.new_cache(batch, max_len, device=device, static=True)
        self.position = torch.zeros(1, dtype=torch.long, device=device)  # where the step's token is written
        self.next_pos = torch.zeros(batch, 1, dtype=torch.long, device=device)  # its position id per row
        for t in (self.position, self.next_pos):
            torch._dynamo.mark_static_address(t)
        self.cuda_graphs = options.get("mode") in ("reduce-overhead", "max-autotune")
        self._compiled = torch.compile(self._step, fullgraph=True, dynamic=False, **options)
        self.compile_seconds: float | None = None  # wall time of the first step (tracing and code generation)

    def _step(self, token: torch.Tensor) -> torch.Tensor:
        ctx = ForwardContext(positions=self.next_pos, cache=self.cache, query_start=self.position,
                             key_mask=self.cache.padding)
        logits = self.model._run(token, ctx, last_only=True)[:, -1]
        self.position.add_(1)
        self.next_pos.add_(1)
        return logits

    def prefill(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None, positions: torch.Tensor | None,
                next_pos: torch.Tensor) -> torch.Tensor:
        cache = self.cache.reset()
        logits = self.model._forward(tokens, attention_mask, positions, None, cache, last_only=True)[:, -1]
        for state in cache.states:
            if isinstance(state, ValueState):
                state.pin()  # the prompt set it; from now on it is overwritten in place
        self.position.fill_(cache.length)
        self.next_pos.copy_(next_pos)
        cache.position = self.position
        return logits

    def step(self, token: torch.Tensor) -> torch.Tensor:
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's logits were consumed
        if self.compile_seconds is None:
            start = time.perf_counter()
            logits = self._compiled(token[:, None])
            if logits.is_cuda:
                torch.cuda.synchronize()
            self.compile_seconds = time.perf_counter() - start
        else:
            logits = self._compiled(token[:, None])
        self.cache.length += 1
        return logits

    def finish(self) -> None:
        self.cache.position = None


def compiled_decoder(model: "ArchModel", batch: int, total: int, device: torch.device,
                     options: dict[str, Any]) -> CompiledDecoder:
    """The model's compiled decoder for this batch and the bucket of `total` positions (made on first use)."""
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    max_len = bucket(total, model.max_positions)
    key = (batch, max_len, str(device), dtype, tuple(sorted((k, repr(v)) for k, v in options.items())))
    decoders = model.__dict__.setdefault("_compiled_decoders", _Decoders())
    if key not in decoders:
        while len(decoders) >= KEEP:
            decoders.pop(next(iter(decoders)))  # the oldest
        decoders[key] = CompiledDecoder(model, batch, max_len, device, options)
    else:
        decoders[key] = decoders.pop(key)  # most recently used last
    return decoders[key]


def warn_eager(model: "ArchModel", why: str) -> None:
    warnings.warn(f"'{model.spec.name}' cannot decode with a compiled step: {why}; decoding eagerly",
                  stacklevel=4)
