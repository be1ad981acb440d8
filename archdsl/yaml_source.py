"""Safe YAML loading that remembers where every value came from.

PyYAML's ``safe_load`` forgets positions, silently keeps the last of two duplicate keys and
expands aliases without limit. Here we compose the YAML node graph with the *safe* loader,
then build plain Python containers ourselves:

* :class:`LDict` / :class:`LList` are ``dict`` / ``list`` subclasses that carry the
  location of the container and of each key and value, so any later error (Pydantic or
  semantic) can cite ``file:line:col``;
* duplicate keys, non-standard tags (``!!python/...``), recursive aliases and alias bombs are
  errors with positions, never code execution or a hang.
"""
from __future__ import annotations

from typing import Any

import yaml

from .errors import ErrorItem, Loc, SpecError, shorten
from .limits import MAX_VALUE, MAX_YAML_NODES as MAX_NODES  # after alias expansion; a real spec has a few thousand
_STANDARD_TAGS = {
    "tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null", "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq", "tag:yaml.org,2002:merge",
}


class LDict(dict):
    """A mapping that knows where it and each of its entries were written."""

    def __init__(self, *args: Any, loc: Loc | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.loc = loc
        self.key_locs: dict[Any, Loc] = {}
        self.val_locs: dict[Any, Loc] = {}

    def loc_of(self, key: Any) -> Loc | None:
        return self.val_locs.get(key) or self.key_locs.get(key) or self.loc

    def set(self, key: Any, value: Any, key_loc: Loc | None = None, val_loc: Loc | None = None) -> None:
        self[key] = value
        if key_loc:
            self.key_locs[key] = key_loc
        if val_loc:
            self.val_locs[key] = val_loc

    def copy_from(self, other: "LDict", key: Any, value: Any) -> None:
        """Set ``key`` to ``value`` keeping the locations ``other`` had for it."""
        self.set(key, value, other.key_locs.get(key), other.val_locs.get(key))


class LList(list):
    """A sequence that knows where it and each of its items were written."""

    def __init__(self, *args: Any, loc: Loc | None = None) -> None:
        super().__init__(*args)
        self.loc = loc
        self.item_locs: list[Loc | None] = [None] * len(self)

    def append_at(self, value: Any, loc: Loc | None) -> None:
        self.append(value)
        self.item_locs.append(loc)

    def loc_of(self, index: int) -> Loc | None:
        if 0 <= index < len(self.item_locs) and self.item_locs[index]:
            return self.item_locs[index]
        return self.loc


def loc_of(container: Any, key: Any) -> Loc | None:
    if isinstance(container, (LDict, LList)):
        return container.loc_of(key)
    return None


_TOO_LARGE_HINT = f"sizes above 1e{len(str(int(MAX_VALUE))) - 1} are not meaningful"


def too_large(value: Any) -> bool:
    """An integer beyond MAX_VALUE, as no size is: refused where it is written, as expressions refuse
    results beyond it, so later arithmetic (float conversions, products) never overflows."""
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_VALUE


def _mark_loc(file: str, mark: yaml.Mark) -> Loc:
    return Loc(file, mark.line + 1, mark.column + 1)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _oversized(root: yaml.Node) -> yaml.Node | None:
    """The smallest value that expands to more than MAX_NODES nodes, or None.

    An alias is the very node object of its anchor, so the expanded size of every node is
    counted once over the composed graph (memoised, linear in the text) before anything is
    built: an alias bomb is refused at once, and the error cites the first value that is too
    big by itself (not an innocent anchor that happens to be expanded when a counter runs out).
    """
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        if id(node) not in sizes:
            sizes[id(node)] = 0  # a recursive alias; the builder reports it
            sizes[id(node)] = 1 + sum(size(child) for child in _children(node))
        return sizes[id(node)]

    if size(root) <= MAX_NODES:
        return None
    node = root
    while True:
        bigger = next((c for c in _children(node) if sizes[id(c)] > MAX_NODES), None)
        if bigger is None:
            return node
        node = bigger


class _Builder:
    def __init__(self, file: str, loader: yaml.SafeLoader) -> None:
        self.file = file
        self.loader = loader
        self.active: set[int] = set()

    def loc(self, node: yaml.Node) -> Loc:
        return _mark_loc(self.file, node.start_mark)

    def fail(self, node: yaml.Node, message: str, hint: str | None = None) -> SpecError:
        return SpecError([ErrorItem.at(self.loc(node), "", message, hint)])

    def build(self, node: yaml.Node) -> Any:
        if node.tag not in _STANDARD_TAGS:
            raise self.fail(node, f"YAML tag '{node.tag}' is not allowed",
                            "specs are data: only plain YAML values, lists and mappings")
        if id(node) in self.active:
            raise self.fail(node, "recursive YAML alias", "an alias may not contain itself")
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node)
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                out = LList(loc=self.loc(node))
                for item in node.value:
                    out.append_at(self.build(item), self.loc(item))
                return out
            return self.build_mapping(node)
        finally:
            self.active.discard(id(node))

    def scalar(self, node: yaml.ScalarNode) -> Any:
        """A scalar's value. An explicit tag whose text does not fit it (``!!bool maybe``,
        ``!!float abc``) and an integer of more digits than Python converts are located errors."""
        try:
            value = self.loader.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, KeyError, TypeError, OverflowError) as exc:
            if isinstance(exc, ValueError) and "digits" in str(exc):  # int('1' * 5000)
                raise self.fail(node, f"invalid YAML value: a number of {len(node.value):,} digits",
                                "no size needs that many digits") from None
            tag = node.tag.rsplit(":", 1)[-1]
            raise self.fail(node, f"invalid YAML value: '{shorten(node.value)}' is not a valid !!{tag}",
                            f"remove the !!{tag} tag, or write {_TAG_WORDS.get(tag, 'a ' + tag)}") from None
        if too_large(value):
            raise self.fail(node, f"the number {shorten(node.value, 20)} is too large", _TOO_LARGE_HINT)
        return value

    def build_mapping(self, node: yaml.MappingNode) -> LDict:
        out = LDict(loc=self.loc(node))
        merged: list[LDict] = []
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                value = self.build(value_node)
                sources = value if isinstance(value, list) else [value]
                for src in sources:
                    if not isinstance(src, LDict):
                        raise self.fail(value_node, "a merge key '<<' needs a mapping or a list of mappings")
                    merged.append(src)
                continue
            key = self.build(key_node)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                raise self.fail(key_node, "mapping keys must be plain scalars")
            if key in out:
                first = out.key_locs[key]
                raise self.fail(key_node, f"duplicate key '{key}' (first defined at line {first.line})",
                                "YAML would silently keep only the last value: remove one")
            out.set(key, self.build(value_node), self.loc(key_node), self.loc(value_node))
        for src in merged:  # explicit keys win over merged ones, as in YAML 1.1
            for key, value in src.items():
                if key not in out:
                    out.copy_from(src, key, value)
        return out


