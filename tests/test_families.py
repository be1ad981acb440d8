"""The model families of specs/: each full-size spec is its Hugging Face model (same parameter
count, same blocks in the same arrangement with the same settings), each tiny variant computes
the same logits on the same weights; config import and its errors; the moe and rmsnorm options.
"""
from __future__ import annotations

import functools
import inspect
import warnings

import pytest
import torch

import archdsl
from archdsl.errors import SpecError

from conftest import need  # noqa: E402
from controls import Case  # noqa: E402

transformers = need("transformers")
from archdsl.interop import hf  # noqa: E402

T = transformers

# The published configurations (their config.json values), built offline.
FULL = {
    "gpt2": lambda: T.GPT2Config(),
    "llama2-7b": lambda: T.LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                       num_attention_heads=32, num_key_value_heads=32, rms_norm_eps=1e-5,
                                       max_position_embeddings=4096, rope_theta=10000.0),
    "llama3-8b": lambda: T.LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                       num_attention_heads=32, num_key_value_heads=8, rms_norm_eps=1e-5,
                                       max_position_embeddings=8192, rope_theta=500000.0),
    "mistral-7b": lambda: T.MistralConfig(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                          num_attention_heads=32, num_key_value_heads=8, rms_norm_eps=1e-5,
                                          max_position_embeddings=32768, sliding_window=4096, rope_theta=10000.0),
    "mixtral-8x7b": lambda: T.MixtralConfig(vocab_size=32000, hidden_size=4096, intermediate_size=14336,
                                            num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                                            rms_norm_eps=1e-5, max_position_embeddings=32768, num_local_experts=8,
                                            num_experts_per_tok=2, rope_theta=1e6, router_aux_loss_coef=0.02,
                                            sliding_window=None),
    "pythia-160m": lambda: T.GPTNeoXConfig(vocab_size=50304, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                           intermediate_size=3072, rotary_pct=0.25, rotary_emb_base=10000,
                                           max_position_embeddings=2048, use_parallel_residual=True,
                                           tie_word_embeddings=False, hidden_act="gelu", layer_norm_eps=1e-5),
    "falcon-7b": lambda: T.FalconConfig(vocab_size=65024, hidden_size=4544, num_hidden_layers=32, num_attention_heads=71,
                                        multi_query=True, parallel_attn=True, bias=False, alibi=False,
                                        new_decoder_architecture=False, layer_norm_epsilon=1e-5),
    "gemma-2b": lambda: T.GemmaConfig(vocab_size=256000, hidden_size=2048, intermediate_size=16384, num_hidden_layers=18,
                                      num_attention_heads=8, num_key_value_heads=1, head_dim=256, rms_norm_eps=1e-6,
                                      max_position_embeddings=8192, rope_theta=10000.0),
    "gemma-7b": lambda: T.GemmaConfig(vocab_size=256000, hidden_size=3072, intermediate_size=24576, num_hidden_layers=28,
                                      num_attention_heads=16, num_key_value_heads=16, head_dim=256, rms_norm_eps=1e-6,
                                      max_position_embeddings=8192, rope_theta=10000.0),
    "qwen3-8b": lambda: T.Qwen3Config(vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                                      num_attention_heads=32, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-6,
                                      max_position_embeddings=40960, rope_theta=1000000.0, tie_word_embeddings=False),
    "gemma2-9b": lambda: T.Gemma2Config(vocab_size=256000, hidden_size=3584, intermediate_size=14336, num_hidden_layers=42,
                                        num_attention_heads=16, num_key_value_heads=8, head_dim=256,
                                        query_pre_attn_scalar=256, sliding_window=4096, attn_logit_softcapping=50.0,
                                        final_logit_softcapping=30.0, rms_norm_eps=1e-6, max_position_embeddings=8192,
                                        rope_theta=10000.0),
    "olmo2-7b": lambda: T.Olmo2Config(vocab_size=100352, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                      num_attention_heads=32, num_key_value_heads=32, rms_norm_eps=1e-6,
                                      max_position_embeddings=4096, rope_theta=500000.0, tie_word_embeddings=False),
    "gemma3-1b": lambda: T.Gemma3TextConfig(vocab_size=262144, hidden_size=1152, intermediate_size=6912,
                                            num_hidden_layers=26, num_attention_heads=4, num_key_value_heads=1,
                                            head_dim=256, query_pre_attn_scalar=256, sliding_window=512,
                                            rms_norm_eps=1e-6, max_position_embeddings=32768,
                                            rope_parameters={"sliding_attention": {"rope_type": "default",
                                                                                   "rope_theta": 10000.0},
                                                             "full_attention": {"rope_type": "default",
                                                                                "rope_theta": 1000000.0}}),
    "qwen3-30b-a3b": lambda: T.Qwen3MoeConfig(vocab_size=151936, hidden_size=2048, intermediate_size=6144,
                                              moe_intermediate_size=768, num_hidden_layers=48, num_attention_heads=32,
                                              num_key_value_heads=4, head_dim=128, num_experts=128, num_experts_per_tok=8,
                                              norm_topk_prob=True, rms_norm_eps=1e-6, max_position_embeddings=40960,
                                              rope_theta=1000000.0, tie_word_embeddings=False,
                                              router_aux_loss_coef=0.001),
    "qwen1.5-moe-a2.7b": lambda: T.Qwen2MoeConfig(vocab_size=151936, hidden_size=2048, intermediate_size=5632,
                                                  moe_intermediate_size=1408, shared_expert_intermediate_size=5632,
                                                  num_hidden_layers=24, num_attention_heads=16, num_key_value_heads=16,
                                                  num_experts=60, num_experts_per_tok=4, norm_topk_prob=False,
                                                  rms_norm_eps=1e-6, max_position_embeddings=8192, rope_theta=1000000.0,
                                                  tie_word_embeddings=False, router_aux_loss_coef=0.001),
    "bloom-560m": lambda: T.BloomConfig(vocab_size=250880, hidden_size=1024, n_layer=24, n_head=16,
                                        layer_norm_epsilon=1e-5),
    "deepseek-v3": lambda: T.DeepseekV3Config(),  # transformers' defaults are DeepSeek-V3's sizes
    "mpt-7b": lambda: T.MptConfig(vocab_size=50432, d_model=4096, n_layers=32, n_heads=32, max_seq_len=2048,
                                  expansion_ratio=4, no_bias=True, layer_norm_epsilon=1e-5),
}

