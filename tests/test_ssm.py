"""The state-space kinds mamba and mamba2: each mixer against the transformers mixer it stands for (same,
perturbed weights, with and without padding), padding, incremental decoding, generation of a hybrid
with attention, exact parameter counts, fixed decode state, torch.compile, and spec errors."""
from __future__ import annotations

import functools
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import archdsl
from conftest import need
from archdsl.blocks import ForwardContext
from archdsl.cache import ValueState
from archdsl.errors import SpecError

from test_kinds import assert_cached_decoding_equals_full_forward

transformers = need("transformers")

WIDTH = 32
ROOT = Path(__file__).resolve().parents[1]


def one_mixer_lm(node: str, width: int = WIDTH) -> str:
    return textwrap.dedent(f"""\
        archdsl: 1
        name: one-mixer
        model:
          width: {width}
          layers:
            - embedding: {{name: wte, vocab: 53}}
            - residual:
                - rmsnorm
                - {node}
            - lm_head: {{vocab: 53, tie: wte}}
        """)


def hybrid(width: int = 32, layers: int = 4, mamba2: str = "{head_dim: 8, state: 8, groups: 2, chunk: 4}",
           mamba: str = "{state: 4, chunk: 3}") -> str:
    """A decoder cycling [mamba2, mamba, mamba2, attention] layers (each with an MLP but the mamba one)."""
    return textwrap.dedent(f"""\
        archdsl: 1
        name: tiny-hybrid
        blocks:
          mlp_block:
            - residual: [rmsnorm, {{mlp: {{hidden: 64, activation: swiglu, bias: false}}}}]
          ssd_layer:
            - residual: [rmsnorm, {{mamba2: {mamba2}}}]
            - mlp_block
          scan_layer:
            - residual: [rmsnorm, {{mamba: {mamba}}}]
          attention_layer:
            - residual: [rmsnorm, {{attention: {{heads: 4, kv_heads: 2, causal: true, bias: false}}}}]
            - mlp_block
        model:
          width: {width}
          layers:
            - embedding: {{name: wte, vocab: 61}}
            - positional: rotary
            - repeat: {layers}
              name: layers
              pattern: [ssd_layer, scan_layer, ssd_layer, attention_layer]
            - rmsnorm
            - lm_head: {{vocab: 61, tie: wte}}
        """)


