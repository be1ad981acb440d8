"""Node kinds as one protocol: user kinds registered from Python, plugin kinds from installed packages,
built-in kinds through the same registry — and nothing outside a kind's own files branching on its name.

The user kind (tests/kinds_example.py: token shift, with a fixed-size decode state) and the example
plugin (examples/plugin: differential attention, with a KV cache) are each taken through every tool:
file:line errors, exact parameter counts, the diagram, forward/backward/training, cached generation
equal to the uncached forward, and torch.compile(fullgraph=True).
"""
from __future__ import annotations

import ast
import math
import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import torch

import archdsl
from archdsl import KindError, register_kind, unregister_kind
from archdsl.blocks import ForwardContext
from archdsl.errors import SpecError
from archdsl.kinds import REGISTRY
from archdsl.spec import NODE_KINDS, NodeSpec

from kinds_example import TokenShift, build_token_shift

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_SPEC = ROOT / "examples" / "plugin" / "specs" / "diff-transformer-small.yaml"


@pytest.fixture
def token_shift():
    register_kind(TokenShift, build=build_token_shift)
    yield TokenShift
    unregister_kind("token_shift")


def lm(layer: str, width: int = 32, vocab: int = 61, layers: int = 2, extra: str = "") -> str:
    return textwrap.dedent(f"""\
        archdsl: 1
        name: user-kind
        model:
          width: {width}
          layers:
            - embedding: {{name: wte, vocab: {vocab}}}
            - positional: {{kind: rotary}}
            - repeat: {layers}
              body:
                - residual:
                    - rmsnorm
                    - {layer}
                - residual:
                    - rmsnorm
                    - mlp: {{hidden: 64, activation: swiglu, bias: false}}
            - rmsnorm{extra}
            - lm_head: {{vocab: {vocab}, tie: wte}}
        """)


# ----------------------------------------------------------------------------- the registry
def test_builtin_kinds_enter_through_the_same_registry():
    builtins = [k for k in REGISTRY if k.builtin]
    assert {k.name for k in builtins} >= {"attention", "latent_attention", "mlp", "moe", "lstm", "classifier"}
    for kind in builtins:
        assert kind.spec.kind == kind.name and NODE_KINDS[kind.name] is kind.spec
        if kind.spec.leaf:
            assert isinstance(kind.build, str) and kind.build.startswith("archdsl.blocks."), kind.name
            assert callable(kind.builder()), kind.name  # resolvable, lazily


def test_validate_and_summary_never_import_torch():
    code = ("import sys, archdsl; archdsl.summary('specs/llama3-8b.yaml'); archdsl.load_spec(%r); "
            "assert 'torch' not in sys.modules, 'torch was imported'" % str(PLUGIN_SPEC))
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_a_registration_that_would_change_a_model_is_refused():
    class Attention(NodeSpec):
        kind = "attention"
        builder = "x:y"

    with pytest.raises(KindError, match="built-in kind"):
        register_kind(Attention)

    class Layer(NodeSpec):
        kind = "layer"
        builder = "x:y"

    with pytest.raises(KindError, match="structural node"):
        register_kind(Layer)

    class Colourful(NodeSpec):
        kind = "colourful"
        family = "rainbow"
        builder = "x:y"

    with pytest.raises(KindError, match="family 'rainbow'"):
        register_kind(Colourful)

    class NoBuilder(NodeSpec):
        kind = "no_builder"

    with pytest.raises(KindError, match="needs a builder"):
        register_kind(NoBuilder)
    with pytest.raises(KindError, match="built-in kind and cannot be removed"):
        unregister_kind("mlp")


def test_two_classes_for_one_name_is_an_error_unless_replaced(token_shift):
    class TokenShift(NodeSpec):  # another class of the same name and kind, from another module
        kind = "token_shift"
        builder = "x:y"

    TokenShift.__module__ = "somewhere_else"
    with pytest.raises(KindError, match="registered twice"):
        register_kind(TokenShift)
    register_kind(TokenShift, replace=True)
    assert NODE_KINDS["token_shift"] is TokenShift
    register_kind(token_shift, build=build_token_shift, replace=True)  # the fixture's own, for its teardown


def test_the_decorator_form_registers_too():
    @register_kind(build=build_token_shift)
    class Shift2(TokenShift):
        kind = "shift_two"

    try:
        assert archdsl.summary(lm("shift_two")).total_params > 0
    finally:
        unregister_kind("shift_two")


