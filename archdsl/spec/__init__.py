"""The archdsl language as Pydantic models: one class per node kind, a tagged union of them,
and the top-level Spec. Importing this package never imports torch.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, Discriminator, Field, PrivateAttr, Tag, model_validator

from .attention import Attention, LatentAttention
from .base import STRICT, Name, NodeSpec, PosFloat, PosInt, Scope
from .embedding import Embedding, Positional
from .feedforward import MLP, Dropout, Linear, MoE
from .heads import LMHead, Pooler
from .norm import LayerNorm, RMSNorm
from .sequence import GRU, LSTM, Conv1d
from .structure import Parallel, Repeat, Residual
from .vision import Classifier, PatchEmbedding

NODE_KINDS: dict[str, type[NodeSpec]] = {
    cls.kind: cls for cls in (Embedding, Positional, Attention, LatentAttention, MLP, MoE, Linear, Dropout,
                              LayerNorm, RMSNorm, Residual, Parallel, Repeat, LMHead, Pooler,
                              Conv1d, LSTM, GRU, PatchEmbedding, Classifier)
}


def _node_tag(value: Any) -> str | None:
    if isinstance(value, NodeSpec):
        return value.kind
    if isinstance(value, dict) and len(value) == 1:
        return str(next(iter(value)))
    return None


def _node_args(value: Any) -> Any:
    """`{attention: {heads: 12}}` -> `{heads: 12}` (the tag was used to pick the class)."""
    if isinstance(value, dict) and len(value) == 1 and not isinstance(value, NodeSpec):
        return next(iter(value.values()))
    return value


Node = Annotated[
    Union[tuple(Annotated[cls, BeforeValidator(_node_args), Tag(kind)] for kind, cls in NODE_KINDS.items())],  # type: ignore[misc]
    Discriminator(_node_tag, custom_error_type="node_kind",
                  custom_error_message="a node is a one-key mapping {kind: {args}}"),
]

for _cls in (Residual, Parallel, Repeat):
    _cls.model_rebuild(_types_namespace={"Node": Node})


class Init(BaseModel):
    """Weight initialisation (GPT-2's scheme by default)."""

    model_config = STRICT
    std: PosFloat = Field(0.02, description="Std of the normal used for every projection and embedding.")
    residual_scaling: bool = Field(
        True, description="Scale output projections that feed a residual by 1/sqrt(number of residual branches).")


InputName = Literal["tokens", "decoder_tokens", "image"]


class Stack(BaseModel):
    """A sequence of nodes over a stream of fixed width."""

    model_config = STRICT
    width: PosInt = Field(description="Width of the stream (d_model).")
    layers: list[Node] = Field(min_length=1, description="The nodes, in order.")  # type: ignore[valid-type]
    input: InputName = Field("tokens", description="The model input this stack reads: tokens, decoder_tokens "
                             "for the decoder of an encoder-decoder model, or image (pixel values, read by a "
                             "patch_embedding).")


class SingleStack(Stack):
    """`model: {width, layers}`: one stack, the common case (GPT, BERT, Llama)."""

    init: Init = Field(default_factory=Init, description="Weight initialisation.")

    def stacks(self) -> dict[str, Stack]:
        return {"": self}


class GraphModel(BaseModel):
    """`model: {graph: {encoder: {...}, decoder: {...}}, output: decoder}`: named stacks, read by cross-attention."""

    model_config = STRICT
    graph: dict[Name, Stack] = Field(min_length=1, description="Named stacks.")
    output: Name = Field(description="The stack whose output the model returns.")
    init: Init = Field(default_factory=Init, description="Weight initialisation.")

    @model_validator(mode="after")
    def _output_exists(self) -> "GraphModel":
        if self.output not in self.graph:
            raise ValueError(f"output '{self.output}' is not a stack of the graph (stacks: {', '.join(self.graph)})")
        return self

    def stacks(self) -> dict[str, Stack]:
        return dict(self.graph)


def _model_tag(value: Any) -> str:
    if isinstance(value, GraphModel) or (isinstance(value, dict) and "graph" in value):
        return "graph"
    return "stack"


MODEL_TAGS = ("stack", "graph")
Model = Annotated[Union[Annotated[SingleStack, Tag("stack")], Annotated[GraphModel, Tag("graph")]],
                  Discriminator(_model_tag)]


class Spec(BaseModel):
    """A whole architecture, with vars substituted and blocks expanded."""

    model_config = STRICT
    archdsl: Literal[1] = Field(1, description="Format version of the language.")
    name: str = Field(description="Architecture name.")
    description: str = Field("", description="What makes this architecture what it is.")
    vars: dict[str, Any] = Field(default_factory=dict, description="Named values, referenced as ${name}.")
    model: Model  # type: ignore[valid-type]

    _source: str | None = PrivateAttr(None)  # file the spec was loaded from
    _origin: Any = PrivateAttr(None)  # what load_spec read (path, text or dict): overrides re-read it
    _overrides: dict = PrivateAttr(default_factory=dict)  # the overrides it was read with
    _locs: dict = PrivateAttr(default_factory=dict)  # "model.graph.encoder" -> where it is written, for IR errors

    def __eq__(self, other: object) -> bool:  # the source file is not part of the architecture
        return type(self) is type(other) and self.__dict__ == other.__dict__  # type: ignore[union-attr]

    __hash__ = None  # type: ignore[assignment]

    def to_yaml(self) -> str:
        """A self-contained YAML text that loads back to an equal Spec (vars already applied)."""
        from ..dump import spec_to_yaml

        return spec_to_yaml(self)


__all__ = ["NODE_KINDS", "MODEL_TAGS", "Node", "NodeSpec", "Scope", "Spec", "Stack", "SingleStack", "GraphModel", "Init"] + [c.__name__ for c in NODE_KINDS.values()]
