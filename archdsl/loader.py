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
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

from pydantic import ValidationError

from . import expr
from .errors import ErrorCollector, ErrorItem, Loc, SpecError, choices_hint, did_you_mean, shorten
from .kinds import REGISTRY
from .limits import (MAX_BLOCK_DEPTH, MAX_EXPRESSION_CHARS, MAX_EXTENDS_DEPTH, MAX_FILE_NAME, MAX_NESTING,
                     MAX_SPEC_NODES, MAX_VARS)
from .spec import MODEL_TAGS, NODE_KINDS, GraphModel, Init, NodeSpec, SingleStack, Spec
from .yaml_source import LDict, LList, from_python, load_yaml

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
            source.strip().endswith((".yaml", ".yml")) or _is_dir(source))):
        path = Path(source)
        where = Loc(shorten(path, 200))
        if _is_dir(path):
            raise SpecError([ErrorItem.at(where, "", "this is a directory, not a spec file",
                                          f"name a file in it, e.g. {shorten(path / 'gpt2.yaml', 200)}")])
        return load_yaml(_read_text(path, str(path), where), str(path)), path
    if isinstance(source, str):
        return load_yaml(source, "<string>"), None
    raise TypeError(f"load_spec needs a path, YAML text or a dict, not {type(source).__name__}")


def _is_dir(path: Any) -> bool:
    try:
        return Path(path).is_dir()
    except (OSError, ValueError):  # a NUL in the name, a name too long for the file system
        return False


def _read_text(path: Path, file: str, where: Loc | None = None, what: str = "spec file") -> str:
    """A spec file's text. A file that cannot be read (missing, a bad name, a symlink loop) is a spec
    error at ``where`` (the extends line that names it, or the file itself); bytes that are not UTF-8
    are a spec error at their line, not a UnicodeDecodeError."""
    where = where or Loc(file)
    try:
        if not path.is_file():
            raise FileNotFoundError
        data = path.read_bytes()
    except (OSError, ValueError, RuntimeError) as exc:  # RuntimeError: Path's "Symlink loop" on some versions
        if isinstance(exc, FileNotFoundError) or (isinstance(exc, OSError) and exc.errno == 2):
            reason, hint = f"{what} not found", "check the path (relative to the current directory)"
        elif isinstance(exc, ValueError):
            reason, hint = f"the {what} name contains a NUL character", "file names cannot contain NUL"
        else:
            reason = f"cannot read the {what}: {shorten(getattr(exc, 'strerror', None) or exc, 200)}"
            hint = "check the path: a name is at most 255 characters, and symlinks must not loop"
        raise SpecError([ErrorItem.at(where, "extends" if what != "spec file" else "", reason, hint)]) from None
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
    """``doc`` merged over the specs it extends, followed in a loop (a chain of any length costs no
    recursion), each error cited at the extends line of the file that names the bad target."""
    layers: list[LDict] = []  # the child first, then its base, its base's base, ...
    while isinstance(doc, LDict) and "extends" in doc:
        target, where = doc["extends"], doc.loc_of("extends")
        if not isinstance(target, str) or not target.strip():
            raise SpecError([ErrorItem.at(where, "extends", "extends needs a file name", "e.g. extends: llama3-8b.yaml")])
        if len(chain) >= MAX_EXTENDS_DEPTH:
            raise SpecError([ErrorItem.at(where, "extends", f"the extends chain is longer than {MAX_EXTENDS_DEPTH} "
                                          f"files ({Path(chain[0]).name} -> ... -> {shorten(Path(chain[-1]).name)})",
                                          "extend a spec that says everything you need, not a long chain")])
        if "\0" in target:
            raise SpecError([ErrorItem.at(where, "extends", "the file name contains a NUL character",
                                          "write the name of a spec file")])
        if any(len(part) > MAX_FILE_NAME for part in Path(target).parts):
            raise SpecError([ErrorItem.at(where, "extends", f"the file name '{shorten(target)}' has a part longer "
                                          f"than {MAX_FILE_NAME} characters", "write the name of a spec file")])
        try:
            base_path = ((path.parent if path else Path.cwd()) / target).resolve()
        except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop (RuntimeError before Python 3.13)
            raise SpecError([ErrorItem.at(where, "extends", f"cannot resolve '{shorten(target)}': "
                                          f"{shorten(getattr(exc, 'strerror', None) or exc, 200)}",
                                          "check the path; symlinks must not loop")]) from None
        if str(base_path) in chain:
            cycle = " -> ".join([Path(c).name for c in chain] + [base_path.name])
            raise SpecError([ErrorItem.at(where, "extends", f"extends cycle: {shorten(cycle, 300)}",
                                          "a spec cannot extend itself")])
        try:
            found = base_path.is_file()
        except (OSError, ValueError):
            found = False
        if not found:
            raise SpecError([ErrorItem.at(where, "extends", f"cannot find '{shorten(target)}' (looked for "
                                          f"{shorten(base_path, 200)})", "extends paths are relative to the spec file")])
        shown = _display(base_path)
        base_doc = load_yaml(_read_text(base_path, shown, where, "extended spec"), shown)
        if not isinstance(base_doc, LDict):
            raise SpecError([ErrorItem.at(where, "extends", f"'{shorten(target)}' is not a spec: its top level is "
                                          f"{_describe(base_doc)}, not a mapping with name, vars and model",
                                          "extend a spec file")])
        child = LDict(loc=doc.loc)
        for key, value in doc.items():
            if key != "extends":
                child.copy_from(doc, key, value)
        layers.append(child)
        doc, path, chain = base_doc, base_path, chain + (str(base_path),)
    for child in reversed(layers):  # from the farthest base up to the spec itself
        doc = _merge(doc, child)
    return doc


