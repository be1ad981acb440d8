"""The ``${...}`` arithmetic language over vars.

A recursive-descent parser over a tiny grammar, so a spec can compute sizes
(``${4 * d_model}``, ``${max(1, heads // 4)}``) but can never reach Python: there is no
attribute access, no indexing, no calls other than ``min``/``max``, and no ``eval``.

Every input ends quickly in a value or an ExprError: a run of ``+``/``*`` terms is one flat
("chain") node rather than a tree as deep as the run is long, parentheses and signs nest at most
MAX_EXPRESSION_NESTING deep, and no result may exceed MAX_VALUE (see archdsl/limits.py).

    expr   := term (('+' | '-') term)*
    term   := unary (('*' | '/' | '//' | '%') unary)*
    unary  := ('-' | '+') unary | power
    power  := atom ('**' unary)?
    atom   := NUMBER | NAME | FUNC '(' expr (',' expr)* ')' | '(' expr ')'
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable

from .errors import shorten
from .limits import MAX_EXPRESSION_CHARS, MAX_EXPRESSION_NESTING as MAX_NESTING, MAX_VALUE

FUNCTIONS: dict[str, Callable[..., Any]] = {"min": min, "max": max}
_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+\.\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|\d+(?:[eE][-+]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z_0-9]*)|(?P<op>\*\*|//|[-+*/%(),])|(?P<bad>\S))"
)
_MAX_RESULT = MAX_VALUE  # sizes beyond this are typos, and huge ints would hang the process
_NAME = re.compile(r"[A-Za-z_]\w*")
_WHOLE_REF = re.compile(r"^\$(?:\{\s*(?P<braced>[A-Za-z_]\w*)\s*\}|(?P<bare>[A-Za-z_]\w*))$")


class ExprError(ValueError):
    """A malformed or unevaluable expression; ``hint`` says how to fix it."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


def _tokenize(text: str) -> list[tuple[str, str]]:
    """Tokens up to and including the first character outside the language (kind "bad").

    The bad character is reported when the parser reaches it, so that ``open('x')`` is refused
    as an unknown function, which is what the user wrote, rather than for its quote.
    """
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            break
        pos = m.end()
        kind = m.lastgroup
        tokens.append((kind, m.group(kind)))  # type: ignore[arg-type]
        if kind == "bad":
            break
    return tokens


def _bad_character(ch: str, text: str) -> ExprError:
    hint = ("attribute access and indexing are not part of the language"
            if ch in ".[]" else "only numbers, var names, + - * / // % **, min, max and parentheses")
    return ExprError(f"unexpected character '{shorten(ch)}' in expression '{shorten(text)}'", hint)


