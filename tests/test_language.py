"""The language: vars, expressions, blocks with parameters, repeat patterns, extends, overrides,
shorthands, and the save/load round trips."""
from __future__ import annotations

import textwrap

import pytest
import torch
import yaml

import archdsl
from archdsl.spec import Attention, Repeat

BASE = textwrap.dedent("""
    archdsl: 1
    name: base
    description: a small pre-norm decoder
    vars:
      vocab: 101
      d_model: 32
      heads: 4
      layers: 3
      ffn: "${max(2 * d_model, 48) + (7 % 4) - 3}"
    blocks:
      layer:
        - residual:
            - layernorm
            - attention: {heads: $heads, causal: true}
        - residual:
            - layernorm
            - mlp: {hidden: $ffn}
    model:
      width: $d_model
      layers:
        - embedding: {name: tok, vocab: $vocab}
        - positional: {kind: learned, max_len: 16}
        - repeat: $layers
          body: layer
        - layernorm
        - lm_head: {vocab: $vocab, tie: tok}
""")


def test_vars_and_expressions_are_evaluated():
    spec = archdsl.load_spec(BASE)
    assert spec.vars["ffn"] == 64
    mlp = spec.model.layers[2].body[1].body[1]
    assert mlp.hidden == 64


def test_python_overrides_and_yaml_text_overrides():
    spec = archdsl.load_spec(BASE, overrides={"layers": 5, "d_model": "48"})
    assert spec.model.layers[2].times == 5 and spec.model.width == 48
    assert spec.vars["ffn"] == 96  # derived vars follow the override


def test_bare_kind_names_and_shorthands():
    spec = archdsl.load_spec(BASE)
    repeat = spec.model.layers[2]
    assert isinstance(repeat, Repeat) and repeat.labels == ["layer"]
    assert spec.model.layers[3].kind == "layernorm"


def test_extends_with_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "child.yaml").write_text(textwrap.dedent("""
        extends: base.yaml
        name: child
        vars:
          layers: 1
          heads: 2
    """))
    spec = archdsl.load_spec(tmp_path / "child.yaml")
    assert spec.name == "child" and spec.description == "a small pre-norm decoder"
    assert spec.model.layers[2].times == 1
    assert spec.model.layers[2].body[0].body[1].heads == 2


def test_extends_null_deletes_a_key(tmp_path):
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nname: c\ndescription: null\n")
    assert archdsl.load_spec(tmp_path / "child.yaml").description == ""


PATTERN = textwrap.dedent("""
    name: pattern
    vars: {window: 8}
    blocks:
      layer:
        params: {window: null, theta: 10000}
        layers:
          - positional: {kind: rotary, base: $theta}
          - residual: [rmsnorm, {attention: {heads: 2, causal: true, window: $window, bias: false}}]
      local: [{layer: {window: $window}}]
      global: [{layer: {theta: 1000000}}]
    model:
      width: 16
      layers:
        - embedding: {vocab: 11}
        - repeat: 7
          pattern: [local, local, global]
        - lm_head: 11
""")


def test_repeat_pattern_cycles_bodies_and_block_parameters_apply():
    g = archdsl.graph(PATTERN)
    windows = [d["spec"].window for n, d in sorted(g.nodes(data=True), key=lambda x: x[1]["order"])
               if d["kind"] == "attention"]
    assert windows == [8, 8, None, 8, 8, None, 8]
    bases = [d["spec"].base for _, d in sorted(g.nodes(data=True), key=lambda x: x[1]["order"])
             if d["kind"] == "positional"]
    assert bases == [10000, 10000, 1e6, 10000, 10000, 1e6, 10000]
    spec = archdsl.load_spec(PATTERN)
    assert spec.model.layers[1].labels == ["local", "local", "global"]
    # each attention reads the rotary node of its own layer
    for node, data in g.nodes(data=True):
        if data["kind"] == "attention":
            assert data["positional"].rsplit(".", 1)[0] == node.rsplit(".", 2)[0]


def test_summary_counts_pattern_copies():
    summary = archdsl.summary(PATTERN)
    attention_rows = [r for r in summary.rows if r.kind == "attention"]
    assert [r.copies for r in attention_rows] == [3, 2, 2]  # layers 0,3,6 / 1,4 / 2,5


