"""Spec errors that point at the YAML the user wrote.

Every error carries the file, line and column of the offending value, the dotted path inside
the spec (``model.layers[3].attention.heads``), the rule that was broken and a hint. The CLI
prints them one per line; Python callers catch :class:`SpecError` and read ``.errors``.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence, Union

from .limits import MAX_ECHO, MAX_ERRORS

#: A hint, or a function computing it: hints (did-you-mean searches) are computed only for the
#: errors that are shown, so a spec with thousands of mistakes is still reported at once.
Hint = Union[str, None, Callable[[], Union[str, None]]]
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: object) -> str:
    """``text`` with control characters (ANSI escapes, NUL, newlines, ...) written as escapes, so a
    name taken from a spec can be printed on a terminal without acting on it."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], str(text))


def shorten(text: object, limit: int = MAX_ECHO) -> str:
    """User text to echo in a message: printable, and cut to ``limit`` characters with its length."""
    text = str(text)
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text):,} characters)"
    return printable(text)


def _hint(hint: Hint) -> str | None:
    return hint() if callable(hint) else hint


@dataclass(frozen=True)
class Loc:
    """A position in a source file (1-based line and column)."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line <= 0:
            return self.file
        return f"{self.file}:{self.line}:{self.column}"


NOWHERE = Loc("<spec>")


@dataclass(frozen=True)
class ErrorItem:
    """One problem in a spec."""

    file: str
    line: int
    column: int
    path: str
    message: str
    hint: str | None = None

    @classmethod
    def at(cls, loc: Loc | None, path: str, message: str, hint: Hint = None) -> "ErrorItem":
        loc = loc or NOWHERE
        return cls(loc.file, loc.line, loc.column, path, message, _hint(hint))

    def __str__(self) -> str:
        """One line, safe to print: control characters escaped, each part at most a few hundred
        characters (messages echo user text shortened already; this is the backstop)."""
        where = shorten(Loc(self.file, self.line, self.column), 300)
        text = f"{where}: {shorten(self.path, 300)}: " if self.path else f"{where}: "
        text += shorten(self.message, 1000)
        if self.hint:
            text += f" (hint: {shorten(self.hint, 500)})"
        return text


class SpecError(ValueError):
    """A spec is invalid. ``errors`` lists every independent problem found: the first MAX_ERRORS
    distinct ones, then one item saying how many more there are (``more`` holds that count)."""

    def __init__(self, errors: Sequence[ErrorItem], more: int = 0):
        unique = list(dict.fromkeys(e for e in errors if not isinstance(e, MoreErrors)))  # once, not per copy
        more += sum(e.count for e in errors if isinstance(e, MoreErrors)) + max(len(unique) - MAX_ERRORS, 0)
        self.errors: list[ErrorItem] = unique[:MAX_ERRORS]
        self.more = more  # errors found but not listed
        if more:
            self.errors.append(MoreErrors.of(more, self.errors[-1].file if self.errors else NOWHERE.file))
        super().__init__("\n".join(str(e) for e in self.errors))


@dataclass(frozen=True)
class MoreErrors(ErrorItem):
    """The last item of a long list: how many errors were found beyond the ones listed."""

    count: int = 0

    @classmethod
    def of(cls, count: int, file: str) -> "MoreErrors":
        return cls(file, 0, 0, "", f"... and {count:,} more errors",
                   "fix the ones above first: one mistake often causes several", count)


class ErrorCollector:
    """Accumulates errors so that several independent mistakes are reported together.

    Only the first MAX_ERRORS distinct errors are kept (later ones are counted), and a hint given
    as a function is called only for those: reporting stays linear in the number of mistakes."""

    def __init__(self) -> None:
        self.errors: list[ErrorItem] = []
        self.dropped = 0
        self._seen: dict[tuple, ErrorItem] = {}
        self.locs: set[Loc] = set()  # where every error was found, kept or counted (a later pass skips them)

    @property
    def full(self) -> bool:
        """True once MAX_ERRORS distinct errors are kept: callers may skip work that only finds more."""
        return len(self._seen) >= MAX_ERRORS

    def add(self, loc: Loc | None, path: str, message: str, hint: Hint = None) -> None:
        loc = loc or NOWHERE
        self.locs.add(loc)
        key = (loc, path, message)
        if key in self._seen:
            self.errors.append(self._seen[key])
        elif self.full:
            self.dropped += 1
        else:
            self._seen[key] = item = ErrorItem.at(loc, path, message, hint)
            self.errors.append(item)

    def extend(self, items: Iterable[ErrorItem]) -> None:
        for e in items:
            if isinstance(e, MoreErrors):
                self.dropped += e.count
            else:
                self.add(Loc(e.file, e.line, e.column), e.path, e.message, e.hint)

    def raise_if_any(self) -> None:
        if self.errors or self.dropped:
            raise SpecError(self.errors, self.dropped)


_MAX_CANDIDATES = 200  # each comparison costs a few microseconds; a hint is computed for each error shown


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """A hint naming the closest valid choice, or None when nothing is close."""
    word = str(word)
    if len(word) > 4 * MAX_ECHO:  # nothing valid is that long, and difflib is quadratic in it
        return None
    candidates = sorted(set(map(str, choices)))
    if len(candidates) > _MAX_CANDIDATES:  # thousands of vars: compare with the likeliest few only
        candidates = [c for c in candidates if c[:1].lower() == word[:1].lower()
                      and abs(len(c) - len(word)) <= 2][:_MAX_CANDIDATES]
    matches = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f"did you mean '{shorten(matches[0])}'?" if matches else None


def choices_hint(word: str, choices: Iterable[str]) -> str:
    """did-you-mean when something is close, otherwise the list of valid choices."""
    choices = sorted(set(map(str, choices)))
    listed = ", ".join(shorten(c) for c in choices[:40]) + (f", ... ({len(choices):,} in all)" if len(choices) > 40 else "")
    return did_you_mean(word, choices) or "expected one of: " + listed
