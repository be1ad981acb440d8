"""archdsl: write a transformer's architecture as YAML; validate, compile, summarise and draw it.

    import archdsl
    spec = archdsl.load_spec("specs/gpt2.yaml", overrides={"layers": 2})
    model = archdsl.compile(spec, seed=0)          # an nn.Module
    print(archdsl.summary(spec))                   # params, shapes, FLOPs

Importing archdsl does not import torch; ``compile``/``ArchModel`` load it on first use.
"""
from __future__ import annotations

from typing import Any

from .errors import ErrorItem, SpecError
from .kinds import KindError, kinds, register_kind, unregister_kind
from .loader import load_spec
from .spec import Spec

__version__ = "0.1.0"


def graph(spec: Any, *, overrides=None, max_params: int | None = None, seq_len: int | None = None):
    """The resolved block graph (networkx.DiGraph) of a spec; see archdsl.ir for its attributes."""
    from .ir import build_graph

    if not (isinstance(spec, Spec) and not overrides):  # a Spec is checked by building its graph, done below
        spec = load_spec(spec, overrides=overrides, max_params=max_params)
    return build_graph(spec, max_params=max_params, seq_len=seq_len)


def summary(spec: Any, *, overrides=None, seq_len: int | None = None, max_params: int | None = None,
            context: int | None = None):
    """Per-block parameters, output shapes and FLOPs per token, computed without allocating weights.
    With ``context``, printing it adds the decode-state memory at that context per layer kind."""
    from .summarize import summarize

    result = summarize(graph(spec, overrides=overrides, seq_len=seq_len, max_params=max_params))
    if context is not None:
        if isinstance(context, bool) or not isinstance(context, int) or context < 1:
            raise ValueError(f"context must be a positive number of tokens, got {context!r}")
        result.context = context
    return result


def render(source: Any, path: Any = None, **options: Any) -> str:
    """Draw a spec (svg, png, pdf, dot or mermaid); returns the DOT (or Mermaid) text. See archdsl.diagram."""
    from .diagram import render as _render

    return _render(source, path, **options)


def __getattr__(name: str) -> Any:  # torch-backed names load lazily, so validate/summary stay fast
    if name == "compile":
        from .compiler import compile_spec
        return compile_spec
    if name in ("ArchModel", "EncoderOutput", "load_model"):
        from . import compiler as _compiler
        return getattr(_compiler, name)
    if name == "train":  # archdsl.training: `archdsl train` from Python
        from .training import train
        return train
    if name == "parallelize":  # archdsl.parallel: FSDP2 + tensor parallel planned from the IR and the kinds
        from .parallel import parallelize
        return parallelize
    if name == "ModelFileError":  # a damaged, tampered or foreign model file (a ValueError)
        from .checkpoint import ModelFileError
        return ModelFileError
    raise AttributeError(f"module 'archdsl' has no attribute '{name}'")


__all__ = ["load_spec", "compile", "graph", "summary", "render", "Spec", "SpecError", "ErrorItem", "ArchModel",
           "EncoderOutput", "load_model", "ModelFileError", "train", "parallelize", "register_kind", "unregister_kind", "kinds", "KindError",
           "__version__"]
