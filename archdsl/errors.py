"""Spec errors that point at the YAML the user wrote.

Every error carries the file, line and column of the offending value, the dotted path inside
the spec (``model.layers[3].attention.heads``), the rule that was broken and a hint. The CLI
prints them one per line; Python callers catch :class:`SpecError` and read ``.errors``.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable, Sequence


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
    def at(cls, loc: Loc | None, path: str, message: str, hint: str | None = None) -> "ErrorItem":
        loc = loc or NOWHERE
        return cls(loc.file, loc.line, loc.column, path, message, hint)

    def __str__(self) -> str:
        where = str(Loc(self.file, self.line, self.column))
        text = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        if self.hint:
            text += f" (hint: {self.hint})"
        return text


class SpecError(ValueError):
    """A spec is invalid. ``errors`` lists every independent problem found."""

    def __init__(self, errors: Sequence[ErrorItem]):
        unique: list[ErrorItem] = []
        for e in errors:  # a repeated block reports its mistake once, not once per copy
            if e not in unique:
                unique.append(e)
        self.errors = unique
        super().__init__("\n".join(str(e) for e in unique))


class ErrorCollector:
    """Accumulates errors so that several independent mistakes are reported together."""

    def __init__(self) -> None:
        self.errors: list[ErrorItem] = []

    def add(self, loc: Loc | None, path: str, message: str, hint: str | None = None) -> None:
        self.errors.append(ErrorItem.at(loc, path, message, hint))

    def extend(self, items: Iterable[ErrorItem]) -> None:
        self.errors.extend(items)

    def raise_if_any(self) -> None:
        if self.errors:
            raise SpecError(self.errors)


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """A hint naming the closest valid choice, or None when nothing is close."""
    matches = difflib.get_close_matches(str(word), sorted(set(choices)), n=1, cutoff=0.6)
    return f"did you mean '{matches[0]}'?" if matches else None


def choices_hint(word: str, choices: Iterable[str]) -> str:
    """did-you-mean when something is close, otherwise the list of valid choices."""
    choices = sorted(set(choices))
    return did_you_mean(word, choices) or "expected one of: " + ", ".join(choices)
