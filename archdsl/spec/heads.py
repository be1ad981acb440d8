"""Output heads: the language-model head and the encoder pooler."""
from __future__ import annotations

from dataclasses import replace
from typing import Literal

from pydantic import Field

from .base import Name, NodeSpec, PosFloat, PosInt, Scope, linear_params


class LMHead(NodeSpec):
    """Project the stream to vocabulary logits, optionally sharing the weight of a named embedding."""

    kind = "lm_head"
    family = "head"
    title = "LM head"
    builder = "archdsl.blocks.heads:build_lm_head"
    output = "logits"
    shorthand = "vocab"

    vocab: PosInt = Field(description="Number of logits.")
    tie: Name | None = Field(None, description="Name of the embedding whose weight this head reuses.")
    bias: bool = Field(False, description="Add a bias to the logits.")
    scale: PosFloat | None = Field(None, description="Multiply the stream by this before projecting (T5 v1.0's tied "
                                   "head: ${d_model ** -0.5}).")
    softcap: PosFloat | None = Field(None, description="Soft-cap the logits to (-softcap, softcap): softcap · "
                                     "tanh(logits / softcap) (Gemma 2: 30).")

    def out_width(self, width: int) -> int:
        return self.vocab

    def param_count(self, scope: Scope) -> int:
        if self.tie:
            return self.vocab if self.bias else 0
        return linear_params(scope.width, self.vocab, self.bias)

    def flops_per_token(self, scope: Scope) -> int:
        return 2 * scope.width * self.vocab

    def check(self, scope: Scope) -> None:
        if not self.tie:
            return
        if self.tie not in scope.embeddings:
            known = ", ".join(sorted(scope.embeddings)) or "none"
            scope.report("tie", f"no embedding named '{self.tie}' before this head (known: {known})",
                         "give the embedding `name: ...` and tie to that name")
            return
        vocab, dim = scope.embeddings[self.tie]
        if (vocab, dim) != (self.vocab, scope.width):
            scope.report("tie", f"cannot tie a {scope.width}→{self.vocab} head to embedding '{self.tie}' "
                         f"of shape {vocab}×{dim}", "vocab and width must match the embedding")

    def tied_to(self) -> str | None:
        return self.tie

    def summary_args(self) -> str:
        return (f"vocab {self.vocab}" + (f", tied to {self.tie}" if self.tie else "")
                + (f", × {self.scale:.4g}" if self.scale is not None else "")
                + (f", softcap {self.softcap:g}" if self.softcap is not None else ""))


class Pooler(NodeSpec):
    """Summarise the sequence into one vector (a side output; the stream passes through unchanged)."""

    kind = "pooler"
    family = "head"
    title = "Pooler"
    builder = "archdsl.blocks.heads:build_pooler"
    placement = frozenset({"top_level", "once"})
    side_output = "pooled"

    reduce: Literal["first", "mean"] = Field("first", description="first token (BERT's [CLS]) or masked mean.")
    dense: bool = Field(True, description="A width→width projection after reducing.")
    activation: Literal["tanh", "none"] = Field("tanh", description="Activation after the projection.")

    def next_scope(self, scope: Scope, node_id: str) -> Scope:
        return replace(scope, side_outputs=scope.side_outputs | {"pooled"})

    def param_count(self, scope: Scope) -> int:
        return linear_params(scope.width, scope.width, True) if self.dense else 0

    def flops_per_token(self, scope: Scope) -> int:
        return 0  # one vector per sequence, negligible per token

    def summary_args(self) -> str:
        return f"{self.reduce}" + (f", dense+{self.activation}" if self.dense else "")
