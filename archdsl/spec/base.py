"""The base of every node kind: strict Pydantic fields plus torch-free rules — the kind protocol.

A node kind is one class: its fields are the language (validated, with defaults and
docstrings that become the JSON Schema), and its methods say what the node does to the
width of the stream, how many parameters it owns, how many FLOPs it costs, what state it
keeps while decoding, and how it is labelled. The IR, the summary, the diagram, the schema,
the language reference and the cache read these methods and never a kind's name; the torch
module comes from the builder registered with the kind (``builder``, imported lazily; see
archdsl/kinds.py), and must agree (a test checks parameter counts against the built module).

The defaults describe the common case — a block that maps the stream (batch, seq, width) to
(batch, seq, out_width) and keeps no decode state — so a simple kind overrides only
``param_count``, ``flops_per_token`` and maybe ``check``/``summary_args``.
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
    tokens: int | None = None  # a fixed number of tokens set by an earlier node (an image's patches), else None
    side_outputs: frozenset = frozenset()  # side outputs written before this node ("pooled")
    top_level: bool = True  # directly in its stack, not inside a residual/parallel/repeat


@dataclass(frozen=True)
class DecodeState:
    """What one node keeps per sequence while decoding, in values (multiply by the bytes of the dtype).

    ``per_token`` values are kept for every position of the context (attention's keys and values,
    a latent); ``fixed`` values do not grow with the context (a convolution's last inputs, a
    recurrent or state-space state)."""

    per_token: int = 0
    fixed: int = 0

    def values(self, context: int) -> int:
        return self.per_token * context + self.fixed


class NodeSpec(BaseModel):
    """Fields and shape rules shared by every node kind."""

    model_config = STRICT
    kind: ClassVar[str]  # the YAML key: `- attention: {...}`
    family: ClassVar[str] = "other"  # colour group in diagrams (archdsl.diagram.FAMILY_STYLES)
    title: ClassVar[str | None] = None  # how a diagram titles the node; default: the kind
    shorthand: ClassVar[str | None] = None  # `dropout: 0.1` means `dropout: {p: 0.1}`
    leaf: ClassVar[bool] = True  # composite kinds (residual, parallel, repeat, with_memory) are False
    builder: ClassVar[Any] = None  # "package.module:function" (or a callable) building the torch module
    residual_branch: ClassVar[bool] = False  # a sublayer whose output projection writes into a residual
    # (attention, feed-forward): counted for the 1/sqrt(N) scaling of its initialisation
    placement: ClassVar[frozenset] = frozenset()  # "top_level", "last" (of the model's output), "once" (per model)
    output: ClassVar[str | None] = None  # what the model returns when this is its last node: logits | classes
    side_output: ClassVar[str | None] = None  # a second output the node writes (pooled) while the stream passes
    reads_input: ClassVar[str | None] = None  # the raw model input the node turns into the stream (tokens, image)

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

    def display_title(self) -> str:
        """The node's title in diagrams (its kind's `title`)."""
        return self.title or self.kind

    # --- graph roles; override where the kind has one ---------------------------------------
    def reads(self) -> str | None:
        """The raw model input this node transforms into the stream (None: it reads the stream)."""
        return self.reads_input

    def start_width(self, stack_width: int) -> int:
        """Input width when the node reads a raw input (no stream yet): the stack's width."""
        return stack_width

    def shapes(self, in_width: int | None, out_width: int, scope: Scope) -> tuple[tuple, tuple]:
        """(input shape, output shape), symbolic where sizes vary (batch, seq)."""
        in_shape = ("batch", "seq") if in_width is None else ("batch", "seq", in_width)
        return in_shape, ("batch", "seq", out_width)

    def next_scope(self, scope: Scope, node_id: str) -> Scope:
        """What the nodes after this one see (a positional node governs later attention)."""
        return scope

    def input_limits(self, width: int) -> dict[str, int]:
        """Ranges of the model inputs this node indexes (tokens: vocab, positions: max_len, ...), so the
        model can check inputs before a lookup fails deep inside a forward."""
        return {}

    def context_length(self) -> int | None:
        """The context this node was made for (learned positions, image patches), for attention FLOPs."""
        return None

    def uses_positional(self) -> bool:
        """True when the rotary/alibi/relative node before it configures this node (self-attention)."""
        return False

    def rotary_dims(self, width: int, positional: Any) -> tuple[int, str] | None:
        """Dims per head that the governing rotary node rotates, and the field that set them."""
        return None

    def memory(self) -> str | None:
        """The stack of a graph model whose output this node reads (cross-attention), or None."""
        return None

    def table(self) -> tuple[str | None, int] | None:
        """(name, vocab) of an embedding table later nodes may tie to; None if it owns none."""
        return None

    def tied_to(self) -> str | None:
        """Name of the embedding table whose weight this node shares."""
        return None

    def decode_state(self, scope: Scope) -> DecodeState | None:
        """The state kept per sequence while generating (KV cache, latent, conv or recurrent state)."""
        return None


FAMILIES = ("embedding", "positional", "attention", "feedforward", "norm", "regularization", "head", "recurrent",
            "conv", "structure", "other")  # colour families (archdsl.diagram draws each); "other" is grey
PLACEMENTS = frozenset({"top_level", "last", "once"})


def check_kind_class(cls: type) -> None:
    """A kind class must declare what the registry and the tools rely on; raises ValueError naming what."""
    if cls.family not in FAMILIES:
        raise ValueError(f"kind '{cls.kind}': family '{cls.family}' is not one of {', '.join(FAMILIES)} "
                         "(the diagram colour families)")
    if not cls.placement <= PLACEMENTS:
        raise ValueError(f"kind '{cls.kind}': placement {sorted(cls.placement - PLACEMENTS)} is not among "
                         f"{sorted(PLACEMENTS)}")
    keys = {f.alias or name for name, f in cls.model_fields.items()}
    if cls.shorthand is not None and cls.shorthand not in keys:
        raise ValueError(f"kind '{cls.kind}': shorthand '{cls.shorthand}' is not one of its fields")
    if cls.output not in (None, "logits", "classes") or cls.reads_input not in (None, "tokens", "image"):
        raise ValueError(f"kind '{cls.kind}': output must be None, logits or classes and reads_input None, tokens "
                         "or image")


def linear_params(n_in: int, n_out: int, bias: bool) -> int:
    return n_in * n_out + (n_out if bias else 0)
