"""Composition: residual connections, parallel branches, repeated layers and blocks that need a memory.

These kinds own no parameters; the IR resolves their bodies and checks that widths agree.
"""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, model_validator

from .base import Name, NodeSpec, PosFloat, PosInt


class Residual(NodeSpec):
    """x + body(x), or x + scale * body(x). The body must keep the width."""

    kind = "residual"
    family = "structure"
    builder = "archdsl.blocks.structure:build_residual"
    shorthand = "body"
    leaf = False

    body: list["Node"] = Field(min_length=1, description="The branch, a list of nodes.")  # noqa: F821
    scale: PosFloat | None = Field(None, description="Multiply the branch by this before adding it: x + scale * body(x) "
                                   "(Granite's residual_multiplier).")


class Parallel(NodeSpec):
    """Sum of branches applied to the same input: branch_1(x) + branch_2(x) + ... (GPT-J, NeoX, Falcon),
    or with `scales` s_1 · branch_1(x) + s_2 · branch_2(x) + ... (Falcon-H1's attention and Mamba-2
    side by side, each with its output multiplier)."""

    kind = "parallel"
    family = "structure"
    builder = "archdsl.blocks.structure:build_parallel"
    shorthand = "branches"
    leaf = False

    branches: list[list["Node"]] = Field(min_length=2, description="Two or more branches, each a list of nodes.")  # noqa: F821
    scales: list[PosFloat] | None = Field(None, description="One multiplier per branch, applied to its output before "
                                          "the sum (Falcon-H1's ssm_out_multiplier and attention_out_multiplier).")

    @model_validator(mode="after")
    def _one_scale_per_branch(self) -> "Parallel":
        if self.scales is not None and len(self.scales) != len(self.branches):
            raise ValueError(f"scales has {len(self.scales)} entries for {len(self.branches)} branches; give one "
                             "multiplier per branch (1.0 for a branch that is not scaled)")
        return self


class Repeat(NodeSpec):
    """`times` copies of a body, each with its own weights; `pattern` cycles several bodies (local, local, global, ...)."""

    kind = "repeat"
    family = "structure"
    builder = "archdsl.blocks.structure:build_repeat"
    shorthand = "times"
    leaf = False

    times: PosInt = Field(description="Number of layers.")
    body: Annotated[list["Node"], Field(min_length=1)] | None = Field(  # noqa: F821
        None, description="The layer: a block name or a list of nodes.")
    # an empty body would be a layer that does nothing, which the diagram and the module tree cannot show
    pattern: list[Annotated[list["Node"], Field(min_length=1)]] | None = Field(  # noqa: F821
        None, min_length=1, description="Bodies used in turn: layer i is pattern[i % len(pattern)].")
    shared: bool = Field(False, description="One set of weights for every copy (ALBERT, Universal Transformers; "
                         "with a pattern, one per pattern entry): layer i uses the parameters of layer i mod the pattern "
                         "length, so the model has one layer's parameters but runs all of them, each with its own cache.")
    labels: list[str] = Field(default_factory=list, description="Block names of body/pattern, for diagrams (filled in by the loader).")

    @model_validator(mode="after")
    def _one_body(self) -> "Repeat":
        if (self.body is None) == (self.pattern is None):
            raise ValueError("a repeat needs exactly one of body or pattern")
        return self

    def bodies(self) -> list[list[Any]]:
        return [self.body] if self.body is not None else list(self.pattern or [])

    def body_for(self, index: int) -> list[Any]:
        bodies = self.bodies()
        return bodies[index % len(bodies)]

    def summary_args(self) -> str:
        return f"× {self.times}"

    def default_name(self) -> str:
        return "layers"


class WithMemory(NodeSpec):
    """body(x) when the model is given the memory it names, else x unchanged. A decoder trained
    beside an encoder and also used alone (BartForCausalLM, TrOCR's and Whisper's decoders as
    causal LMs) skips its cross-attention blocks, their norms included, when no encoder states
    are given; the memory is declared in the stack's ``memories`` and passed to the model's call
    (``model(tokens, memory={name: states})``). The body must keep the width."""

    kind = "with_memory"
    family = "structure"
    builder = "archdsl.blocks.structure:build_with_memory"
    shorthand = "body"
    leaf = False

    needs: Name = Field(description="The memory (declared in the stack's `memories`) whose presence runs the body.")
    body: list["Node"] = Field(min_length=1, description="What runs when the memory is given, a list of nodes.")  # noqa: F821

    def summary_args(self) -> str:
        return f"with {self.needs}"
