"""Unit tests of the ``${...}`` expression language (archdsl/expr.py)."""
from __future__ import annotations

import pytest

from archdsl import expr
from archdsl.expr import ExprError

VARS = {"d_model": 768, "heads": 12, "i": 3, "causal": True, "act": "gelu", "eps": 1e-5, "zero": 0}


def lookup(name: str):
    if name not in VARS:
        raise ExprError(f"undefined var '{name}'")
    return VARS[name]


def ev(text: str):
    return expr.evaluate(expr.parse(text), lookup)


def render(text: str):
    return expr.render_template(text, lookup)


def refused(fn, text: str) -> str:
    """The message and hint of the ExprError that ``fn(text)`` must raise."""
    with pytest.raises(ExprError) as info:
        fn(text)
    return f"{info.value.message} (hint: {info.value.hint})"


# ------------------------------------------------------------------------------ arithmetic
@pytest.mark.parametrize("text, value", [
    ("2+3*4", 14),
    ("2*3+4", 10),
    ("(2+3)*4", 20),
    ("2**3**2", 512),          # ** is right-associative
    ("(2**3)**2", 64),
    ("-2**2", -4),             # unary minus binds looser than **
    ("(-2)**2", 4),
    ("2**-1", 0.5),
    ("2*-3", -6),
    ("--3", 3),
    ("+3", 3),
    ("10-4-3", 3),             # left-associative
    ("100/8/2", 6.25),
    ("7//2", 3),
    ("-7//2", -4),
    ("7%3", 1),
    ("7/2", 3.5),
    ("1.5e2 + .5", 150.5),
    ("2 * ( 3 + ( 4 - 1 ) )", 12),
    ("d_model // heads", 64),
    ("4 * d_model", 3072),
    ("eps * 10", pytest.approx(1e-4)),
])
def test_arithmetic_and_precedence(text, value):
    assert ev(text) == value


def test_true_division_of_sizes_stays_an_int():
    result = ev("768/12")
    assert result == 64 and type(result) is int
    assert type(ev("d_model / heads")) is int
    assert type(ev("7/2")) is float
    assert type(ev("7//2")) is int


@pytest.mark.parametrize("text, value", [
    ("min(3, 1, 2)", 1),
    ("max(1, heads // 4)", 3),
    ("max(1, heads // 64)", 1),
    ("min(d_model, 2 * heads) + 1", 25),
    ("max(min(1, 2), min(3, 4))", 3),
])
def test_min_and_max(text, value):
    assert ev(text) == value


def test_min_max_need_two_arguments():
    with pytest.raises(ExprError, match="two or more"):
        ev("max(heads)")


def test_names_lists_the_vars_read():
    assert expr.names(expr.parse("max(1, heads // 4) + d_model * -i")) == {"heads", "d_model", "i"}
    assert expr.names(expr.parse("2 + 3")) == set()


# ------------------------------------------------------------------------------ templates
def test_whole_reference_keeps_the_type():
    assert render("${causal}") is True
    assert render("$causal") is True
    assert render("${act}") == "gelu"
    assert render("$act") == "gelu"
    assert render("${ heads }") == 12
    assert render("${eps}") == 1e-5
    assert render("${4 * d_model}") == 3072 and type(render("${4 * d_model}")) is int


def test_string_interpolation():
    assert render("layer-${i}") == "layer-3"
    assert render("layer-$i") == "layer-3"
    assert render("${act}_${i + 1}") == "gelu_4"
    assert render("h${heads}d${d_model // heads}") == "h12d64"
    assert render("${i}${i}") == "33"


def test_dollar_escape():
    assert render("$$") == "$"
    assert render("costs $$5") == "costs $5"
    assert render("$${heads}") == "${heads}"
    assert render("$$$heads") == "$12"


def test_has_expression():
    assert expr.has_expression("${x}") and expr.has_expression("$x")
    assert not expr.has_expression("plain") and not expr.has_expression(12)