# ----------------------------------------------------------------------------- a user kind, every tool
def test_user_kind_errors_carry_file_and_line(token_shift, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(lm("token_shift: {bias: maybe, out: -3}"))
    with pytest.raises(SpecError) as exc:
        archdsl.load_spec(path)
    found = {(e.line, e.path, e.message) for e in exc.value.errors}
    assert (12, "model.layers[2].repeat.body[0].residual.body[1].token_shift.bias",
            "expected true or false, got a string ('maybe')") in found, exc.value
    assert any(e.line == 12 and e.path.endswith("token_shift.out") and "must be > 0" in e.message
               for e in exc.value.errors), exc.value
    path.write_text(lm("token_shfit"))
    with pytest.raises(SpecError, match=r"bad\.yaml:12:.*unknown node kind 'token_shfit' \(hint: did you mean "
                                        r"'token_shift'\?\)"):
        archdsl.load_spec(path)


def test_user_kind_unknown_without_registration():
    with pytest.raises(SpecError, match="unknown node kind 'token_shift'"):
        archdsl.load_spec(lm("token_shift"))


def test_user_kind_counts_draws_trains_and_generates(token_shift):
    text = lm("token_shift: {bias: true}")
    summary = archdsl.summary(text)
    model = archdsl.compile(text, seed=0)
    assert summary.total_params == model.num_parameters()
    row = next(r for r in summary.rows if r.kind == "token_shift")
    assert row.params == 2 * 32 * 32 + 32 and row.copies == 2
    assert summary.state_bytes == 2 * 32 * 2  # the previous token, per layer, in bf16
    svg = archdsl.render(text, format="dot")
    assert "Token shift" in svg and "x_t, x_{t-1}" in svg

    tokens = torch.randint(0, 61, (3, 12), generator=torch.Generator().manual_seed(0))
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        logits = model(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 61), tokens[:, 1:].reshape(-1))
        optimiser.zero_grad()
        loss.backward()
        assert model.get_submodule("layers.0.residual_0.token_shift").prev.weight.grad.abs().sum() > 0
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1
    assert_cached_decoding_equals_full_forward(model.eval())