def perturb(module: torch.nn.Module, scale: float = 0.1, seed: int = 0) -> None:
    """Non-trivial weights everywhere (norm weights, A, D, Δ biases too), so a swapped term shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


# ----------------------------------------------------------------------------- against transformers
def _mamba_family(name: str):
    """(transformers mixer, our node) for one family, from a tiny config."""
    m = transformers.models
    if name == "mamba":
        cfg = transformers.MambaConfig(hidden_size=WIDTH, state_size=8, conv_kernel=4, expand=2, time_step_rank=5,
                                       use_bias=True, use_conv_bias=True, num_hidden_layers=1)
        return m.mamba.modeling_mamba.MambaMixer(cfg, 0), "mamba: {state: 8, dt_rank: 5, bias: true, chunk: 8}"
    if name == "falcon_mamba":
        cfg = transformers.FalconMambaConfig(hidden_size=WIDTH, state_size=8, conv_kernel=3, expand=2,
                                             time_step_rank=4, mixer_rms_eps=1e-5, num_hidden_layers=1)
        mixer = m.falcon_mamba.modeling_falcon_mamba.FalconMambaMixer(cfg, 0, initialize_mixer_weights=False)
        with torch.no_grad():  # its own initialiser touches the norms before they exist (transformers 5.24)
            mixer.A_log.copy_(torch.log(torch.arange(1.0, 9.0)).expand(64, 8))
            mixer.D.fill_(1.0)
        return (mixer,
                "mamba: {state: 8, conv_kernel: 3, dt_rank: 4, dt_bc_norm: rmsnorm_unweighted, norm_eps: 1.0e-5}")
    if name == "jamba":
        cfg = transformers.JambaConfig(hidden_size=WIDTH, mamba_d_state=8, mamba_d_conv=4, mamba_expand=2,
                                       mamba_dt_rank=6, mamba_conv_bias=False, rms_norm_eps=1e-6,
                                       num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2)
        return (m.jamba.modeling_jamba.JambaMambaMixer(cfg, 0),
                "mamba: {state: 8, dt_rank: 6, conv_bias: false, dt_bc_norm: rmsnorm, chunk: 5}")
    if name == "mamba2":
        cfg = transformers.Mamba2Config(hidden_size=WIDTH, state_size=8, conv_kernel=4, expand=2, head_dim=8,
                                        num_heads=8, n_groups=2, chunk_size=8, use_bias=True, num_hidden_layers=1)
        return (m.mamba2.modeling_mamba2.Mamba2Mixer(cfg, 0),
                "mamba2: {state: 8, head_dim: 8, groups: 2, bias: true, chunk: 8}")
    if name == "bamba":
        cfg = transformers.BambaConfig(hidden_size=WIDTH, mamba_n_heads=4, mamba_d_head=16, mamba_n_groups=1,
                                       mamba_d_state=8, mamba_chunk_size=8, rms_norm_eps=1e-6, num_attention_heads=4,
                                       num_key_value_heads=2, num_hidden_layers=2, attn_layer_indices=[1])
        return (m.bamba.modeling_bamba.BambaMixer(cfg, 0),
                "mamba2: {state: 8, head_dim: 16, chunk: 8, norm_eps: 1.0e-6}")
    if name == "granitemoehybrid":
        cfg = transformers.GraniteMoeHybridConfig(
            hidden_size=WIDTH, mamba_n_heads=8, mamba_d_head=8, mamba_n_groups=4, mamba_d_state=4, mamba_d_conv=2,
            mamba_chunk_size=8, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
            layer_types=["mamba", "attention"])
        return (m.granitemoehybrid.modeling_granitemoehybrid.GraniteMoeHybridMambaLayer(cfg, 0),
                "mamba2: {state: 4, head_dim: 8, groups: 4, conv_kernel: 2, chunk: 8, norm_eps: 1.0e-6}")
    if name == "nemotron_h":
        cfg = transformers.NemotronHConfig(
            hidden_size=WIDTH, mamba_num_heads=6, mamba_head_dim=8, ssm_state_size=8, n_groups=2, conv_kernel=4,
            chunk_size=8, time_step_min=0.3, layer_norm_epsilon=1e-5, num_hidden_layers=2,
            layers_block_type=["mamba", "attention"], num_attention_heads=4, num_key_value_heads=2)
        mixer = m.nemotron_h.modeling_nemotron_h.NemotronHMamba2Mixer(cfg, 0)
        with torch.no_grad():  # Δ = softplus(dt + dt_bias) on both sides of the floor 0.3
            mixer.dt_bias.copy_(torch.linspace(-3.0, 1.0, 6))
        return (mixer,
                "mamba2: {heads: 6, head_dim: 8, state: 8, groups: 2, chunk: 8, dt_floor: 0.3}")
    if name == "zamba2":
        cfg = transformers.Zamba2Config(
            hidden_size=WIDTH, mamba_d_state=8, mamba_d_conv=4, mamba_expand=2, n_mamba_heads=4, mamba_ngroups=1,
            chunk_size=8, time_step_min=0.3, add_bias_linear=True, num_hidden_layers=2,
            layers_block_type=["mamba", "hybrid"], num_attention_heads=4, num_key_value_heads=4)
        mixer = m.zamba2.modeling_zamba2.Zamba2MambaMixer(cfg, 0)
        with torch.no_grad():
            mixer.dt_bias.copy_(torch.linspace(-3.0, 1.0, 4))
        return (mixer,
                f"mamba2: {{head_dim: {2 * WIDTH // 4}, state: 8, bias: true, chunk: 8, dt_floor: 0.3}}")
    if name == "falcon_h1":
        cfg = transformers.FalconH1Config(
            hidden_size=WIDTH, mamba_d_ssm=48, mamba_n_heads=6, mamba_d_head=8, mamba_n_groups=2, mamba_d_state=8,
            mamba_chunk_size=8, mamba_rms_norm=True, mamba_norm_before_gate=True, projectors_bias=True,
            ssm_in_multiplier=0.7, ssm_multipliers=[0.5, 1.5, 0.8, 1.2, 0.9], num_attention_heads=4,
            num_key_value_heads=2, num_hidden_layers=1, rms_norm_eps=1e-5)
        mixer = m.falcon_h1.modeling_falcon_h1.FalconH1Mixer(cfg, 0)
        mixer.register_buffer("mup_vector", m.falcon_h1.modeling_falcon_h1.compute_mup_vector(cfg), persistent=False)
        return mixer, ("mamba2: {heads: 6, head_dim: 8, state: 8, groups: 2, chunk: 8, out_bias: true, "
                       "gate_norm: before_gate, in_scale: 0.7, projection_scales: [0.5, 1.5, 0.8, 1.2, 0.9]}")
    raise AssertionError(name)


FAMILIES = ["mamba", "falcon_mamba", "jamba", "mamba2", "bamba", "granitemoehybrid", "nemotron_h", "zamba2",
            "falcon_h1"]


def _our_mixer(node: str, reference: torch.nn.Module) -> torch.nn.Module:
    model = archdsl.compile(one_mixer_lm(node), seed=0)
    ours = next(m for m in model.modules() if hasattr(m, "new_state"))
    ours.load_state_dict(reference.state_dict(), strict=True)  # transformers' parameter names and shapes
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters())
    return ours.eval()


def mixer_case(family: str):
    """(our mixer on the transformers mixer's perturbed weights, check(mixer): its outputs equal the
    transformers mixer's, unpadded and on a batch padded on the left and the right)."""
    reference, node = _mamba_family(family)
    perturb(reference)
    reference.eval()
    ours = _our_mixer(node, reference)
    x = torch.randn(3, 21, WIDTH, generator=torch.Generator().manual_seed(1))  # 21: several chunks, one partial
    mask = torch.ones(3, 21, dtype=torch.long)
    mask[1, :5] = 0  # left padding
    mask[2, 17:] = 0  # right padding
    positions = torch.arange(21).expand(3, 21)
    with torch.no_grad():
        expected = [(m, reference(x, attention_mask=m)) for m in (None, mask)]
    assert expected[-1][1].abs().max() > 0.1  # a real signal, not zeros compared with zeros

    def check(mixer):
        with torch.no_grad():
            for attention_mask, theirs in expected:
                mine = mixer(x, ForwardContext(positions=positions, key_padding=None if attention_mask is None
                                               else attention_mask.bool()))
                torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)
    return ours, check


