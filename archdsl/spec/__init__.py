"""The archdsl language as Pydantic models: one class per node kind, a tagged union of them,
and the top-level Spec. Importing this package never imports torch.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Iterator, Literal, Union

from pydantic import BaseModel, Discriminator, Field, PrivateAttr, Tag, create_model, model_validator
from pydantic_core import PydanticCustomError, core_schema

from ..kinds import BUILTIN, REGISTRY, KindError, register_kind
from .attention import Attention, LatentAttention
from .base import STRICT, DecodeState, Name, NodeSpec, PosFloat, PosInt, Scope
from .embedding import Embedding, Positional
from .feedforward import MLP, Dropout, Linear, MoE
from .heads import LMHead, Pooler
from .linear_mixers import RGLRU, GatedDeltaNet, LightningAttention, ShortConv
from .norm import LayerNorm, RMSNorm
from .sequence import GRU, LSTM, Conv1d, Fourier
from .ssm import Mamba, Mamba2
from .structure import Parallel, Repeat, Residual, WithMemory
from .vision import Classifier, PatchEmbedding


def _register_builtin_kinds() -> None:
    """Every module of this package is a family of built-in kinds: each NodeSpec subclass that declares
    its own `kind` is registered, module by module (alphabetically) in the order of definition, through
    the same door as users' kinds (archdsl/kinds.py). Adding a built-in kind is writing its class (and
    its builder) in a file of its own; nothing here lists it."""
    import importlib
    import pkgutil

    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for cls in list(vars(module).values()):
            if (isinstance(cls, type) and issubclass(cls, NodeSpec) and cls.__module__ == module.__name__
                    and "kind" in vars(cls)):
                register_kind(cls, origin=BUILTIN)


_register_builtin_kinds()


class _KindClasses(Mapping):
    """kind name -> spec class, live over the registry: users' kinds and installed plugins included
    (a plugin is imported when its name is first looked up)."""

    def __getitem__(self, name: str) -> type[NodeSpec]:
        try:
            kind = REGISTRY.get(name)
        except KindError:
            kind = None
        if kind is None:
            raise KeyError(name)
        return kind.spec

    def __contains__(self, name: object) -> bool:
        try:
            return REGISTRY.get(name) is not None
        except KindError:
            return False

    def __iter__(self) -> Iterator[str]:  # every usable kind: installed plugins are imported first
        REGISTRY.load_all()
        return iter([kind.name for kind in REGISTRY])

    def __len__(self) -> int:
        return len(list(iter(self)))


NODE_KINDS: Mapping[str, type[NodeSpec]] = _KindClasses()
_wrappers: dict[type, type[BaseModel]] = {}  # spec class -> a one-field model {kind: args}


def _wrapper(cls: type[NodeSpec]) -> type[BaseModel]:
    """A model with one field named after the kind, so that validation errors carry the kind in their
    path (model.layers[3].attention.heads) exactly as the YAML nests it."""
    if cls not in _wrappers:
        _wrappers[cls] = create_model(f"{cls.__name__}Node", __config__=STRICT, **{cls.kind: (cls, ...)})
    return _wrappers[cls]


def _validate_node(value: Any) -> NodeSpec:
    if isinstance(value, NodeSpec):
        if NODE_KINDS.get(value.kind) is not type(value):
            raise PydanticCustomError("node_kind", "'{kind}' is not a registered node kind", {"kind": value.kind})
        return value
    if not (isinstance(value, dict) and len(value) == 1):
        raise PydanticCustomError("node_kind", "a node is a one-key mapping {kind: {args}}")
    kind, args = next(iter(value.items()))
    try:
        found = REGISTRY.get(kind)
    except KindError as exc:
        raise PydanticCustomError("node_kind", "{why}", {"why": str(exc)}) from None
    if found is None:
        raise PydanticCustomError("node_kind", "unknown node kind '{kind}'", {"kind": str(kind)[:80]})
    return getattr(_wrapper(found.spec).model_validate({kind: args}), kind)


class _NodeType:
    """The type of a node in a list of nodes: `{kind: {args}}`, dispatched on the kind through the
    registry at validation time (so kinds registered later — users' and plugins' — validate too)."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(_validate_node)

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: Any, handler: Any) -> dict:
        return {"type": "object", "description": "a node: {kind: {args}} (see archdsl.schema for every kind)"}


Node = _NodeType

for _cls in (Residual, Parallel, Repeat, WithMemory):
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
    memories: dict[Name, PosInt] = Field(default_factory=dict, description="Memories the model is given when "
                                         "called rather than computing them (an encoder's output, for a decoder "
                                         "also used alone): name -> width. Cross-attention reads one by name, "
                                         "inside `with_memory`, so that the model also runs without it.")

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


__all__ = ["NODE_KINDS", "MODEL_TAGS", "Node", "NodeSpec", "Scope", "DecodeState", "Spec", "Stack", "SingleStack",
           "GraphModel", "Init", "Embedding", "Positional", "Attention", "LatentAttention", "MLP", "MoE", "Linear",
           "Dropout", "LayerNorm", "RMSNorm", "Residual", "Parallel", "Repeat", "WithMemory", "LMHead", "Pooler", "Conv1d", "LSTM", "Fourier",
           "GRU", "PatchEmbedding", "Classifier"]
