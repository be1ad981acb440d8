"""The decoding cache: one object holding every layer's decode state, whatever the layer keeps.

Attention keeps keys and values that grow with the context (:class:`KVState`); latent attention a
latent; a causal convolution its last inputs and a recurrent layer its hidden state, both fixed
in size (:class:`ValueState`). A module that keeps state while decoding implements

* ``new_state(batch, max_len, device, dtype)`` -> a state object (with ``reset()`` and ``nbytes()``),
* ``decodes`` (bool): whether it can run one token at a time (a bidirectional layer cannot),

and ArchModel gives it a ``cache_slot``: its state is ``ctx.cache.states[slot]`` during a forward
with a cache. Nothing here knows a kind; hybrids of attention and recurrent layers decode with
one cache like any decoder.

Attention buffers are allocated for the whole ``max_len`` when that is cheap (the common case:
nothing is reallocated while decoding, so every step runs the same ops), and otherwise grown by
doubling as the sequence gets there, so ``generate(prompt, 10**7)`` that stops at an eos token
after a few steps never asks for memory for ten million positions.

Compiled decoding (archdsl/decoding.py) needs every shape and address fixed: a ``static`` cache
allocates its buffers whole and marks them static for torch.compile, and while ``position`` (a
(1,) tensor) is set, each step writes its keys/values there with ``index_copy_`` and attends over
the whole buffers (the mask, built from tensors, hides what is not written yet); fixed-size states
are pinned (:meth:`ValueState.pin`) and then overwritten in place.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

STATIC_BYTES = 256 * 2**20  # a cache up to this size is allocated whole, once
MIN_CAPACITY = 256  # positions a larger cache starts with (at least)


class KVState:
    """Per-position buffers of one layer: keys (batch, heads, capacity, dims) and values alike.

    ``update(start, k, v)`` writes k/v (B, heads, S, dims) at [start, start + S) in place and
    returns views of [0, start + S). The cache allocates the buffers (:meth:`allocate`) for
    ``max_len`` positions or, for a large cache, fewer that then grow by doubling (amortised; old
    content is copied once per doubling).
    """

    def __init__(self, batch: int, max_len: int, key: tuple[int, int], value: tuple[int, int], *,
                 device: Any = None, dtype: torch.dtype = torch.float32):
        self.batch, self.max_len, self.key, self.value = batch, max_len, key, value
        self.device, self.dtype = device, dtype
        self.keys = self.values = torch.empty(0)

    def per_position_bytes(self) -> int:
        return self.batch * (self.key[0] * self.key[1] + self.value[0] * self.value[1]) * self.dtype.itemsize

    def allocate(self, capacity: int) -> None:
        capacity = max(1, min(capacity, self.max_len))
        self.keys = torch.zeros(self.batch, *self.key[:1], capacity, self.key[1], device=self.device, dtype=self.dtype)
        self.values = torch.zeros(self.batch, self.value[0], capacity, self.value[1], device=self.device,
                                  dtype=self.dtype)

    @property
    def capacity(self) -> int:
        return self.keys.shape[2] if self.keys.dim() == 4 else 0

    def _grow(self, end: int) -> None:
        new = min(self.max_len, max(2 * self.capacity, end))
        old_keys, old_values, filled = self.keys, self.values, self.capacity
        self.allocate(new)
        if filled:
            self.keys[:, :, :filled].copy_(old_keys)
            self.values[:, :, :filled].copy_(old_values)

    def update(self, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = start + k.shape[2]
        if end > self.capacity:
            self._grow(end)
        self.keys[:, :, start:end].copy_(k)
        self.values[:, :, start:end].copy_(v)
        return self.keys[:, :, :end], self.values[:, :, :end]

    def write_at(self, position: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Static decoding: write k/v (B, heads, S, dims) at the S indices `position` (a tensor, so the
        compiled step is the same graph at every position) and return the whole buffers."""
        self.keys.index_copy_(2, position, k.to(self.keys.dtype))
        self.values.index_copy_(2, position, v.to(self.values.dtype))
        return self.keys, self.values

    def reset(self) -> None:
        pass  # positions beyond the cache's length are never read

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.keys, self.values))


