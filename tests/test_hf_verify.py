"""A spec made from a config is the transformers model of that config, or an error says where not.

spec_from_config and `archdsl import-hf` compare the spec with the transformers model of the same
config, built on the meta device, role by role (archdsl/interop/hf_verify.py). Full-size configs:
GPT-Neo 125M and GLM-4 9B (which once became specs of other models without a word), every model
type the coverage sweep (benchmarks/hf_coverage.py) records as exact, and a 70B Llama for the time.
"""
from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import pytest

import archdsl
from conftest import need
from archdsl.errors import SpecError

transformers = need("transformers")
from archdsl.interop import hf, hf_verify  # noqa: E402

T = transformers
ROOT = Path(__file__).resolve().parents[1]

GPT_NEO_125M = dict(hidden_size=768, num_layers=12, num_heads=12, vocab_size=50257, max_position_embeddings=2048,
                    attention_types=[[["global", "local"], 6]], window_size=256)
GLM4_9B = dict(hidden_size=4096, num_hidden_layers=40, num_attention_heads=32, num_key_value_heads=2, head_dim=128,
               intermediate_size=13696, vocab_size=151552, partial_rotary_factor=0.5, attention_bias=True,
               max_position_embeddings=131072, rms_norm_eps=1.5625e-07)
LLAMA_70B = dict(vocab_size=128256, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                 num_attention_heads=64, num_key_value_heads=8, rope_theta=500000.0)


def meta_count(config) -> int:
    """Trainable parameters, as hf_verify.check counts them: a frozen one is a table archdsl computes (Marian's
    sinusoids) or a buffer of its own (AFMoE's expert_bias: archdsl's score_bias)."""
    return sum(p.numel() for p in hf_verify.transformers_model_on_meta(config).parameters() if p.requires_grad)


@pytest.mark.parametrize("config,count", [
    (lambda: T.GPTNeoConfig(**GPT_NEO_125M), 125_198_592),
    (lambda: T.Glm4Config(**GLM4_9B), 9_400_279_040),
])
def test_gpt_neo_125m_and_glm4_9b_import_exactly_at_full_size(config, count):
    cfg = config()
    assert meta_count(cfg) == count
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # verified: no UnverifiedSpecWarning, a known family
        spec = hf.spec_from_config(cfg)
    assert archdsl.summary(spec).total_params == count
    assert hf_verify.check(cfg, spec).verified


def _with_traits(monkeypatch, family, **changes):
    monkeypatch.setitem(hf.FAMILY_TRAITS, family, {**hf.FAMILY_TRAITS[family], **changes})


def test_attention_biases_that_differ_are_named_with_both_shapes(monkeypatch):
    """GLM-4 as it was imported before: biases on q/k/v and the output, where GLM-4 has them on q/k/v only."""
    _with_traits(monkeypatch, "glm4", out_bias="attention_bias")
    with pytest.raises(SpecError) as exc:
        hf.spec_from_config(T.Glm4Config(**GLM4_9B))
    text = str(exc.value)
    assert "not transformers' Glm4ForCausalLM" in text and "9,400,279,040" in text
    assert "layer 0 attention: archdsl has biases on q/k/v and o, transformers has biases on q/k/v only" in text
    assert "attention.qkv.bias (4608,)" in text and "attention.out.bias (4096,)" in text
    assert "self_attn.q_proj.bias (4096,)" in text and "self_attn.o_proj.weight (4096, 4096)" in text


def test_missing_norms_and_a_gated_mlp_are_named(monkeypatch):
    _with_traits(monkeypatch, "glm4", norms="pre")  # GLM-4 without its norms after attention and MLP
    with pytest.raises(SpecError, match=r"layer 0 norms: archdsl has 2 tensors of 8,192 parameters, "
                                        r"transformers 4 tensors of 16,384") as exc:
        hf.spec_from_config(T.Glm4Config(**GLM4_9B))
    assert "post_self_attn_layernorm.weight (4096,)" in str(exc.value)
    _with_traits(monkeypatch, "gpt_neo", gated=True)  # GPT-Neo with a GeGLU MLP: 153M parameters, not 125M
    with pytest.raises(SpecError, match="layer 0 feed-forward: archdsl has 4 tensors") as exc:
        hf.spec_from_config(T.GPTNeoConfig(**GPT_NEO_125M))
    assert "mlp.up.weight (6144, 768)" in str(exc.value) and "mlp.c_fc.weight (3072, 768)" in str(exc.value)


def test_roles_are_compared_by_shape_not_only_by_count():
    """A fused qkv equals separate q/k/v projections; a gated MLP of 3072 is not an MLP of 4608, though
    both hold 7,077,888 parameters."""
    fused = {(0, "attention"): [("attention.qkv.weight", (2304, 768)), ("attention.out.weight", (768, 768))]}
    split = {(0, "attention"): [(f"attn.{p}_proj.weight", (768, 768)) for p in "qkvo"]}
    assert hf_verify._first_difference(fused, split) is None
    gated = {(0, "feed-forward"): [("mlp.up.weight", (6144, 768)), ("mlp.down.weight", (768, 3072))]}
    plain = {(0, "feed-forward"): [("mlp.c_fc.weight", (4608, 768)), ("mlp.c_proj.weight", (768, 4608))]}
    assert hf_verify._first_difference(gated, plain).startswith("layer 0 feed-forward: archdsl has 2 tensors of "
                                                                "7,077,888 parameters, transformers 2 tensors of 7,077,888")