class _Parser:
    def __init__(self, text: str):
        if len(text) > MAX_EXPRESSION_CHARS:
            raise ExprError(f"expression '{shorten(text, 40)}' is longer than {MAX_EXPRESSION_CHARS:,} characters",
                            "compute the value in a few vars, each a short expression")
        self.text = shorten(text, 60)  # as error messages quote it
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0  # nesting of parentheses and signs: bounded, so no input can exhaust the stack

    def peek(self) -> tuple[str, str] | None:
        tok = self.tokens[self.i] if self.i < len(self.tokens) else None
        if tok and tok[0] == "bad":
            raise _bad_character(tok[1], self.text)
        return tok

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise ExprError(f"expression '{self.text}' ends too early", "is a parenthesis or operand missing?")
        if value is not None and tok[1] != value:
            raise ExprError(f"expected '{value}' but found '{shorten(tok[1])}' in expression '{self.text}'")
        self.i += 1
        return tok

    def parse(self) -> Any:
        if not self.tokens:
            raise ExprError("empty expression '${}'", "write a var name or arithmetic inside ${...}")
        node = self.expr()
        if self.peek() is not None:
            raise ExprError(f"unexpected '{shorten(self.peek()[1])}' in expression '{self.text}'")  # type: ignore[index]
        return node

    def expr(self) -> Any:
        return self.chain(self.term, ("+", "-"))

    def term(self) -> Any:
        return self.chain(self.unary, ("*", "/", "//", "%"))

    def chain(self, operand: Callable[[], Any], ops: tuple[str, ...]) -> Any:
        """``a + b - c`` as ("chain", a, [("+", b), ("-", c)]): evaluated left to right in a loop, so a
        thousand terms cost a thousand steps and no recursion."""
        first, rest = operand(), []
        while self.peek() and self.peek()[1] in ops:  # type: ignore[index]
            rest.append((self.take()[1], operand()))
        return ("chain", first, rest) if rest else first

    def unary(self) -> Any:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise ExprError(f"expression '{shorten(self.text, 40)}' nests parentheses or signs more than "
                            f"{MAX_NESTING} deep", "simplify the expression")
        try:
            tok = self.peek()
            if tok and tok[1] in ("-", "+"):
                self.take()
                return ("neg" if tok[1] == "-" else "pos", self.unary())
            return self.power()
        finally:
            self.depth -= 1

    def power(self) -> Any:
        node = self.atom()
        if self.peek() and self.peek()[1] == "**":  # type: ignore[index]
            self.take()
            node = ("**", node, self.unary())
        return node

    def atom(self) -> Any:
        kind, value = self.take()
        if kind == "num":
            try:
                return ("num", float(value) if any(c in value for c in ".eE") else int(value))
            except ValueError:  # more digits than Python converts to an int
                raise ExprError(f"the number {value[:20]}... in expression '{self.text}' is too long",
                                "sizes above 1e30 are not meaningful") from None
        if kind == "name":
            if self.peek() and self.peek()[1] == "(":  # type: ignore[index]
                if value not in FUNCTIONS:
                    raise ExprError(f"unknown function '{shorten(value)}' in expression '{self.text}'",
                                    "the only functions are " + ", ".join(sorted(FUNCTIONS)))
                self.take("(")
                args = [self.expr()]
                while self.peek() and self.peek()[1] == ",":  # type: ignore[index]
                    self.take()
                    args.append(self.expr())
                self.take(")")
                return ("call", value, args)
            return ("name", value)
        if value == "(":
            node = self.expr()
            self.take(")")
            return node
        raise ExprError(f"unexpected '{shorten(value)}' in expression '{self.text}'")


def parse(text: str) -> Any:
    """Parse the inside of ``${...}`` into a small tuple AST."""
    return _Parser(text).parse()


def _operands(ast: Any) -> list[Any]:
    tag = ast[0]
    if tag in ("name", "num"):
        return []
    if tag == "call":
        return list(ast[2])
    if tag == "chain":
        return [ast[1]] + [operand for _op, operand in ast[2]]
    return list(ast[1:])


def names(ast: Any) -> set[str]:
    """The var names an expression reads."""
    found, todo = set(), [ast]
    while todo:
        node = todo.pop()
        if node[0] == "name":
            found.add(node[1])
        todo.extend(_operands(node))
    return found


def template_names(text: str) -> set[str]:
    """The var names a string with ``$name`` / ``${expr}`` references reads (empty when it has a
    syntax error: evaluating it reports that)."""
    found: set[str] = set()
    for m in re.finditer(r"\$(?:\$|\{([^}]*)\}|([A-Za-z_]\w*))", text):
        if m.group(2):
            found.add(m.group(2))
        elif m.group(1) is not None:
            try:
                found |= names(parse(m.group(1)))
            except ExprError:
                pass
    return found


