"""Token embeddings and positional encodings."""
from __future__ import annotations

from dataclasses import replace
from typing import Literal

from pydantic import Field, model_validator

from .base import Name, NodeSpec, NonNegInt, PosFloat, PosInt, Scope


class Embedding(NodeSpec):
    """A lookup table. Reading `tokens` starts the stream; reading `token_type_ids` adds to it (BERT segments)."""

    kind = "embedding"
    family = "embedding"
    title = "Embedding"
    builder = "archdsl.blocks.embedding:build_embedding"
    reads_input = "tokens"  # with input: tokens (the default); a token-type table adds to the stream
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

    def reads(self) -> str | None:
        return "tokens" if self.input == "tokens" else None

    def start_width(self, stack_width: int) -> int:
        return self.dim or stack_width

    def input_limits(self, width: int) -> dict[str, int]:
        return {self.input: self.vocab}

    def table(self) -> tuple[str | None, int] | None:
        return (self.name, self.vocab) if self.input == "tokens" and self.tie is None else None

    def tied_to(self) -> str | None:
        return self.tie

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


# the fields each rotary scaling reads (the others are refused with it)
_SCALING_FIELDS = {
    "linear": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_len"),
    "yarn": ("factor", "original_max_len", "beta_fast", "beta_slow", "attention_factor", "truncate"),
}


