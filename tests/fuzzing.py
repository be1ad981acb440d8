"""Mutations of the shipped specs and of --set values, and the check every mutated case must pass.

Shared by tests/test_fuzz.py (hypothesis, a fixed number of cases, in CI) and
benchmarks/fuzz_specs.py (random cases for as long as asked, with counts). The promise checked
(docs/security.md): whatever the text, loading it ends, within a time bound, in

* a SpecError whose every item names a file and a line (or the --set it came from), or
* a valid Spec that round-trips: ``load_spec(spec.to_yaml()) == spec``, and that the summary and
  the DOT/Mermaid diagram can be made from (a diagram may be refused as too big, clearly).

Anything else, a Python exception or running past the bound, is a failure of archdsl.
"""
from __future__ import annotations

import contextlib
import io
import random
import re
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import archdsl
from archdsl.cli import main as cli_main
from archdsl.errors import MoreErrors, SpecError
from archdsl.render_engine import RenderError

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
CASE_SECONDS = 60.0  # a step of a case that takes longer is a hang (real specs load in milliseconds; a valid
# spec of thousands of layers, from --set layers=4*d_model, takes seconds, more on a loaded machine)

# pieces that broke or could break a parser: control characters, YAML syntax and tags, expression
# syntax, huge and odd numbers, long and odd names
TOKENS = [
    "\x00", "\x07", "\x1b[31m", "\ufeff", "\u2028", "\t", "\r", "\n", "\\", "'", '"', "#", "&a ", "*a", "<<: *a",
    "!!python/object:os.system", "!!bool maybe", "!!float abc", "!!int", "!!str", "!!binary", "? ", ": ", "- ", "---",
    "...", "[", "]", "{", "}", ",", "|", ">", "%TAG", "${", "}", "$", "$$", "${x}", "${d_model ** 40}", "${0.01 ** -200}",
    "${" + "+".join(["1"] * 300) + "}", "${(((((1)))))}", "${max(1)}", "${__import__('os')}", "${a.b}", "${1/0}",
    "10**20", "1e999", "-1", "0", "0.5", "1e-300", "99999999999999999999999999", "1" * 5000, ".nan", ".inf", "null",
    "true", "~", "k" * 3000, "résidu", "層", "extends: /etc/passwd", "extends: ../specs", "repeat", "residual",
    "parallel", "attention", "rmsnrom", "layers", "body", "pattern", "name", "vars", "blocks", "model", "graph",
]
NUMBERS = ["0", "-1", "1", "2", "3", "7", "1000000", "100000", "100001", "10**40", "2**63", "0.5", "1e30", "1e31",
           ".nan", ".inf", "-.inf", "true", "'12'", '"${3 * heads}"', "${d_model // 0}"]
SET_VALUES = ["2", "0", "-3", "1.5", "10**20", "${10**20}", "4*d_model", "d_model // 2", "${heads * 2}", "gelu",
              "my-model", "", "=", "$", "$$", "${", "\x00", "\x1b[2J", "true", "null", "[1, 2]", "{a: 1}",
              "1e-5", "9" * 400, "k" * 2000, "max(1, 2)", "__import__('os').system('true')"]


def spec_texts() -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in SPECS}


def workdir(tmp: Path) -> Path:
    """A copy of specs/, so a mutated spec's `extends:` finds its base beside it."""
    target = tmp / "specs"
    if not target.exists():
        shutil.copytree(ROOT / "specs", target)
    return target


# ---------------------------------------------------------------------------------------------- mutations
def _numbers_in(text: str) -> list[re.Match]:
    return list(re.finditer(r"(?<![\w.$])\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![\w.])", text))


def mutate(text: str, rng: random.Random, rounds: int = 1) -> str:
    """Apply ``rounds`` random edits: line edits, inserted tokens, changed numbers and names, and
    structural edits of the parsed document (wrapping nodes, deleting keys, odd values)."""
    for _ in range(rounds):
        text = rng.choice(_MUTATORS)(text, rng)
    return text


def _delete_line(text, rng):
    lines = text.split("\n")
    del lines[rng.randrange(len(lines))]
    return "\n".join(lines)


def _duplicate_line(text, rng):
    lines = text.split("\n")
    i = rng.randrange(len(lines))
    lines.insert(i, lines[i])
    return "\n".join(lines)


def _swap_lines(text, rng):
    lines = text.split("\n")
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines)


def _reindent(text, rng):
    lines = text.split("\n")
    i = rng.randrange(len(lines))
    lines[i] = (" " * rng.choice([1, 2, 4])) + lines[i] if rng.random() < 0.5 else lines[i].lstrip()
    return "\n".join(lines)


def _insert_token(text, rng):
    i = rng.randrange(len(text) + 1)
    return text[:i] + rng.choice(TOKENS) + text[i:]


def _change_number(text, rng):
    found = _numbers_in(text)
    if not found:
        return _insert_token(text, rng)
    m = rng.choice(found)
    return text[:m.start()] + rng.choice(NUMBERS) + text[m.end():]


def _change_word(text, rng):
    words = list(re.finditer(r"\b[a-z_][a-z_0-9]*\b", text))
    if not words:
        return _insert_token(text, rng)
    m = rng.choice(words)
    word = m.group(0)
    choices = [word[:-1], word + "s", word[::-1], word.upper(), rng.choice(TOKENS).strip() or "x",
               rng.choice(list(archdsl.spec.NODE_KINDS))]
    return text[:m.start()] + rng.choice(choices) + text[m.end():]