def test_a_family_read_with_llama_defaults_is_refused_when_it_differs():
    """DiffLlama is not one of archdsl's families: read with Llama-style defaults (its tree shows Llama's
    projections; its differential attention's lambdas are extra tensors), its spec is another model."""
    with pytest.warns(UserWarning, match="not one of archdsl's tested families"), pytest.raises(SpecError) as exc:
        hf.spec_from_config(T.DiffLlamaConfig())
    assert "not transformers' DiffLlamaForCausalLM" in str(exc.value) and "layer 0 attention" in str(exc.value)
    assert hf.spec_from_config(T.DiffLlamaConfig(), verify=False) is not None  # what --no-verify writes


def test_spec_yaml_from_config_verifies_too(monkeypatch):
    _with_traits(monkeypatch, "glm4", out_bias=True)
    with pytest.raises(SpecError, match="layer 0 attention"):
        hf.spec_yaml_from_config(T.Glm4Config(**GLM4_9B))
    text = hf.spec_yaml_from_config(T.Glm4Config(**GLM4_9B), verify=False)  # written unchecked, as asked
    assert archdsl.summary(archdsl.load_spec(text)).total_params == 9_400_279_040 + 40 * 4096  # o biases


def test_seq2seq_and_vision_specs_are_checked_by_their_totals(monkeypatch):
    for config in (T.T5Config(), T.T5Config(feed_forward_proj="gated-gelu", tie_word_embeddings=False), T.BartConfig(),
                   T.ViTConfig()):
        spec = hf.spec_from_config(config)
        assert hf_verify.check(config, spec).parameters == archdsl.summary(spec).total_params
    spec = hf.spec_from_config(T.ViTConfig())
    with pytest.raises(SpecError, match="the total"):
        hf_verify.check(T.ViTConfig(intermediate_size=1024), spec)


def test_a_config_transformers_cannot_build_gives_an_unverified_warning():
    data = dict(model_type="my-decoder", vocab_size=1000, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                num_attention_heads=8, rms_norm_eps=1e-5, hidden_act="silu", max_position_embeddings=512)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hf.spec_from_config(data)
    unverified = [w for w in caught if issubclass(w.category, hf_verify.UnverifiedSpecWarning)]
    assert unverified and "has no model for model_type 'my-decoder'" in str(unverified[0].message)


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    from archdsl.cli import main

    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_import_hf_refuses_a_different_model_and_no_verify_writes_it_with_a_warning(tmp_path, monkeypatch):
    T.GPTNeoConfig(**GPT_NEO_125M).save_pretrained(tmp_path)
    out = tmp_path / "spec.yaml"
    assert hf.import_hf_main(tmp_path / "config.json", out) == 0  # exact: verified, said on stdout
    assert archdsl.summary(out).total_params == 125_198_592
    _with_traits(monkeypatch, "gpt_neo", gated=True)
    out.unlink()
    with pytest.raises(SpecError, match="layer 0 feed-forward"):
        hf.import_hf_main(tmp_path / "config.json", out)
    assert not out.exists()
    assert hf.import_hf_main(tmp_path / "config.json", out, verify=False) == 0
    assert archdsl.summary(out).total_params == 153_547_008  # written as asked: the GeGLU model


def test_import_hf_cli_says_what_was_verified(tmp_path, capsys):
    T.Glm4Config(**GLM4_9B).save_pretrained(tmp_path)
    code, out, err = run_cli(capsys, "import-hf", str(tmp_path / "config.json"), "-o", str(tmp_path / "spec.yaml"))
    assert code == 0, err
    assert "verified: the same parameters, role by role, as transformers' Glm4ForCausalLM" in out
    code, out, err = run_cli(capsys, "import-hf", str(tmp_path / "config.json"), "--no-verify")
    assert code == 0 and out.startswith("# Written by archdsl import-hf")
    assert "warning: not compared with the transformers model (--no-verify)" in err
    T.DiffLlamaConfig(num_hidden_layers=2).save_pretrained(tmp_path)  # a family read wrongly: refused, nothing written
    code, out, err = run_cli(capsys, "import-hf", str(tmp_path / "config.json"), "-o", str(tmp_path / "dl.yaml"))
    assert code == 1
    assert "config.json: model_type: the spec made from this 'diffllama' config is not transformers'" in err
    assert not (tmp_path / "dl.yaml").exists()