COUNTS = {  # transformers' own counts of the same models
    "gpt2": 124_439_808, "llama2-7b": 6_738_415_616, "llama3-8b": 8_030_261_248, "mistral-7b": 7_241_732_096,
    "mixtral-8x7b": 46_702_792_704, "pythia-160m": 162_322_944, "falcon-7b": 6_921_720_704,
    "gemma-2b": 2_506_172_416, "gemma-7b": 8_537_680_896, "qwen3-8b": 8_190_735_360,
    "gemma2-9b": 9_241_705_984, "olmo2-7b": 7_298_617_344,
    "gemma3-1b": 999_885_952, "qwen3-30b-a3b": 30_532_122_624,
    "qwen1.5-moe-a2.7b": 14_315_784_192, "bloom-560m": 559_214_592, "mpt-7b": 6_649_286_656,
    "deepseek-v3": 671_026_404_352,
}


def hf_meta_count(config) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.device("meta"):
            model = T.AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def _attr(*names):
    """The first of these config attributes that the config has (families name them differently)."""
    def read(config):
        return next(getattr(config, n) for n in names if getattr(config, n, None) is not None)
    return read


# each var of the spec files, read from the published config: the oracle for the full-size values, which
# the tiny logits tests (which override the sizes) cannot see
CONFIG_OF_VAR = {
    "vocab": _attr("vocab_size"), "d_model": _attr("hidden_size"), "layers": _attr("num_hidden_layers"),
    "heads": _attr("num_attention_heads"), "kv_heads": _attr("num_key_value_heads"), "ffn": _attr("intermediate_size"),
    "head_dim": _attr("head_dim"), "context": _attr("max_position_embeddings", "n_positions", "max_seq_len"),
    "rope_theta": lambda c: c.rope_parameters.get("full_attention", c.rope_parameters)["rope_theta"],
    "local_rope_theta": lambda c: c.rope_parameters["sliding_attention"]["rope_theta"],
    "eps": _attr("rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon"), "local_window": _attr("sliding_window"),
    "query_pre_attn_scalar": _attr("query_pre_attn_scalar"), "attn_softcap": _attr("attn_logit_softcapping"),
    "final_softcap": _attr("final_logit_softcapping"), "top_k": _attr("num_experts_per_tok"),
    "experts": _attr("num_local_experts", "num_experts", "n_routed_experts"),
    "shared_ffn": _attr("shared_expert_intermediate_size"), "dropout": _attr("resid_pdrop"),
    "rotary_fraction": lambda c: c.rope_parameters["partial_rotary_factor"],
}
CONFIG_OF_VAR_IN = {  # where a family names a var's value differently
    "falcon-7b": {"kv_heads": lambda c: 1 if c.multi_query else c.num_kv_heads, "ffn": _attr("ffn_hidden_size")},
    "bloom-560m": {"ffn": lambda c: 4 * c.hidden_size},
    "mpt-7b": {"ffn": lambda c: c.expansion_ratio * c.d_model},
    "qwen3-30b-a3b": {"ffn": _attr("moe_intermediate_size")},
    "qwen1.5-moe-a2.7b": {"ffn": _attr("moe_intermediate_size")},
    "deepseek-v3": {"ffn": _attr("moe_intermediate_size"), "dense_ffn": _attr("intermediate_size"),
                    "dense_layers": _attr("first_k_dense_replace"), "kv_rank": _attr("kv_lora_rank"),
                    "q_rank": _attr("q_lora_rank"), "head_dim": _attr("qk_nope_head_dim"),
                    "rope_dim": _attr("qk_rope_head_dim"), "v_dim": _attr("v_head_dim"), "groups": _attr("n_group"),
                    "top_groups": _attr("topk_group")},
}