def _display(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------- vars
class _Vars:
    """Vars evaluated in dependency order, so `d_head: ${d_model // heads}` may refer to later vars.

    The order comes from a loop over the names each var reads (not from recursion), so a chain of
    thousands of vars, each naming the next, costs no stack; a cycle is reported at each of its vars."""

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
                where = self.raw.loc_of(name)
                line = f" (line {where.line})" if where and where.line else ""
                raise expr.ExprError(f"var '{shorten(name)}' has an error{line}")
            return self.values[name]
        if name not in self.raw:
            raise expr.ExprError(f"undefined var '{shorten(name)}'",
                                 lambda: did_you_mean(name, self.raw) or "define it under vars:")
        self.stack.append(name)  # only dependencies already evaluated are read from here (see order)
        try:
            value = self.raw[name]
            if expr.has_expression(value):
                value = expr.render_template(value, self.get)
            self.values[name] = value
            return value
        finally:
            self.stack.pop()

    def order(self) -> tuple[list[str], dict[str, str]]:
        """Every var after the vars it reads (depth-first, with an explicit stack), and the cycle
        each var on a cycle belongs to (`a -> b -> a`, starting at that var)."""
        deps = {name: [d for d in sorted(expr.template_names(value)) if d in self.raw] if expr.has_expression(value) else []
                for name, value in self.raw.items()}
        done: list[str] = []
        state: dict[str, str] = {}
        cycles: dict[str, str] = {}
        for root in self.raw:
            if root in state:
                continue
            state[root], path, todo = "active", [root], [iter(deps[root])]
            while todo:
                for dep in todo[-1]:
                    if dep not in state:
                        state[dep] = "active"
                        path.append(dep)
                        todo.append(iter(deps[dep]))
                        break
                    if state[dep] == "active":  # a cycle: path from dep to here, back to dep
                        ring = path[path.index(dep):]
                        for k, member in enumerate(ring):
                            cycles.setdefault(member, " -> ".join(ring[k:] + ring[:k] + [member]))
                else:
                    state[path[-1]] = "done"
                    done.append(path.pop())
                    todo.pop()
        return done, cycles

    def resolve_all(self) -> dict[str, Any]:
        if len(self.raw) > MAX_VARS:
            self.errors.add(self.raw.loc, "vars", f"{len(self.raw):,} vars is more than a spec may define ({MAX_VARS:,})",
                            "a spec needs a few dozen vars")
            self.values = {name: _FAILED for name in self.raw}
            return dict(self.values)
        order, cycles = self.order()
        problems: dict[str, expr.ExprError] = {}
        for name in order:
            if name in cycles:
                problems[name] = expr.ExprError(f"vars refer to each other in a cycle: {shorten(cycles[name], 200)}",
                                                "give one of them a number")
                self.values[name] = _FAILED
                continue
            try:
                self.get(name)
            except expr.ExprError as exc:
                problems[name] = exc
                self.values[name] = _FAILED
        for name in self.raw:  # reported in the order the vars are written
            if name in problems:
                self.errors.add(self.raw.loc_of(name), _path("vars", name), problems[name].message, problems[name].hint)
        return {name: self.values[name] for name in self.raw}


def _parse_override(value: Any, known: Any = ()) -> Any:
    """`--set layers=2` arrives as text; read it as the spec would read the var's value.

    A YAML scalar is that scalar (2, 0.1, true, gelu); text with `$` is a template, as in a spec;
    other text that is arithmetic over numbers and the spec's vars (`10**20`, `4*d_model`) is the
    expression `${...}`, so `--set layers=10**20` and `--set 'layers=${10**20}'` are the same.
    Anything else (`my-model`, a bare word) stays a string."""
    if not isinstance(value, str):
        return value
    try:
        parsed = load_yaml(value, "<override>")
    except SpecError:  # not YAML (a control character, a number too large): arithmetic, or a string
        parsed = value
    if isinstance(parsed, (LDict, LList)):
        return value
    if not isinstance(parsed, str) or "$" in parsed or len(parsed) > MAX_EXPRESSION_CHARS:
        return parsed
    try:
        ast = expr.parse(parsed)
    except expr.ExprError:
        return parsed
    if ast[0] == "name" or not expr.names(ast) <= set(known):
        return parsed
    return "${" + parsed + "}"


# ---------------------------------------------------------------------------- model expansion
class _Expander:
    """Evaluates expressions and inlines blocks, producing plain located data for Pydantic."""

    def __init__(self, blocks: LDict, variables: dict[str, Any], errors: ErrorCollector, used: set[str] | None = None):
        self.blocks = blocks
        self.globals = variables
        self.errors = errors
        self.block_stack: list[str] = []
        self.nesting = 0  # composite nodes (residual, parallel, repeat, with_memory) around the one being expanded
        self.used = used if used is not None else set()
        # expanded path of a node inlined from a block -> the path where it is written (blocks.NAME[i]),
        # so later errors (Pydantic's, the IR's) can be reported once, at the block
        self.origins: dict[str, str] = {}
        self.sites: dict[str, str] = {}  # the same expanded path -> where the block that produced it is named
        self.emptied: set[Loc] = set()  # lists left empty by nodes already reported (no "needs 1 item" too)

    def lookup(self, scope: dict[str, Any]):
        def get(name: str) -> Any:
            self.used.add(name)
            if name in scope:
                if scope[name] is _FAILED:
                    raise expr.ExprError(f"var '{shorten(name)}' has an error (reported above)")
                return scope[name]
            raise expr.ExprError(f"undefined var '{shorten(name)}'",
                                 lambda: did_you_mean(name, scope) or "define it under vars:")
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
        reported = len(self.errors.locs)
        for i, item in enumerate(items):
            for node, node_loc, origin in self.node(item, scope, items.loc_of(i), _path(path, i)):
                here = _path(path, len(out))
                if origin != here:
                    self.origins[here] = origin
                    self.sites[here] = _path(path, i)  # the block's name, as written, that put it here
                out.append_at(node, node_loc)
        if items and not out and len(self.errors.locs) > reported:  # emptied by mistakes already reported
            self.emptied |= {items.loc, loc} - {None}
        return out

    def node(self, item: Any, scope: dict, loc: Loc | None, path: str) -> list[tuple[Any, Loc | None, str]]:
        """The nodes ``item`` expands to, each with its position and the path where it is written."""
        if isinstance(item, str):
            if item in self.blocks:
                return self.inline_block(item, None, scope, loc, path)
            if item in NODE_KINDS:
                node = LDict(loc=loc)
                node.set(item, None, loc, loc)
                return [(node, loc, path)]
            self.unknown_kind(item, loc, path)
            return []
        if not isinstance(item, LDict):
            self.errors.add(loc, path, f"expected a node, got {_describe(item)}",
                            "a node is a kind name or a one-key mapping {kind: {args}}")
            return []
        if "repeat" in item and len(item) > 1:
            item = self.normalise_repeat(item, path)
        if len(item) != 1:
            keys = shorten(", ".join(map(str, item)), 200)
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
        composite = not NODE_KINDS[kind].leaf
        if composite and self.nesting >= MAX_NESTING:
            self.errors.add(item.key_locs.get(kind) or loc, path, f"composite nodes (residual, parallel, repeat, with_memory) nest "
                            f"more than {MAX_NESTING} deep here", "flatten the spec: real architectures nest a few levels")
            return []
        self.nesting += composite
        try:
            expanded = self.node_args(kind, args, scope, args_loc, _path(path, kind))
        finally:
            self.nesting -= composite
        node = LDict(loc=item.loc)
        node.copy_from(item, kind, expanded)
        return [(node, loc, path)]

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
                params = LDict(loc=definition["params"].loc)
                for key, default in definition["params"].items():
                    if _is_name(key):
                        params.copy_from(definition["params"], key, default)
                    else:
                        self.errors.add(definition["params"].key_locs.get(key), _path("blocks", name, "params"),
                                        f"'{shorten(key)}' is not a parameter name",
                                        "letters, digits and _, not starting with a digit")
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
            where = _path("blocks", name, "layers") if layers is not definition else _path("blocks", name)
            expanded = self.nodes(layers, inner, block_loc, where)
            return [(node, node_loc, self.origins.get(_path(where, i), _path(where, i)))
                    for i, (node, node_loc) in enumerate(zip(expanded, expanded.item_locs))]
        finally:
            self.block_stack.pop()

    def unknown_kind(self, kind: Any, loc: Loc | None, path: str) -> None:
        problem = REGISTRY.problem(kind)
        if problem:  # an installed plugin declares it but cannot be used
            self.errors.add(loc, path, problem, "fix or reinstall that package (pip show it), or uninstall it")
            return

        def hint() -> str:
            close = did_you_mean(kind, list(NODE_KINDS) + list(self.blocks))
            blocks = ("; blocks: " + shorten(", ".join(self.blocks), 300)) if self.blocks else ""
            plugins = REGISTRY.installed()
            installed = ("; installed plugins: " + ", ".join(f"{k} ({dist})" for k, dist in sorted(plugins.items()))
                         if plugins else "")
            return close or "kinds: " + ", ".join(NODE_KINDS) + blocks + installed
        self.errors.add(loc, path, f"unknown node kind '{shorten(kind)}'", hint)


class _BlockSizes:
    """How many nodes the model's layers become once blocks are inlined, counted over the block
    definitions (each once, memoised) before anything is expanded: a block that uses the previous
    one twice doubles, so thirty such lines would otherwise expand to 2^30 nodes."""

    def __init__(self, blocks: LDict):
        self.blocks = blocks
        self.sizes: dict[str, int] = {}
        self.refs: dict[str, set[str]] = {}  # block -> the blocks it names directly
        self.active: list[str] = []

    def block(self, name: str) -> int:
        if name in self.sizes:
            return self.sizes[name]
        if name in self.active:
            return 0  # a cycle; expansion reports it
        if len(self.active) >= MAX_BLOCK_DEPTH:
            chain = " -> ".join(self.active[:3] + ["..."] + self.active[-2:] + [name])
            raise SpecError([ErrorItem.at(self.blocks.key_locs.get(name) or self.blocks.loc_of(name), _path("blocks", name),
                                          f"blocks use blocks more than {MAX_BLOCK_DEPTH} deep ({shorten(chain, 200)})",
                                          "a block may use other blocks, but not in a chain that long")])
        self.active.append(name)
        self.refs[name] = set()
        try:
            definition = self.blocks[name]
            layers = definition.get("layers") if isinstance(definition, LDict) and "layers" in definition else definition
            self.sizes[name] = min(self.count(layers, self.refs[name]), MAX_SPEC_NODES + 1)
        finally:
            self.active.pop()
        return self.sizes[name]

    def count(self, item: Any, refs: set[str]) -> int:
        """Nodes that ``item`` (a node, a list of nodes or a block name) expands to, at most MAX_SPEC_NODES + 1."""
        if isinstance(item, LList):
            total = 0
            for entry in item:
                total += self.count(entry, refs)
                if total > MAX_SPEC_NODES:
                    break
            return min(total, MAX_SPEC_NODES + 1)
        if isinstance(item, str):
            if item in self.blocks:
                refs.add(item)
                return self.block(item)
            return 1
        if not isinstance(item, LDict) or not item:
            return 1
        if "repeat" in item and len(item) > 1:  # `repeat: N` with body/pattern beside it
            kind, args = "repeat", item
        elif len(item) == 1:
            kind, args = next(iter(item.items()))
        else:
            return 1
        if kind in self.blocks:
            refs.add(kind)
            return self.block(kind)
        cls = NODE_KINDS.get(kind)
        if cls is None or cls.leaf:
            return 1
        if not isinstance(args, LDict):
            args = {cls.shorthand: args}
        total = 1 + self.count(args.get("body"), refs) if "body" in args else 1
        for key in ("branches", "pattern"):
            if isinstance(args.get(key), LList):
                total += sum(self.count(branch, refs) for branch in args[key])
        return min(total, MAX_SPEC_NODES + 1)

    def culprit(self, refs: set[str]) -> str | None:
        """The smallest block that is too big by itself, following the too-big blocks down from ``refs``."""
        found = None
        todo = sorted(r for r in refs if self.sizes.get(r, 0) > MAX_SPEC_NODES)
        while todo:
            found = todo[0]
            todo = sorted(r for r in self.refs.get(found, ()) if self.sizes.get(r, 0) > MAX_SPEC_NODES)
        return found


def _check_expansion(model: LDict, blocks: LDict) -> None:
    """Refuse, before expanding anything, a model whose stacks would inline to more than MAX_SPEC_NODES nodes."""
    stacks = [("model.layers", model, "layers")]
    if isinstance(model.get("graph"), LDict):
        stacks = [(f"model.graph.{name}.layers", stack, "layers") for name, stack in model["graph"].items()
                  if isinstance(stack, LDict)]
    sizes = _BlockSizes(blocks)
    for path, owner, key in stacks:
        if key not in owner:
            continue
        refs: set[str] = set()
        total = sizes.count(owner[key], refs)
        if total <= MAX_SPEC_NODES:
            continue
        name = sizes.culprit(refs)
        hint = ("a block that uses another block twice doubles in size: write repeat: N with body: BLOCK "
                "instead of copies")
        if name is None:
            raise SpecError([ErrorItem.at(owner.loc_of(key), path, f"the layers expand to more than "
                                          f"{MAX_SPEC_NODES:,} nodes", hint)])
        raise SpecError([ErrorItem.at(blocks.key_locs.get(name) or blocks.loc_of(name), _path("blocks", name),
                                      f"block '{shorten(name)}' expands to more than {MAX_SPEC_NODES:,} nodes "
                                      f"(what a spec may have)", hint)])


_TOP_NODE = re.compile(r"^model(?:\.graph\.[^.\[]+)?\.layers\[\d+\]")


def _fold_block_errors(items: list[ErrorItem], origins: dict[str, str], sites: dict[str, str]) -> list[ErrorItem]:
    """Errors inside inlined blocks, cited at the block (``blocks.layer[0].attention.heads``) once, with
    the places that use it: a block used three times by a repeat pattern is one mistake, not three."""
    if not origins:
        return items
    folded: dict[ErrorItem, dict[str, int]] = {}
    for item in items:
        path, site, fixed = item.path, None, 0
        while True:  # outermost first; what follows a mapped prefix is again an expanded path, inside it
            key = next((path[:k] for k in range(fixed + 1, len(path) + 1)
                        if (k == len(path) or path[k] in ".[") and path[:k] in origins), None)
            if key is None:
                break
            if site is None and origins[key].startswith("blocks."):
                site = sites.get(key, key)  # the outermost use of a block
            path, fixed = origins[key] + path[len(key):], len(origins[key])
        if site is None:  # outside blocks (moved only by a block expanded before it): cite where it is written
            folded.setdefault(replace(item, path=path), {})
            continue
        top = _TOP_NODE.match(site)
        users = folded.setdefault(replace(item, path=path), {})
        user = top.group(0) if top else site
        users[user] = users.get(user, 0) + 1
    out = []
    for item, users in folded.items():
        if users:
            where = ", ".join(f"{u} ({n} times)" if n > 1 else u for u, n in list(users.items())[:5])
            more = f" and {len(users) - 5} more" if len(users) > 5 else ""
            item = replace(item, message=f"{item.message} (used by {where}{more})")
        out.append(item)
    return out


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _is_name(key: Any) -> bool:
    return isinstance(key, str) and _NAME.match(key) is not None


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
        return f"a number ({shorten(value)})"
    if isinstance(value, str):
        return f"a string ('{shorten(value)}')"
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
        return f"unknown key '{shorten(field)}'", choices_hint(str(field), _owner_fields(parts))
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
        return f"must be {op} {bound}, got {shorten(value)}", None
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s), got {ctx.get('actual_length')}", None
    if kind == "string_pattern_mismatch":
        return f"'{shorten(value)}' is not a valid name", "letters, digits and _, not starting with a digit"
    if kind == "node_kind":
        return "a node is a one-key mapping {kind: {args}}", "e.g. - attention: {heads: 12}"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"])), None
    return err["msg"], None


