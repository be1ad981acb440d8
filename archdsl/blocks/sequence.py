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

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..cache import ValueState
from .context import BuildContext, ForwardContext, InitScheme

ACTIVATIONS = {"none": None, "relu": F.relu, "gelu": F.gelu, "silu": F.silu, "glu": lambda y: F.glu(y, dim=-1)}


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
        self.cache_slot: int | None = None  # index of its state (the last inputs) in a cache (set by ArchModel)

    @property
    def decodes(self) -> bool:
        return self.causal  # a centred window needs later positions

    def new_state(self, batch: int, max_len: int, *, device: Any = None, dtype: Any = None) -> ValueState:
        """Its last dilation × (kernel − 1) inputs (batch, width, left)."""
        return ValueState()

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:  # type: ignore[override]
        S = x.shape[1]
        if ctx.key_padding is not None:
            x = x * ctx.key_padding[:, -S:, None].to(x.dtype)  # padding contributes nothing to any window
        h = x.transpose(1, 2)  # (B, C, S)
        if ctx.cache is not None:
            if not self.causal:
                raise ValueError(f"{self.node_name} sees {self.right} later position(s) (padding: same), so it cannot "
                                 "decode one token at a time; use causal: true for a decoder")
            previous = ctx.cache.state(self.cache_slot)
            if previous is None:
                previous = h.new_zeros(h.shape[0], h.shape[1], self.left)
            h = torch.cat([previous, h], dim=2)
            ctx.cache.states[self.cache_slot].value = h[:, :, h.shape[2] - self.left:]
        else:
            h = F.pad(h, (self.left, self.right))
        y = F.conv1d(h, self.weight, self.bias, 1, 0, self.dilation, self.groups).transpose(1, 2)
        return self.act(y) if self.act is not None else y

    @torch.no_grad()
    def init_weights(self, init: InitScheme) -> None:
        """torch's default (uniform ±1/sqrt(fan_in), as kaiming_uniform(a=√5)), drawn from `generator`."""
        bound = 1.0 / math.sqrt(self.weight.shape[1] * self.weight.shape[2])
        self.weight.uniform_(-bound, bound, generator=init.generator)
        if self.bias is not None:
            self.bias.uniform_(-bound, bound, generator=init.generator)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", pad=({self.left}, {self.right}), activation={self.activation}"


