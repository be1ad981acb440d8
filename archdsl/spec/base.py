"""The base of every node kind: strict Pydantic fields plus torch-free shape rules.

A node kind is one class: its fields are the language (validated, with defaults and
docstrings that become the JSON Schema), and its methods say what the node does to the
width of the stream, how many parameters it owns and how many FLOPs it costs. The IR, the
summary and the diagram read these methods; the torch builder of the same kind must agree
(a test checks parameter counts against the built module for every spec).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, ClassVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
Probability = Annotated[float, Field(ge=0.0, lt=1.0)]
PosFloat = Annotated[float, Field(gt=0.0)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)]

STRICT = ConfigDict(extra="forbid", strict=True, validate_default=False)


@dataclass
class Scope:
    """What a node sees while the IR is resolved: the stream width and the context above it."""

    width: int
    positional: Any = None  # the Positional node (rotary/alibi) that governs attention here
    positional_id: str | None = None  # its IR node id
    embeddings: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (vocab, dim)
    memory_widths: dict[str, int] = field(default_factory=dict)  # stack name -> output width, for cross-attention
    seq_len: int = 1024
    report: Callable[[str | None, str, str | None], None] = lambda f, m, h=None: None


class NodeSpec(BaseModel):
    """Fields and shape rules shared by every node kind."""

    model_config = STRICT
    kind: ClassVar[str]  # the YAML key: `- attention: {...}`
    family: ClassVar[str] = "other"  # colour group in diagrams, row group in summaries
    shorthand: ClassVar[str | None] = None  # `dropout: 0.1` means `dropout: {p: 0.1}`
    leaf: ClassVar[bool] = True  # composite kinds (residual, parallel, repeat) are False

    name: Name | None = Field(None, description="Module name in the compiled model (default: the kind).")

    _loc: Any = PrivateAttr(None)  # errors.Loc of the node in the YAML, set by the loader
    _field_locs: dict = PrivateAttr(default_factory=dict)  # field -> Loc of its value

    def __eq__(self, other: object) -> bool:  # where a node was written is not part of what it is
        return type(self) is type(other) and self.__dict__ == other.__dict__  # type: ignore[union-attr]

    __hash__ = None  # type: ignore[assignment]

    def loc_of(self, field: str | None = None) -> Any:
        """Where this node (or one of its fields) was written, for error messages."""
        return (self._field_locs.get(field) if field else None) or self._loc

    @model_validator(mode="before")
    @classmethod
    def _expand_shorthand(cls, data: Any) -> Any:
        if data is None:
            return {}
        if not isinstance(data, dict) and cls.shorthand:
            return {cls.shorthand: data}
        return data

    # --- shape rules; override where the kind differs -------------------------------------
    def out_width(self, width: int) -> int:
        """Width of the stream after this node."""
        return width

    def param_count(self, scope: Scope) -> int:
        """Exact number of parameters this node owns (tied weights count once, at the owner)."""
        return 0

    def flops_per_token(self, scope: Scope) -> int:
        """Forward FLOPs per token (2 per multiply-add), at context length scope.seq_len."""
        return 0

    def check(self, scope: Scope) -> None:
        """Semantic checks that need the graph (widths); report(field, message, hint)."""

    def summary_args(self) -> str:
        """The key arguments, as a diagram or summary row shows them."""
        return ""

    def default_name(self) -> str:
        return self.kind


def linear_params(n_in: int, n_out: int, bias: bool) -> int:
    return n_in * n_out + (n_out if bias else 0)
