"""A node kind written outside archdsl, as a user would: token shift (RWKV's time-mix input, Peng et al.
2023), y_t = W_now · x_t + W_prev · x_{t−1} + b, with x_{−1} = 0. It keeps one vector per sequence
while decoding (the previous token), so it exercises the fixed-size decode state of the cache.

tests/test_kinds.py registers it with ``archdsl.register_kind(TokenShift, build=build_token_shift)``.
"""
from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn

from archdsl.blocks import BuildContext, ForwardContext
from archdsl.cache import ValueState
from archdsl.spec import DecodeState, NodeSpec, Scope


class TokenShift(NodeSpec):
    """Mix each position with the one before it through two learned projections."""

    kind = "token_shift"
    family = "conv"
    title = "Token shift"

    bias: bool = Field(True, description="Add a bias.")
    out: int | None = Field(None, gt=0, description="Output width; default: the stream width.")

    def out_width(self, width: int) -> int:
        return self.out or width

    def param_count(self, scope: Scope) -> int:
        out = self.out or scope.width
        return 2 * scope.width * out + (out if self.bias else 0)

    def flops_per_token(self, scope: Scope) -> int:
        return 2 * 2 * scope.width * (self.out or scope.width)

    def decode_state(self, scope: Scope) -> DecodeState:
        return DecodeState(fixed=scope.width)  # the previous token's input

    def summary_args(self) -> str:
        return "x_t, x_{t-1}" + (f" → {self.out}" if self.out else "")


class TokenShiftModule(nn.Module):
    def __init__(self, width: int, out: int, bias: bool):
        super().__init__()
        self.now = nn.Linear(width, out, bias=bias)
        self.prev = nn.Linear(width, out, bias=False)
        self.cache_slot: int | None = None

    decodes = True

    def new_state(self, batch: int, max_len: int, *, device: Any = None, dtype: Any = None) -> ValueState:
        return ValueState()

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        if ctx.key_padding is not None:  # padding contributes nothing to the next position
            x = x * ctx.key_padding[:, -x.shape[1]:, None].to(x.dtype)
        first = x.new_zeros(x.shape[0], 1, x.shape[2])
        if ctx.cache is not None:
            previous = ctx.cache.state(self.cache_slot)
            first = previous if previous is not None else first
            ctx.cache.states[self.cache_slot].value = x[:, -1:]
        shifted = torch.cat([first, x[:, :-1]], dim=1)
        return self.now(x) + self.prev(shifted)


def build_token_shift(node: BuildContext) -> nn.Module:
    return TokenShiftModule(node.in_width, node.out_width, node.spec.bias)