def test_parallel_is_the_sum_of_branches_and_residual_adds_the_input():
    spec = {"name": "p", "model": {"width": 8, "layers": [
        {"embedding": {"vocab": 5}},
        {"residual": [{"parallel": [[{"linear": {"out": 8}}], [{"linear": {"out": 8, "bias": False}}]]}]}]}}
    model = archdsl.compile(spec, seed=0)
    tokens = torch.tensor([[1, 2, 3]])
    x = model.embedding.weight[tokens]
    branch0 = model.get_submodule("residual.parallel.0.linear")
    branch1 = model.get_submodule("residual.parallel.1.linear")
    expected = x + torch.nn.functional.linear(x, branch0.weight, branch0.bias) + x @ branch1.weight.T
    torch.testing.assert_close(model(tokens), expected)


def test_parallel_scales_multiply_each_branch_before_the_sum():
    """Falcon-H1's layer: s_0 · branch_0(x) + s_1 · branch_1(x); the scales survive a YAML round trip, the
    diagram shows them at the sum, and a list of the wrong length is an error at its line."""
    text = textwrap.dedent("""\
        name: p
        model:
          width: 8
          layers:
            - embedding: {vocab: 5}
            - residual:
                - parallel:
                    branches: [[linear: {out: 8}], [linear: {out: 8, bias: false}]]
                    scales: [0.25, 3.0]
        """)
    model = archdsl.compile(text, seed=0)
    tokens = torch.tensor([[1, 2, 3]])
    x = model.embedding.weight[tokens]
    branch0 = model.get_submodule("residual.parallel.0.linear")
    branch1 = model.get_submodule("residual.parallel.1.linear")
    expected = x + (torch.nn.functional.linear(x, branch0.weight, branch0.bias) * 0.25 + (x @ branch1.weight.T) * 3.0)
    torch.testing.assert_close(model(tokens), expected, rtol=0, atol=0)
    unscaled = archdsl.compile(text.replace("scales: [0.25, 3.0]", "scales: [1.0, 1.0]"), seed=0)
    assert not torch.allclose(unscaled(tokens), model(tokens))
    spec = archdsl.load_spec(text)
    assert archdsl.load_spec(spec.to_yaml()) == spec and "scales" in spec.to_yaml()
    assert "×0.25, ×3" in archdsl.render(spec)
    with pytest.raises(archdsl.SpecError, match=r"<string>:8:13: .*parallel: scales has 3 entries for 2 branches"):
        archdsl.load_spec(text.replace("[0.25, 3.0]", "[0.25, 3.0, 1.0]"))


def test_nope_attention_ignores_the_positional_node_before_it():
    """attention: {nope: true} is the same layer without positions: equal to the model without the rotary node,
    different from the rotary model; shown in summaries and refused for cross-attention."""
    def spec(positional: bool, nope: bool) -> dict:
        layers = [{"embedding": {"vocab": 11}}] + ([{"positional": {"kind": "rotary"}}] if positional else [])
        return {"name": "n", "model": {"width": 16, "layers": layers + [
            {"residual": [{"attention": {"heads": 2, "causal": True, "nope": nope}}]}, {"lm_head": 11}]}}
    def logits(positional: bool, nope: bool) -> torch.Tensor:
        model, g = archdsl.compile(spec(positional, nope), seed=0), torch.Generator().manual_seed(1)
        with torch.no_grad():  # weights large enough that attention is far from uniform
            for p in model.parameters():
                p.normal_(0.0, 0.5, generator=g)
            return model(torch.tensor([[1, 2, 3, 4, 5, 1, 2]]))
    nope = logits(True, True)
    assert torch.equal(nope, logits(False, False))
    assert (nope - logits(True, False)).abs().max() > 1e-2
    assert "NoPE" in str(archdsl.summary(spec(True, True)))


