"""JSON Schema of the spec language, for editors (yaml-language-server) to autocomplete and check.

Assembled from the same Pydantic node classes that validate specs. Wherever the language takes
a number or boolean, the schema also accepts a `${...}` / `$var` string, since specs are
checked before vars are applied.

A node may name a block, and a schema cannot read the block names of the file it checks, so it
cannot refuse every name that is not a kind. It refuses the names a typo makes: one edit (a letter
changed, added, dropped, or two swapped) away from a kind, or a kind in other letter case
(`rmsnrom`, `atention`, `LayerNorm`); the loader refuses the rest, with a did-you-mean.
"""
from __future__ import annotations

import copy
import json
import re
from typing import Annotated, Any, get_args

from pydantic import TypeAdapter

from .kinds import REGISTRY
from .spec import Init, InputName

EXPRESSION = {"type": "string", "pattern": r"\$", "description": "A $var reference or ${...} expression."}
_NODE_LIST_FIELDS = {"body": "nodes", "branches": "node_lists", "pattern": "node_lists"}


def _allow_expressions(schema: Any) -> Any:
    if isinstance(schema, dict):
        out = {k: _allow_expressions(v) for k, v in schema.items()}
        if out.get("type") in ("integer", "number", "boolean") or "enum" in out:
            typed = {k: v for k, v in out.items() if k not in ("description", "default", "title")}
            rest = {k: v for k, v in out.items() if k in ("description", "default", "title")}
            return {**rest, "anyOf": [typed, {"$ref": "#/$defs/Expression"}]}
        return out
    if isinstance(schema, list):
        return [_allow_expressions(v) for v in schema]
    return schema


def _composite_schema(cls) -> dict:
    """Residual/parallel/repeat hold nodes; Pydantic would emit a recursive $ref, so write them out."""
    props: dict[str, Any] = {"name": {"type": "string", "description": cls.model_fields["name"].description}}
    for name, field in cls.model_fields.items():
        if name in _NODE_LIST_FIELDS:
            props[name] = {"$ref": f"#/$defs/{_NODE_LIST_FIELDS[name]}", "description": field.description}
    if "times" in cls.model_fields:
        props["times"] = {"type": "integer", "minimum": 1, "description": cls.model_fields["times"].description}
        props["labels"] = {"type": "array", "items": {"type": "string"},
                           "description": cls.model_fields["labels"].description}
    for name, field in cls.model_fields.items():  # plain settings (residual's scale, parallel's scales)
        if name not in props and name not in _NODE_LIST_FIELDS:
            kind = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
            schema = TypeAdapter(kind).json_schema()
            props[name] = {**schema, "description": field.description}
    required = [n for n, f in cls.model_fields.items() if f.is_required()]
    return {"type": "object", "properties": props, "required": required}


def _args_schema(cls) -> dict:
    """The schema of one kind's arguments, with node lists pointing at the shared Node definition."""
    if cls.leaf:
        schema = copy.deepcopy(cls.model_json_schema(by_alias=True, mode="validation"))
    else:
        schema = _composite_schema(cls)
    props = schema.setdefault("properties", {})
    schema.pop("$defs", None)
    schema.pop("title", None)
    schema["description"] = (cls.__doc__ or "").strip()
    schema["additionalProperties"] = False
    node = {"type": "object", "properties": {cls.kind: schema}, "required": [cls.kind], "additionalProperties": False}
    if cls.shorthand:  # `dropout: 0.1`, `residual: [...]`
        node["properties"][cls.kind] = {"anyOf": [schema, props.get(cls.shorthand, {}), {"type": "null"}]}
    return node


def _near_kind_pattern(kinds: list[str]) -> str:
    """A regex matching every name one edit away from a kind, or a kind in other letter case, but no kind."""
    alternatives: set[str] = set()
    for kind in kinds:
        alternatives.add("".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in kind))
        for i in range(len(kind)):
            alternatives.add(re.escape(kind[:i]) + "[A-Za-z]?" + re.escape(kind[i + 1:]))  # changed or dropped
            if i + 1 < len(kind) and kind[i] != kind[i + 1]:  # two swapped
                alternatives.add(re.escape(kind[:i] + kind[i + 1] + kind[i] + kind[i + 2:]))
        for i in range(len(kind) + 1):
            alternatives.add(re.escape(kind[:i]) + "[A-Za-z]" + re.escape(kind[i:]))  # one added (a letter)
    near = "|".join(sorted(alternatives))
    exact = "|".join(sorted(map(re.escape, kinds)))
    return f"^(?!(?:{exact})$)(?:{near})$"


