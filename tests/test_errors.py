"""Error reporting of the spec validator, driven by the bad-input corpus in tests/bad_specs/.

Each ``tests/bad_specs/*.yaml`` holds one mistake and says in its header what must be reported:

    # expect-line: 14                      1-based line the error must cite
    # expect: heads do not divide width    fragment of the error's message or hint (any case)
    # expect-max-params: 1000000000        optional: the parameter budget to load with
    # expect-file: extends/cycle_b.yaml    optional: the error lies in this file (relative to the
                                           case), not in the case itself

Files under ``tests/bad_specs/extends/`` are helpers that the cases extend, not cases.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

import archdsl
from archdsl import SpecError

BAD_SPECS = Path(__file__).parent / "bad_specs"
CASES = sorted(BAD_SPECS.glob("*.yaml"))
# what an error must never show the user: Python or Pydantic internals, object reprs
INTERNALS = ("Traceback", "function-after", "function-before", "function-wrap", "tagged-union",
             "pydantic", "model_type", "object at 0x", "<class ")

TINY = """\
archdsl: 1
name: tiny
vars:
  d_model: 64
  heads: 4
  layers: 2
blocks:
  layer:
    - residual:
        - layernorm
        - attention: {heads: $heads, causal: true}
    - residual:
        - layernorm
        - mlp: {hidden: "${4 * d_model}"}
model:
  width: $d_model
  layers:
    - embedding: {name: wte, vocab: 100}
    - positional: {kind: learned, max_len: 32}
    - repeat: $layers
      body: layer
    - layernorm
    - lm_head: {vocab: 100, tie: wte}
"""


def read_header(path: Path) -> dict[str, str]:
    """The ``# key: value`` comment lines at the top of a case file."""
    header = {}
    for line in path.read_bytes().decode("utf-8", errors="replace").splitlines():  # not_utf8.yaml is not
        m = re.match(r"#\s*(expect[\w-]*)\s*:\s*(.*?)\s*$", line)
        if not m:
            break
        header[m.group(1)] = m.group(2)
    return header


def load_case(path: Path) -> tuple[dict[str, str], SpecError]:
    header = read_header(path)
    max_params = int(header["expect-max-params"]) if "expect-max-params" in header else None
    with pytest.raises(SpecError) as info:
        archdsl.load_spec(path, max_params=max_params)
    return header, info.value


def same_file(reported: str, expected: Path) -> bool:
    return Path(reported).resolve() == expected.resolve()


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ the corpus
def test_corpus_is_large_enough():
    assert len(CASES) >= 35, f"only {len(CASES)} bad specs in {BAD_SPECS}"


@pytest.mark.parametrize("path", CASES, ids=[p.name for p in CASES])
def test_bad_spec_is_reported_at_its_line(path: Path):
    header = read_header(path)
    assert "expect-line" in header and "expect" in header, f"{path.name} lacks its '# expect-line:' / '# expect:' header"
    _, exc = load_case(path)
    line = int(header["expect-line"])
    fragment = header["expect"].lower()
    source = path.parent / header["expect-file"] if "expect-file" in header else path

    matches = [e for e in exc.errors
               if e.line == line and fragment in f"{e.message}\n{e.hint or ''}".lower()]
    assert matches, (f"no error at line {line} mentioning {header['expect']!r}; got:\n"
                     + "\n".join(str(e) for e in exc.errors))
    assert any(same_file(e.file, source) for e in matches), \
        f"error names {matches[0].file!r}, not {source}"
    for e in exc.errors:
        shown = f"{e.path} {e.message} {e.hint or ''}"
        for bad in INTERNALS:
            assert bad not in shown, f"{bad!r} leaked into: {e}"
        assert e.line > 0 and e.column > 0, f"error without a position: {e}"


def test_every_case_file_has_a_header():
    for path in CASES:
        header = read_header(path)
        assert {"expect-line", "expect"} <= set(header), path.name


def test_the_good_template_loads(tmp_path):
    """The mistakes are in the corpus, not in the shape the cases share."""
    spec = archdsl.load_spec(write(tmp_path, TINY))
    assert spec.name == "tiny"


# ------------------------------------------------------------------------------ dedicated checks
def test_independent_errors_are_reported_together(tmp_path):
    text = """\
name: three
model:
  width: 64
  layers:
    - embedding: {vocab: 100}
    - atention: {heads: 4}
    - residual:
        - mlp: {hidden: 256, activation: swish}
    - layernorm: {eps: -1.0}
"""
    with pytest.raises(SpecError) as info:
        archdsl.load_spec(write(tmp_path, text))
    lines = sorted(e.line for e in info.value.errors)
    assert lines == [6, 8, 9], "\n".join(map(str, info.value.errors))
    assert str(info.value).count("\n") == 2  # one line per error


def test_semantic_errors_are_reported_together(tmp_path):
    """Graph-level checks (widths, heads, ties) also collect every problem before raising."""
    text = """\
name: semantic
model:
  width: 64
  layers:
    - embedding: {name: wte, vocab: 100}
    - residual:
        - attention: {heads: 5}
    - residual:
        - attention: {heads: 8, kv_heads: 3}
    - lm_head: {vocab: 100, tie: nothing}
"""
    with pytest.raises(SpecError) as info:
        archdsl.load_spec(write(tmp_path, text))
    assert sorted(e.line for e in info.value.errors) == [7, 9, 10], "\n".join(map(str, info.value.errors))