@pytest.mark.parametrize("family", sorted(FULL))
def test_full_size_spec_is_the_transformers_model(root, family):
    """Each full-size spec file has transformers' parameter count, and each of its vars is the
    published config's value; its blocks, arrangement and settings are those of transformers'
    model by the tiny logits test below (which keeps every var but the sizes it overrides)."""
    config = FULL[family]()
    count = hf_meta_count(config)
    assert count == COUNTS[family]
    path = root / "specs" / f"{family}.yaml"
    assert archdsl.summary(path).total_params == count
    assert archdsl.graph(path).graph["total_params"] == count
    assert archdsl.summary(hf.spec_from_config(config)).total_params == count  # the importer's spec, too
    spec_vars = archdsl.load_spec(path).vars
    readers = {**CONFIG_OF_VAR, **CONFIG_OF_VAR_IN.get(family, {})}
    assert set(spec_vars) <= set(readers), f"no config value known for {sorted(set(spec_vars) - set(readers))}"
    assert set(TINY[family][0]) <= set(spec_vars)
    published = {name: readers[name](config) for name in spec_vars}
    assert {k: v for k, v in spec_vars.items() if v != published[k]} == {}, published


@pytest.mark.parametrize("family", sorted(FULL))
def test_import_hf_writes_a_readable_spec_with_the_same_count(tmp_path, capsys, family):
    config = FULL[family]()
    config.save_pretrained(tmp_path)
    out = tmp_path / "spec.yaml"
    assert hf.import_hf_main(tmp_path / "config.json", out) == 0
    assert "parameters" in capsys.readouterr().out
    text = out.read_text()
    assert text.index("\nvars:") < text.index("\nblocks:") < text.index("\nmodel:")
    assert ("repeat: $layers" in text or 'repeat: "${layers - dense_layers}"' in text) and len(text.splitlines()) < 70, \
        "one block, repeated, not unrolled"
    spec = archdsl.load_spec(out)
    assert archdsl.summary(spec).total_params == COUNTS[family]
    assert spec.description.startswith("Imported from a Hugging Face")