def test_layernorm_without_parameters_and_with_a_unit_offset():
    """layernorm: {scale: false, bias: false} is F.layer_norm with no affine part (in float32, OLMo 1);
    {unit_offset: true} applies (1 + w) (Nemotron's LayerNorm1P), w starting at 0; the offset needs a scale."""
    def model(args: dict) -> archdsl.ArchModel:
        return archdsl.compile({"name": "n", "model": {"width": 8, "layers": [{"embedding": {"vocab": 5}},
                                                                               {"layernorm": args}]}}, seed=0)
    tokens = torch.tensor([[1, 2, 3]])
    bare = model({"scale": False, "bias": False})
    x = bare.embedding.weight[tokens]
    assert bare.num_parameters() == 5 * 8
    torch.testing.assert_close(bare(tokens), torch.nn.functional.layer_norm(x, (8,)), rtol=0, atol=0)
    offset = model({"unit_offset": True, "eps": 1e-5})
    norm = offset.get_submodule("layernorm")
    assert torch.equal(norm.weight, torch.zeros(8))  # initialised to the identity scale
    with torch.no_grad():
        norm.weight.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(0))
        norm.bias.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(1))
    x = offset.embedding.weight[tokens]
    expected = torch.nn.functional.layer_norm(x, (8,), norm.weight + 1.0, norm.bias, 1e-5)
    torch.testing.assert_close(offset(tokens), expected, rtol=0, atol=0)
    with pytest.raises(archdsl.SpecError, match="unit_offset without a learned scale"):
        model({"unit_offset": True, "scale": False})


def test_qk_norm_after_rotary_normalises_the_rotated_heads():
    """qk_norm_after_rotary: RMSNorm of each rotated query and key head (HunYuan) — another model than normalising
    before the rotation once the norm weights are not all equal; refused with qk_norm_over: width."""
    def logits(after: bool) -> torch.Tensor:
        attn = {"heads": 2, "causal": True, "qk_norm": True} | ({"qk_norm_after_rotary": True} if after else {})
        model = archdsl.compile({"name": "q", "model": {"width": 16, "layers": [
            {"embedding": {"vocab": 11}}, {"positional": "rotary"}, {"residual": [{"attention": attn}]},
            {"lm_head": 11}]}}, seed=0)
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.5, generator=g)
            return model(torch.tensor([[1, 2, 3, 4, 5, 6]]))
    assert (logits(True) - logits(False)).abs().max() > 1e-3
    with pytest.raises(archdsl.SpecError, match="qk_norm_after_rotary normalises each head"):
        archdsl.load_spec({"name": "q", "model": {"width": 16, "layers": [{"embedding": {"vocab": 11}}, {"residual": [
            {"attention": {"heads": 2, "qk_norm": True, "qk_norm_over": "width", "qk_norm_after_rotary": True}}]}]}})


def test_dict_source_and_spec_to_yaml_round_trip():
    spec = archdsl.load_spec(PATTERN)
    again = archdsl.load_spec(spec.to_yaml())
    assert again == spec
    assert archdsl.load_spec(yaml.safe_load(spec.to_yaml())) == spec  # the same data as a dict source


def test_scaled_residual_adds_the_scaled_branch_and_round_trips():
    spec = {"name": "scaled", "model": {"width": 8, "layers": [
        {"embedding": {"vocab": 11}},
        {"residual": {"scale": 0.25, "body": [{"linear": {"out": 8}}]}}]}}
    model = archdsl.compile(spec, seed=0)
    tokens = torch.tensor([[1, 2, 3]])
    x = model.embedding.weight[tokens]
    linear = model.get_submodule("residual.linear")
    torch.testing.assert_close(model(tokens), x + 0.25 * torch.nn.functional.linear(x, linear.weight, linear.bias))
    loaded = archdsl.load_spec(archdsl.load_spec(spec).to_yaml())
    assert loaded.model.layers[1].scale == 0.25


def test_model_save_load_round_trip(tmp_path):
    model = archdsl.compile(BASE, seed=3).eval()
    model.save(tmp_path / "m.safetensors")
    loaded = archdsl.load_model(tmp_path / "m.safetensors")
    tokens = torch.randint(0, 101, (2, 7))
    torch.testing.assert_close(model(tokens), loaded(tokens), rtol=0, atol=0)
    assert loaded.lm_head.weight is loaded.tok.weight
    assert loaded.spec == model.spec