def test_without_transformers_import_hf_says_the_spec_is_unverified(tmp_path, monkeypatch, capsys):
    T.LlamaConfig(num_hidden_layers=2, hidden_size=256, intermediate_size=512, num_attention_heads=4,
                  vocab_size=1000).save_pretrained(tmp_path)
    with_hf = hf.spec_yaml_from_config(tmp_path / "config.json")
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now raises ImportError
    assert hf.import_hf_main(tmp_path / "config.json", tmp_path / "spec.yaml") == 0
    assert "the spec is unverified: transformers is not installed" in capsys.readouterr().err
    assert (tmp_path / "spec.yaml").read_text() == with_hf  # the same spec, read from the file's keys
    with pytest.warns(hf_verify.UnverifiedSpecWarning, match="transformers is not installed"):
        hf.spec_from_config(tmp_path / "config.json")
    falcon = {k: v for k, v in T.FalconConfig(num_hidden_layers=2).to_dict().items() if k != "multi_query"}
    with pytest.raises(SpecError, match="the config has no 'multi_query'"):  # no class defaults to fill it in
        hf.spec_from_config(falcon)


def test_a_70b_config_is_checked_well_under_a_second():
    cfg = T.LlamaConfig(**LLAMA_70B)
    spec = hf.spec_from_config(cfg)  # warm: modelling code imported
    times = []
    for _ in range(3):
        start = time.perf_counter()
        verdict = hf_verify.check(cfg, spec)
        times.append(time.perf_counter() - start)
    assert verdict.verified and verdict.parameters == 70_553_706_496
    assert min(times) < 1.0, times  # both models on meta (about 0.1 s here)


# ------------------------------------------------------------------------------- coverage sweep
sys.path.insert(0, str(ROOT / "benchmarks"))
import hf_coverage  # noqa: E402

RECORDED = json.loads((ROOT / "benchmarks" / "hf_coverage.json").read_text())
EXACT = sorted({r["model_type"] for r in RECORDED["results"] + RECORDED.get("masked_lm", [])
                if r["status"] == "exact" and r["full_size"] == "verified"})


@pytest.mark.parametrize("model_type,status", [("llama", "exact"), ("glm4", "exact"), ("gpt_neo", "exact"),
                                               ("gpt_bigcode", "exact"), ("codegen", "exact"), ("opt", "exact"),
                                               ("bert", "exact"), ("roberta", "exact"), ("bart", "exact"),
                                               ("xglm", "exact"), ("whisper", "exact"), ("moshi", "exact"),
                                               ("axk1", "exact"), ("kolibri1", "exact"),
                                               ("gpt_neox_japanese", "exact"), ("persimmon", "exact"),
                                               ("bitnet", "exact"), ("ctrl", "exact"), ("beam", "refused")])
def test_coverage_sweep_fast_subset(model_type, status):
    """Decoders, CodeGen's qkv rows for 4-way model parallelism, BERT-shaped encoders run as decoders, BART's
    decoder alone (its cross-attention in with_memory), XGLM (BART's layers without cross-attention, fairseq's
    sinusoids); Whisper's decoder, its keys without a bias (key_bias: false). Moshi: a table a row longer than the logits,
    a fused [gate; up] fc1, a sliding_window its code does not apply (probed). AX K1: a norm of the experts' output.
    Kolibri 1: a choice bias on the router's logits. GPT-NeoX-Japanese: an output bias in the last layer alone, and
    (as Persimmon) a fused query_key_value per head, read by running the attention (qkv_layout_traits). BitNet:
    norms before the attention's output projection and the MLP's down-projection, a gated squared ReLU. CTRL: a fixed
    [sin | cos] table kept as a buffer and embeddings scaled by √width (both probed by running a small model), Wq/Wk/Wv,
    an nn.Sequential feed-forward whose ReLU module is its activation. Beam refused for its gated attention."""
    result = hf_coverage.run_one(model_type)
    assert result.status == status, result
    if status == "exact":  # WhisperConfig's class default is the encoder-decoder (its audio encoder is refused)
        assert result.full_size == "verified" or (model_type == "whisper" and result.full_size.startswith(
            "refused: is_encoder_decoder")), result


@pytest.mark.parametrize("model_type", EXACT)
def test_every_type_the_sweep_records_exact_verifies_at_full_size(model_type):
    if model_type not in T.CONFIG_MAPPING:
        pytest.skip(f"transformers {T.__version__} has no '{model_type}'")
    cfg = T.CONFIG_MAPPING[model_type]()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        spec = hf.spec_from_config(cfg)
    assert not [w for w in caught if issubclass(w.category, hf_verify.UnverifiedSpecWarning)]
    assert archdsl.summary(spec).total_params == meta_count(cfg)


@pytest.mark.parametrize("model_type", ["mamba", "falcon_mamba", "mamba2", "jamba", "bamba", "falcon_h1", "qwen3_next", "lfm2",
                                        "recurrent_gemma", "minimax"])
def test_state_space_and_linear_hybrids_pass_the_check_at_full_size(model_type):
    """The class-default (full-size) configs of the hybrid families archdsl imports convert with the
    check on: the totals, and the roles the comparison knows (LFM2 names its final norm embedding_norm)."""
    import transformers

    with warnings.catch_warnings():
        warnings.simplefilter("error", hf_verify.UnverifiedSpecWarning)
        spec = hf.spec_from_config(transformers.CONFIG_MAPPING[model_type]())
    assert spec.name