@pytest.mark.parametrize("family", FAMILIES)
def test_each_mixer_equals_the_transformers_mixer(family):
    """Each mixer computes the transformers mixer's outputs on its weights, with and without padding."""
    ours, check = mixer_case(family)
    check(ours)


def test_the_dt_floor_matters_where_the_reference_has_one():
    reference, node = _mamba_family("nemotron_h")
    perturb(reference)
    ours = _our_mixer(node, reference)
    x = torch.randn(2, 9, WIDTH, generator=torch.Generator().manual_seed(2))
    ctx = ForwardContext(positions=torch.arange(9).expand(2, 9))
    with torch.no_grad():
        clamped = ours(x, ctx)
        ours.dt_limit = (0.0, None)
        assert (ours(x, ctx) - clamped).abs().max() > 1e-3


# ----------------------------------------------------------------------------- a hybrid model
@pytest.fixture(scope="module")
def model():
    return hybrid_model()


@functools.cache
def hybrid_model() -> archdsl.ArchModel:
    m = archdsl.compile(hybrid(), seed=0)
    perturb(m, 0.3, seed=3)
    return m.eval()


def test_parameter_counts_equal_the_built_modules():
    variants = [hybrid(),
                hybrid(mamba2="{heads: 3, head_dim: 16, state: 4, conv_kernel: 2, bias: true, out_bias: false}",
                       mamba="{state: 4, expand: 3, dt_rank: 3, bias: true, conv_bias: false, dt_bc_norm: rmsnorm}"),
                hybrid(mamba2="{expand: 1, head_dim: 4, groups: 8, gate_norm: none, conv_bias: false}",
                       mamba="{dt_bc_norm: rmsnorm_unweighted}")]
    for text in variants:
        summary = archdsl.summary(text)
        built = archdsl.compile(text, seed=0)
        assert summary.total_params == built.num_parameters()
        for row in summary.rows:
            if row.kind in ("mamba", "mamba2"):
                module = built.get_submodule(row.block)
                assert row.params == sum(p.numel() for p in module.parameters()), row.block