# tiny variants of the spec files (vars overrides) and matching tiny transformers configs
COMMON = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, vocab_size=97)
SIZE = {"vocab": 97, "d_model": 64, "layers": 2, "heads": 4}
TINY = {
    "gpt2": ({**SIZE, "context": 64}, lambda: T.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=97, n_positions=64)),
    "llama2-7b": ({**SIZE, "kv_heads": 4, "ffn": 96}, lambda: T.LlamaConfig(**COMMON, intermediate_size=96, rms_norm_eps=1e-5)),
    "llama3-8b": ({**SIZE, "kv_heads": 2, "ffn": 96},
                  lambda: T.LlamaConfig(**COMMON, num_key_value_heads=2, intermediate_size=96, rms_norm_eps=1e-5,
                                        rope_theta=500000.0)),
    "mistral-7b": ({**SIZE, "kv_heads": 2, "ffn": 96, "local_window": 5},
                   lambda: T.MistralConfig(**COMMON, num_key_value_heads=2, intermediate_size=96, rms_norm_eps=1e-5,
                                           sliding_window=5)),
    "mixtral-8x7b": ({**SIZE, "kv_heads": 2, "ffn": 96, "experts": 4},
                     lambda: T.MixtralConfig(**COMMON, num_key_value_heads=2, intermediate_size=96, num_local_experts=4,
                                             rope_theta=1e6)),
    "pythia-160m": ({**SIZE, "ffn": 256}, lambda: T.GPTNeoXConfig(**COMMON, intermediate_size=256, rotary_pct=0.25)),
    "falcon-7b": ({**SIZE, "ffn": 256}, lambda: T.FalconConfig(**COMMON)),
    "gemma-2b": ({**SIZE, "kv_heads": 1, "head_dim": 32, "ffn": 96},
                 lambda: T.GemmaConfig(**COMMON, num_key_value_heads=1, head_dim=32, intermediate_size=96)),
    "gemma-7b": ({**SIZE, "kv_heads": 4, "head_dim": 32, "ffn": 96},
                 lambda: T.GemmaConfig(**COMMON, num_key_value_heads=4, head_dim=32, intermediate_size=96)),
    "gemma2-9b": ({**SIZE, "kv_heads": 2, "head_dim": 32, "ffn": 96, "local_window": 5, "query_pre_attn_scalar": 24,
                   "attn_softcap": 0.5, "final_softcap": 2.0},
                  lambda: T.Gemma2Config(**COMMON, num_key_value_heads=2, head_dim=32, intermediate_size=96,
                                         sliding_window=5, query_pre_attn_scalar=24, attn_logit_softcapping=0.5,
                                         final_logit_softcapping=2.0)),
    "gemma3-1b": ({**SIZE, "layers": 6, "kv_heads": 2, "head_dim": 32, "ffn": 96, "local_window": 5,
                   "query_pre_attn_scalar": 24},
                  lambda: T.Gemma3TextConfig(**{**COMMON, "num_hidden_layers": 6}, num_key_value_heads=2, head_dim=32,
                                             intermediate_size=96, sliding_window=5, query_pre_attn_scalar=24,
                                             rope_parameters={"sliding_attention": {"rope_type": "default",
                                                                                    "rope_theta": 10000.0},
                                                              "full_attention": {"rope_type": "default",
                                                                                 "rope_theta": 1000000.0}})),
    "qwen3-30b-a3b": ({**SIZE, "kv_heads": 2, "head_dim": 32, "ffn": 48, "experts": 4, "top_k": 2},
                      lambda: T.Qwen3MoeConfig(**COMMON, num_key_value_heads=2, head_dim=32, intermediate_size=96,
                                               moe_intermediate_size=48, num_experts=4, num_experts_per_tok=2,
                                               norm_topk_prob=True, rms_norm_eps=1e-6, rope_theta=1000000.0,
                                               tie_word_embeddings=False, router_aux_loss_coef=0.001)),
    "qwen1.5-moe-a2.7b": ({**SIZE, "ffn": 48, "shared_ffn": 80, "experts": 4, "top_k": 2},
                          lambda: T.Qwen2MoeConfig(**COMMON, num_key_value_heads=4, intermediate_size=96,
                                                   moe_intermediate_size=48, shared_expert_intermediate_size=80,
                                                   num_experts=4, num_experts_per_tok=2, norm_topk_prob=False,
                                                   rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=False,
                                                   router_aux_loss_coef=0.001)),
    "olmo2-7b": ({**SIZE, "ffn": 96},
                 lambda: T.Olmo2Config(**COMMON, intermediate_size=96, rms_norm_eps=1e-6, rope_theta=500000.0,
                                       tie_word_embeddings=False)),
    "deepseek-v3": ({**SIZE, "layers": 3, "dense_layers": 1, "kv_rank": 16, "q_rank": 24, "head_dim": 8, "rope_dim": 4,
                     "v_dim": 12, "dense_ffn": 96, "ffn": 32, "experts": 8, "top_k": 2, "groups": 4, "top_groups": 2},
                    lambda: T.DeepseekV3Config(**{**COMMON, "num_hidden_layers": 3}, num_key_value_heads=4,
                                               intermediate_size=96, moe_intermediate_size=32, n_routed_experts=8,
                                               num_experts_per_tok=2, n_group=4, topk_group=2, first_k_dense_replace=1,
                                               q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4,
                                               v_head_dim=12)),
    "bloom-560m": ({**SIZE, "heads": 4}, lambda: T.BloomConfig(n_layer=2, hidden_size=64, n_head=4, vocab_size=97)),
    "mpt-7b": ({**SIZE, "d_model": 96, "heads": 6},
               lambda: T.MptConfig(n_layers=2, d_model=96, n_heads=6, vocab_size=97, max_seq_len=64)),
    "qwen3-8b": ({**SIZE, "kv_heads": 2, "head_dim": 32, "ffn": 96},
                 lambda: T.Qwen3Config(**COMMON, num_key_value_heads=2, head_dim=32, intermediate_size=96,
                                       rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=False)),
}