class ValueState:
    """A state a module replaces or fills as it goes (a recurrent layer's (h, c), a convolution's last
    inputs, cross-attention's keys/values of the encoder output): ``value`` is None until it is set.

    Once pinned (:meth:`pin`, by compiled decoding) its tensors are fixed buffers: setting ``value``
    copies into them in place, so a compiled step (or a CUDA graph) sees the same addresses at every
    step; after ``reset()`` the value reads None again until the next set, and the buffers are kept.
    """

    def __init__(self) -> None:
        self._value: Any = None
        self._pinned = False
        self._empty = True

    @property
    def value(self) -> Any:
        return None if self._empty else self._value

    @value.setter
    def value(self, new: Any) -> None:
        if new is None:
            self.reset()
        elif self._pinned:
            _copy_into(self._value, new)
            self._empty = False
        else:
            self._value, self._empty = new, False

    def pin(self) -> None:
        """Make the current tensors the state's fixed buffers (contiguous copies, marked static)."""
        if self._pinned:
            return
        if self._empty or not _tensors(self._value):
            raise ValueError("a fixed-size decode state must be set (by the prompt's forward) before it is pinned")
        self._value = _clone(self._value)
        for t in _tensors(self._value):
            torch._dynamo.mark_static_address(t)
        self._pinned = True

    def reset(self) -> None:
        self._empty = True
        if not self._pinned:
            self._value = None

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in _tensors(self._value))


