"""The sequence blocks attention replaced: 1-D convolution and recurrence (LSTM, GRU).

They are ordinary node kinds, so a spec can put an RNN or CNN baseline next to a transformer,
or mix them (a causal conv front-end before attention layers). Every node keeps one position
per token, as attention, masks, positions and the lm_head's per-token logits assume.
"""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from ..limits import MAX_LOOP_COUNT
from .base import DecodeState, NodeSpec, NonNegInt, PosInt, Probability, Scope


class Conv1d(NodeSpec):
    """A 1-D convolution along the sequence: each position mixes a window of `kernel` positions,
    (batch, seq, width) -> (batch, seq, out). Padding positions (attention_mask 0) are zeroed
    before the convolution, so they never leak into real positions' windows."""

    kind = "conv1d"
    family = "conv"
    title = "Conv1d"
    builder = "archdsl.blocks.sequence:build_conv1d"
    shorthand = "kernel"

    kernel: PosInt = Field(description="Window size in positions.")
    out: PosInt | None = Field(None, description="Output width (channels); default: the stream width.")
    causal: bool = Field(False, description="Pad on the left only, so position t sees positions ≤ t (decoders); "
                                            "the same as padding: causal.")
    padding: Literal["same", "causal"] | NonNegInt | None = Field(
        None, description="same (window centred on t), causal (window ending at t), or an integer p on both sides, "
                          "which must equal dilation × (kernel − 1) / 2 to keep the length; default: causal if "
                          "causal is set, else same.")
    stride: PosInt = Field(1, description="Step between windows. Only 1: a node keeps one position per token, "
                                          "which later masks, positions and per-token logits rely on.")
    dilation: PosInt = Field(1, description="Spacing between the taps of the window.")
    groups: PosInt = Field(1, description="Channel groups; groups = width is a depthwise convolution.")
    activation: Literal["none", "relu", "gelu", "silu", "glu"] = Field(
        "none", description="Applied to the output; glu computes 2 × out channels and gates them, "
                            "a · sigmoid(b) (Dauphin et al. 2017's gated convolution).")
    bias: bool = Field(True, description="Add a bias.")

    @property
    def is_causal(self) -> bool:
        return self.causal or self.padding == "causal"

    def pads(self) -> tuple[int, int]:
        """(left, right) zero padding of the sequence."""
        total = self.dilation * (self.kernel - 1)
        if self.is_causal:
            return total, 0
        if isinstance(self.padding, int):
            return self.padding, self.padding
        return total // 2, total - total // 2  # same; an even window takes the extra position on the right (torch)

    def channels(self, width: int) -> int:
        """Output channels of the convolution itself (twice `out` for glu)."""
        return (self.out or width) * (2 if self.activation == "glu" else 1)

    def out_width(self, width: int) -> int:
        return self.out or width

    def param_count(self, scope: Scope) -> int:
        channels = self.channels(scope.width)
        return channels * (scope.width // self.groups) * self.kernel + (channels if self.bias else 0)

    def flops_per_token(self, scope: Scope) -> int:
        return 2 * self.channels(scope.width) * (scope.width // self.groups) * self.kernel

    def decode_state(self, scope: Scope) -> DecodeState | None:
        return DecodeState(fixed=scope.width * self.pads()[0]) if self.is_causal else None  # its last inputs

    def check(self, scope: Scope) -> None:
        total = self.dilation * (self.kernel - 1)
        if self.causal and self.padding is not None and self.padding != "causal":
            scope.report("padding", f"causal: true contradicts padding: {self.padding} (a causal window is "
                                    "padded on the left only)", "drop padding, or drop causal for a centred window")
        elif isinstance(self.padding, int) and 2 * self.padding != total:
            fix = f"padding: {total // 2}" if total % 2 == 0 else "padding: same (it pads one more on the right)"
            change = 2 * self.padding - total
            scope.report("padding", f"padding {self.padding} on both sides makes seq {'+' if change > 0 else '-'} "
                                    f"{abs(change)} outputs from seq inputs (kernel {self.kernel}, dilation "
                                    f"{self.dilation})",
                         f"every node keeps one position per token: use {fix} or padding: causal")
        if self.stride != 1:
            scope.report("stride", f"stride {self.stride} would shorten the sequence by {self.stride}x",
                         "archdsl keeps one position per token (masks, positions and per-token logits rely on it); "
                         "use stride 1")
        channels = self.channels(scope.width)
        if scope.width % self.groups:
            scope.report("groups", f"{self.groups} groups do not divide the input width {scope.width}",
                         f"choose groups among the divisors of {scope.width}")
        elif channels % self.groups:
            what = f"2 × out = {channels}" if self.activation == "glu" else f"out {channels}"
            scope.report("groups", f"{self.groups} groups do not divide the {what} output channels",
                         "out channels are split evenly among the groups")

    def summary_args(self) -> str:
        parts = [f"k={self.kernel}", "causal" if self.is_causal else "same"]
        if self.dilation != 1:
            parts.append(f"dilation {self.dilation}")
        if self.groups != 1:
            parts.append(f"groups {self.groups}")
        if self.activation != "none":
            parts.append(self.activation)
        if self.out:
            parts.append(f"→ {self.out}")
        return ", ".join(parts)


class _Recurrent(NodeSpec):
    """Shared fields of lstm and gru."""

    family = "recurrent"
    shorthand = "hidden"
    builder = "archdsl.blocks.sequence:build_recurrent"
    gates: ClassVar[int]

    hidden: PosInt | None = Field(None, description="Hidden size of each direction; default: the stream width.")
    layers: PosInt = Field(1, le=MAX_LOOP_COUNT, description="Stacked recurrent layers (each reads the previous one's "
                                                             "outputs).")
    bidirectional: bool = Field(False, description="Also run right to left and concatenate: output width 2 × hidden. "
                                                   "It sees the future, so not for a causal language model "
                                                   "(generate refuses it).")
    dropout: Probability = Field(0.0, description="Dropout on the outputs of every layer but the last (needs layers ≥ 2).")
    bias: bool = Field(True, description="Input and recurrent biases (two per gate, as torch).")

    def size(self, width: int) -> int:
        return self.hidden or width

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    def out_width(self, width: int) -> int:
        return self.size(width) * self.directions

    def _weights(self, width: int) -> int:
        """Multiply-adds per token of all the gate projections (= weights without biases)."""
        h = self.size(width)  # layer 0 reads the stream, later layers the previous layer's output
        inputs = width + (self.layers - 1) * h * self.directions
        return self.directions * self.gates * h * (inputs + self.layers * h)

    def param_count(self, scope: Scope) -> int:
        h = self.size(scope.width)
        biases = self.layers * self.directions * 2 * self.gates * h if self.bias else 0
        return self._weights(scope.width) + biases

    def flops_per_token(self, scope: Scope) -> int:
        return 2 * self._weights(scope.width)

    def decode_state(self, scope: Scope) -> DecodeState | None:
        if self.bidirectional:
            return None  # it reads the sequence from the end: no incremental decoding
        states = 2 if self.gates == 4 else 1  # an LSTM keeps (h, c), a GRU h
        return DecodeState(fixed=self.layers * states * self.size(scope.width))

    def check(self, scope: Scope) -> None:
        if self.dropout and self.layers == 1:
            scope.report("dropout", f"dropout {self.dropout:g} acts between stacked layers, and there is one layer",
                         "set layers >= 2, or put a `dropout` node after this one")

    def summary_args(self) -> str:
        parts = [f"hidden {self.hidden}" if self.hidden else "hidden = width"]
        if self.layers != 1:
            parts.append(f"{self.layers} layers")
        if self.bidirectional:
            parts.append("bidirectional")
        return ", ".join(parts)


class LSTM(_Recurrent):
    """Long short-term memory (Hochreiter & Schmidhuber 1997) over the sequence, as torch.nn.LSTM:
    four gates per layer and direction, output width hidden (2 × hidden if bidirectional).
    Padding positions are skipped (a row's real tokens are packed together), so padding never
    changes a real position's output."""

    kind = "lstm"
    title = "LSTM"
    gates = 4


class GRU(_Recurrent):
    """Gated recurrent unit (Cho et al. 2014) over the sequence, as torch.nn.GRU: three gates per
    layer and direction, output width hidden (2 × hidden if bidirectional). Padding positions
    are skipped, as for lstm."""

    kind = "gru"
    title = "GRU"
    gates = 3


class Fourier(NodeSpec):
    """FNet's token mixing (Lee-Thorp et al. 2022): the real part of the two-dimensional discrete Fourier
    transform over the sequence and the width, Re(FFT_seq(FFT_width(x))), in place of attention. No
    parameters. Every position mixes every other, so it cannot decode one token at a time, and padding
    positions take part as they do in FNet (which has no attention mask): its output at a real token
    depends on the padded length."""

    kind = "fourier"
    family = "conv"
    title = "Fourier"
    builder = "archdsl.blocks.sequence:build_fourier"

    def param_count(self, scope: Scope) -> int:
        return 0

    def flops_per_token(self, scope: Scope) -> int:
        import math

        # a complex FFT of n points costs about 5 n log2 n real operations; per token, one of the width and a
        # width's share of the sequence's
        w, s = scope.width, max(scope.seq_len, 2)
        return int(5 * w * (math.log2(max(w, 2)) + math.log2(s)))

    def summary_args(self) -> str:
        return "Re(FFT over sequence and width)"