def json_schema(include_plugins: bool = True) -> dict:
    """The schema of the language with every registered kind (installed plugins included), or only
    the built-in kinds (the committed schema/archdsl.schema.json)."""
    if include_plugins:
        REGISTRY.load_all()
    classes = [k.spec for k in REGISTRY if k.builtin or include_plugins]
    near_kind = {"pattern": _near_kind_pattern([cls.kind for cls in classes]),
                 "description": "a typo of a node kind (one edit away, or another letter case)"}
    node_variants = [_args_schema(cls) for cls in classes]
    repeat_short = {
        "type": "object", "required": ["repeat"],
        "properties": {"repeat": {"anyOf": [{"type": "integer", "minimum": 1}, {"$ref": "#/$defs/Expression"}]},
                       "body": {"$ref": "#/$defs/nodes"}, "pattern": {"$ref": "#/$defs/node_lists"},
                       "name": {"type": "string"}},
        "additionalProperties": False,
        "description": "repeat: N with body: BLOCK (or pattern: [BLOCK, ...]) alongside.",
    }
    block_call = {"type": "object", "minProperties": 1, "maxProperties": 1,
                  "not": {"anyOf": [{"required": [cls.kind]} for cls in classes]},
                  "propertyNames": {"not": {"$ref": "#/$defs/near_kind"}},
                  "description": "A block defined under blocks:, optionally with parameters."}
    stack_properties = {"width": {"type": "integer", "minimum": 1},
                        "input": {"enum": list(get_args(InputName)),
                                  "description": "The model input this stack reads."},
                        "layers": {"$ref": "#/$defs/nodes"}}
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "archdsl spec",
        "description": "A transformer architecture written in the archdsl language.",
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": {
            "archdsl": {"const": 1, "description": "Format version."},
            "name": {"type": "string"},
            "description": {"type": "string"},
            "extends": {"type": "string", "description": "A spec file (relative path) this one modifies."},
            "vars": {"type": "object", "description": "Named values, referenced as $name or ${expression}."},
            "blocks": {"type": "object", "description": "Reusable lists of nodes.",
                       "additionalProperties": {"anyOf": [
                           {"$ref": "#/$defs/nodes"},
                           {"type": "object", "properties": {"params": {"type": "object"}, "layers": {"$ref": "#/$defs/nodes"}},
                            "required": ["layers"], "additionalProperties": False}]}},
            "model": {"anyOf": [
                {"type": "object", "additionalProperties": False, "required": ["width", "layers"],
                 "description": "One stack (decoder-only or encoder-only models).",
                 "properties": {**stack_properties, "init": Init.model_json_schema()}},
                {"type": "object", "additionalProperties": False, "required": ["graph", "output"],
                 "description": "Named stacks (encoder-decoder); attention: {cross: NAME} reads a stack.",
                 "properties": {"graph": {"type": "object", "additionalProperties": {"$ref": "#/$defs/stack"}},
                                "output": {"type": "string", "description": "The stack whose output is returned."},
                                "init": Init.model_json_schema()}},
            ]},
        },
        "$defs": {
            "Expression": EXPRESSION,
            "stack": {"type": "object", "additionalProperties": False, "required": ["width", "layers"],
                      "properties": stack_properties},
            "near_kind": near_kind,
            "node": {"anyOf": [{"type": "string", "not": {"$ref": "#/$defs/near_kind"},
                                "description": "A kind without arguments, or a block name."},
                               *node_variants, repeat_short, block_call]},
            "nodes": {"anyOf": [{"type": "array", "items": {"$ref": "#/$defs/node"}}, {"$ref": "#/$defs/node"}]},
            "node_lists": {"type": "array", "items": {"$ref": "#/$defs/nodes"}},
        },
    }
    return _allow_expressions(schema)


def json_schema_text(include_plugins: bool = True) -> str:
    return json.dumps(json_schema(include_plugins), indent=2, sort_keys=False) + "\n"
