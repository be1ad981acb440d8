"""Spec -> YAML text that loads back to an equal Spec (the save half of save/load)."""
from __future__ import annotations

from typing import Any

import yaml

from .spec import NodeSpec, Spec


def _node_to_data(node: NodeSpec) -> dict:
    args: dict[str, Any] = {}
    for name, field in type(node).model_fields.items():
        value = getattr(node, name)
        if name == "labels" and not value:
            continue
        if value == field.get_default(call_default_factory=True) and name not in ("times",):
            continue
        key = field.alias or name
        args[key] = _value_to_data(value)
    return {node.kind: args}


def _value_to_data(value: Any) -> Any:
    if isinstance(value, NodeSpec):
        return _node_to_data(value)
    if isinstance(value, list):
        return [_value_to_data(v) for v in value]
    if hasattr(value, "model_dump"):
        return value.model_dump()
    return value


def spec_to_data(spec: Spec) -> dict:
    data: dict[str, Any] = {"archdsl": spec.archdsl, "name": spec.name}
    if spec.description:
        data["description"] = spec.description
    if spec.vars:
        data["vars"] = dict(spec.vars)
    def stack(s: Any) -> dict:
        out = {"width": s.width, "layers": [_node_to_data(n) for n in s.layers]}
        if s.input != "tokens":
            out["input"] = s.input
        if getattr(s, "memories", None):
            out["memories"] = dict(s.memories)
        return out

    stacks = spec.model.stacks()
    if "" in stacks:
        data["model"] = {**stack(stacks[""]), "init": spec.model.init.model_dump()}
    else:
        data["model"] = {"graph": {name: stack(s) for name, s in stacks.items()}, "output": spec.model.output,
                         "init": spec.model.init.model_dump()}
    return data


def _escape(value: Any) -> Any:
    """Vars were applied already; a literal '$' left in a string must not be re-evaluated."""
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, dict):
        return {k: _escape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape(v) for v in value]
    return value


def _escape_var(value: Any) -> Any:
    """The loader evaluates a var only when it is a string; a list or mapping var is kept as
    written, so its strings are written as they are (escaping them would double each '$' per round trip)."""
    return value.replace("$", "$$") if isinstance(value, str) else _plain(value)


def _plain(value: Any) -> Any:
    """Plain lists and dicts (the loader's are located subclasses that yaml cannot dump)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def spec_to_yaml(spec: Spec) -> str:
    """YAML text with ``load_spec(spec_to_yaml(spec)) == spec``: '$' is escaped exactly where the loader
    reads expressions (every string of the model, name and description, and string vars)."""
    data = spec_to_data(spec)
    escaped = {key: ({k: _escape_var(v) for k, v in value.items()} if key == "vars" else _escape(value))
               for key, value in data.items()}
    return yaml.safe_dump(escaped, sort_keys=False, width=100)


class _SpecDumper(yaml.SafeDumper):
    """Block style, except a node's arguments on one line (``- attention: {heads: 8}``) as specs are written by
    hand, and a long description as a folded block."""


class _Flow(dict):
    pass


def _flow_args(value: Any) -> Any:
    """`value` with the arguments of every one-key node whose arguments are all scalars marked for one line."""
    if isinstance(value, list):
        return [_flow_args(v) for v in value]
    if isinstance(value, dict):
        if len(value) == 1:
            (key, args), = value.items()
            if isinstance(args, dict) and args and all(not isinstance(v, (dict, list)) for v in args.values()):
                return {key: _Flow(args)}
        return {k: _flow_args(v) for k, v in value.items()}
    return value


def _represent_str(dumper: yaml.SafeDumper, data: str) -> Any:
    style = ">" if len(data) > 100 and "\n" not in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_SpecDumper.add_representer(_Flow, lambda d, data: d.represent_mapping("tag:yaml.org,2002:map", data.items(),
                                                                       flow_style=True))
_SpecDumper.add_representer(str, _represent_str)


def data_to_yaml(data: dict, header: str | None = None) -> str:
    """Spec data written as it is (vars kept, `$` references unescaped) in the hand-written style: what
    importers describe and compress is emitted through this, then loaded back with load_spec."""
    text = yaml.dump(_flow_args(_plain(data)), Dumper=_SpecDumper, sort_keys=False, width=110, allow_unicode=True,
                     default_flow_style=False)
    return (f"# {header}\n" if header else "") + text