def assert_cached_decoding_equals_full_forward(model: archdsl.ArchModel) -> None:
    """Prefill then one token per step through the cache gives the full forward's logits; greedy
    generation equals the argmax continuation computed without any cache."""
    vocab = model.vocab
    tokens = torch.randint(0, vocab, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(tokens)
        cache = model.new_cache(2, 9)
        steps = [model(tokens[:, :4], cache=cache)] + [model(tokens[:, i:i + 1], cache=cache) for i in range(4, 9)]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-5, atol=1e-5)
    out = model.generate(tokens[:, :5], 6)
    expected = tokens[:, :5]
    with torch.no_grad():
        for _ in range(6):
            expected = torch.cat([expected, model(expected)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, expected)
    assert len(set(out[0, 5:].tolist())) > 1  # the continuation is not one repeated token


def test_user_kind_compiles_without_graph_breaks(token_shift):
    model = archdsl.compile(lm("token_shift"), seed=0)
    tokens = torch.randint(0, 61, (2, 8))
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(tokens), model(tokens), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- the example plugin
def test_the_example_plugin_is_installed():
    assert "diff_attention" in REGISTRY.installed(), (
        "the example plugin is not installed: run `pip install -e examples/plugin` (the README's set-up does)")
    assert REGISTRY.installed()["diff_attention"] == "archdsl-diffattn"
    assert REGISTRY.get("diff_attention").origin == "archdsl-diffattn"


@pytest.mark.parametrize("command", [["validate"], ["summary"], ["render", "-o", "{tmp}/d.svg"],
                                     ["render", "-o", "{tmp}/d.dot"], ["build", "--set", "layers=1"]])
def test_cli_uses_the_plugin_kind_by_name(command, tmp_path):
    args = [a.replace("{tmp}", str(tmp_path)) for a in command]
    res = subprocess.run([sys.executable, "-m", "archdsl", args[0], str(PLUGIN_SPEC), *args[1:]], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    if args[0] == "summary":
        assert "diff_attention" in res.stdout and "16,914,432" in res.stdout
    if "-o" in args:
        assert "Differential attention" in Path(args[-1]).read_text()


def test_the_schema_and_reference_include_installed_kinds():
    from archdsl.reference import section
    from archdsl.schema import json_schema

    assert "diff_attention" in str(json_schema())
    assert "### `diff_attention`" in section(include_plugins=True)
    assert "### `diff_attention`" not in section()  # docs/language.md documents the built-in kinds


def _reference_diff_attention(module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The paper's equations, written out: two explicit softmax maps per head, their λ-weighted
    difference, a per-head RMSNorm, × (1 − λ_init), the output projection."""
    from archdsl.blocks.embedding import apply_rotary

    B, S, _ = x.shape
    h, kv, d = module.heads, module.kv_heads, module.head_dim
    q = module.q(x).view(B, S, h, 2, d)
    k = module.k(x).view(B, S, kv, 2, d)
    v = module.v(x).view(B, S, kv, 2 * d)
    group = h // kv
    causal = torch.ones(S, S, dtype=torch.bool).tril()
    lam = (math.exp(float((module.lambda_q1 * module.lambda_k1).sum()))
           - math.exp(float((module.lambda_q2 * module.lambda_k2).sum())) + module.lambda_init)
    heads = []
    for i in range(h):
        maps = []
        for m in range(2):
            qi = apply_rotary(q[:, :, i, m][:, None], cos, sin, False)[:, 0]
            ki = apply_rotary(k[:, :, i // group, m][:, None], cos, sin, False)[:, 0]
            scores = (qi @ ki.transpose(-1, -2)) / math.sqrt(d)
            maps.append(torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1))
        o = (maps[0] - lam * maps[1]) @ v[:, :, i // group]
        o = o / torch.sqrt(o.pow(2).mean(-1, keepdim=True) + module.eps) * module.norm_weight
        heads.append(o * (1 - module.lambda_init))
    return module.out(torch.cat(heads, dim=-1))


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_plugin_kind_matches_the_papers_equations(kv_heads):
    model = archdsl.compile(PLUGIN_SPEC, overrides={"vocab": 61, "d_model": 64, "heads": 4, "layers": 2,
                                                    "context": 32}, seed=0).eval()
    if kv_heads != 4:
        text = PLUGIN_SPEC.read_text().replace("diff_attention: {heads: $heads, causal: true}",
                                               f"diff_attention: {{heads: $heads, kv_heads: {kv_heads}, causal: true}}")
        model = archdsl.compile(text, overrides={"vocab": 61, "d_model": 64, "heads": 4, "layers": 2, "context": 32},
                                seed=0).eval()
    with torch.no_grad():  # non-trivial weights everywhere, so a swapped map or norm shows
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
    layers = [model.get_submodule(f"layers.{i}.residual_0.diff_attention") for i in range(2)]
    assert [round(m.lambda_init, 6) for m in layers] == [0.2, round(0.8 - 0.6 * math.exp(-0.3), 6)]
    x = torch.randn(2, 7, 64, generator=torch.Generator().manual_seed(3))
    positions = torch.arange(7).expand(2, 7)
    ctx = ForwardContext(positions=positions)
    model.positional(x, ctx)
    with torch.no_grad():
        ours = layers[1](x, ctx)
        reference = _reference_diff_attention(layers[1], x, *ctx.rope["positional"])
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # the second map matters: without it (λ's vectors zeroed) the output differs
        for name in ("lambda_q1", "lambda_q2"):
            getattr(layers[1], name).zero_()
        assert (layers[1](x, ctx) - ours).abs().max() > 1e-3


def test_plugin_kind_trains_generates_and_compiles():
    model = archdsl.compile(PLUGIN_SPEC, overrides={"vocab": 61, "d_model": 64, "heads": 4, "layers": 2,
                                                    "context": 32}, seed=0)
    assert archdsl.summary(model.spec).total_params == model.num_parameters()
    tokens = torch.randint(0, 61, (2, 10))
    loss = torch.nn.functional.cross_entropy(model(tokens).reshape(-1, 61), tokens.reshape(-1))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert_cached_decoding_equals_full_forward(model.eval())
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(tokens), model(tokens), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- installed plugins, mocked
class _FakeDist:
    def __init__(self, name):
        self.name = name


def _fake_entry_point(name: str, value: str, dist: str) -> EntryPoint:
    ep = EntryPoint(name=name, value=value, group="archdsl.kinds")
    try:
        return ep._for(_FakeDist(dist))  # type: ignore[attr-defined]
    except AttributeError:  # pragma: no cover - older importlib.metadata
        object.__setattr__(ep, "dist", _FakeDist(dist))
        return ep


@pytest.fixture
def fake_plugins(monkeypatch):
    """Replace the installed entry points with a list the test gives (restored afterwards)."""
    def install(*entry_points):
        import importlib.metadata as md

        monkeypatch.setattr(md, "entry_points", lambda group=None: [ep for ep in entry_points if ep.group == group])
        REGISTRY._plugins, REGISTRY._plugin_errors = None, {}
    saved = dict(REGISTRY._kinds)
    yield install
    REGISTRY._kinds.clear()
    REGISTRY._kinds.update(saved)
    REGISTRY._plugins, REGISTRY._plugin_errors = None, {}


def test_a_plugin_that_fails_to_import_is_named_at_the_line_that_uses_it(fake_plugins):
    fake_plugins(_fake_entry_point("broken_mixer", "no_such_module.spec:Broken", "broken-dist"))
    with pytest.raises(SpecError) as exc:
        archdsl.load_spec(lm("broken_mixer"))
    error = exc.value.errors[0]
    assert error.line == 12 and "broken-dist" in error.message and "failed to import" in error.message


def test_two_distributions_declaring_one_kind_are_named(fake_plugins):
    fake_plugins(_fake_entry_point("twin", "kinds_example:TokenShift", "dist-a"),
                 _fake_entry_point("twin", "kinds_example:TokenShift", "dist-b"))
    with pytest.raises(SpecError, match="declared by two installed distributions, dist-a and dist-b"):
        archdsl.load_spec(lm("twin"))


def test_a_plugin_cannot_replace_a_builtin_kind(fake_plugins):
    fake_plugins(_fake_entry_point("mlp", "kinds_example:TokenShift", "sneaky"))
    spec = archdsl.load_spec(lm("mlp: {hidden: 8}"))  # the built-in wins, the plugin is refused by name
    assert type(spec.model.layers[2].body[0].body[1]).__module__ == "archdsl.spec.feedforward"
    assert any("sneaky" in p and "built into archdsl" in p for p in REGISTRY.load_all())


def test_an_entry_point_must_be_named_after_its_kind(fake_plugins):
    fake_plugins(_fake_entry_point("shifty", "kinds_example:TokenShift", "misnamed"))
    with pytest.raises(SpecError, match="entry point name must be the kind"):
        archdsl.load_spec(lm("shifty"))


def test_an_unknown_kind_lists_the_installed_plugins(fake_plugins):
    fake_plugins(_fake_entry_point("token_shift", "kinds_example:TokenShift", "shift-dist"))
    with pytest.raises(SpecError, match=r"installed plugins: token_shift \(shift-dist\)"):
        archdsl.load_spec(lm("qqqqqq"))


# ----------------------------------------------------------------------------- the protocol stays true
COMPOSITION = {"residual", "parallel", "repeat", "with_memory"}  # the only kinds the tools know by name (design.md)
EXEMPT = {"interop"}  # the Hugging Face importer maps checkpoints onto kinds (issue 11 makes it a decompiler)


def _own_files(kind) -> set[Path]:
    spec_file = Path(sys.modules[kind.spec.__module__].__file__).resolve()
    builder_file = (ROOT / "archdsl" / Path(*kind.spec.builder.split(":")[0].split(".")[1:])).with_suffix(".py")
    return {spec_file, builder_file.resolve()}


def _kind_names_used(tree: ast.AST, source: str, names: set[str], families: set[str]) -> list[tuple[int, str]]:
    """String constants naming a kind compared with something kind-like (`data["kind"] == "mlp"`,
    `node.kind in ("pooler", ...)`), or keys of a table keyed by kinds (two or more kind names that
    are not also colour families)."""
    found = []

    def constants(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            for element in node.elts:
                yield from constants(element)

    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            for side in sides:
                others = " ".join(ast.get_source_segment(source, o) or "" for o in sides if o is not side)
                if "kind" in others:
                    found += [(c.lineno, c.value) for c in constants(side) if c.value in names]
        elif isinstance(node, ast.Dict):
            keys = [k for k in node.keys if isinstance(k, ast.Constant) and k.value in names - families]
            if len(keys) >= 2:
                found += [(k.lineno, k.value) for k in keys]
    return found


def test_no_module_outside_a_kinds_own_files_branches_on_its_name():
    from archdsl.spec.base import FAMILIES

    builtins = {k.name: k for k in REGISTRY if k.builtin and k.name not in COMPOSITION}
    problems = []
    for path in sorted((ROOT / "archdsl").rglob("*.py")):
        if EXEMPT & set(path.relative_to(ROOT / "archdsl").parts):
            continue
        source = path.read_text()
        for line, name in _kind_names_used(ast.parse(source, str(path)), source, set(builtins), set(FAMILIES)):
            if path.resolve() not in _own_files(builtins[name]):
                problems.append(f"{path.relative_to(ROOT)}:{line}: '{name}'")
    assert not problems, "code outside a kind's own files names it:\n" + "\n".join(problems)


def test_the_protocol_check_catches_a_branch_on_a_kind_name():
    source = ("if data['kind'] == 'lm_head':\n    pass\nTABLE = {'mlp': 1, 'moe': 2}\n"
              "if kind in ('pooler', 'linear'):\n    pass\nif scaling == 'linear':\n    pass\n")
    found = _kind_names_used(ast.parse(source), source, {"lm_head", "mlp", "moe", "pooler", "linear"}, set())
    assert found == [(1, "lm_head"), (3, "mlp"), (3, "moe"), (4, "pooler"), (4, "linear")]
