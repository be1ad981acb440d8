"""From YAML text (or a dict) to a validated :class:`~archdsl.spec.Spec`.

Steps, each reporting errors with file:line:col:
1. parse safely, keeping positions (yaml_source);
2. follow ``extends:`` chains and merge (child keys win, lists are replaced);
3. resolve ``vars`` (with overrides from Python or the CLI), detecting undefined names and cycles;
4. expand the model: evaluate ``${...}``, inline ``blocks`` (with parameters), normalise
   shorthands (`repeat: N` + `body:`, bare kind names);
5. validate with the Pydantic models and map their errors back to the YAML;
6. resolve the graph (ir.py) so widths, ties and budgets are checked before any tensor exists.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Mapping

from pydantic import ValidationError

from . import expr
from .errors import ErrorCollector, ErrorItem, Loc, SpecError, choices_hint, did_you_mean
from .kinds import REGISTRY
from .spec import MODEL_TAGS, NODE_KINDS, GraphModel, Init, NodeSpec, SingleStack, Spec
from .yaml_source import LDict, LList, from_python, load_yaml, loc_of

TOP_LEVEL_KEYS = {"archdsl", "name", "description", "vars", "blocks", "model", "extends"}
SYNONYMS = {"swish": "silu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
            "gelu_fast": "gelu_tanh", "rope": "rotary", "absolute": "learned"}  # names other tools use
_FAILED = object()  # placeholder for a value whose expression failed; its errors are already reported


def _path(*parts: Any) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


# ---------------------------------------------------------------------------- reading and extends
def _read_source(source: Any) -> tuple[Any, Path | None]:
    if isinstance(source, Mapping):
        return from_python(dict(source)), None
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source and (
            source.strip().endswith((".yaml", ".yml")) or Path(source).is_dir())):
        path = Path(source)
        if path.is_dir():
            raise SpecError([ErrorItem.at(Loc(str(path)), "", "this is a directory, not a spec file",
                                          f"name a file in it, e.g. {path / 'gpt2.yaml'}")])
        if not path.is_file():
            raise SpecError([ErrorItem.at(Loc(str(path)), "", "spec file not found",
                                          "check the path (relative to the current directory)")])
        return load_yaml(_read_text(path, str(path)), str(path)), path
    if isinstance(source, str):
        return load_yaml(source, "<string>"), None
    raise TypeError(f"load_spec needs a path, YAML text or a dict, not {type(source).__name__}")


def _read_text(path: Path, file: str) -> str:
    """A spec file's text; bytes that are not UTF-8 are a spec error at their line, not a UnicodeDecodeError."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - data.rfind(b"\n", 0, exc.start)
        raise SpecError([ErrorItem.at(Loc(file, line, column), "",
                                      f"the file is not UTF-8 text (byte 0x{data[exc.start]:02x})",
                                      "save the spec as UTF-8")]) from None


def _merge(base: Any, child: Any) -> Any:
    """Deep-merge two located mappings: child wins, null deletes, lists are replaced whole."""
    if not (isinstance(base, LDict) and isinstance(child, LDict)):
        return child
    out = LDict(loc=child.loc or base.loc)
    for key, value in base.items():
        out.copy_from(base, key, value)
    for key, value in child.items():
        if value is None and key in out:
            del out[key]
            continue
        merged = _merge(out[key], value) if key in out else value
        out.copy_from(child, key, merged)
    return out