TOL = 1e-6  # float32, relative to the largest logit (when above 1); the largest difference seen is 4.5e-7 of it


def tiny_case(family: str):
    """(the hand-written spec file at tiny sizes with the weights of transformers' model,
    check(model): its logits on a left-padded batch equal transformers')."""
    overrides, make_config = TINY[family]
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = T.AutoModelForCausalLM.from_config(make_config()).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
        for name, b in reference.named_buffers():  # DeepSeek-V3's expert choice bias is checkpoint state
            if name.endswith("e_score_correction_bias"):
                b.add_(torch.randn(b.shape, generator=g) * 0.05)
    # the hand-written spec, loaded with the checkpoint's weights (from_hf verifies the logits too)
    model = hf.from_hf(reference, spec=root_spec(family), overrides=overrides)
    tokens = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(2))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, :4] = 0  # left padding: without the mask, the real tokens of row 1 would read it
    kwargs = {}
    if "position_ids" in inspect.signature(type(reference).forward).parameters:  # not the ALiBi families
        kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        theirs = reference(tokens, attention_mask=mask, **kwargs).logits

    def check(model):
        with torch.no_grad():
            diff = (model(tokens, mask, **kwargs) - theirs)[mask.bool()].abs().max().item()
        assert diff <= TOL * max(1.0, theirs[mask.bool()].abs().max().item()), f"{family}: {diff:.3g}"
    return model, check


@pytest.mark.parametrize("family", sorted(TINY))
def test_tiny_spec_file_computes_the_transformers_logits(family):
    """The hand-written spec file, at tiny sizes, computes transformers' logits on its weights
    (a left-padded batch with its mask and position ids)."""
    model, check = tiny_case(family)
    check(model)


def control_cases():
    """The checks above, for tests/controls.py."""
    for family in sorted(TINY):
        yield Case(test_tiny_spec_file_computes_the_transformers_logits, family, functools.partial(tiny_case, family),
                   f"<= {TOL:g} x max(1, max |logit|)")


# ------------------------------------------------------------------------------- import errors
@pytest.mark.parametrize("config,feature", [
    (lambda: T.LlamaConfig(rope_scaling={"rope_type": "dynamic", "factor": 2.0}), "rotary scaling 'dynamic'"),
    (lambda: T.GPT2Config(add_cross_attention=True), "cross-attention"),
    (lambda: T.GPT2Config(scale_attn_by_inverse_layer_idx=True), "1/(layer index + 1)"),
    (lambda: T.CohereConfig(use_qk_norm=True), "qk-norm"),
    (lambda: T.Gemma3TextConfig(use_bidirectional_attention=True), "bidirectional attention"),
    (lambda: T.Qwen3MoeConfig(num_hidden_layers=2, mlp_only_layers=[0, 1]), "no layer uses them"),
    (lambda: T.StableLmConfig(qk_layernorm=True), "qk-norm"),
    (lambda: T.FalconConfig(alibi=True), "ALiBi"),
    (lambda: T.BloomConfig(apply_residual_connection_post_layernorm=True), "after the layer norm"),
    (lambda: T.MptConfig(attn_config={"clip_qkv": 6.0}), "clipping of the QKV projection"),
    (lambda: T.MptConfig(attn_config={"qk_ln": True}), "qk-norm"),
    (lambda: T.MptConfig(attn_config={"alibi_bias_max": 16}), "alibi_bias_max=16"),
    (lambda: T.MptConfig(expansion_ratio=2), "expansion ratio of 2"),
    (lambda: T.DeepseekV2Config(), "experts without num_experts_per_tok"),
    (lambda: T.DeepseekV3Config(n_routed_experts=8, n_group=3, topk_group=1), "expert groups that do not fit"),
    (lambda: T.Qwen2MoeConfig(shared_expert_intermediate_size=0), "shared expert of width 0"),
    (lambda: T.DeepseekV2Config(num_experts_per_tok=2, topk_method="noaux_tc"), "expert choice 'noaux_tc'"),
    (lambda: T.DeepseekV3Config(num_key_value_heads=16), "latent attention with 16 key/value heads"),
    (lambda: T.LlamaConfig(hidden_act="relu"), "gated MLP with activation 'relu'"),
    (lambda: T.GPT2Config(activation_function="quick_gelu"), "activation 'quick_gelu'"),
])
def test_unsupported_features_are_named(config, feature):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = config()
    with pytest.raises(SpecError, match="unsupported feature") as exc:
        hf.spec_from_config(cfg)
    assert feature in str(exc.value)