_TAG_WORDS = {"bool": "true or false", "int": "a whole number", "float": "a number such as 0.1 or 1e-5",
              "null": "null"}
_OPENERS = {"flow mapping": ("'{'", "'}'"), "flow sequence": ("'['", "']'"), "quoted scalar": ("quote", "quote")}


def _syntax_error(exc: yaml.MarkedYAMLError, file: str) -> ErrorItem:
    """Locate a YAML syntax error where the user must look.

    PyYAML reports the position where it gave up. For an unclosed ``{``, ``[`` or quote that
    is a later line (often the end of the file, past the last line); the mistake is the
    opening delimiter, which PyYAML keeps as the context mark, so that is the line we cite.
    """
    problem = exc.problem or str(exc)
    context, start, end = exc.context or "", exc.context_mark, exc.problem_mark
    delimiters = next((d for name, d in _OPENERS.items() if name in context), None)
    if delimiters and start and end and end.line > start.line:
        opener, closer = delimiters
        if "<stream end>" in problem or "end of stream" in problem:
            message, hint = f"invalid YAML: the {opener} opened here is never closed", f"add the closing {closer}"
        else:
            found = problem.split("but got ")[-1]
            message = f"invalid YAML: the {opener} opened here is not closed before {found} at line {end.line + 1}"
            hint = f"add the closing {closer}, or the comma that separates its entries"
        return ErrorItem.at(_mark_loc(file, start), "", message, hint)
    mark = end or start
    loc = _mark_loc(file, mark) if mark else Loc(file)
    # "expected a single document, but found another" / "found ':' while parsing a flow mapping"
    text = f"{context}, {problem}" if problem.startswith("but ") else f"{problem} {context}"
    tab = "'\\t'" in problem  # PyYAML writes a tab as '\t'
    hint = ("indent with spaces: YAML does not allow tabs" if tab
            else "check indentation, colons and quotes near this position")
    return ErrorItem.at(loc, "", f"invalid YAML: {text.strip()}", hint)


