"""Vision: images become a sequence of patch tokens, and a head classifies the sequence.

A stack with ``input: image`` reads pixel values (batch, channels, height, width). Its first
node is a ``patch_embedding``: a convolution whose kernel and stride are the patch size cuts
the image into (image_size / patch_size)² patches and projects each to the stream width, an
optional learned class token is put in front, and the stream is (batch, seq, width) from then
on, so every other node kind (positions, attention, norms, repeats) works unchanged. A
``classifier`` reduces the sequence to one vector and projects it to class logits: the stream
becomes (batch, classes) and ends there.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Literal

from pydantic import Field

from .base import NodeSpec, PosInt, Scope, linear_params


class PatchEmbedding(NodeSpec):
    """Cut an image into square patches and project each to a token (ViT, Dosovitskiy et al. 2021):
    a Conv2d with kernel = stride = patch_size, (batch, channels, image_size, image_size) ->
    (batch, patches, width), patches = (image_size / patch_size)²; with a class token the
    sequence is patches + 1 long, the class token first. The first node of a stack with
    `input: image`. For ViT's 1-D learned positions, follow it with
    `positional: {kind: learned, max_len: patches + 1}`; `positions: learned_2d` adds the
    2-D variant instead."""

    kind = "patch_embedding"
    family = "embedding"
    title = "Patch embedding"
    builder = "archdsl.blocks.vision:build_patch_embedding"
    reads_input = "image"

    image_size: PosInt = Field(description="Height and width of the (square) input image, in pixels.")
    patch_size: PosInt = Field(description="Height and width of a patch, in pixels; must divide image_size.")
    channels: PosInt = Field(3, description="Colour channels of the input (3 for RGB).")
    class_token: bool = Field(True, description="Prepend a learned [CLS] token (ViT); a classifier or pooler "
                              "with reduce: first then reads it.")
    positions: Literal["none", "learned_2d"] = Field(
        "none", description="learned_2d: add a learned row embedding and a learned column embedding, each "
        "width / 2 wide, concatenated per patch (the 2-D variant of the ViT paper); the class token gets none. "
        "none: add nothing here (use a positional node after this one).")
    dim: PosInt | None = Field(None, description="Token width; default: the model width.")
    bias: bool = Field(True, description="Bias of the patch projection.")

    @property
    def grid(self) -> int:
        """Patches along each side."""
        return self.image_size // self.patch_size

    @property
    def patches(self) -> int:
        return self.grid ** 2

    @property
    def seq_len(self) -> int:
        """Tokens the stream carries after this node: the patches, plus the class token."""
        return self.patches + (1 if self.class_token else 0)

    def out_width(self, width: int) -> int:
        return self.dim or width

    def start_width(self, stack_width: int) -> int:
        return self.dim or stack_width

    def shapes(self, in_width: int | None, out_width: int, scope: Scope) -> tuple[tuple, tuple]:
        # pixels (batch, channels, height, width) -> patch tokens
        return ("batch", self.channels, self.image_size, self.image_size), ("batch", self.seq_len, out_width)

    def next_scope(self, scope: Scope, node_id: str) -> Scope:
        return replace(scope, tokens=self.seq_len)

    def context_length(self) -> int | None:
        return self.seq_len if self.image_size % self.patch_size == 0 else None

    def param_count(self, scope: Scope) -> int:
        dim = self.dim or scope.width
        total = linear_params(self.channels * self.patch_size ** 2, dim, self.bias)
        total += dim if self.class_token else 0
        total += self.grid * (dim // 2) * 2 if self.positions == "learned_2d" else 0
        return total

    def flops_per_token(self, scope: Scope) -> int:
        # one projection per patch; the class token and 2-D positions cost no multiply-adds
        return 2 * self.channels * self.patch_size ** 2 * (self.dim or scope.width)

    def check(self, scope: Scope) -> None:
        if self.image_size % self.patch_size:
            below = self.patch_size * (self.image_size // self.patch_size)
            scope.report("patch_size", f"patch_size {self.patch_size} does not divide image_size {self.image_size} "
                         f"({self.image_size} / {self.patch_size} = {self.image_size / self.patch_size:.4g} patches "
                         "per side)", f"choose a patch size that divides {self.image_size}, or an image size "
                         f"such as {below or self.patch_size} or {below + self.patch_size}")
        if self.positions == "learned_2d" and (self.dim or scope.width) % 2:
            scope.report("positions", f"learned_2d positions split the width {self.dim or scope.width} into a row "
                         "half and a column half, so it must be even", "use an even width, or positions: none "
                         "with a 1-D positional node")

    def summary_args(self) -> str:
        text = f"{self.image_size}px, {self.patch_size}×{self.patch_size} patches"
        if self.image_size % self.patch_size == 0:
            text += f" ({self.patches})"
        if self.channels != 3:
            text += f", {self.channels} ch"
        if self.class_token:
            text += ", +[CLS]"
        if self.positions != "none":
            text += f", {self.positions}"
        return text + (f", dim {self.dim}" if self.dim else "")


class Classifier(NodeSpec):
    """Image (or sequence) classification head: reduce the sequence to one vector and project it to
    class logits, (batch, seq, width) -> (batch, classes). The last node of the model; the model then
    returns the logits (batch, classes). ViTForImageClassification is `reduce: first` after the final
    norm; BertForSequenceClassification is `reduce: pooled` after a pooler."""

    kind = "classifier"
    family = "head"
    title = "Classifier"
    builder = "archdsl.blocks.vision:build_classifier"
    output = "classes"
    placement = frozenset({"top_level", "last", "once"})
    shorthand = "classes"

    classes: PosInt = Field(description="Number of classes (logits).")
    reduce: Literal["first", "mean", "pooled"] = Field(
        "first", description="first: the first token (the class token); mean: the mean over positions "
        "(padding excluded; with class_token: false, the global-average-pooling ViT); pooled: the output "
        "of an earlier pooler.")
    bias: bool = Field(True, description="Add a bias to the logits.")

    def out_width(self, width: int) -> int:
        return self.classes

    def shapes(self, in_width: int | None, out_width: int, scope: Scope) -> tuple[tuple, tuple]:
        return ("batch", "seq", in_width), ("batch", out_width)  # one vector of logits per sequence

    def param_count(self, scope: Scope) -> int:
        return linear_params(scope.width, self.classes, self.bias)

    def flops_per_token(self, scope: Scope) -> int:
        # one projection per sequence, spread over its tokens
        return math.ceil(2 * scope.width * self.classes / max(scope.seq_len, 1))

    def check(self, scope: Scope) -> None:
        if self.reduce == "pooled" and "pooled" not in scope.side_outputs:
            scope.report("reduce", "reduce: pooled reads a pooler's output, and no pooler comes before this classifier",
                         "add - pooler before it, or use reduce: first")

    def summary_args(self) -> str:
        return f"{self.classes} classes, {self.reduce}"