def test_unsupported_feature_in_a_config_file_names_the_file(tmp_path):
    T.LlamaConfig(rope_scaling={"rope_type": "dynamic", "factor": 4.0}).save_pretrained(tmp_path)
    with pytest.raises(SpecError) as exc:
        hf.import_hf_main(tmp_path / "config.json", tmp_path / "out.yaml")
    assert "config.json" in str(exc.value) and "dynamic" in str(exc.value)
    assert not (tmp_path / "out.yaml").exists()


def test_an_unlisted_family_of_known_blocks_converts_from_its_features(tmp_path):
    """A model_type neither archdsl nor transformers knows, written with the usual config keys."""
    data = dict(model_type="my-decoder", vocab_size=1000, hidden_size=256, intermediate_size=512,
                num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2, rms_norm_eps=1e-5,
                rope_theta=10000.0, hidden_act="silu", tie_word_embeddings=False, max_position_embeddings=512,
                sliding_window=128)
    with pytest.warns(UserWarning, match="not one of archdsl's tested families"):
        spec = hf.spec_from_config(data)
    llama = T.LlamaConfig(**{k: v for k, v in data.items() if k not in ("model_type", "sliding_window")})
    assert archdsl.summary(spec).total_params == hf_meta_count(llama)
    attention = [d["spec"] for _, d in archdsl.graph(spec).nodes(data=True) if d["kind"] == "attention"]
    assert {(a.kv_heads, a.window, a.bias) for a in attention} == {(2, 128, False)}
    with pytest.raises(SpecError, match="qk-norm"):
        hf.spec_from_config({**data, "qk_layernorm": True})
    with pytest.raises(SpecError, match="parallel residual"):
        hf.spec_from_config({**data, "use_parallel_residual": True})


def test_per_layer_sliding_windows_become_a_repeat_pattern():
    cfg = T.Qwen2Config(num_hidden_layers=6, use_sliding_window=True, sliding_window=64, max_window_layers=2,
                        hidden_size=64, num_attention_heads=4, num_key_value_heads=2, intermediate_size=96,
                        vocab_size=97)
    text = hf.spec_yaml_from_config(cfg)
    assert "pattern: [global, global, local, local, local, local]" in text
    spec = hf.spec_from_config(cfg)
    windows = [d["spec"].window for n, d in sorted(archdsl.graph(spec).nodes(data=True), key=lambda t: t[1]["order"])
               if d["kind"] == "attention"]
    assert windows == [None, None, 64, 64, 64, 64]


# ------------------------------------------------------------------------------- new language
def test_moe_node_validates_counts_and_routes():
    spec = archdsl.load_spec(root_spec("mixtral-8x7b"), overrides=TINY["mixtral-8x7b"][0])
    moe = next(d for _, d in archdsl.graph(spec).nodes(data=True) if d["kind"] == "moe")
    assert moe["params"] == 64 * 4 + 4 * (64 * 96 * 2 + 96 * 64)
    assert "4 experts, top 2" in moe["label"]
    with pytest.raises(SpecError, match="top_k 5 is more than the 4 experts"):
        archdsl.load_spec(root_spec("mixtral-8x7b"), overrides={**TINY["mixtral-8x7b"][0], "top_k": 5})
    with pytest.raises(SpecError, match="jitter"):
        archdsl.load_spec({"name": "x", "model": {"width": 8, "layers": [
            {"embedding": {"vocab": 10}}, {"moe": {"experts": 2, "hidden": 8, "jitter": 1.5}}]}})
    model = archdsl.compile(spec, seed=0).eval()
    from archdsl.blocks.feedforward import MoE

    layer = next(m for m in model.modules() if isinstance(m, MoE))
    x = torch.randn(2, 5, 64)
    _, weights, chosen = layer.route(x.reshape(-1, 64))
    assert torch.allclose(weights.sum(-1), torch.ones(10)) and chosen.shape == (10, 2)
    def expert(e: int, row: torch.Tensor) -> torch.Tensor:  # SwiGLU, written out from the stacked weights
        gate, value = (layer.experts.up[e] @ row).chunk(2)
        return layer.experts.down[e] @ (torch.nn.functional.silu(gate) * value)

    expected = torch.stack([sum(w * expert(int(e), row) for w, e in zip(ws, es))
                            for row, ws, es in zip(x.reshape(-1, 64), weights, chosen)]).view(2, 5, 64)
    assert torch.allclose(layer(x, None), expected, atol=1e-6)