def _structural(text, rng):
    """Edit the parsed document: wrap a node, repeat a node a lot, delete a key, put an odd value in."""
    try:
        doc = yaml.safe_load(text)
    except Exception:  # noqa: BLE001 - PyYAML itself fails in many ways on odd text; archdsl must not
        return _insert_token(text, rng)
    places: list[tuple[Any, Any]] = []

    def walk(value):
        if isinstance(value, dict):
            for k in list(value):
                places.append((value, k))
                walk(value[k])
        elif isinstance(value, list):
            for i in range(len(value)):
                places.append((value, i))
                walk(value[i])
    walk(doc)
    if not places:
        return _insert_token(text, rng)
    container, key = rng.choice(places)
    old = container[key]
    edit = rng.randrange(7)
    if edit == 0 and isinstance(container, dict):
        del container[key]
    elif edit == 1:
        container[key] = {"residual": [old]} if not isinstance(old, dict) or len(old) == 1 else old
    elif edit == 2:
        container[key] = {"repeat": rng.choice([2, 3, 100001, "${10**9}"]), "body": [old] if old else []}
    elif edit == 3:
        container[key] = rng.choice([None, [], {}, "", 0, -1, 1e300, "x" * 300, [[[]]], {"a": {"b": {}}}])
    elif edit == 4 and isinstance(old, list) and old:
        container[key] = old * rng.choice([2, 50])
    elif edit == 5:
        container[key] = {"parallel": [[old], []]}
    else:
        container[key] = rng.choice(TOKENS)
    try:
        return yaml.safe_dump(doc, sort_keys=False, allow_unicode=rng.random() < 0.5)
    except Exception:  # noqa: BLE001
        return text


_MUTATORS = [_delete_line, _duplicate_line, _swap_lines, _reindent, _insert_token, _insert_token, _change_number,
             _change_number, _change_word, _change_word, _structural, _structural, _structural]


def mutate_sets(text: str, rng: random.Random) -> list[str]:
    """--set arguments: a var of the spec (or an unknown name) = an odd value."""
    names = re.findall(r"^  ([A-Za-z_]\w*):", text.split("\nmodel:")[0], re.M) or ["layers"]
    out = []
    for _ in range(rng.choice([1, 1, 2])):
        name = rng.choice(names + ["no_such_var", "layers"])
        out.append(f"{name}={rng.choice(SET_VALUES)}")
    return out


# ---------------------------------------------------------------------------------------------- the check
@dataclass
class Outcome:
    kind: str  # "error" (a clean SpecError), "valid", "crash" or "hang"
    detail: str = ""
    seconds: float = 0.0


class _Timeout(Exception):
    pass


@contextlib.contextmanager
def _time_bound(seconds: float):
    """Abort the case with _Timeout after ``seconds`` (SIGALRM; the main thread of a POSIX process)."""
    def alarm(signum, frame):
        raise _Timeout()
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _unlocated(exc: SpecError, case_file: str) -> list[str]:
    """Items of a SpecError that name no position: neither a file and line, nor the --set they came from."""
    bad = []
    for item in exc.errors:
        if isinstance(item, MoreErrors) or item.file == "<overrides>":
            continue
        if item.file in ("<spec>", "") or item.line <= 0:
            bad.append(str(item)[:300])
    return bad


def check_case(text: str, sets: list[str], folder: Path, seconds: float = CASE_SECONDS) -> Outcome:
    """Load one mutated spec (written to ``folder``) with ``sets`` as the CLI would, and judge the result.

    Each step (load, round trip, summary, diagrams, the CLI) must end within ``seconds``: a spec of
    thousands of valid layers takes a second or two per step, a hang takes for ever."""
    path = folder / "fuzz_case.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    overrides = {}
    for item in sets:
        key, _, value = item.partition("=")
        overrides[key.strip()] = value.strip()
    start = time.perf_counter()

    def bounded(fn, *args, **kw):
        with _time_bound(seconds):
            return fn(*args, **kw)

    def outcome(kind: str, detail: str) -> Outcome:
        return Outcome(kind, detail, time.perf_counter() - start)

    try:
        try:
            spec = bounded(archdsl.load_spec, path, overrides=overrides)
        except SpecError as exc:
            bad = _unlocated(exc, str(path))
            if bad:
                return outcome("crash", "error without a position: " + bad[0])
            return outcome("error", str(exc.errors[0])[:200])
        if bounded(archdsl.load_spec, spec.to_yaml()) != spec:
            return outcome("crash", "to_yaml does not round-trip")
        bounded(lambda: str(archdsl.summary(spec)))
        for fmt in ("dot", "mermaid"):
            try:
                bounded(archdsl.render, spec, format=fmt)
            except RenderError as exc:
                if "more than archdsl draws" not in str(exc):
                    raise
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = bounded(cli_main, ["validate", str(path)] + [a for s in sets for a in ("--set", s)])
        if code != 0:
            return outcome("crash", f"load_spec accepts it but `archdsl validate` exits {code}")
        return outcome("valid", spec.name[:60])
    except _Timeout:
        return outcome("hang", f"a step ran over {seconds:g} s")
    except Exception as exc:  # noqa: BLE001 - any other exception is what the fuzzer looks for
        return outcome("crash", f"{type(exc).__name__}: {str(exc)[:200]}")