def _with_extends(doc: Any, path: Path | None, chain: tuple[str, ...]) -> Any:
    if not isinstance(doc, LDict) or "extends" not in doc:
        return doc
    target = doc["extends"]
    where = doc.loc_of("extends")
    if not isinstance(target, str):
        raise SpecError([ErrorItem.at(where, "extends", "extends needs a file name", "e.g. extends: llama3-8b.yaml")])
    base_path = ((path.parent if path else Path.cwd()) / target).resolve()
    if str(base_path) in chain:
        cycle = " -> ".join([Path(c).name for c in chain] + [base_path.name])
        raise SpecError([ErrorItem.at(where, "extends", f"extends cycle: {cycle}", "a spec cannot extend itself")])
    if not base_path.is_file():
        raise SpecError([ErrorItem.at(where, "extends", f"cannot find '{target}' (looked for {base_path})",
                                      "extends paths are relative to the spec file")])
    base_doc = load_yaml(_read_text(base_path, _display(base_path)), _display(base_path))
    base_doc = _with_extends(base_doc, base_path, chain + (str(base_path),))
    child = LDict(loc=doc.loc)
    for key, value in doc.items():
        if key != "extends":
            child.copy_from(doc, key, value)
    return _merge(base_doc, child)


def _display(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------- vars
class _Vars:
    """Lazily evaluated vars, so `d_head: ${d_model // heads}` may refer to later vars."""

    def __init__(self, raw: LDict, errors: ErrorCollector):
        self.raw = raw
        self.errors = errors
        self.values: dict[str, Any] = {}
        self.stack: list[str] = []
        self.used: set[str] = set()  # vars read by another var or by the model (an override of any other is an error)

    def get(self, name: str) -> Any:
        if self.stack:  # read from another var's expression
            self.used.add(name)
        if name in self.values:
            if self.values[name] is _FAILED:  # never compute with the placeholder: its error is reported
                raise expr.ExprError(f"var '{name}' has an error (reported above)")
            return self.values[name]
        if name in self.stack:
            cycle = " -> ".join(self.stack[self.stack.index(name):] + [name])
            raise expr.ExprError(f"vars refer to each other in a cycle: {cycle}", "give one of them a number")
        if name not in self.raw:
            raise expr.ExprError(f"undefined var '{name}'", did_you_mean(name, self.raw) or "define it under vars:")
        self.stack.append(name)
        try:
            value = self.raw[name]
            if expr.has_expression(value):
                value = expr.render_template(value, self.get)
            self.values[name] = value
            return value
        finally:
            self.stack.pop()

    def resolve_all(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.raw:
            try:
                out[name] = self.get(name)
            except expr.ExprError as exc:
                self.errors.add(self.raw.loc_of(name), _path("vars", name), exc.message, exc.hint)
                self.values[name] = out[name] = _FAILED
        return out


def _parse_override(value: Any) -> Any:
    """`--set layers=2` arrives as text; read it as a YAML scalar (2, 0.1, true, gelu)."""
    if isinstance(value, str):
        try:
            parsed = load_yaml(value, "<override>")
        except SpecError:
            return value
        return parsed if not isinstance(parsed, (LDict, LList)) else value
    return value


# ---------------------------------------------------------------------------- model expansion
class _Expander:
    """Evaluates expressions and inlines blocks, producing plain located data for Pydantic."""

    def __init__(self, blocks: LDict, variables: dict[str, Any], errors: ErrorCollector, used: set[str] | None = None):
        self.blocks = blocks
        self.globals = variables
        self.errors = errors
        self.block_stack: list[str] = []
        self.used = used if used is not None else set()

    def lookup(self, scope: dict[str, Any]):
        def get(name: str) -> Any:
            self.used.add(name)
            if name in scope:
                if scope[name] is _FAILED:
                    raise expr.ExprError(f"var '{name}' has an error (reported above)")
                return scope[name]
            raise expr.ExprError(f"undefined var '{name}'", did_you_mean(name, scope) or "define it under vars:")
        return get

    # values ------------------------------------------------------------------------------
    def value(self, value: Any, scope: dict, loc: Loc | None, path: str) -> Any:
        if isinstance(value, str) and "$" in value:
            try:
                return expr.render_template(value, self.lookup(scope))
            except expr.ExprError as exc:
                self.errors.add(loc, path, exc.message, exc.hint)
                return _FAILED
        if isinstance(value, LDict):
            out = LDict(loc=value.loc)
            for k, v in value.items():
                out.copy_from(value, k, self.value(v, scope, value.loc_of(k), _path(path, k)))
            return out
        if isinstance(value, LList):
            out_list = LList(loc=value.loc)
            for i, v in enumerate(value):
                out_list.append_at(self.value(v, scope, value.loc_of(i), _path(path, i)), value.loc_of(i))
            return out_list
        return value

    # nodes -------------------------------------------------------------------------------
    def nodes(self, items: Any, scope: dict, loc: Loc | None, path: str) -> LList:
        """Expand a list of nodes (or a single node / block name) into a flat located list."""
        if not isinstance(items, LList):
            wrapped = LList(loc=loc)
            wrapped.append_at(items, loc)
            items = wrapped
        out = LList(loc=items.loc)
        for i, item in enumerate(items):
            for node, node_loc in self.node(item, scope, items.loc_of(i), _path(path, i)):
                out.append_at(node, node_loc)
        return out

    def node(self, item: Any, scope: dict, loc: Loc | None, path: str) -> list[tuple[Any, Loc | None]]:
        if isinstance(item, str):
            if item in self.blocks:
                return self.inline_block(item, None, scope, loc, path)
            if item in NODE_KINDS:
                node = LDict(loc=loc)
                node.set(item, None, loc, loc)
                return [(node, loc)]
            self.unknown_kind(item, loc, path)
            return []
        if not isinstance(item, LDict):
            self.errors.add(loc, path, f"expected a node, got {_describe(item)}",
                            "a node is a kind name or a one-key mapping {kind: {args}}")
            return []
        if "repeat" in item and len(item) > 1:
            item = self.normalise_repeat(item, path)
        if len(item) != 1:
            keys = ", ".join(map(str, item))
            self.errors.add(item.loc, path, f"a node is a one-key mapping {{kind: {{args}}}}, found keys: {keys}",
                            "put the arguments under the kind, e.g. - attention: {heads: 12}")
            return []
        kind, args = next(iter(item.items()))
        args_loc = item.loc_of(kind)
        if kind in self.blocks:
            return self.inline_block(kind, args, scope, args_loc, path)
        if kind not in NODE_KINDS:
            self.unknown_kind(kind, item.key_locs.get(kind) or loc, path)
            return []
        expanded = self.node_args(kind, args, scope, args_loc, _path(path, kind))
        node = LDict(loc=item.loc)
        node.copy_from(item, kind, expanded)
        return [(node, loc)]

    def node_args(self, kind: str, args: Any, scope: dict, loc: Loc | None, path: str) -> Any:
        cls = NODE_KINDS[kind]
        if cls.leaf:
            return self.value(args, scope, loc, path)
        if not isinstance(args, LDict):  # shorthand: `residual: [...]`, `parallel: [[...], [...]]`
            shorthand = LDict(loc=loc)
            shorthand.set(cls.shorthand, args, loc, loc)
            args = shorthand
        out = LDict(loc=args.loc)
        for key, value in args.items():
            vloc, vpath = args.loc_of(key), _path(path, key)
            if key == "body":
                value = self.nodes(value, scope, vloc, vpath)
            elif key in ("branches", "pattern") and isinstance(value, LList):
                value = self.node_lists(value, scope, vpath, labels=(kind == "repeat"), out=out)
            else:
                value = self.value(value, scope, vloc, vpath)
            out.copy_from(args, key, value)
        if kind == "repeat" and "body" in args:
            label = _block_label(args["body"], self.blocks)
            if label and "labels" not in out:
                out.set("labels", LList([label], loc=args.loc_of("body")))
        return out

    def node_lists(self, value: LList, scope: dict, path: str, labels: bool, out: LDict) -> LList:
        result = LList(loc=value.loc)
        names = []
        for i, branch in enumerate(value):
            result.append_at(self.nodes(branch, scope, value.loc_of(i), _path(path, i)), value.loc_of(i))
            names.append(_block_label(branch, self.blocks) or f"body {i}")
        if labels and "labels" not in out:
            out.set("labels", LList(names, loc=value.loc))
        return result

    def normalise_repeat(self, item: LDict, path: str) -> LDict:
        """`{repeat: 12, body: layer}` -> `{repeat: {times: 12, body: layer}}`."""
        args = LDict(loc=item.loc)
        for key, value in item.items():
            target = "times" if key == "repeat" else key
            args.set(target, value, item.key_locs.get(key), item.val_locs.get(key))
        node = LDict(loc=item.loc)
        node.set("repeat", args, item.key_locs.get("repeat"), item.loc)
        return node

    def inline_block(self, name: str, args: Any, scope: dict, loc: Loc | None, path: str):
        if name in self.block_stack:
            cycle = " -> ".join(self.block_stack[self.block_stack.index(name):] + [name])
            self.errors.add(loc, path, f"blocks use each other in a cycle: {cycle}", "a block cannot contain itself")
            return []
        definition = self.blocks[name]
        params = LDict()
        layers = definition
        if isinstance(definition, LDict) and "layers" in definition:
            if isinstance(definition.get("params"), LDict):
                params = definition["params"]
            elif definition.get("params") is not None:
                got = _describe(definition["params"])
                self.errors.add(definition.loc_of("params"), _path("blocks", name, "params"),
                                f"block parameters are a mapping of names to defaults, got {got}",
                                "e.g. params: {hidden: 256}")
            layers = definition["layers"]
        call_args = args if isinstance(args, LDict) else LDict()
        if args is not None and not isinstance(args, LDict):
            self.errors.add(loc, path, f"block '{name}' takes a mapping of parameters, got {_describe(args)}")
        inner = dict(scope)
        for key, default in params.items():
            inner[key] = self.value(default, scope, params.loc_of(key), _path("blocks", name, "params", key))
        for key, value in call_args.items():
            if key not in params:
                self.errors.add(call_args.key_locs.get(key) or loc, _path(path, name, key),
                                f"block '{name}' has no parameter '{key}'",
                                did_you_mean(key, params) or ("it takes: " + ", ".join(params) if params else "it takes none"))
                continue
            inner[key] = self.value(value, scope, call_args.loc_of(key), _path(path, name, key))
        self.block_stack.append(name)
        try:
            block_loc = self.blocks.loc_of(name)
            expanded = self.nodes(layers, inner, block_loc, _path("blocks", name))
            return list(zip(expanded, expanded.item_locs))
        finally:
            self.block_stack.pop()

    def unknown_kind(self, kind: Any, loc: Loc | None, path: str) -> None:
        problem = REGISTRY.problem(kind)
        if problem:  # an installed plugin declares it but cannot be used
            self.errors.add(loc, path, problem, "fix or reinstall that package (pip show it), or uninstall it")
            return
        hint = did_you_mean(kind, list(NODE_KINDS) + list(self.blocks))
        plugins = REGISTRY.installed()
        installed = ("; installed plugins: " + ", ".join(f"{k} ({dist})" for k, dist in sorted(plugins.items()))
                     if plugins else "")
        self.errors.add(loc, path, f"unknown node kind '{kind}'",
                        hint or "kinds: " + ", ".join(NODE_KINDS) + (("; blocks: " + ", ".join(self.blocks))
                                                                      if self.blocks else "") + installed)


def _block_label(body: Any, blocks: LDict) -> str | None:
    if isinstance(body, str) and body in blocks:
        return body
    if isinstance(body, LDict) and len(body) == 1 and next(iter(body)) in blocks:
        return str(next(iter(body)))
    return None


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ('{value}')"
    if value is None:
        return "nothing (null)"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


# ---------------------------------------------------------------------------- pydantic errors
def _walk(doc: Any, loc: tuple, key: bool = False) -> tuple[Loc | None, list[Any], Any]:
    """Follow a Pydantic error location through the located doc: (best Loc, YAML path, last container).

    ``key=True`` cites the last mapping key rather than its value: an unknown key is the key
    itself, and a missing key belongs to the mapping introduced by ``mlp:`` or ``model:``,
    whose value (a block mapping) starts on a later line, at its first key.
    """
    current, best, parts = doc, getattr(doc, "loc", None), []
    for step in loc:
        if isinstance(current, LDict) and step in current:
            best = (current.key_locs.get(step) if key else None) or current.loc_of(step)
            parts.append(step)
            current = current[step]
        elif isinstance(current, LList) and isinstance(step, int) and 0 <= step < len(current):
            best = current.loc_of(step)
            parts.append(step)
            current = current[step]
        elif isinstance(step, str) and (step in NODE_KINDS or step in MODEL_TAGS or "[" in step):
            continue  # a union tag that is not a key here
        else:
            parts.append(step)
            current = None
    return best, parts, current


def _owner_fields(parts: list[Any]) -> list[str]:
    """Field names valid where an error occurred, for did-you-mean on unknown keys."""
    for step in reversed(parts[:-1]):
        if isinstance(step, str) and step in NODE_KINDS:
            cls = NODE_KINDS[step]
            return [f.alias or n for n, f in cls.model_fields.items()]
        if step == "init":
            return list(Init.model_fields)
        if step == "model":
            return sorted(set(SingleStack.model_fields) | set(GraphModel.model_fields))
    return sorted(TOP_LEVEL_KEYS)


def _explain(err: dict, parts: list[Any]) -> tuple[str, str | None]:
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    field = parts[-1] if parts else ""
    if kind == "extra_forbidden":
        return f"unknown key '{field}'", choices_hint(str(field), _owner_fields(parts))
    if kind == "missing":
        return f"missing required key '{field}'", None
    if kind == "literal_error":
        expected = [e.strip().strip("'") for e in str(ctx.get("expected", "")).replace(" or ", ", ").split(",")]
        synonym = SYNONYMS.get(str(value))
        if synonym in expected:
            return f"{_describe(value)} is not allowed", f"'{value}' is called '{synonym}' here"
        return f"{_describe(value)} is not allowed", choices_hint(str(value), expected)
    if kind in ("int_type", "int_from_float", "int_parsing"):
        return f"expected an integer, got {_describe(value)}", None
    if kind in ("float_type", "float_parsing"):
        return f"expected a number, got {_describe(value)}", None
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false, got {_describe(value)}", None
    if kind in ("string_type",):
        return f"expected a string, got {_describe(value)}", None
    if kind in ("list_type",):
        return f"expected a list, got {_describe(value)}", None
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping, got {_describe(value)}", None
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": "≥", "less_than": "<", "less_than_equal": "≤"}[kind]
        bound = next(iter(ctx.values()))
        return f"must be {op} {bound}, got {value}", None
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s), got {ctx.get('actual_length')}", None
    if kind == "string_pattern_mismatch":
        return f"'{value}' is not a valid name", "letters, digits and _, not starting with a digit"
    if kind == "node_kind":
        return "a node is a one-key mapping {kind: {args}}", "e.g. - attention: {heads: 12}"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"])), None
    return err["msg"], None


def _validate(doc: LDict, failed_locs: set) -> Spec:
    try:
        return Spec.model_validate(doc)
    except ValidationError as exc:
        items = []
        for err in exc.errors(include_url=False):
            key_error = err["type"] == "extra_forbidden" or err["loc"][-1:] == ("[key]",)
            where, parts, _ = _walk(doc, err["loc"], key=key_error)
            if err["type"] == "missing":
                where, _, _ = _walk(doc, err["loc"][:-1], key=True)
            if where in failed_locs:
                continue  # the value's expression already failed and was reported
            message, hint = _explain(err, parts)
            items.append(ErrorItem.at(where, _path(*parts), message, hint))
        raise SpecError(items) from None


def _attach_locations(nodes: list[NodeSpec], data: LList) -> None:
    """Give every validated node the position of its YAML, for semantic errors later."""
    for node, item in zip(nodes, data):
        if not isinstance(item, LDict) or len(item) != 1:
            continue
        args = next(iter(item.values()))
        node._loc = item.loc
        if isinstance(args, LDict):
            node._field_locs = {k: args.loc_of(k) for k in args}
        for child_field in ("body",):
            child = getattr(node, child_field, None)
            if isinstance(child, list) and isinstance(args, LDict) and isinstance(args.get(child_field), LList):
                _attach_locations(child, args[child_field])
        for group_field in ("branches", "pattern"):
            groups = getattr(node, group_field, None)
            if isinstance(groups, list) and isinstance(args, LDict) and isinstance(args.get(group_field), LList):
                for group, raw in zip(groups, args[group_field]):
                    if isinstance(raw, LList):
                        _attach_locations(group, raw)


# ---------------------------------------------------------------------------- public entry point
def load_spec(source: Any, *, overrides: Mapping[str, Any] | None = None,
              max_params: int | None = None, text_name: str | None = None) -> Spec:
    """Load, validate and check a spec from a path, YAML text or a dict.

    ``overrides`` replaces vars (``{"layers": 2}``). ``max_params`` (default: the
    ``ARCHDSL_MAX_PARAMS`` environment variable, else 10^12) refuses specs above a parameter budget.
    ``text_name``: ``source`` is YAML text, never a path (a one-line string is not looked up on disk),
    and errors cite this name; for specs read from untrusted data such as a model file.
    Raises :class:`SpecError` listing every problem found.
    """
    if overrides is not None and not isinstance(overrides, Mapping):
        raise TypeError(f"overrides must be a mapping of var names to values, e.g. {{'layers': 2}}; got "
                        f"{type(overrides).__name__}")
    if isinstance(source, Spec):
        if overrides:  # vars are already substituted in a Spec: apply the overrides to what it was read from
            if source._origin is None:
                raise ValueError(f"spec '{source.name}' was built in Python, not read by load_spec, so its vars "
                                 "cannot be overridden; load it from its file or text with overrides=")
            return load_spec(source._origin, overrides={**source._overrides, **overrides}, max_params=max_params)
        _check(source, max_params)
        return source
    if text_name is not None:
        if not isinstance(source, str):
            raise TypeError(f"{text_name}: a spec given as text must be a str, not {type(source).__name__}")
        raw, path = load_yaml(source, text_name), None
    else:
        raw, path = _read_source(source)
    file = _display(path) if path else text_name or ("<dict>" if isinstance(source, Mapping) else "<string>")
    if not isinstance(raw, LDict):
        raise SpecError([ErrorItem.at(getattr(raw, "loc", None) or Loc(file, 1, 1), "",
                                      f"a spec is a mapping with name, vars, blocks and model; got {_describe(raw)}")])
    doc = _with_extends(raw, path, (str(path.resolve()),) if path else ())
    errors = ErrorCollector()
    for key in doc:
        if key not in TOP_LEVEL_KEYS:
            errors.add(doc.key_locs.get(key), str(key), f"unknown top-level key '{key}'", choices_hint(str(key), TOP_LEVEL_KEYS))

    raw_vars = doc.get("vars") or LDict()
    if not isinstance(raw_vars, LDict):
        errors.add(doc.loc_of("vars"), "vars", f"vars must be a mapping of names to values, got {_describe(raw_vars)}")
        raw_vars = LDict()
    for name, value in (overrides or {}).items():
        if name not in raw_vars:
            errors.add(Loc("<overrides>"), f"vars.{name}", f"cannot override unknown var '{name}'",
                       did_you_mean(name, raw_vars) or "known vars: " + ", ".join(map(str, raw_vars)))
            continue
        raw_vars.set(name, _parse_override(value), raw_vars.key_locs.get(name), Loc("<overrides>"))
    resolver = _Vars(raw_vars, errors)
    variables = resolver.resolve_all()

    blocks = doc.get("blocks") or LDict()
    if not isinstance(blocks, LDict):
        errors.add(doc.loc_of("blocks"), "blocks", "blocks must be a mapping of block names to lists of nodes")
        blocks = LDict()
    for name in blocks:
        if name in NODE_KINDS:
            errors.add(blocks.key_locs.get(name), f"blocks.{name}", f"block name '{name}' is already a node kind",
                       "rename the block")

    expander = _Expander(blocks, variables, errors, used=resolver.used)
    final = LDict(loc=doc.loc)
    for key in ("archdsl", "name", "description"):
        if key in doc:
            final.copy_from(doc, key, expander.value(doc[key], variables, doc.loc_of(key), key))
    final_vars = LDict(loc=raw_vars.loc)  # located, so a bad var name (`3: 4`) is cited at its line
    for key, value in variables.items():
        if value is not _FAILED:
            final_vars.copy_from(raw_vars, key, value)
    final.set("vars", final_vars, doc.key_locs.get("vars"), doc.val_locs.get("vars"))
    if "model" not in doc:
        errors.add(doc.loc, "model", "missing required key 'model'", "every spec has a model: {width: ..., layers: [...]}")
    elif not isinstance(doc["model"], LDict):
        errors.add(doc.loc_of("model"), "model", f"model must be a mapping with width and layers, got {_describe(doc['model'])}")
    else:
        final.copy_from(doc, "model", _expand_model(doc["model"], expander, variables))
    for name in overrides or {}:  # an override of a var nothing reads would silently change nothing
        if name in raw_vars and name not in resolver.used and not errors.errors:
            errors.add(Loc("<overrides>"), f"vars.{name}", f"var '{name}' is not used by any node or var of the spec, "
                       "so overriding it changes nothing", f"the spec declares it for information; use it (e.g. "
                       f"max_len: ${name}) to make it take effect")
    failed = {e for e in errors.errors}
    failed_locs = {Loc(e.file, e.line, e.column) for e in failed}
    try:
        spec = _validate(final, failed_locs)
    except SpecError as exc:
        errors.extend(exc.errors)
    errors.raise_if_any()
    spec._source = str(path) if path else None
    # what to re-read for later overrides: the file (absolute, so a change of directory does not lose it) or the data
    spec._origin = path.resolve() if path else copy.deepcopy(dict(source)) if isinstance(source, Mapping) else source
    if text_name is not None and "\n" not in source:  # text stays text when re-read for overrides, never a path
        spec._origin = source + "\n"
    spec._overrides = dict(overrides or {})
    raw_model = final["model"]
    for name, stack in spec.model.stacks().items():
        raw_stack = raw_model["graph"][name] if name else raw_model
        _attach_locations(stack.layers, raw_stack["layers"])
    _check(spec, max_params)
    return spec


def _expand_model(model: LDict, expander: "_Expander", variables: dict) -> LDict:
    """Expand `model.layers`, or every `model.graph.NAME.layers`; evaluate expressions everywhere else."""
    out = LDict(loc=model.loc)
    for key, value in model.items():
        vloc = model.loc_of(key)
        if key == "layers":
            value = expander.nodes(value, variables, vloc, "model.layers")
        elif key == "graph" and isinstance(value, LDict):
            stacks = LDict(loc=value.loc)
            for name, stack in value.items():
                if isinstance(stack, LDict):
                    expanded = LDict(loc=stack.loc)
                    for k, v in stack.items():
                        path = f"model.graph.{name}.{k}"
                        expanded.copy_from(stack, k, expander.nodes(v, variables, stack.loc_of(k), path)
                                           if k == "layers" else expander.value(v, variables, stack.loc_of(k), path))
                    stack = expanded
                stacks.copy_from(value, name, stack)
            value = stacks
        else:
            value = expander.value(value, variables, vloc, f"model.{key}")
        out.copy_from(model, key, value)
    return out


def _check(spec: Spec, max_params: int | None) -> None:
    from .ir import build_graph

    build_graph(spec, max_params=max_params)