def test_moe_static_paths_for_torch_compile_match(monkeypatch):
    """Under torch.compile the moe has static shapes: many tokens run every expert densely, a few (a decode
    step) gather their experts' weights; both equal the grouped eager path."""
    from archdsl.blocks.feedforward import MoE

    model = archdsl.compile(root_spec("mixtral-8x7b"), overrides=TINY["mixtral-8x7b"][0], seed=0).eval()
    layer = next(m for m in model.modules() if isinstance(m, MoE))
    many, few = torch.randn(2, 5, 64), torch.randn(1, 1, 64)  # 10 × top 2 >= 4 experts; 1 × 2 < 4
    with torch.no_grad():
        sparse = [layer(x, None) for x in (many, few)]
        calls = []
        for path in ("dense", "gathered"):
            original = getattr(layer.experts, path)
            monkeypatch.setattr(layer.experts, path, lambda *a, _o=original, _p=path: calls.append(_p) or _o(*a))
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
        static = [layer(x, None) for x in (many, few)]
    assert calls == ["dense", "gathered"]
    for got, want in zip(static, sparse):
        assert torch.allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("family", ["qwen1.5-moe-a2.7b", "mixtral-8x7b"])
def test_moe_grouped_matmul_equals_one_matmul_pair_per_expert(family, monkeypatch):
    """The tokens of each expert in one block: torch._grouped_mm where it runs, else a loop over the experts
    that have tokens; outputs and gradients agree, and the block of every expert holds exactly its tokens."""
    from archdsl.blocks import feedforward

    model = archdsl.compile(root_spec(family), overrides=TINY[family][0], seed=0)
    layer = next(m for m in model.modules() if isinstance(m, feedforward.MoE))
    x = torch.randn(3, 7, 64)

    def run():
        layer.zero_grad(set_to_none=True)
        out = layer(x, None)
        (out * torch.linspace(-1, 1, 64)).sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None}

    assert feedforward._grouped_mm_ok(x.reshape(-1, 64), layer.experts.up) == hasattr(torch, "_grouped_mm")
    grouped, grouped_grads = run()
    monkeypatch.setattr(feedforward, "_grouped_mm_ok", lambda *a: False)
    looped, looped_grads = run()
    assert torch.allclose(grouped, looped, atol=1e-6)
    assert grouped_grads.keys() == looped_grads.keys() and "experts.up" in grouped_grads
    for name, grad in grouped_grads.items():
        assert torch.allclose(grad, looped_grads[name], atol=1e-6), name
    with torch.no_grad():  # each token's output is the weighted sum of its experts, written out
        _, weights, chosen = layer.route(x.reshape(-1, 64))
        rows = x.reshape(-1, 64)
        expected = torch.stack([sum(w * layer.experts.gathered(row[None], e[None, None])[0, 0]
                                    for w, e in zip(ws, es)) for row, ws, es in zip(rows, weights, chosen)])
        if layer.shared is not None:
            expected = layer.add_shared(expected, rows, None)
        assert torch.allclose(looped.reshape(-1, 64), expected, atol=1e-5)


