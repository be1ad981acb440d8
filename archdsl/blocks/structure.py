"""Composition modules: a sequence of named children, residual, parallel, with_memory (paired with
spec/structure.py)."""
from __future__ import annotations

import torch
from torch import nn

from .context import BuildContext, ForwardContext


class Sequence(nn.Module):
    """Children applied in order. Children are registered by name so state_dict keys read like the spec."""

    def __init__(self, children: list[tuple[str, nn.Module]]):
        super().__init__()
        for name, module in children:
            self.add_module(name, module)

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        for module in self._modules.values():
            x = module(x, ctx)
        return x


class Residual(Sequence):
    """x + body(x), or x + body(x) * scale (multiplied, then added, as Granite does, so that the
    rounding is the same as the reference's)."""

    def __init__(self, children: list[tuple[str, nn.Module]], scale: float | None = None):
        super().__init__(children)
        self.scale = scale

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        if self.scale is None:
            return x + super().forward(x, ctx)
        return x + super().forward(x, ctx) * self.scale


class Parallel(nn.Module):
    """branch_0(x) + branch_1(x) + ..., or branch_0(x) * s_0 + branch_1(x) * s_1 + ... (each branch
    multiplied, then the products added in branch order, as Falcon-H1 rounds them)."""

    def __init__(self, branches: list[tuple[str, nn.Module]], scales: list[float] | None = None):
        super().__init__()
        for name, module in branches:
            self.add_module(name, module)
        self.scales = scales

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        branches = list(self._modules.values())
        if self.scales is None:
            out = branches[0](x, ctx)
            for branch in branches[1:]:
                out = out + branch(x, ctx)
            return out
        out = branches[0](x, ctx) * self.scales[0]
        for branch, scale in zip(branches[1:], self.scales[1:]):
            out = out + branch(x, ctx) * scale
        return out


class WithMemory(Sequence):
    """The children when the forward was given the memory, else the stream unchanged (Hugging Face's
    decoders run their cross-attention blocks only ``if encoder_hidden_states is not None``)."""

    def __init__(self, children: list[tuple[str, nn.Module]], memory: str):
        super().__init__(children)
        self.memory = memory

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        if self.memory not in ctx.memory:
            return x
        return super().forward(x, ctx)


# ------------------------------------------------------------------------------------ builders
def build_residual(node: BuildContext) -> nn.Module:
    return Residual(node.children, node.spec.scale)


def build_parallel(node: BuildContext) -> nn.Module:
    return Parallel(node.children, node.spec.scales)


def build_repeat(node: BuildContext) -> nn.Module:
    return Sequence(node.children)


def build_with_memory(node: BuildContext) -> nn.Module:
    return WithMemory(node.children, node.spec.needs)