def test_error_string_format(tmp_path):
    text = """\
name: fmt
model:
  width: 64
  layers:
    - embedding: {vocab: 100}
    - residual:
        - attention: {heads: 4, casual: true}
"""
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        archdsl.load_spec(path)
    [error] = info.value.errors
    assert (error.line, error.column) == (7, 33)  # the unknown key, not its value
    assert same_file(error.file, path)
    assert str(error) == (f"{error.file}:7:33: model.layers[1].residual.body[0].attention.casual: "
                          "unknown key 'casual' (hint: did you mean 'causal'?)")
    assert str(info.value) == str(error)


def test_error_string_without_hint():
    from archdsl.errors import ErrorItem

    assert str(ErrorItem("a.yaml", 3, 5, "model.width", "must be > 0, got 0")) == "a.yaml:3:5: model.width: must be > 0, got 0"


def test_error_path_uses_yaml_keys(tmp_path):
    text = """\
name: paths
model:
  width: 64
  layers:
    - embedding: {vocab: 100}
    - positional: {kind: learned, max_len: 16}
    - layernorm
    - attention: {heads: {four: 4}}
    - repeat: 2
      body:
        - residual:
            - layernorm
            - attention: {heads: 4, window: 0}
"""
    with pytest.raises(SpecError) as info:
        archdsl.load_spec(write(tmp_path, text))
    paths = sorted(e.path for e in info.value.errors)
    assert paths == ["model.layers[3].attention.heads",
                     "model.layers[4].repeat.body[0].residual.body[1].attention.window"], paths


def test_semantic_error_path_uses_yaml_keys(tmp_path):
    text = """\
name: paths
model:
  width: 64
  layers:
    - embedding: {vocab: 100}
    - positional: {kind: learned, max_len: 16}
    - layernorm
    - attention: {heads: 5}
"""
    with pytest.raises(SpecError) as info:
        archdsl.load_spec(write(tmp_path, text))
    assert [e.path for e in info.value.errors] == ["model.layers[3].attention.heads"]
    assert info.value.errors[0].line == 8


def test_explicit_name_never_collides_with_an_automatic_one():
    """Two unnamed layernorms become layernorm_0/_1; a sibling named layernorm_0 must not merge with one."""
    text = TINY.replace("    - layernorm\n    - lm_head", "    - layernorm\n    - layernorm\n"
                        "    - rmsnorm: {name: layernorm_0}\n    - lm_head")
    g = archdsl.graph(text)
    assert {n for n in g.nodes if "norm" in n and "." not in n} == {"layernorm_1", "layernorm_2", "layernorm_0"}
    assert g.nodes["layernorm_0"]["kind"] == "rmsnorm"


def test_python_tag_executes_nothing(tmp_path):
    """The case's payload would `touch` a file; here it is pointed at one under tmp_path."""
    marker = tmp_path / "bad-spec-was-executed"
    original = (BAD_SPECS / "yaml_python_tag.yaml").read_text()
    assert "touch /tmp/archdsl-bad-spec-was-executed" in original
    path = tmp_path / "yaml_python_tag.yaml"
    path.write_text(original.replace("/tmp/archdsl-bad-spec-was-executed", str(marker)))
    with pytest.raises(SpecError) as info:
        archdsl.load_spec(path)
    assert "python/object/apply:os.system" in str(info.value)
    assert not marker.exists()


def test_python_tag_in_a_string_is_refused():
    with pytest.raises(SpecError, match="is not allowed"):
        archdsl.load_spec("name: x\nmodel: !!python/object/new:os.system [echo hi]\n")


def test_alias_bomb_is_refused_quickly():
    """Refused before it expands: well under a second here, bounded at 5 s for a slow, shared machine
    (expanding it would take minutes and gigabytes)."""
    start = time.perf_counter()
    with pytest.raises(SpecError, match="expands to more than"):
        archdsl.load_spec(BAD_SPECS / "yaml_alias_bomb.yaml")
    assert time.perf_counter() - start < 5.0


def test_override_typo_suggests_the_var(tmp_path):
    path = write(tmp_path, TINY)
    assert archdsl.load_spec(path, overrides={"layers": 3}).vars["layers"] == 3
    with pytest.raises(SpecError) as info:
        archdsl.load_spec(path, overrides={"layrs": 2})
    [error] = info.value.errors
    assert error.path == "vars.layrs"
    assert "cannot override unknown var 'layrs'" in error.message
    assert error.hint == "did you mean 'layers'?"


def test_override_with_a_bad_value_points_at_the_use(tmp_path):
    path = write(tmp_path, TINY)
    with pytest.raises(SpecError) as info:
        archdsl.load_spec(path, overrides={"heads": 5})
    assert any(e.line == 11 and "heads do not divide width" in e.message for e in info.value.errors), \
        "\n".join(map(str, info.value.errors))


def test_block_mistake_is_reported_once(tmp_path):
    """A block used by every layer of a repeat reports its mistake once, not once per copy."""
    path = BAD_SPECS / "undefined_var_in_block.yaml"
    with pytest.raises(SpecError) as info:
        archdsl.load_spec(path)
    assert len(info.value.errors) == 1, "\n".join(map(str, info.value.errors))


def test_spec_file_not_found(tmp_path):
    with pytest.raises(SpecError, match="spec file not found"):
        archdsl.load_spec(tmp_path / "missing.yaml")
