"""Hostile input, one regression test per class (docs/security.md; limits in archdsl/limits.py).

The small cases live in tests/bad_specs/ (each cited at its line); here are the ones that must be
generated (thousands of lines, files, symlinks) or that check speed, the CLI and the diagrams.
Each hostile case must end in well under a second of archdsl's own work; the bounds below are
generous because the test machine is shared.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import jsonschema
import pytest

import archdsl
from conftest import need
from archdsl import SpecError
from archdsl.cli import main
from archdsl.diagram import RenderError, render
from archdsl.errors import MoreErrors
from archdsl.limits import MAX_DRAWN_NODES, MAX_ERRORS, MAX_EXTENDS_DEPTH, MAX_LAYERS
from archdsl.schema import json_schema

ROOT = Path(__file__).resolve().parents[1]
HEAD = "name: x\nmodel:\n  width: 8\n  layers:\n    - embedding: {vocab: 10}\n"


def refused(source, seconds: float = 5.0, **kw) -> SpecError:
    start = time.perf_counter()
    with pytest.raises(SpecError) as info:
        archdsl.load_spec(source, **kw)
    assert time.perf_counter() - start < seconds
    for item in info.value.errors:
        assert isinstance(item, MoreErrors) or item.line > 0 or item.file == "<overrides>", item
    return info.value


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------- never hang
def test_exponential_blocks_are_refused_before_expanding(tmp_path):
    text = "name: x\nblocks:\n  b0: [layernorm]\n" + "".join(f"  b{i}: [b{i - 1}, b{i - 1}]\n" for i in range(1, 31))
    exc = refused(write(tmp_path, text + "model:\n  width: 8\n  layers:\n    - embedding: {vocab: 10}\n    - b30\n"), 2)
    assert "blocks.b17" in str(exc) and "expands to more than 100,000 nodes" in str(exc)


def test_total_layers_are_bounded_across_nested_repeats(tmp_path):
    inner = "        - repeat: 1000\n          body: [{dropout: 0.1}]\n"
    exc = refused(write(tmp_path, HEAD + "    - repeat: 1000\n      body:\n" + inner), 2)
    assert "1,001,000 layers is more than archdsl builds" in str(exc) and ":6:" in str(exc)
    # separate repeats add up too: a model, not one repeat, is bounded
    text = HEAD + "".join(f"    - repeat: {MAX_LAYERS // 2}\n      body: [{{dropout: 0.1}}]\n" for _ in range(3))
    assert "layers in all" in str(refused(write(tmp_path, text), 2))


def test_fields_that_drive_loops_are_bounded(tmp_path):
    exc = refused(write(tmp_path, HEAD + "    - lstm: {hidden: 8, layers: 1000000}\n"), 2)
    assert "lstm.layers" in str(exc) and "100000" in str(exc)
    exc = refused(write(tmp_path, HEAD + "    - lstm: {hidden: 8, layers: 1" + "0" * 40 + "}\n"), 2)
    assert "is too large" in str(exc)


def test_thousands_of_errors_are_capped_and_fast(tmp_path):
    text = ("name: x\nvars:\n" + "".join(f"  v{i}: 1\n" for i in range(3000)) + HEAD.split("\n", 1)[1]
            + "".join(f"    - dropout: $u{i}\n" for i in range(3000)))
    exc = refused(write(tmp_path, text), 15)  # most of it is PyYAML reading 6,000 lines
    assert len(exc.errors) == MAX_ERRORS + 1 and exc.more == 3000 - MAX_ERRORS
    assert "2,950 more errors" in str(exc.errors[-1])


def test_sibling_names_are_linear():
    from archdsl.ir import _Builder
    from archdsl.spec import Dropout, Embedding, SingleStack, Spec

    nodes = [Dropout(p=0.1) for _ in range(100_000)]
    spec = Spec(name="x", model=SingleStack(width=8, layers=[Embedding(vocab=10)]))
    start = time.perf_counter()
    names = _Builder(spec, 16, 10**12).child_names(nodes, "model.layers")
    assert time.perf_counter() - start < 3 and names[-1] == "dropout_99999"


def test_render_refuses_a_huge_diagram_fast(tmp_path):
    spec = write(tmp_path, HEAD + f"    - repeat: {MAX_DRAWN_NODES}\n      body: [layernorm]\n")
    start = time.perf_counter()
    with pytest.raises(RenderError, match="more than archdsl draws"):
        render(spec, format="dot", detail="full")
    assert time.perf_counter() - start < 20
    assert render(spec, format="dot").startswith("digraph")  # each repeat drawn once is fine


def test_deep_nesting_is_a_located_error(tmp_path):
    deep = HEAD + "".join("    " + "  " * i + "- residual:\n" for i in range(80)) + "    " + "  " * 80 + "- layernorm\n"
    exc = refused(write(tmp_path, deep), 3)
    assert "nest more than 64 deep" in str(exc)
    chain = "name: x\nblocks:\n  b0: [layernorm]\n" + "".join(f"  b{i}: [b{i - 1}]\n" for i in range(1, 500))
    exc = refused(write(tmp_path, chain + "model:\n  width: 8\n  layers:\n    - embedding: {vocab: 10}\n    - b499\n"))
    assert "blocks use blocks more than 64 deep" in str(exc)


def test_long_expressions_and_long_var_chains_need_no_recursion(tmp_path):
    spec = archdsl.load_spec(write(tmp_path, HEAD + '    - dropout: "${' + "+".join(["0"] * 2000) + '}"\n'))
    assert spec.model.layers[1].p == 0
    text = ("name: x\nvars:\n" + "".join(f"  v{i}: ${{v{i + 1} + 0}}\n" for i in range(3000)) + "  v3000: 8\n"
            + "model:\n  width: $v0\n  layers:\n    - embedding: {vocab: 10}\n")
    assert archdsl.load_spec(write(tmp_path, text)).model.width == 8
    ring = "name: x\nvars:\n" + "".join(f"  v{i}: $v{(i + 1) % 3000}\n" for i in range(3000)) + HEAD.split("\n", 1)[1]
    assert "vars refer to each other in a cycle: v0 -> v1 -> v2" in str(refused(write(tmp_path, ring)))


# ------------------------------------------------------------------------------------------- never a traceback
@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b", "\x7f", "\ufffe"])
def test_control_characters_are_located(tmp_path, char):
    exc = refused(write(tmp_path, HEAD + f"    - layer{char}norm\n"))
    assert ":6:" in str(exc.errors[0]) and "is not allowed" in str(exc.errors[0])
    assert main(["validate", str(tmp_path / "spec.yaml"), "--set", f"x={char}"]) == 1  # and in --set


def test_a_utf8_bom_is_fine(tmp_path):
    (tmp_path / "bom.yaml").write_bytes(("\ufeff" + HEAD).encode("utf-8"))
    assert archdsl.load_spec(tmp_path / "bom.yaml").name == "x"


def test_extends_targets_that_are_not_files(tmp_path):
    link = tmp_path / "loop.yaml"
    os.symlink(tmp_path / "loop2.yaml", link)
    os.symlink(link, tmp_path / "loop2.yaml")
    exc = refused(write(tmp_path, "extends: loop.yaml\n" + HEAD))
    assert ":1:10:" in str(exc) and "loop" in str(exc)


def test_a_long_extends_chain_blames_the_file_that_exceeds_it(tmp_path):
    for i in range(2000):
        write(tmp_path, f"extends: c{i + 1}.yaml\n" if i < 1999 else HEAD, f"c{i}.yaml")
    exc = refused(tmp_path / "c0.yaml")
    assert f"c{MAX_EXTENDS_DEPTH - 1}.yaml:1:10" in str(exc) and "extends chain is longer than" in str(exc)


def test_a_graph_error_about_a_stack_has_its_line():
    exc = refused(ROOT / "tests" / "bad_specs" / "graph_stack_nobody_reads.yaml")
    assert "graph_stack_nobody_reads.yaml:8:5: model.graph.encoder" in str(exc)


# ------------------------------------------------------------------------------------------- never inject
def test_mermaid_labels_cannot_start_statements(tmp_path):
    spec = write(tmp_path, HEAD + '    - repeat: 2\n      body: [layernorm]\n'
                 '      labels: ["a\\"]\\nclick n_input href \\"javascript:alert(1)\\"\\n%%"]\n')
    text = render(spec, format="mermaid")
    assert not any(line.lstrip().startswith(("click", "%%")) for line in text.splitlines())
    assert "\\nclick" in text  # shown, escaped, inside the label


def test_names_with_ansi_escapes_are_printed_escaped(tmp_path, capsys):
    spec = write(tmp_path, 'name: "\\e[31mRED\\e[0m"\n' + HEAD.split("\n", 1)[1])
    for command in ("validate", "summary"):
        assert main([command, str(spec)]) == 0
        out = capsys.readouterr().out
        assert "\x1b" not in out and "\\x1b[31mRED" in out
    assert "\x1b" not in render(spec, format="dot") and "\x1b" not in render(spec, format="mermaid")


def test_long_inputs_are_echoed_shortened(tmp_path, capsys):
    spec = write(tmp_path, HEAD + "    - " + "k" * 1_000_000 + "\n")
    assert main(["validate", str(spec)]) == 1
    err = capsys.readouterr().err
    assert len(err) < 2000 and "(1,000,000 characters)" in err


# ------------------------------------------------------------------------------------------- first run
def test_set_values_are_expressions_like_the_spec(capsys):
    gpt2 = str(ROOT / "specs" / "gpt2.yaml")
    outputs = []
    for value in ("10**20", "${10**20}"):
        assert main(["validate", gpt2, "--set", f"layers={value}"]) == 1
        outputs.append(capsys.readouterr().err)
    assert outputs[0] == outputs[1] and "gpt2.yaml:32:15: model.layers[3].repeat.times" in outputs[0]
    assert main(["validate", gpt2, "--set", "layers=d_model // 256", "--set", "heads=3*2"]) == 0
    assert archdsl.load_spec(gpt2, overrides={"layers": "d_model // 256"}).model.layers[3].times == 3
    assert archdsl.load_spec(gpt2, overrides={"layers": "2"}).model.layers[3].times == 2


def test_cli_version_summaries_and_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and re.match(r"archdsl \d+\.\d+", capsys.readouterr().out)
    specs = [str(ROOT / "specs" / "gpt2.yaml"), str(ROOT / "specs" / "lstm-lm.yaml")]
    assert main(["summary", *specs]) == 0
    out = capsys.readouterr().out
    assert out.startswith("gpt2\n") and "\nlstm-lm\n" in out and out.count("total parameters") == 2
    with pytest.raises(SystemExit):
        main(["build", "--help"])
    help_text = capsys.readouterr().out
    for option in ("--dtype", "--batch", "--seq-len", "--seed"):
        described = help_text.split(f"  {option}", 1)[1].split("\n  --", 1)[0]
        assert "(default:" in " ".join(described.split()), option


def test_render_refuses_an_unknown_suffix(tmp_path, capsys):
    assert main(["render", str(ROOT / "specs" / "gpt2.yaml"), "-o", str(tmp_path / "x.jpg")]) == 1
    assert "suffix '.jpg'" in capsys.readouterr().err and not (tmp_path / "x.jpg").exists()
    assert main(["render", str(ROOT / "specs" / "gpt2.yaml"), "-o", str(tmp_path / "x.jpg"), "-f", "dot"]) == 0


def test_import_hf_names_a_config_file_by_its_model(tmp_path):
    need("transformers")
    from archdsl.interop.hf import spec_yaml_from_config

    folder = tmp_path / "path" / "to"
    folder.mkdir(parents=True)
    config = {"model_type": "llama", "vocab_size": 64, "hidden_size": 16, "intermediate_size": 32,
              "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 32}
    (folder / "config.json").write_text(json.dumps(config))
    assert "name: llama\n" in spec_yaml_from_config(folder / "config.json")
    (folder / "config.json").write_text(json.dumps({**config, "_name_or_path": "org/tiny-llama"}))
    assert "name: tiny-llama\n" in spec_yaml_from_config(folder / "config.json")
    (folder / "config.json").write_text(json.dumps(config))
    assert "name: to\n" in spec_yaml_from_config(folder)  # a checkpoint folder still names it


def test_the_json_schema_refuses_typos_of_kinds():
    validator = jsonschema.Draft202012Validator(json_schema())
    for node in ("rmsnrom", "LayerNorm", "atention", {"rmsnrom": {"eps": 1e-6}}, {"mlpp": {"hidden": 8}}):
        bad = {"name": "x", "model": {"width": 8, "layers": [{"embedding": {"vocab": 10}}, node]}}
        assert list(validator.iter_errors(bad)), node
    for node in ("rmsnorm", "decoder_layer", "mlp2", {"my_block": {"hidden": 8}}):  # kinds and block names
        good = {"name": "x", "model": {"width": 8, "layers": [{"embedding": {"vocab": 10}}, node]}}
        assert not list(validator.iter_errors(good)), node