@pytest.mark.parametrize("text, fragment", [
    ("${heads", "unclosed"),
    ("a $ b", "'$' must be followed"),
    ("${}", "empty expression"),
])
def test_malformed_templates(text, fragment):
    assert fragment in refused(render, text)


# ------------------------------------------------------------------------------ refusals
@pytest.mark.parametrize("text, fragment", [
    ("d_model.__class__", "attribute access"),
    ("d_model.real", "attribute access"),
    ("(1).__class__", "attribute access"),
    ("heads[0]", "indexing"),
    ("act[::-1]", "indexing"),
    ("open('x')", "unknown function 'open'"),
    ("__import__('os')", "unknown function '__import__'"),
    ("__import__('os').system('echo hi')", "unknown function '__import__'"),
    ("getattr(heads, 'real')", "unknown function 'getattr'"),
    ("eval('1')", "unknown function 'eval'"),
    ("sqrt(d_model)", "unknown function 'sqrt'"),
    ("lambda: 1", "unexpected character ':'"),
    ("lambda x: x", "unexpected"),
    ("'text'", "unexpected character"),
    ("heads if causal else 1", "unexpected"),
    ("heads == 12", "unexpected character '='"),
    ("heads; d_model", "unexpected character ';'"),
    ("1 +", "ends too early"),
    ("(1 + 2", "ends too early"),
    ("1 2", "unexpected '2'"),
    ("max 1", "unexpected '1'"),
    (")", "unexpected ')'"),
])
def test_refused_syntax(text, fragment):
    assert fragment in refused(ev, text)


def test_refusals_carry_a_hint():
    with pytest.raises(ExprError) as info:
        ev("d_model.__class__")
    assert "attribute access" in info.value.hint
    with pytest.raises(ExprError) as info:
        ev("open('x')")
    assert "max, min" in info.value.hint


def test_unknown_names_are_refused():
    with pytest.raises(ExprError, match="undefined var 'nope'"):
        ev("nope + 1")
    with pytest.raises(ExprError, match="undefined var '__builtins__'"):
        ev("__builtins__")
    with pytest.raises(ExprError, match="undefined var 'hedas'"):
        render("${hedas}")


@pytest.mark.parametrize("text", ["act * 2", "causal + 1", "-act", "max(act, 1)"])
def test_arithmetic_needs_numbers(text):
    with pytest.raises(ExprError, match="not a number"):
        ev(text)


@pytest.mark.parametrize("text", ["1 / 0", "1 // zero", "5 % 0", "1 / 0.0", "0 ** -1"])
def test_division_by_zero(text):
    with pytest.raises(ExprError, match="division by zero"):
        ev(text)


@pytest.mark.parametrize("text", ["2 ** 1000", "10 ** 400", "9 ** 9 ** 9", "2 ** 10 ** 10", "1.5 ** 1000",
                                  "1000000000000 * 1000000000000 * 1000000000000",
                                  "9" * 400 + " / 2"])
def test_huge_results_are_refused(text):
    """Refused before Python computes them: 9 ** 9 ** 9 would otherwise run for minutes."""
    with pytest.raises(ExprError, match="too large"):
        ev(text)


def test_huge_literal_is_refused():
    with pytest.raises(ExprError, match="too long"):
        ev("9" * 5000)


def test_small_powers_are_fine():
    assert ev("2 ** 30") == 2**30
    assert ev("10 ** 30") == 10**30
    assert ev("d_model ** 0.5") == pytest.approx(27.7128, rel=1e-4)
    assert ev("0.5 ** 256") == 0.5**256
    assert ev("1 ** 200") == 1


def test_fractional_power_of_a_negative_is_refused():
    with pytest.raises(ExprError, match="not a real number"):
        ev("(-8) ** 0.5")


@pytest.mark.parametrize("text", ["(" * 200 + "1" + ")" * 200, "-" * 5000 + "1"])
def test_deep_nesting_is_an_error_not_a_crash(text):
    with pytest.raises(ExprError, match="more than 64 deep"):
        expr.parse(text)
    assert expr.evaluate(expr.parse("(" * 30 + "1" + ")" * 30), lambda name: 0) == 1  # ordinary nesting works