class _Recurrent(nn.Module):
    """An LSTM or GRU over (B, S, width): batch first, padding packed out, state cached for decoding.

    The parameters are torch.nn.LSTM's / nn.GRU's (same names, shapes and gate order, so their
    state dicts load either way) and eager mode runs torch's fused kernels (torch.lstm / torch.gru).
    It is not an nn.RNNBase on purpose: Dynamo refuses to trace those, while this module compiles
    with fullgraph=True through an explicit per-step recurrence (_unrolled).
    """

    mode = ""  # "LSTM" | "GRU"
    gates = 0

    def __init__(self, width: int, hidden: int, layers: int = 1, *, bidirectional: bool = False,
                 dropout: float = 0.0, bias: bool = True, name: str = "rnn"):
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = width, hidden, layers
        self.bidirectional, self.dropout, self.bias, self.node_name = bidirectional, dropout, bias, name
        self._flat_names: list[str] = []
        for layer in range(layers):
            for d in range(2 if bidirectional else 1):
                suffix = f"_l{layer}" + ("_reverse" if d else "")
                inputs = width if layer == 0 else hidden * (2 if bidirectional else 1)
                shapes = {"weight_ih": (self.gates * hidden, inputs), "weight_hh": (self.gates * hidden, hidden)}
                if bias:
                    shapes.update(bias_ih=(self.gates * hidden,), bias_hh=(self.gates * hidden,))
                for kind, shape in shapes.items():
                    self.register_parameter(kind + suffix, nn.Parameter(torch.empty(shape)))
                    self._flat_names.append(kind + suffix)
        self.cache_slot: int | None = None  # index of its state (h, or (h, c)) in a cache (set by ArchModel)

    @property
    def decodes(self) -> bool:
        return not self.bidirectional  # the reverse direction reads the sequence from its end

    def new_state(self, batch: int, max_len: int, *, device: Any = None, dtype: Any = None) -> ValueState:
        return ValueState()

    def _flat_weights(self) -> list[torch.Tensor]:
        return [getattr(self, n) for n in self._flat_names]

    def _run(self, x: Any, state: Any, batch_sizes: torch.Tensor | None = None) -> tuple[torch.Tensor, Any]:
        """torch.lstm / torch.gru on a padded batch (batch first) or on packed data with batch_sizes."""
        if state is None:
            B = x.shape[0] if batch_sizes is None else int(batch_sizes[0])
            zeros = x.new_zeros(self.num_layers * (2 if self.bidirectional else 1), B, self.hidden_size)
            state = (zeros, zeros) if self.mode == "LSTM" else zeros
        weights, args = self._flat_weights(), (self.bias, self.num_layers, self.dropout, self.training, self.bidirectional)
        fn = torch.lstm if self.mode == "LSTM" else torch.gru
        hx = list(state) if self.mode == "LSTM" else state
        if batch_sizes is None:
            result = fn(x, hx, weights, *args, True)
        else:
            result = fn(x, batch_sizes, hx, weights, *args)
        out, rest = result[0], result[1:]
        return out, (tuple(rest) if self.mode == "LSTM" else rest[0])

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, bias={self.bias}, "
                f"bidirectional={self.bidirectional}, dropout={self.dropout}")

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:  # type: ignore[override]
        S = x.shape[1]
        state = None
        if ctx.cache is not None:
            if self.bidirectional:  # type: ignore[attr-defined]
                raise ValueError(f"{self.node_name} is bidirectional: it reads the future, so it cannot decode "
                                 "one token at a time")
            state = ctx.cache.state(self.cache_slot)
        mask = ctx.key_padding[:, -S:].bool() if ctx.key_padding is not None else None
        if torch.compiler.is_compiling():  # Dynamo does not trace nn.LSTM / nn.GRU, nor a data-dependent branch
            out, state = self._unrolled(x, mask, state)
        elif mask is not None and not bool(mask.all()):
            out, state = self._packed(x, mask, state)
        else:
            out, state = self._run(x, state)
        if ctx.cache is not None:
            ctx.cache.states[self.cache_slot].value = state
        return out

    def _unrolled(self, x: torch.Tensor, mask: torch.Tensor | None, state: Any) -> tuple[torch.Tensor, Any]:
        """The same recurrence as explicit per-step tensor ops, for torch.compile(fullgraph=True).

        A padding step leaves the state as it was and outputs zeros, which is what the packed eager
        path computes, so there is no branch on the data. The graph grows with the sequence length
        (each step is traced), so compile time does too.
        """
        lstm = self.mode == "LSTM"
        B, S, _ = x.shape
        H, L, dirs = self.hidden_size, self.num_layers, 2 if self.bidirectional else 1
        if state is None:
            zeros = x.new_zeros(L * dirs, B, H)
            state = (zeros, zeros) if lstm else zeros
        h0, c0 = (state[0], state[1]) if lstm else (state, None)
        keep = mask[..., None] if mask is not None else None  # (B, S, 1)
        layer_in, last_h, last_c = x, [], []
        for layer in range(L):
            outs = []
            for d in range(dirs):
                suffix = f"_l{layer}" + ("_reverse" if d else "")
                w_hh = getattr(self, "weight_hh" + suffix)
                b_hh = getattr(self, "bias_hh" + suffix, None)
                gates_x = F.linear(layer_in, getattr(self, "weight_ih" + suffix), getattr(self, "bias_ih" + suffix, None))
                h, c = h0[layer * dirs + d], c0[layer * dirs + d] if lstm else None
                ys: list[torch.Tensor] = [x] * S
                for t in (range(S - 1, -1, -1) if d else range(S)):
                    gates_h = F.linear(h, w_hh, b_hh)
                    if lstm:
                        i, f, g, o = (gates_x[:, t] + gates_h).chunk(4, dim=-1)
                        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                        h_new = torch.sigmoid(o) * torch.tanh(c_new)
                    else:  # GRU: reset, update, new
                        xr, xz, xn = gates_x[:, t].chunk(3, dim=-1)
                        hr, hz, hn = gates_h.chunk(3, dim=-1)
                        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
                        h_new = (1 - z) * torch.tanh(xn + r * hn) + z * h
                    if keep is None:
                        h, c = h_new, (c_new if lstm else None)
                        ys[t] = h_new
                    else:
                        h = torch.where(keep[:, t], h_new, h)
                        c = torch.where(keep[:, t], c_new, c) if lstm else None
                        ys[t] = h_new * keep[:, t]
                outs.append(torch.stack(ys, dim=1))
                last_h.append(h)
                last_c.append(c)
            layer_in = torch.cat(outs, dim=-1) if dirs == 2 else outs[0]
            if self.training and self.dropout and layer < L - 1:
                layer_in = F.dropout(layer_in, self.dropout)
        h_n = torch.stack(last_h)
        return layer_in, ((h_n, torch.stack(last_c)) if lstm else h_n)

    def _packed(self, x: torch.Tensor, mask: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """Move each row's real tokens to the front (in order), run them packed, and put them back."""
        B, S, _ = x.shape
        order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # real positions first
        lengths = mask.sum(1)
        front = x.gather(1, order[..., None].expand(B, S, x.shape[-1]))
        packed = pack_padded_sequence(front, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        data, new_state = self._run(packed.data, None if state is None else _index_state(state, packed.sorted_indices),
                                    packed.batch_sizes)
        new_state = _index_state(new_state, packed.unsorted_indices)
        out, _ = pad_packed_sequence(packed._replace(data=data), batch_first=True, total_length=S)
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
    def init_weights(self, init: InitScheme) -> None:
        """torch's default (uniform ±1/sqrt(hidden) for every weight and bias), drawn from `generator`."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            p.uniform_(-bound, bound, generator=init.generator)


def _index_state(state: Any, index: torch.Tensor | None) -> Any:
    """Reorder the batch dimension (dim 1) of an RNN state, as nn.LSTM does around packed sequences."""
    if index is None:
        return state
    return tuple(s.index_select(1, index) for s in state) if isinstance(state, tuple) else state.index_select(1, index)


class LSTM(_Recurrent):
    mode, gates = "LSTM", 4  # input, forget, cell, output


class GRU(_Recurrent):
    mode, gates = "GRU", 3  # reset, update, new


def build_conv1d(node: BuildContext) -> nn.Module:
    s, width = node.spec, node.in_width
    left, right = s.pads()
    return Conv1d(width, s.channels(width), s.kernel, left, right, dilation=s.dilation, groups=s.groups,
                  bias=s.bias, activation=s.activation, name=node.id)


def build_recurrent(node: BuildContext) -> nn.Module:
    s, width = node.spec, node.in_width
    cls = LSTM if s.gates == 4 else GRU  # the spec's gate count says which cell
    return cls(width, s.size(width), s.layers, bidirectional=s.bidirectional, dropout=s.dropout, bias=s.bias,
               name=node.id)


class Fourier(nn.Module):
    """Re(FFT over positions and width) of the stream (spec/sequence.py's Fourier), computed in float32 or the
    stream's wider float."""

    def __init__(self, name: str):
        super().__init__()
        self.node_name = name

    decodes = False

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        if ctx.cache is not None:
            raise ValueError(f"{self.node_name} mixes every position with every other (a Fourier transform over the "
                             "sequence), so it cannot decode one token at a time")
        wide = x if x.dtype in (torch.float32, torch.float64) else x.float()
        return torch.fft.fftn(wide, dim=(1, 2)).real.to(x.dtype)


def build_fourier(node: BuildContext) -> nn.Module:
    return Fourier(node.id)
