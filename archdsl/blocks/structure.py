"""Composition modules: a sequence of named children, residual, parallel (paired with spec/structure.py)."""
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
    """branch_0(x) + branch_1(x) + ..., or s_0 · branch_0(x) + s_1 · branch_1(x) + ... with scales."""

    def __init__(self, branches: list[tuple[str, nn.Module]], scales: list[float] | None = None):
        super().__init__()
        for name, module in branches:
            self.add_module(name, module)
        self.scales = scales

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        branches = list(self._modules.values())
        scales = self.scales or [1.0] * len(branches)
        out = None
        for branch, s in zip(branches, scales):
            y = branch(x, ctx)
            y = y * s if s != 1.0 else y
            out = y if out is None else out + y
        return out


# ------------------------------------------------------------------------------------ builders
def build_residual(node: BuildContext) -> nn.Module:
    return Residual(node.children, node.spec.scale)


def build_parallel(node: BuildContext) -> nn.Module:
    return Parallel(node.children, node.spec.scales)


def build_repeat(node: BuildContext) -> nn.Module:
    return Sequence(node.children)