def _reader_error(exc: yaml.reader.ReaderError, text: str, file: str) -> ErrorItem:
    """A character YAML does not allow (NUL, a control character), cited at its line and column."""
    position = exc.position if isinstance(exc.position, int) else 0
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    char = exc.character if isinstance(exc.character, str) else chr(exc.character)
    return ErrorItem.at(Loc(file, line, column), "", f"invalid YAML: the character U+{ord(char):04X} is not allowed "
                        "in a YAML file", 'remove it; inside a double-quoted string, write it as an escape ("\\x07")')


def load_yaml(text: str, file: str = "<string>") -> Any:
    """Parse one YAML document into located plain data; raise SpecError on any problem."""
    try:
        loader = yaml.SafeLoader(text)  # checks the first characters at once: a NUL raises here
    except yaml.reader.ReaderError as exc:
        raise SpecError([_reader_error(exc, text, file)]) from None
    try:
        try:
            node = loader.get_single_node()
        except yaml.reader.ReaderError as exc:  # a control character further on
            raise SpecError([_reader_error(exc, text, file)]) from None
        except yaml.MarkedYAMLError as exc:
            raise SpecError([_syntax_error(exc, file)]) from None
        except yaml.YAMLError as exc:
            raise SpecError([ErrorItem.at(Loc(file), "", f"invalid YAML: {exc}")]) from None
        except RecursionError:  # PyYAML composes recursively: [[[[...]]]] thousands deep
            raise SpecError([ErrorItem.at(_mark_loc(file, loader.get_mark()), "", "invalid YAML: nested too deeply",
                                          "a spec needs a few levels of lists and mappings, not hundreds")]) from None
        if node is None:
            return LDict(loc=Loc(file, 1, 1))
        builder = _Builder(file, loader)
        too_big = _oversized(node)
        if too_big is not None:
            raise builder.fail(too_big, f"the YAML expands to more than {MAX_NODES} nodes",
                               "aliases (*name) that expand exponentially are refused: write the values out")
        return builder.build(node)
    finally:
        loader.dispose()


def from_python(value: Any, file: str = "<dict>") -> Any:
    """Wrap plain Python data (a dict given to load_spec) in located containers."""
    if isinstance(value, dict):
        out = LDict(loc=getattr(value, "loc", None) or Loc(file))
        for k, v in value.items():
            if isinstance(value, LDict):
                out.copy_from(value, k, from_python(v, file))
            else:
                out[k] = from_python(v, file)
        return out
    if isinstance(value, (list, tuple)):
        out_list = LList(loc=getattr(value, "loc", None) or Loc(file))
        for i, v in enumerate(value):
            out_list.append_at(from_python(v, file), value.loc_of(i) if isinstance(value, LList) else None)
        return out_list
    if too_large(value):
        raise SpecError([ErrorItem.at(Loc(file), "", f"the number {shorten(value, 20)} is too large", _TOO_LARGE_HINT)])
    return value
