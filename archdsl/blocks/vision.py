"""Patch embedding and classification head (paired with spec/vision.py), and the forward pass of
a model whose input is an image.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .context import BuildContext, ForwardContext, InitScheme


class PatchEmbedding(nn.Module):
    """(B, C, H, W) pixels -> (B, patches [+1], D) tokens: Conv2d(kernel = stride = patch), flattened
    row by row, an optional class token in front, optional learned 2-D (row ‖ column) positions."""

    def __init__(self, image_size: int, patch_size: int, channels: int, dim: int, *, class_token: bool = True,
                 positions: str = "none", bias: bool = True, name: str = "patch_embedding"):
        super().__init__()
        self.image_size, self.patch_size, self.channels = image_size, patch_size, channels
        self.grid = image_size // patch_size
        self.seq_len = self.grid ** 2 + (1 if class_token else 0)
        self.node_name = name
        self.projection = nn.Conv2d(channels, dim, kernel_size=patch_size, stride=patch_size, bias=bias)
        self.class_token = nn.Parameter(torch.empty(dim)) if class_token else None
        if positions == "learned_2d":
            self.row_positions = nn.Parameter(torch.empty(self.grid, dim // 2))
            self.column_positions = nn.Parameter(torch.empty(self.grid, dim // 2))
        else:
            self.row_positions = self.column_positions = None

    def check_pixels(self, pixels: torch.Tensor) -> None:
        expected = (self.channels, self.image_size, self.image_size)
        if pixels.dim() != 4 or tuple(pixels.shape[1:]) != expected:
            raise ValueError(f"{self.node_name} takes pixel values of shape (batch, {self.channels}, {self.image_size}, "
                             f"{self.image_size}), got {tuple(pixels.shape)}")
        if not pixels.is_floating_point():
            raise ValueError(f"{self.node_name} takes floating-point pixel values, got {pixels.dtype}")

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        w = self.projection.weight
        h = self.projection(x.to(w.dtype)).flatten(2).transpose(1, 2)  # (B, D, g, g) -> (B, g², D), row-major
        if self.row_positions is not None:
            g = self.grid
            table = torch.cat((self.row_positions[:, None].expand(g, g, -1),
                               self.column_positions[None, :].expand(g, g, -1)), dim=-1)  # (g, g, D)
            h = h + table.reshape(g * g, -1)
        if self.class_token is not None:
            h = torch.cat((self.class_token.expand(h.shape[0], 1, -1), h), dim=1)
        return h

    @torch.no_grad()
    def init_weights(self, init: InitScheme) -> None:
        """N(0, std) for the projection, the class token and the positions; a zero bias."""
        for p in (self.projection.weight, self.class_token, self.row_positions, self.column_positions):
            if p is not None:
                p.normal_(0.0, init.std, generator=init.generator)
        if self.projection.bias is not None:
            self.projection.bias.zero_()

    def extra_repr(self) -> str:
        return (f"image_size={self.image_size}, patch_size={self.patch_size}, seq={self.seq_len}, "
                f"class_token={self.class_token is not None}, learned_2d={self.row_positions is not None}")


class Classifier(nn.Module):
    """(B, S, D) -> (B, classes): the first token, the (masked) mean, or the pooler's output, then a projection."""

    def __init__(self, width: int, classes: int, reduce: str, bias: bool):
        super().__init__()
        self.reduce = reduce
        self.weight = nn.Parameter(torch.empty(classes, width))
        self.bias = nn.Parameter(torch.zeros(classes)) if bias else None

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        if self.reduce == "first":
            pooled = x[:, 0]
        elif self.reduce == "pooled":
            if ctx.pooled is None:
                raise ValueError("classifier reduce: pooled needs a pooler before it")
            pooled = ctx.pooled
        elif ctx.key_padding is not None:
            keep = ctx.key_padding[..., None].to(x.dtype)
            pooled = (x * keep).sum(1) / keep.sum(1).clamp(min=1)
        else:
            pooled = x.mean(1)
        return F.linear(pooled, self.weight, self.bias)

    @torch.no_grad()
    def init_weights(self, init: InitScheme) -> None:
        self.weight.normal_(0.0, init.std, generator=init.generator)
        if self.bias is not None:
            self.bias.zero_()


def build_patch_embedding(node: BuildContext) -> nn.Module:
    s = node.spec
    return PatchEmbedding(s.image_size, s.patch_size, s.channels, node.out_width, class_token=s.class_token,
                          positions=s.positions, bias=s.bias, name=node.id)


def build_classifier(node: BuildContext) -> nn.Module:
    s = node.spec
    return Classifier(node.in_width, s.classes, s.reduce, s.bias)


def forward_image(model: Any, pixel_values: torch.Tensor, attention_mask: torch.Tensor | None = None,
                  position_ids: torch.Tensor | None = None) -> Any:
    """ArchModel.forward for a model with `input: image`: pixel values (B, C, H, W) -> hidden states
    (B, S, D), EncoderOutput(hidden, pooled) with a pooler, or class logits (B, classes) with a classifier.

    S is the patch count (+1 for the class token); positions are 0..S-1 (position_ids overrides them);
    attention_mask (B, S), if given, marks the tokens attention may read.
    """
    if len(model.spec.model.stacks()) > 1:
        raise ValueError(f"'{model.spec.name}' is a graph of stacks: image inputs are supported in single-stack "
                         "models only")
    patches = _patch_embedding(model)
    patches.check_pixels(pixel_values)
    B, S = pixel_values.shape[0], patches.seq_len
    if model.max_positions is not None and S > model.max_positions:
        raise ValueError(f"{S} patch tokens are more than the {model.max_positions} learned positions of "
                         f"'{model.spec.name}'")
    if attention_mask is not None and tuple(attention_mask.shape) != (B, S):
        raise ValueError(f"attention_mask must be (batch, {S}) over the patch tokens, got {tuple(attention_mask.shape)}")
    if position_ids is None:
        position_ids = torch.arange(S, device=pixel_values.device).expand(B, S)
    ctx = ForwardContext(positions=position_ids, key_padding=attention_mask.bool() if attention_mask is not None else None)
    x = pixel_values
    for module in model._modules.values():
        x = module(x, ctx)
    if model.has_pooler and not isinstance(list(model._modules.values())[-1], Classifier):
        from ..compiler import EncoderOutput

        return EncoderOutput(x, ctx.pooled)  # type: ignore[arg-type]
    return x


def _patch_embedding(model: Any) -> PatchEmbedding:
    found = model.__dict__.get("_patch_embedding")
    if found is None:
        found = next(m for m in model.modules() if isinstance(m, PatchEmbedding))
        model.__dict__["_patch_embedding"] = found  # not a submodule attribute: a plain cache
    return found


def random_images(model: Any, batch: int, *, device: Any = None, dtype: torch.dtype | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard-normal pixel values (batch, channels, image_size, image_size) that an image model accepts."""
    patches = _patch_embedding(model)
    weight = patches.projection.weight
    return torch.randn(batch, patches.channels, patches.image_size, patches.image_size, generator=generator,
                       device=weight.device if device is None else device, dtype=dtype or weight.dtype)