def _validate(doc: LDict, failed_locs: set) -> Spec:
    try:
        return Spec.model_validate(doc)
    except ValidationError as exc:
        collected = ErrorCollector()  # keeps the first MAX_ERRORS distinct ones, counts the rest
        for err in exc.errors(include_url=False):
            if collected.full:
                collected.dropped += 1
                continue
            key_error = err["type"] == "extra_forbidden" or err["loc"][-1:] == ("[key]",)
            where, parts, _ = _walk(doc, err["loc"], key=key_error)
            if err["type"] == "missing":
                where, _, _ = _walk(doc, err["loc"][:-1], key=True)
            if where in failed_locs:
                continue  # the value's expression already failed and was reported
            message, hint = _explain(err, parts)
            collected.add(where, _path(*parts), message, hint)
        raise SpecError(collected.errors, collected.dropped) from None


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
            errors.add(doc.key_locs.get(key), shorten(key), f"unknown top-level key '{shorten(key)}'",
                       choices_hint(str(key), TOP_LEVEL_KEYS))

    raw_vars = doc.get("vars") or LDict()
    if not isinstance(raw_vars, LDict):
        errors.add(doc.loc_of("vars"), "vars", f"vars must be a mapping of names to values, got {_describe(raw_vars)}")
        raw_vars = LDict()
    for name, value in (overrides or {}).items():
        if name not in raw_vars:
            errors.add(Loc("<overrides>"), f"vars.{shorten(name)}", f"cannot override unknown var '{shorten(name)}'",
                       lambda: did_you_mean(name, raw_vars) or "known vars: " + shorten(", ".join(map(str, raw_vars)), 300))
            continue
        raw_vars.set(name, _parse_override(value, raw_vars), raw_vars.key_locs.get(name), Loc("<overrides>"))
    resolver = _Vars(raw_vars, errors)
    variables = resolver.resolve_all()

    blocks = doc.get("blocks") or LDict()
    if not isinstance(blocks, LDict):
        errors.add(doc.loc_of("blocks"), "blocks", "blocks must be a mapping of block names to lists of nodes")
        blocks = LDict()
    for name in list(blocks):
        if not _is_name(name):  # a block is named where a kind could be: `- 3` or `- .nan` is no name
            errors.add(blocks.key_locs.get(name), f"blocks.{shorten(name)}", f"'{shorten(name)}' is not a block name",
                       "letters, digits and _, not starting with a digit")
            del blocks[name]
        elif name in NODE_KINDS:
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
    expanded = False
    if "model" not in doc:
        errors.add(doc.loc, "model", "missing required key 'model'", "every spec has a model: {width: ..., layers: [...]}")
    elif not isinstance(doc["model"], LDict):
        errors.add(doc.loc_of("model"), "model", f"model must be a mapping with width and layers, got {_describe(doc['model'])}")
    else:
        try:
            _check_expansion(doc["model"], blocks)
        except SpecError as exc:
            errors.extend(exc.errors)
        else:
            final.copy_from(doc, "model", _expand_model(doc["model"], expander, variables))
            expanded = True
    for name in overrides or {}:  # an override of a var nothing reads would silently change nothing
        if name in raw_vars and name not in resolver.used and not errors.errors:
            errors.add(Loc("<overrides>"), f"vars.{name}", f"var '{name}' is not used by any node or var of the spec, "
                       "so overriding it changes nothing", f"the spec declares it for information; use it (e.g. "
                       f"max_len: ${name}) to make it take effect")
    failed_locs = set(errors.locs)
    spec = None
    try:
        if expanded or "model" not in doc:  # a model refused before expansion has nothing more to check
            spec = _validate(final, failed_locs | expander.emptied)
    except SpecError as exc:  # paths of the expanded model: cite errors inside blocks at the block
        errors.extend(_fold_block_errors(exc.errors, expander.origins, expander.sites))
    if errors.errors or errors.dropped or spec is None:
        errors.raise_if_any()
        raise SpecError([ErrorItem.at(doc.loc, "", "the spec is invalid")])  # not reached: errors were found
    spec._source = str(path) if path else None
    # what to re-read for later overrides: the file (absolute, so a change of directory does not lose it) or the data
    spec._origin = path.resolve() if path else copy.deepcopy(dict(source)) if isinstance(source, Mapping) else source
    if text_name is not None and "\n" not in source:  # text stays text when re-read for overrides, never a path
        spec._origin = source + "\n"
    spec._overrides = dict(overrides or {})
    raw_model = final["model"]
    spec._locs = {"model": doc.key_locs.get("model") or doc.loc}
    if "graph" in raw_model:
        spec._locs["model.graph"] = raw_model.key_locs.get("graph")
        spec._locs.update({f"model.graph.{name}": raw_model["graph"].key_locs.get(name) for name in raw_model["graph"]})
    for name, stack in spec.model.stacks().items():
        raw_stack = raw_model["graph"][name] if name else raw_model
        _attach_locations(stack.layers, raw_stack["layers"])
    try:
        _check(spec, max_params)
    except SpecError as exc:
        raise SpecError(_fold_block_errors(exc.errors, expander.origins, expander.sites)) from None
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