def cached_case():
    """(the hybrid, check(model): a prefill, then several tokens at once, then single tokens through the
    cache give the hybrid's full-forward logits, and greedy generation its argmax continuation)."""
    model = hybrid_model()
    tokens = torch.randint(0, 61, (2, 13), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        full = model(tokens)

    def check(model):
        assert_cached_decoding_equals_full_forward(model)
        with torch.no_grad():  # a prefill, then several tokens at once, then single tokens: all continue the state
            cache = model.new_cache(2, 13)
            parts = [model(tokens[:, :5], cache=cache), model(tokens[:, 5:10], cache=cache)]
            parts += [model(tokens[:, i:i + 1], cache=cache) for i in range(10, 13)]
        torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-5, atol=1e-5)
    return model, check


def test_cached_decoding_and_generation_equal_the_full_forward():
    """A prefill then single tokens, and chunks of several tokens, through the cache give the full forward."""
    model, check = cached_case()
    check(model)


def padded_case():
    """(the hybrid, check(model): rows padded on the left or the right, and left-padded generation, give
    what each row gives alone)."""
    model = hybrid_model()
    tokens = torch.randint(0, 61, (3, 11), generator=torch.Generator().manual_seed(5))
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[1, :4] = 0  # left
    mask[2, 8:] = 0  # right
    with torch.no_grad():
        left = model(tokens[1:2, 4:])
        right = model(tokens[2:3, :8])
    left_alone = model.generate(tokens[1:2, 4:], 8)[0, 7:]
    first_alone = model.generate(tokens[:1], 8)[0]

    def check(model):
        with torch.no_grad():
            batch = model(tokens, mask)
        torch.testing.assert_close(batch[1, 4:], left[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(batch[2, :8], right[0], rtol=1e-5, atol=1e-5)
        out = model.generate(tokens[:2], 8, attention_mask=mask[:2])  # left-padded prompts
        assert torch.equal(out[1, 11:], left_alone)
        assert torch.equal(out[0], first_alone)
    return model, check


def test_a_padded_batch_gives_the_unpadded_rows_results():
    """Rows padded on the left or the right, and left-padded generation, give what each row gives alone."""
    model, check = padded_case()
    check(model)


def test_the_decode_state_is_fixed_and_counted(model):
    summary = archdsl.summary(model.spec)
    per_token = summary.kv_cache_bytes_per_token // 2  # values, as the summary counts bf16
    fixed = summary.state_bytes // 2
    assert per_token == 2 * 2 * 8  # one attention layer: 2 kv heads × 8 dims, keys and values
    prompt = torch.randint(0, 61, (1, 4))
    ssm_values = []
    for steps in (3, 40):
        cache = model.new_cache(1, 64)
        with torch.no_grad():
            model(prompt, cache=cache)
            for _ in range(steps):
                model(prompt[:, :1], cache=cache)
        values = [v for s in cache.states if isinstance(s, ValueState) for v in s.value]
        ssm_values.append(sum(v.numel() for v in values))
    assert ssm_values[0] == ssm_values[1] == fixed  # does not grow with the sequence, and the summary says so


def test_the_chunk_length_does_not_change_the_result(model):
    other = archdsl.compile(hybrid(mamba2="{head_dim: 8, state: 8, groups: 2, chunk: 64}",
                                   mamba="{state: 4, chunk: 64}"), seed=0)
    other.load_state_dict(model.state_dict())
    tokens = torch.randint(0, 61, (2, 17), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        torch.testing.assert_close(other.eval()(tokens), model(tokens), rtol=1e-5, atol=1e-5)


def test_it_trains_and_compiles_without_graph_breaks():
    m = archdsl.compile(hybrid(layers=2), seed=0)  # a mamba2 and a mamba layer
    tokens = torch.randint(0, 61, (2, 10), generator=torch.Generator().manual_seed(7))
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    logits = compiled(tokens)
    torch.testing.assert_close(logits, m(tokens), rtol=1e-5, atol=1e-5)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 61), tokens[:, 1:].reshape(-1))
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_the_diagram_labels_the_mixers():
    dot = archdsl.render(hybrid(), format="dot")
    assert "Mamba-2" in dot and "d=8, state 8, 2 groups, conv 4" in dot
    assert "Mamba" in dot and "state 4, expand 2, conv 4" in dot


# ----------------------------------------------------------------------------- spec errors
@pytest.mark.parametrize("node, line_field, message", [
    ("mamba2: {heads: 3, expand: 2, head_dim: 8}", "mamba2.heads", "contradicts expand 2 × width 32"),
    ("mamba2: {head_dim: 24}", "mamba2.head_dim", "does not divide the inner width 64"),
    ("mamba2: {head_dim: 8, groups: 3}", "mamba2.groups", "3 groups do not divide 8 heads"),
    ("mamba2: {dt_floor: 0.2, dt_ceiling: 0.1}", "mamba2.dt_ceiling", "is not above dt_floor"),
    ("mamba2: {projection_scales: [1.0, 2.0]}", "mamba2.projection_scales", "at least 5"),
    ("mamba: {state: 0}", "mamba.state", "must be > 0"),
    ("mamba: {dt_bc_norm: layernorm}", "mamba.dt_bc_norm", "('layernorm') is not allowed"),
])
def test_bad_fields_are_named_at_their_line(node, line_field, message, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(one_mixer_lm(node))
    with pytest.raises(SpecError) as exc:
        archdsl.load_spec(path)
    error = exc.value.errors[0]
    assert error.line == 9 and error.path.endswith(line_field) and message in error.message, str(exc.value)


# ----------------------------------------------------------------------------- summary and diagram
def test_summary_reports_decode_state_at_a_context_per_layer_kind():
    text = str(archdsl.summary(hybrid(layers=8), context=131072))
    table = text[text.index("decode state  "):]
    rows = {line.split()[0]: line.split() for line in table.splitlines()[1:] if line and line[0] != "-"}
    # attention: 2 layers × (2 kv heads × 8 dims × keys and values) × 2 bytes = 128 B per token, 16 MiB at 128K
    assert rows["attention"][1:] == ["2", "128", "B", "0", "B", "16.00", "MiB"]
    # mamba2 (4 layers): conv ((64 + 2·2·8) inputs × 3 taps) + SSM (64 × 8) values × 2 B = 4 × 1,600 B, fixed
    assert rows["mamba2"][1:] == ["4", "0", "B", "6.25", "KiB", "6.25", "KiB"]
    assert rows["mamba"][1:] == ["2", "0", "B", "1.75", "KiB", "1.75", "KiB"]  # 2 × (64 × 3 + 64 × 4) × 2 B
    assert rows["total"][1] == "8" and "16.01 MiB" in table
    res = subprocess.run([sys.executable, "-m", "archdsl", "summary", "specs/llama-mamba2-hybrid.yaml", "--context",
                          "131072"], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert "mamba2            24        0 B  49.16 MiB           49.16 MiB" in res.stdout  # 24 of 32 layers
    assert "total             32  32.00 KiB  49.16 MiB            4.05 GiB" in res.stdout  # Llama 3 8B: 16 GiB
    with pytest.raises(ValueError, match="positive number of tokens"):
        archdsl.summary(hybrid(), context=0)


def test_the_diagram_shows_the_pattern():
    dot = archdsl.render(hybrid(layers=8), format="dot")
    assert "8 layers: [ssd_layer, scan_layer, ssd_layer, attention_layer]" in dot and "<B>× 2</B>" in dot
    dot = archdsl.render(ROOT / "specs" / "local-global-decoder.yaml", format="dot")
    assert "12 layers: [local × 5, global]" in dot  # runs folded


def control_cases():
    """The mixer and hybrid checks above for tests/controls.py (docs/testing.md)."""
    from controls import Case

    for family in FAMILIES:
        yield Case(test_each_mixer_equals_the_transformers_mixer, family, functools.partial(mixer_case, family),
                   "rtol 1e-5, atol 1e-5")
    # the unbroken hybrid's full forward and rows alone are the reference, as in test_generate.py
    yield Case(test_cached_decoding_and_generation_equal_the_full_forward, "hybrid", cached_case,
               "rtol 1e-5, atol 1e-5; equal tokens")
    yield Case(test_a_padded_batch_gives_the_unpadded_rows_results, "hybrid", padded_case,
               "rtol 1e-5, atol 1e-5; equal tokens")