class Positional(NodeSpec):
    """Where tokens sit. learned/sinusoidal add a vector to the stream; rotary/alibi/relative configure the attention after them."""

    kind = "positional"
    family = "positional"
    title = "Positional"
    builder = "archdsl.blocks.embedding:build_positional"
    shorthand = "kind"

    type: Literal["learned", "sinusoidal", "rotary", "alibi", "relative", "none"] = Field(
        alias="kind", description="The encoding.")
    max_len: PosInt | None = Field(None, description="learned: rows of the table, the longest sequence (required). "
                                   "Other kinds: the context the model was trained for, at which archdsl summary "
                                   "counts attention FLOPs; longer sequences still run.")
    offset: NonNegInt = Field(0, description="learned: rows reserved before position 0; position p reads row p + offset "
                              "of a table of max_len + offset rows (BART: 2). sinusoidal: position p gets the "
                              "table's row p + offset (fairseq's tables: 2).")
    halves: bool = Field(False, description="sinusoidal: the sines of every frequency, then the cosines (Marian, "
                         "Pegasus), instead of sin and cos interleaved (Vaswani et al.).")
    spacing: Literal["vaswani", "tensor2tensor"] = Field(
        "vaswani", description="sinusoidal: the frequencies 10000^(-2i/d) (Vaswani et al.; Marian, Pegasus), or "
        "tensor2tensor's 10000^(-i/(d/2 - 1)), whose last is exactly 1/10000 (fairseq's: XGLM, M2M-100; an odd "
        "width gets a zero last dim).")
    fraction: float = Field(1.0, gt=0.0, le=1.0, description="rotary: fraction of each head's dims that rotate.")
    base: PosFloat = Field(10000.0, description="rotary: frequency base (theta).")
    interleaved: bool = Field(False, description="rotary: rotate adjacent pairs (GPT-J) instead of halves (NeoX/Llama).")
    reverse: bool = Field(False, description="rotary: rotate by −angle (nanochat, whose rotate_half flips the signs): "
                          "scores then depend on the distance with the opposite sign.")
    scaling: Literal["none", "linear", "llama3", "yarn"] = Field(
        "none", description="rotary: frequency scaling for contexts longer than trained: linear (every frequency / "
        "factor, i.e. position interpolation), llama3 (Llama 3.1: long wavelengths / factor, short ones kept, a "
        "smooth blend between) or yarn (YaRN: a linear ramp between the two over the dims, by rotations within "
        "original_max_len, and cos/sin scaled by attention_factor).")
    factor: PosFloat | None = Field(None, description="rotary scaling: the context extension factor (Llama 3.1: 8).")
    low_freq_factor: PosFloat = Field(1.0, description="llama3 scaling: wavelengths above original_max_len / this "
                                      "are divided by factor.")
    high_freq_factor: PosFloat = Field(4.0, description="llama3 scaling: wavelengths below original_max_len / this "
                                       "are kept.")
    original_max_len: PosInt | None = Field(None, description="llama3 and yarn scaling: the context length before "
                                            "scaling (Llama 3.1: 8192).")
    beta_fast: PosFloat = Field(32.0, description="yarn scaling: dims that rotate more than this many times within "
                                "original_max_len keep their frequency.")
    beta_slow: PosFloat = Field(1.0, description="yarn scaling: dims that rotate fewer times than this are divided "
                                "by factor.")
    attention_factor: PosFloat | None = Field(None, description="yarn scaling: multiplies cos and sin (so the "
                                              "attention logits by its square); default 0.1 · ln(factor) + 1.")
    truncate: bool = Field(True, description="yarn scaling: round the ramp's ends to whole dims.")
    heads: PosInt | None = Field(None, description="relative: heads of the attention layers it governs (required); "
                                 "one learned bias per bucket and head.")
    buckets: PosInt = Field(32, description="relative: number of distance buckets (T5: 32); half are exact distances, "
                            "half grow logarithmically up to max_distance. Bidirectional attention splits them between "
                            "keys before and after the query.")
    max_distance: PosInt = Field(128, description="relative: distances from this on share the last bucket (T5: 128).")

    model_config = {**NodeSpec.model_config, "populate_by_name": True}  # `kind:` in YAML, `.type` in Python

    @model_validator(mode="after")
    def _learned_needs_length(self):
        if self.type == "learned" and self.max_len is None:
            raise ValueError("a learned positional embedding needs max_len")
        if self.type not in ("learned", "sinusoidal") and "offset" in self.model_fields_set:
            raise ValueError("offset applies to learned and sinusoidal positions only")
        for field in ("halves", "spacing"):
            if self.type != "sinusoidal" and field in self.model_fields_set:
                raise ValueError(f"{field} applies to kind: sinusoidal only")
        rotary_only = sorted({"fraction", "base", "interleaved", "scaling", "reverse"} & self.model_fields_set)
        if self.type != "rotary" and rotary_only:
            raise ValueError(f"{', '.join(rotary_only)} appl{'ies' if len(rotary_only) == 1 else 'y'} to kind: rotary only")
        # factor by value: a block parameter may pass factor: null along with scaling: none
        given = (set(_SCALING_FIELDS["yarn"]) | set(_SCALING_FIELDS["llama3"])) & self.model_fields_set
        given = given - {"factor"} | ({"factor"} if self.factor is not None else set())
        misplaced = sorted(given - set(_SCALING_FIELDS.get(self.scaling, ())))
        if misplaced:
            users = [k for k, fields in _SCALING_FIELDS.items() if set(misplaced) <= set(fields)]
            where = " or ".join(f"scaling: {k}" for k in users) or "other scalings"
            raise ValueError(f"{', '.join(misplaced)} appl{'ies' if len(misplaced) == 1 else 'y'} to {where} only")
        if self.scaling != "none" and self.factor is None:
            raise ValueError(f"scaling: {self.scaling} needs factor (e.g. 8 for Llama 3.1)")
        if self.scaling in ("llama3", "yarn") and self.original_max_len is None:
            raise ValueError(f"scaling: {self.scaling} needs original_max_len (the context before scaling; "
                             "Llama 3.1: 8192)")
        if self.scaling == "llama3":
            if self.high_freq_factor <= self.low_freq_factor:
                raise ValueError(f"high_freq_factor {self.high_freq_factor:g} must exceed low_freq_factor "
                                 f"{self.low_freq_factor:g}")
        misplaced = sorted({"heads", "buckets", "max_distance"} & self.model_fields_set)
        if self.type != "relative" and misplaced:
            raise ValueError(f"{', '.join(misplaced)} appl{'ies' if len(misplaced) == 1 else 'y'} to "
                             "kind: relative only")
        if self.type == "relative":
            if self.heads is None:
                raise ValueError("a relative position bias needs heads (those of the attention layers it governs)")
            if self.buckets < 4:
                raise ValueError(f"a relative position bias needs at least 4 buckets, got {self.buckets}")
            if self.max_distance <= self.buckets // 2:
                raise ValueError(f"max_distance {self.max_distance} must exceed half the buckets ({self.buckets // 2}): "
                                 "the first half of the buckets hold exact distances")
        return self

    def next_scope(self, scope: Scope, node_id: str) -> Scope:
        if self.type in ("learned", "sinusoidal"):  # these add to the stream; the others configure attention
            return scope
        governs = self.type != "none"
        return replace(scope, positional=self if governs else None, positional_id=node_id if governs else None)

    def input_limits(self, width: int) -> dict[str, int]:
        return {"positions": self.max_len} if self.type == "learned" else {}  # type: ignore[dict-item]

    def context_length(self) -> int | None:
        return self.max_len

    def check(self, scope: Scope) -> None:
        if self.type == "learned" and scope.tokens is not None and self.max_len < scope.tokens:  # type: ignore[operator]
            scope.report("max_len", f"{self.max_len} learned positions cannot cover the {scope.tokens} patch tokens",
                         f"max_len: {scope.tokens} (patches, plus 1 for the class token)")

    def param_count(self, scope: Scope) -> int:
        if self.type == "learned":
            return (self.max_len + self.offset) * scope.width  # type: ignore[operator]
        if self.type == "relative":
            return self.buckets * self.heads  # type: ignore[operator]
        return 0

    def summary_args(self) -> str:
        if self.type == "rotary":
            extra = f", {self.fraction:g} of dims" if self.fraction != 1 else ""
            extra += f", {self.scaling} ×{self.factor:g}" if self.scaling != "none" else ""
            theta = f"{self.base:.0f}" if self.base.is_integer() else f"{self.base:g}"
            return f"rotary θ={theta}{extra}"
        if self.type == "relative":
            return f"relative bias, {self.buckets} buckets, ≤{self.max_distance}, {self.heads} heads"
        text = self.type + (f" {self.max_len}" if self.max_len and self.type == "learned" else "")
        return text + (f", offset {self.offset}" if self.offset else "")

    def default_name(self) -> str:
        return "positional"