def _clone(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone(memory_format=torch.contiguous_format)
    if isinstance(value, (tuple, list)):
        return type(value)(_clone(v) for v in value)
    return value


def _copy_into(buffers: Any, new: Any) -> None:
    """Copy a state's new value into its pinned buffers of the same structure and shapes."""
    if isinstance(buffers, torch.Tensor):
        if not isinstance(new, torch.Tensor) or new.shape != buffers.shape:
            raise ValueError(f"a pinned decode state of shape {tuple(buffers.shape)} cannot take "
                             f"{tuple(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__}")
        buffers.copy_(new)
    elif isinstance(buffers, (tuple, list)) and isinstance(new, (tuple, list)) and len(new) == len(buffers):
        for b, n in zip(buffers, new):
            _copy_into(b, n)
    else:
        raise ValueError(f"a pinned decode state holds {type(buffers).__name__}, got {type(new).__name__}")


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


class KVCache:
    """Every layer's decode state plus the key-padding mask of the cached timeline.

    * ``states[i]``: the state of the module whose ``cache_slot`` is ``i`` (:class:`KVState` for
      attention: ``keys``/``values`` below list their buffers; :class:`ValueState` for fixed-size state);
    * ``padding``: ``(batch, max_len)`` bool, True where a real token sits (new columns start True);
    * ``length``: how many positions are filled; ``ArchModel.forward(..., cache=c)`` advances it;
    * ``memory`` (encoder-decoder models): the output and padding of each stack that runs once per
      cache (stack name -> (hidden, padding)), filled by the first forward;
    * ``position``: None, or during static (compiled) decoding steps a (1,) long tensor, the index
      the step's token is written at (see the module docstring).

    Create one with ``model.new_cache(batch, max_len)``; ``reset()`` makes it reusable.
    """

    def __init__(self, states: Sequence[Any], batch: int, max_len: int, *, device: Any = None):
        if batch < 1 or max_len < 1:
            raise ValueError(f"a cache needs batch >= 1 and max_len >= 1, got {batch} and {max_len}")
        self.batch, self.max_len = batch, max_len
        self.states = list(states)
        self.padding = torch.ones(batch, max_len, dtype=torch.bool, device=device)
        self.has_padding = False  # once a mask was given, every later step attends through `padding`
        self.length = 0
        self.memory: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self.position: torch.Tensor | None = None
        self.static = False

    @classmethod
    def for_modules(cls, modules: Sequence[Any], batch: int, max_len: int, *, device: Any = None,
                    dtype: torch.dtype = torch.float32, static: bool = False) -> "KVCache":
        """A cache for the stateful modules (in cache_slot order), each asked for its own state;
        `static`: every buffer allocated whole and marked static (compiled decoding)."""
        if batch < 1 or max_len < 1:
            raise ValueError(f"a cache needs batch >= 1 and max_len >= 1, got {batch} and {max_len}")
        states = [m.new_state(batch, max_len, device=device, dtype=dtype) for m in modules]
        kv = [s for s in states if isinstance(s, KVState)]
        per_position = sum(s.per_position_bytes() for s in kv)
        capacity = max_len  # allocated once; a large cache starts smaller and grows by doubling
        if per_position * max_len > STATIC_BYTES and not static:
            capacity = max(MIN_CAPACITY, STATIC_BYTES // max(per_position, 1))
        for state in kv:
            state.allocate(capacity)
        cache = cls(states, batch, max_len, device=device)
        if static:
            cache.static = True
            for t in [cache.padding] + [t for s in kv for t in (s.keys, s.values)]:
                torch._dynamo.mark_static_address(t)
        return cache

    @property
    def keys(self) -> list[torch.Tensor]:
        return [s.keys for s in self.states if isinstance(s, KVState)]

    @property
    def values(self) -> list[torch.Tensor]:
        return [s.values for s in self.states if isinstance(s, KVState)]

    def __len__(self) -> int:
        return self.length

    def reset(self) -> "KVCache":
        self.length, self.has_padding, self.position = 0, False, None
        self.padding.fill_(True)
        self.memory = {}
        for state in self.states:
            state.reset()
        return self

    def update(self, slot: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k/v (B, heads, S, dims) at [length, length + S) of layer `slot`; views of [0, length + S).
        During a static decoding step: at `position`, and the whole buffers (KVState.write_at)."""
        if self.position is not None:
            return self.states[slot].write_at(self.position, k, v)
        return self.states[slot].update(self.length, k, v)

    def state(self, slot: int) -> Any:
        """The fixed-size state of layer `slot` (None at the start of a sequence, whatever was left in it)."""
        if self.position is not None:  # a static decoding step: never the start, and `length` is not read
            return self.states[slot].value
        return self.states[slot].value if self.length > 0 else None

    def key_padding(self, attention_mask: torch.Tensor | None, new: int) -> torch.Tensor | None:
        """Record the padding of `new` positions about to be written; the mask over [0, length + new).

        attention_mask is (B, new) for the new tokens or (B, length + new) for the whole timeline
        (the Hugging Face convention); None means the new tokens are real.
        """
        end = self.length + new
        if attention_mask is not None:
            width = attention_mask.shape[-1]
            if attention_mask.dim() != 2 or attention_mask.shape[0] != self.batch or width not in (new, end):
                raise ValueError(f"attention_mask must be (batch, {new}) or (batch, {end}) with a cache holding "
                                 f"{self.length} positions, got {tuple(attention_mask.shape)}")
            self.padding[:, end - width:end].copy_(attention_mask)
            self.has_padding = True
        return self.padding[:, :end] if self.has_padding else None

    def nbytes(self) -> int:
        return sum(s.nbytes() for s in self.states)

    def __repr__(self) -> str:
        return (f"KVCache(layers={len(self.states)}, batch={self.batch}, length={self.length}/{self.max_len}, "
                f"{self.nbytes() / 2**20:.1f} MiB)")


DecodeCache = KVCache  # the name says what it holds: not only keys and values

__all__ = ["KVCache", "DecodeCache", "KVState", "ValueState", "STATIC_BYTES", "MIN_CAPACITY"]
