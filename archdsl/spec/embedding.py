"""Token embeddings and positional encodings."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Name, NodeSpec, NonNegInt, PosFloat, PosInt, Scope


class Embedding(NodeSpec):
    """A lookup table. Reading `tokens` starts the stream; reading `token_type_ids` adds to it (BERT segments)."""

    kind = "embedding"
    family = "embedding"
    shorthand = "vocab"

    vocab: PosInt = Field(description="Number of rows (vocabulary size, or number of token types).")
    dim: PosInt | None = Field(None, description="Embedding width; default: the model width.")
    input: Literal["tokens", "token_type_ids"] = Field(
        "tokens", description="Which model input indexes the table; token_type_ids embeddings are added to the stream.")
    scale: PosFloat | None = Field(None, description="Multiply the embedding by this (e.g. ${d_model ** 0.5}).")
    padding_idx: NonNegInt | None = Field(None, description="Row whose gradient is zero (torch padding_idx).")
    tie: Name | None = Field(None, description="Share the table of this earlier embedding (e.g. one vocabulary for "
                             "encoder and decoder).")

    def out_width(self, width: int) -> int:
        return self.dim or width

    def param_count(self, scope: Scope) -> int:
        return 0 if self.tie else self.vocab * (self.dim or scope.width)

    def check(self, scope: Scope) -> None:
        if self.tie is not None:
            if self.tie not in scope.embeddings:
                known = ", ".join(sorted(scope.embeddings)) or "none"
                scope.report("tie", f"no embedding named '{self.tie}' before this one (known: {known})",
                             "give the embedding `name: ...` and tie to that name")
            elif scope.embeddings[self.tie] != (self.vocab, self.dim or scope.width):
                vocab, dim = scope.embeddings[self.tie]
                scope.report("tie", f"cannot share embedding '{self.tie}' of shape {vocab}×{dim} with a "
                             f"{self.vocab}×{self.dim or scope.width} table", "vocab and dim must match")
        if self.padding_idx is not None and self.padding_idx >= self.vocab:
            scope.report("padding_idx", f"padding_idx {self.padding_idx} is outside the vocab of {self.vocab}", None)
        if self.input == "token_type_ids" and (self.dim or scope.width) != scope.width:
            scope.report("dim", f"a token-type embedding of dim {self.dim} cannot be added to width {scope.width}",
                         "leave dim unset")

    def summary_args(self) -> str:
        text = f"{self.vocab}×{self.dim}" if self.dim else f"vocab {self.vocab}"
        text += f", shared with {self.tie}" if self.tie else ""
        return text + (f", × {self.scale:.4g}" if self.scale is not None else "")

    def default_name(self) -> str:
        return "embedding" if self.input == "tokens" else "token_type_embedding"


class Positional(NodeSpec):
    """Where tokens sit. learned/sinusoidal add a vector to the stream; rotary/alibi configure the attention after them."""

    kind = "positional"
    family = "positional"
    shorthand = "kind"

    type: Literal["learned", "sinusoidal", "rotary", "alibi", "none"] = Field(
        alias="kind", description="The encoding.")
    max_len: PosInt | None = Field(None, description="Longest sequence (required for learned).")
    fraction: float = Field(1.0, gt=0.0, le=1.0, description="rotary: fraction of each head's dims that rotate.")
    base: PosFloat = Field(10000.0, description="rotary: frequency base (theta).")
    interleaved: bool = Field(False, description="rotary: rotate adjacent pairs (GPT-J) instead of halves (NeoX/Llama).")

    model_config = {**NodeSpec.model_config, "populate_by_name": True}  # `kind:` in YAML, `.type` in Python

    @model_validator(mode="after")
    def _learned_needs_length(self):
        if self.type == "learned" and self.max_len is None:
            raise ValueError("a learned positional embedding needs max_len")
        return self

    def param_count(self, scope: Scope) -> int:
        return self.max_len * scope.width if self.type == "learned" else 0  # type: ignore[operator]

    def summary_args(self) -> str:
        if self.type == "rotary":
            extra = f", {self.fraction:g} of dims" if self.fraction != 1 else ""
            theta = f"{self.base:.0f}" if self.base.is_integer() else f"{self.base:g}"
            return f"rotary θ={theta}{extra}"
        return self.type + (f" {self.max_len}" if self.max_len and self.type == "learned" else "")

    def default_name(self) -> str:
        return "positional"
