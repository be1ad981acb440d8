"""The `archdsl` command: exit codes, error format, no torch for validate/summary, the schema."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import jsonschema
import pytest
import yaml

import archdsl
from archdsl.cli import main
from archdsl.schema import json_schema, json_schema_text
from conftest import ROOT, SPECS, need


def run(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "archdsl", *args], capture_output=True, text=True, cwd=cwd)


def test_validate_ok_and_exit_codes(tmp_path):
    ok = run("validate", *[str(p) for p in SPECS])
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count(": ok") == len(SPECS)
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent("""\
        name: bad
        model:
          width: 1000
          layers:
            - embedding: {vocab: 10}
            - attention: {heads: 12}
            - layernrom
    """))
    res = run("validate", str(bad))
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines == [f"{bad}:7:7: model.layers[2]: unknown node kind 'layernrom' (hint: did you mean 'layernorm'?)"]
    assert run("validate").returncode == 2
    assert run("frobnicate").returncode == 2
    assert run("validate", "--set", "noequals", str(SPECS[0])).returncode == 2


def test_width_errors_are_reported_after_syntax_is_fixed(tmp_path):
    bad = tmp_path / "w.yaml"
    bad.write_text("name: w\nmodel:\n  width: 1000\n  layers:\n    - embedding: {vocab: 10}\n    - attention: {heads: 12}\n")
    res = run("validate", str(bad))
    assert res.returncode == 1
    assert res.stderr == (f"{bad}:6:26: model.layers[1].attention.heads: 12 heads do not divide width 1000 "
                          "(hint: choose heads among the divisors of 1000, or set head_dim)\n")


def test_set_overrides_from_the_command_line():
    res = run("summary", str(ROOT / "specs/gpt2.yaml"), "--set", "layers=2", "--set", "d_model=128", "--set", "heads=4")
    assert res.returncode == 0, res.stderr
    assert "× 2" in res.stdout
    expected = archdsl.summary(ROOT / "specs/gpt2.yaml", overrides={"layers": 2, "d_model": 128, "heads": 4})
    assert f"{expected.total_params:,}" in res.stdout


def test_unknown_override_is_a_spec_error():
    res = run("validate", str(ROOT / "specs/gpt2.yaml"), "--set", "layres=2")
    assert res.returncode == 1 and "did you mean 'layers'" in res.stderr


def test_summary_prints_exact_total():
    res = run("summary", str(ROOT / "specs/gpt2.yaml"))
    assert res.returncode == 0
    assert "124,439,808" in res.stdout


def test_build_runs_a_forward_pass():
    res = run("build", str(ROOT / "specs/llama-small.yaml"), "--set", "layers=1", "--seq-len", "16")
    assert res.returncode == 0, res.stderr
    assert "forward on tokens (1, 16) -> (1, 16, 32000)" in res.stdout
    meta = run("build", str(ROOT / "specs/llama3-8b.yaml"), "--device", "meta")
    assert meta.returncode == 0 and "8,030,261,248 parameters" in meta.stdout


def test_validate_and_summary_do_not_import_torch():
    code = ("import sys; from archdsl.cli import main; "
            f"assert main(['validate', {str(SPECS[0])!r}]) == 0; "
            f"assert main(['summary', {str(SPECS[0])!r}]) == 0; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr


def test_public_functions_are_not_shadowed_by_submodules():
    import archdsl.compiler  # noqa: F401
    import archdsl.summarize  # noqa: F401
    assert callable(archdsl.compile) and callable(archdsl.summary) and callable(archdsl.graph)


def test_schema_is_current_and_accepts_every_spec():
    committed = (ROOT / "schema/archdsl.schema.json").read_text()
    assert committed == json_schema_text(include_plugins=False), "run: archdsl schema --builtin -o schema/archdsl.schema.json"
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in SPECS:
        errors = list(validator.iter_errors(yaml.safe_load(path.read_text())))
        assert not errors, f"{path.name}: {errors[0].message}"


def test_schema_rejects_an_unknown_key():
    validator = jsonschema.Draft202012Validator(json_schema())
    bad = {"name": "x", "model": {"width": 8, "layers": [{"attention": {"heads": 2, "hedas": 3}}]}}
    assert list(validator.iter_errors(bad))


def test_main_returns_codes_in_process(capsys):
    assert main(["validate", str(SPECS[0])]) == 0
    with pytest.raises(SystemExit) as exc:
        main(["summary"])
    assert exc.value.code == 2


def test_language_reference_is_current():
    from archdsl.reference import main as reference_main

    assert reference_main(["--check"]) == 0, "run: python -m archdsl.reference"


def test_import_hf_writes_a_spec_with_the_same_parameter_count(tmp_path):
    transformers = need("transformers")
    config = transformers.MistralConfig(vocab_size=1000, hidden_size=64, intermediate_size=160, num_hidden_layers=3,
                                        num_attention_heads=4, num_key_value_heads=2, sliding_window=16)
    config.save_pretrained(tmp_path)
    res = run("import-hf", str(tmp_path / "config.json"), "-o", str(tmp_path / "spec.yaml"))
    assert res.returncode == 0, res.stderr
    text = (tmp_path / "spec.yaml").read_text()
    assert "repeat:" in text and "vars:" in text  # readable: vars + blocks + repeat, not unrolled
    import torch
    with torch.device("meta"):
        expected = sum(p.numel() for p in transformers.MistralForCausalLM(config).parameters())
    assert archdsl.summary(tmp_path / "spec.yaml").total_params == expected


# ------------------------------------------------------------------------ hostile or mistaken input
GPT2 = str(ROOT / "specs" / "gpt2.yaml")


def test_a_huge_repeat_is_refused_before_anything_is_built(capsys):
    """A --set that asks for 10^26 layers must not build the graph (memory) before the budget check."""
    assert main(["summary", GPT2, "--set", "layers=99999999999999999999999999"]) == 1
    assert "gpt2.yaml:32:15: model.layers[3].repeat.times" in capsys.readouterr().err
    assert main(["validate", GPT2, "--set", "layers=20000", "--max-params", "1e6"]) == 1
    err = capsys.readouterr().err
    assert "repeat.times: 20,000 layers make the model at least" in err and "over the budget of 1,000,000" in err
    # the parameter budget needs one layer built; the number of blocks is counted before any is built
    assert main(["validate", GPT2, "--set", "layers=50000"]) == 1
    assert "500,001 blocks, more than archdsl builds (250,000 in a model)" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--max-params", "-5"], ["--max-params", "inf"], ["--max-params", "abc"]])
def test_a_bad_budget_is_a_usage_error(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["validate", GPT2, *args])
    assert exc.value.code == 2 and "not a parameter budget" in capsys.readouterr().err


def test_a_bad_budget_in_the_environment_is_named(monkeypatch, capsys):
    monkeypatch.setenv("ARCHDSL_MAX_PARAMS", "inf")
    assert main(["validate", GPT2]) == 1
    assert "ARCHDSL_MAX_PARAMS='inf' is not a parameter budget" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["summary", GPT2, "--seq-len", "0"], ["build", GPT2, "--batch", "-1"],
                                  ["build", GPT2, "--device", "nonsense"]])
def test_bad_numbers_and_devices_are_usage_errors(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2


def test_an_unavailable_cuda_device_is_a_usage_error(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(SystemExit) as exc:
        main(["build", GPT2, "--set", "layers=1", "--device", "cuda"])
    assert exc.value.code == 2 and "CUDA is not available" in capsys.readouterr().err


def test_unwritable_outputs_are_reported_without_a_traceback(tmp_path):
    (tmp_path / "file").write_text("")
    for args in (["render", GPT2, "-o", str(tmp_path)], ["schema", "-o", str(tmp_path)],
                 ["render", GPT2, "-o", str(tmp_path / "file" / "x.svg")]):  # a parent that is a file
        res = run(*args)
        assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
        assert str(tmp_path) in res.stderr


def test_overriding_a_var_nothing_reads_is_an_error(capsys):
    spec = "name: x\nvars: {context: 64, d: 8}\nmodel: {width: $d, layers: [{embedding: {vocab: 5}}]}\n"
    with pytest.raises(archdsl.SpecError, match="not used by any node or var"):
        archdsl.load_spec(spec, overrides={"context": 128})
    assert archdsl.summary(GPT2, overrides={"context": 128}).seq_len == 128  # gpt2 reads it: max_len: $context
    assert "attention at context 512" in str(archdsl.summary(ROOT / "specs" / "llama3-8b.yaml",
                                                            overrides={"context": 512}))


def test_overrides_apply_to_a_loaded_spec_object():
    spec = archdsl.load_spec(GPT2)
    two = archdsl.load_spec(spec, overrides={"layers": 2})
    assert archdsl.summary(two).total_params < archdsl.summary(spec).total_params
    assert archdsl.load_spec(two, overrides={"d_model": 64, "heads": 4}).vars["layers"] == 2  # earlier ones kept
    with pytest.raises(TypeError, match="mapping"):
        archdsl.load_spec(GPT2, overrides=[("layers", 2)])


@pytest.mark.parametrize("content,fragment", [
    ("[1, 2]", "list.json:1:1: config: a config is a JSON object, this is a list"),
    ("{nope", "list.json:1:2: config: not a JSON file"),
    ('{"model_type": "llama", "hidden_size": 64, "num_attention_heads": 5}',
     "transformers refuses this 'llama' config"),
])
def test_import_hf_bad_configs_are_spec_errors(tmp_path, content, fragment):
    need("transformers")
    path = tmp_path / "list.json"
    path.write_text(content)
    res = run("import-hf", str(path))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert fragment in res.stderr, res.stderr
