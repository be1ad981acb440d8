"""1-D convolution and recurrent layers over the sequence (paired with spec/sequence.py).

Both keep one output per position and respect padding: a convolution zeroes padding positions
before it mixes a window, and a recurrent layer packs each row's real tokens together so
padding never enters its state (left and right padding give the same outputs at real tokens).

Incremental decoding (``ctx.cache``, used by ``ArchModel.generate``): a causal convolution keeps
its last ``dilation × (kernel − 1)`` inputs and a unidirectional RNN its hidden state in the
cache, so a step that feeds one new token gives the same output as the whole sequence would.
Blocks that see the future (a centred convolution, a bidirectional RNN) refuse a cache.
"""
from __future__ import annotations

import math
from typing import Any

import networkx as nx
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .context import ForwardContext

ACTIVATIONS = {"none": None, "relu": F.relu, "gelu": F.gelu, "silu": F.silu, "glu": lambda y: F.glu(y, dim=-1)}


def _cache_state(cache: Any, module: nn.Module) -> tuple[dict, Any]:
    """(store, this module's state or None) kept on the cache; a cache at length 0 starts afresh."""
    store = cache.__dict__.setdefault("sequence_state", {})
    return store, store.get(id(module)) if cache.length > 0 else None


class Conv1d(nn.Conv1d):
    """nn.Conv1d over (B, S, C) with explicit (left, right) zero padding and an optional activation."""

    def __init__(self, width: int, channels: int, kernel: int, left: int, right: int, *, dilation: int = 1,
                 groups: int = 1, bias: bool = True, activation: str = "none", name: str = "conv1d"):
        super().__init__(width, channels, kernel, stride=1, padding=0, dilation=dilation, groups=groups, bias=bias)
        self.left, self.right = left, right
        self.causal = right == 0
        self.activation = activation
        self.act = ACTIVATIONS[activation]
        self.node_name = name

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:  # type: ignore[override]
        S = x.shape[1]
        if ctx.key_padding is not None:
            x = x * ctx.key_padding[:, -S:, None].to(x.dtype)  # padding contributes nothing to any window
        h = x.transpose(1, 2)  # (B, C, S)
        if ctx.cache is not None:
            if not self.causal:
                raise ValueError(f"{self.node_name} sees {self.right} later position(s) (padding: same), so it cannot "
                                 "decode one token at a time; use causal: true for a decoder")
            store, previous = _cache_state(ctx.cache, self)
            if previous is None:
                previous = h.new_zeros(h.shape[0], h.shape[1], self.left)
            h = torch.cat([previous, h], dim=2)
            store[id(self)] = h[:, :, h.shape[2] - self.left:]
        else:
            h = F.pad(h, (self.left, self.right))
        y = F.conv1d(h, self.weight, self.bias, 1, 0, self.dilation, self.groups).transpose(1, 2)
        return self.act(y) if self.act is not None else y

    @torch.no_grad()
    def init_weights(self, std: float, generator: torch.Generator | None = None) -> None:
        """torch's default (uniform ±1/sqrt(fan_in), as kaiming_uniform(a=√5)), drawn from `generator`."""
        bound = 1.0 / math.sqrt(self.weight.shape[1] * self.weight.shape[2])
        self.weight.uniform_(-bound, bound, generator=generator)
        if self.bias is not None:
            self.bias.uniform_(-bound, bound, generator=generator)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", pad=({self.left}, {self.right}), activation={self.activation}"


class _Recurrent:
    """forward(x, ctx) for nn.LSTM / nn.GRU: batch first, padding packed out, state cached for decoding."""

    node_name: str

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:  # type: ignore[override]
        S = x.shape[1]
        state, store = None, None
        if ctx.cache is not None:
            if self.bidirectional:  # type: ignore[attr-defined]
                raise ValueError(f"{self.node_name} is bidirectional: it reads the future, so it cannot decode "
                                 "one token at a time")
            store, state = _cache_state(ctx.cache, self)  # type: ignore[arg-type]
        mask = ctx.key_padding[:, -S:].bool() if ctx.key_padding is not None else None
        if mask is not None and not bool(mask.all()):
            out, state = self._packed(x, mask, state)
        else:
            out, state = super().forward(x, state)  # type: ignore[misc]
        if store is not None:
            store[id(self)] = state
        return out

    def _packed(self, x: torch.Tensor, mask: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """Move each row's real tokens to the front (in order), run them packed, and put them back."""
        B, S, _ = x.shape
        order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # real positions first
        lengths = mask.sum(1)
        front = x.gather(1, order[..., None].expand(B, S, x.shape[-1]))
        packed = pack_padded_sequence(front, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        out, new_state = super().forward(packed, state)  # type: ignore[misc]
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=S)
        back = torch.zeros_like(out).scatter(1, order[..., None].expand(B, S, out.shape[-1]), out)
        empty = lengths == 0  # an all-padding row ran one token (packing needs one): keep its state as it was
        if bool(empty.any()):
            if state is None:
                state = tuple(torch.zeros_like(s) for s in new_state) if isinstance(new_state, tuple) \
                    else torch.zeros_like(new_state)
            keep = empty[None, :, None]
            new_state = tuple(torch.where(keep, old, s) for old, s in zip(state, new_state)) \
                if isinstance(new_state, tuple) else torch.where(keep, state, new_state)
        return back * mask[..., None].to(back.dtype), new_state  # padding positions output zeros

    @torch.no_grad()
    def init_weights(self, std: float, generator: torch.Generator | None = None) -> None:
        """torch's default (uniform ±1/sqrt(hidden) for every weight and bias), drawn from `generator`."""
        bound = 1.0 / math.sqrt(self.hidden_size)  # type: ignore[attr-defined]
        for p in self.parameters():  # type: ignore[attr-defined]
            p.uniform_(-bound, bound, generator=generator)


class LSTM(_Recurrent, nn.LSTM):
    def __init__(self, width: int, hidden: int, layers: int = 1, *, bidirectional: bool = False,
                 dropout: float = 0.0, bias: bool = True, name: str = "lstm"):
        nn.LSTM.__init__(self, width, hidden, layers, bias=bias, batch_first=True, dropout=dropout,
                         bidirectional=bidirectional)
        self.node_name = name


class GRU(_Recurrent, nn.GRU):
    def __init__(self, width: int, hidden: int, layers: int = 1, *, bidirectional: bool = False,
                 dropout: float = 0.0, bias: bool = True, name: str = "gru"):
        nn.GRU.__init__(self, width, hidden, layers, bias=bias, batch_first=True, dropout=dropout,
                        bidirectional=bidirectional)
        self.node_name = name


def build_conv1d(d: dict, g: nx.DiGraph, built: dict) -> nn.Module:
    s, width = d["spec"], d["in_width"]
    left, right = s.pads()
    return Conv1d(width, s.channels(width), s.kernel, left, right, dilation=s.dilation, groups=s.groups,
                  bias=s.bias, activation=s.activation, name=d["id"])


def build_recurrent(d: dict, g: nx.DiGraph, built: dict) -> nn.Module:
    s, width = d["spec"], d["in_width"]
    cls = LSTM if s.kind == "lstm" else GRU
    return cls(width, s.size(width), s.layers, bidirectional=s.bidirectional, dropout=s.dropout, bias=s.bias,
               name=d["id"])