def _number(value: Any, what: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ExprError(f"{what} is {value!r}, not a number", "arithmetic works on numbers only")
    return value


def evaluate(ast: Any, lookup: Callable[[str], Any]) -> Any:
    """Evaluate an AST; ``lookup(name)`` returns a var's value or raises ExprError."""
    tag = ast[0]
    if tag == "num":
        if abs(ast[1]) > _MAX_RESULT:
            raise _too_large(f"the number {shorten(ast[1], 20)}")
        return ast[1]
    if tag == "name":
        return lookup(ast[1])
    if tag == "call":
        args = [_number(evaluate(a, lookup), f"an argument of {ast[1]}") for a in ast[2]]
        if len(args) < 2:  # Python's max(3) would iterate over 3 and fail
            raise ExprError(f"{ast[1]}() needs two or more numbers", f"e.g. {ast[1]}(1, heads // 4)")
        return FUNCTIONS[ast[1]](*args)
    if tag in ("neg", "pos"):
        v = _number(evaluate(ast[1], lookup), "the operand")
        return -v if tag == "neg" else v
    if tag == "chain":
        value = evaluate(ast[1], lookup)
        for op, operand in ast[2]:
            value = _binary(op, value, evaluate(operand, lookup))
        return value
    return _binary(tag, evaluate(ast[1], lookup), evaluate(ast[2], lookup))


def _too_large(what: str) -> ExprError:
    return ExprError(f"{what} is too large", f"sizes above 1e{round(math.log10(MAX_VALUE))} are not meaningful")


def _binary(tag: str, a: Any, b: Any) -> Any:
    a = _number(a, f"the left side of '{tag}'")
    b = _number(b, f"the right side of '{tag}'")
    if (tag in ("/", "//", "%") and b == 0) or (tag == "**" and a == 0 and b < 0):  # 0 ** -1 is 1 / 0
        raise ExprError("division by zero")
    if tag == "**":
        # |a ** b| = 10 ** (b * log10|a|): checked before computing, for small bases too (0.01 ** -200)
        if abs(b) > 256 or (a != 0 and b * math.log10(abs(a)) > math.log10(_MAX_RESULT)):
            raise _too_large(f"{shorten(a, 20)} ** {shorten(b, 20)}")
        try:
            result = a ** b
        except OverflowError:
            raise _too_large(f"{a} ** {b}") from None
        if isinstance(result, complex):
            raise ExprError(f"({a}) ** {b} is not a real number", "a negative number has no fractional power")
        return result
    try:
        result = {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "/": lambda: a / b,
                  "//": lambda: a // b, "%": lambda: a % b}[tag]()
    except OverflowError:  # a huge int literal divided into a float
        raise _too_large(f"the result of '{tag}'") from None
    if abs(result) > _MAX_RESULT:  # repeated * would otherwise grow without bound (floats up to inf)
        raise _too_large(f"the result of '{tag}'")
    if isinstance(result, float) and result.is_integer() and tag == "/" and abs(result) < 2**53:
        return int(result)  # 768 / 12 is a size, 64, not 64.0
    return result


def has_expression(value: Any) -> bool:
    return isinstance(value, str) and "$" in value


def render_template(text: str, lookup: Callable[[str], Any]) -> Any:
    """Substitute ``$name`` / ``${expr}`` in a string.

    A string that is exactly one reference keeps the value's type (``"${4*d}"`` -> 3072);
    otherwise the pieces are formatted into a string. ``$$`` is a literal dollar.
    """
    m = _WHOLE_REF.match(text)
    if m:
        return lookup(m.group("braced") or m.group("bare"))
    if text.startswith("${") and text.endswith("}") and text.count("${") == 1:
        return evaluate(parse(text[2:-1]), lookup)
    out: list[str] = []
    i = 0
    while i < len(text):
        j = text.find("$", i)
        if j < 0:
            out.append(text[i:])
            break
        out.append(text[i:j])  # plain text up to the next '$', copied at once
        i = j
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            end = text.find("}", i)
            if end < 0:
                raise ExprError(f"unclosed '${{' in '{shorten(text)}'", "close the expression with '}'")
            out.append(str(evaluate(parse(text[i + 2:end]), lookup)))
            i = end + 1
        else:
            m2 = _NAME.match(text, i + 1)
            if not m2:
                raise ExprError(f"'$' must be followed by a var name or '{{' in '{shorten(text)}'",
                                "write $$ for a literal dollar")
            out.append(str(lookup(m2.group(0))))
            i = m2.end()
    return "".join(out)