def test_rmsnorm_unit_offset_applies_one_plus_w():
    from archdsl.blocks.norm import RMSNorm

    norm = RMSNorm(8, 1e-6, unit_offset=True)
    assert torch.equal(norm.weight, torch.zeros(8)), "initialised to 0, i.e. a scale of 1"
    x = torch.randn(3, 8)
    with torch.no_grad():
        norm.weight.fill_(0.5)
    expected = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * 1.5
    assert torch.allclose(norm(x, None), expected, atol=1e-6)
    spec = archdsl.load_spec(root_spec("gemma-2b"), overrides=TINY["gemma-2b"][0])
    norms = [d for _, d in archdsl.graph(spec).nodes(data=True) if d["kind"] == "rmsnorm"]
    assert norms and all(d["spec"].unit_offset and "1+w" in d["label"] for d in norms)
    model = archdsl.compile(spec, seed=0)  # initialised to a unit scale: w = 0 for (1 + w)
    weights = [m.weight for m in model.modules() if isinstance(m, RMSNorm)]
    assert len(weights) == 5 and all(torch.equal(w, torch.zeros_like(w)) for w in weights)
    llama = archdsl.compile(root_spec("llama3-8b"), overrides=TINY["llama3-8b"][0], seed=0)
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in llama.modules() if isinstance(m, RMSNorm))


def root_spec(name: str):
    from conftest import ROOT

    return ROOT / "specs" / f"{name}.yaml"


def test_from_hf_verifies_an_unlisted_family_and_refuses_a_different_model():
    """Outside the tested families, from_hf checks the logits: a family whose code does something its
    config does not say (here Gemma's scaled embedding and 1 + w norms under an unknown name) fails."""
    def tiny(config):
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = T.AutoModelForCausalLM.from_config(config).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        return model

    llama_like = tiny(T.LlamaConfig(**COMMON, num_key_value_heads=2, intermediate_size=96))
    llama_like.config.model_type = "my-llama"
    with pytest.warns(UserWarning, match="not one of archdsl's tested families"):
        model = hf.from_hf(llama_like)  # verified against the original, silently passes
    assert model.num_parameters() == llama_like.num_parameters()

    gemma_like = tiny(T.GemmaConfig(**COMMON, num_key_value_heads=1, head_dim=32, intermediate_size=96))
    gemma_like.config.model_type = "my-gemma"
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="differs from the original"):
        hf.from_hf(gemma_like)


def test_latent_attention_caches_only_the_latent_and_the_rotary_key(root):
    """DeepSeek-V3's point: the KV cache holds kv_rank + rope_dim values per token and layer, and
    the summary says so; decoding through that cache gives the full forward's logits."""
    overrides, _ = TINY["deepseek-v3"]
    model = archdsl.compile(root / "specs" / "deepseek-v3.yaml", overrides=overrides, seed=0).eval()
    cache = model.new_cache(2, 10)
    assert [tuple(k.shape) for k in cache.keys] == [(2, 1, 10, 16)] * 3  # the normalised latent
    assert [tuple(v.shape) for v in cache.values] == [(2, 1, 10, 4)] * 3  # the rotated key part, shared by heads
    assert archdsl.summary(root / "specs" / "deepseek-v3.yaml").kv_cache_bytes_per_token == 61 * (512 + 64) * 2
    tokens = torch.randint(0, 97, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(tokens)
        steps = [model(tokens[:, :6], cache=cache)] + [model(tokens[:, i:i + 1], cache=cache) for i in range(6, 10)]
    assert (torch.cat(steps, dim=1) - full).abs().max() <= 1e-5


def test_router_aux_loss_refuses_sigmoid_routing(root):
    from archdsl.blocks import router_aux_loss

    overrides, _ = TINY["deepseek-v3"]
    model = archdsl.compile(root / "specs" / "deepseek-v3.yaml", overrides=overrides, seed=0)
    model(torch.randint(0, 97, (1, 5)))
    with pytest.raises(ValueError, match="score_bias"):
        router_aux_loss(model)


def test_half_precision_keeps_deepseek_routing_state_in_float32(root, tmp_path):
    """transformers keeps DeepSeek's gate.weight and e_score_correction_bias in float32: expert choice
    hinges on small differences. archdsl keeps both (router_fp32, score_bias) through casts and save/load."""
    from archdsl.blocks.feedforward import MoE

    overrides, _ = TINY["deepseek-v3"]
    model = archdsl.compile(root / "specs" / "deepseek-v3.yaml", overrides=overrides, seed=0, dtype=torch.bfloat16)
    moe = next(m for m in model.modules() if isinstance(m, MoE))
    assert moe.router.weight.dtype == moe.score_bias.dtype == torch.float32
    assert moe.experts.up.dtype == torch.bfloat16
    model.save(tmp_path / "m.safetensors")
    loaded = archdsl.load_model(tmp_path / "m.safetensors")
    tokens = torch.randint(0, 97, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model.eval()(tokens), loaded(tokens))
    assert next(m for m in loaded.modules() if isinstance(m, MoE)).router.weight.dtype == torch.float32