def test_initialisation_is_deterministic_and_follows_gpt2():
    a = archdsl.compile(BASE, overrides={"d_model": 256, "heads": 8, "layers": 8}, seed=1)
    b = archdsl.compile(BASE, overrides={"d_model": 256, "heads": 8, "layers": 8}, seed=1)
    c = archdsl.compile(BASE, overrides={"d_model": 256, "heads": 8, "layers": 8}, seed=2)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    assert not torch.equal(a.tok.weight, c.tok.weight)
    qkv = a.get_submodule("layers.0.residual_0.attention.qkv").weight
    out = a.get_submodule("layers.0.residual_0.attention.out").weight
    assert abs(qkv.std().item() - 0.02) < 0.002
    assert abs(out.std().item() - 0.02 / 16 ** 0.5) < 0.001  # 16 residual branches
    assert torch.all(a.get_submodule("layers.0.residual_0.attention.qkv").bias == 0)
    assert torch.all(a.layernorm.weight == 1)


def test_attention_defaults_fill_in():
    spec = archdsl.load_spec(BASE)
    attn = spec.model.layers[2].body[0].body[1]
    assert isinstance(attn, Attention) and attn.dims(32) == (4, 4, 8)


def test_meta_build_of_a_huge_spec_allocates_nothing():
    model = archdsl.compile(BASE, overrides={"d_model": 8192, "heads": 64, "layers": 80}, device="meta")
    assert all(p.device.type == "meta" for p in model.parameters())
    assert model.num_parameters() == archdsl.summary(BASE, overrides={"d_model": 8192, "heads": 64,
                                                                      "layers": 80}).total_params


def test_safe_yaml_never_constructs_python_objects(tmp_path):
    marker = tmp_path / "pwned"
    text = f"name: x\nvars: {{a: !!python/object/apply:os.system ['touch {marker}']}}\nmodel: {{width: 8, layers: [{{embedding: 3}}]}}\n"
    with pytest.raises(archdsl.SpecError):
        archdsl.load_spec(text)
    assert not marker.exists()


def test_graph_nodes_carry_kind_config_shapes_params_and_location():
    g = archdsl.graph(BASE)
    attn = g.nodes["layers.1.residual_0.attention"]
    assert attn["kind"] == "attention" and attn["config"]["heads"] == 4
    assert attn["in_shape"] == ("batch", "seq", 32) and attn["out_shape"] == ("batch", "seq", 32)
    assert attn["params"] == 32 * 96 + 96 + 32 * 32 + 32
    assert attn["loc"].line == 15 and attn["loc"].file == "<string>"
    assert g.nodes["tok"]["in_shape"] == ("batch", "seq")
    assert g.nodes["lm_head"]["out_shape"] == ("batch", "seq", 101)
    skip = [(u, v) for u, v, d in g.edges(data=True) if d["role"] == "skip"]
    assert len(skip) == 6  # one identity path per residual


def test_reserved_names_cover_the_compiled_model_api():
    from archdsl.compiler import ArchModel
    from archdsl.ir import RESERVED_NAMES

    model = archdsl.compile(BASE, device="meta")
    public = {n for n in dir(ArchModel) if not n.startswith("_")}
    public |= {n for n in vars(model) if not n.startswith("_")}
    assert public <= RESERVED_NAMES, sorted(public - RESERVED_NAMES)
    bad = {"name": "x", "model": {"width": 8, "layers": [{"embedding": 5}, {"layernorm": {"name": "new_cache"}}]}}
    with pytest.raises(archdsl.SpecError, match="reserved"):
        archdsl.load_spec(bad)


def test_api_misuse_gets_named_errors(tmp_path):
    small = {"d_model": 16, "heads": 2, "layers": 1}
    with pytest.raises(ValueError, match="dtype 'float8'"):
        archdsl.compile(BASE, overrides=small, dtype="float8")
    with pytest.raises(TypeError, match="seed must be an int"):
        archdsl.compile(BASE, overrides=small, seed="a")
    assert archdsl.compile(BASE, overrides=small, dtype="bfloat16").tok.weight.dtype == torch.bfloat16
    torch.save({"a": 1}, tmp_path / "dict.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    for name in ("dict.pt", "junk.pt"):
        with pytest.raises(ValueError, match="not a model written by ArchModel.save"):
            archdsl.load_model(tmp_path / name)
