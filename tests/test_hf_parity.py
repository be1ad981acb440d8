"""Numerical parity with Hugging Face transformers, offline, CPU, float32, tiny random models.

For every family: build the transformers model from a tiny config with random (seeded) weights,
convert it with archdsl.interop.hf.from_hf, and compare logits on an unpadded batch and on a
left-padded one (the padding mask and transformers' position ids), and greedy generation on a
left-padded batch. Loading a sharded safetensors checkpoint with from_pretrained is checked the same
way. Each check is a function of the archdsl model (the *_case functions), so that tests/controls.py
can show that it fails when the model is broken (tests/test_controls.py, docs/testing.md).
"""
from __future__ import annotations

import functools
import inspect
import math
import warnings

import pytest
import torch

import archdsl  # noqa: F401
from controls import Case
from archdsl.interop import hf
from conftest import need

transformers = need("transformers")

VOCAB = 97
# float32, relative to the largest logit (when above 1): the largest difference seen is 4.8e-7 of it
TOL = 1e-6
# bit-identical to transformers (the same operations in the same order; at 1, 2 and 4 threads alike)
EXACT = {"falcon_new_mqa", "gemma", "gemma2", "gemma3", "gpt_neox", "gpt_neox_sequential", "granite", "llama", "llama31",
         "llama_linear", "llama_yarn", "llama_yarn_mscale", "mistral", "olmo2", "phi3", "qwen2", "qwen3", "starcoder2"}
COMMON = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, vocab_size=VOCAB)
# DeepSeek-V3 at a tiny size: latent attention, the first layer dense, 8 experts in 4 groups (2 kept), top 2
DEEPSEEK = dict(num_hidden_layers=3, hidden_size=64, num_attention_heads=4, num_key_value_heads=4, vocab_size=VOCAB,
                intermediate_size=96, moe_intermediate_size=32, n_routed_experts=8, num_experts_per_tok=2, n_group=4,
                topk_group=2, first_k_dense_replace=1, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4,
                v_head_dim=12)
GRANITE = dict(embedding_multiplier=3.0, residual_multiplier=0.3, attention_multiplier=0.05, logits_scaling=0.5)


def _configs() -> dict:
    T = transformers
    return {
        "gpt2": lambda: T.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=VOCAB, n_positions=64),
        "llama": lambda: T.LlamaConfig(**COMMON, num_key_value_heads=2, intermediate_size=96, rope_theta=500000.0),
        # a window of 5 is shorter than the 12-token test sequences, so it changes the result
        "mistral": lambda: T.MistralConfig(**COMMON, num_key_value_heads=2, intermediate_size=96, sliding_window=5),
        "mixtral": lambda: T.MixtralConfig(**COMMON, num_key_value_heads=2, intermediate_size=96, num_local_experts=4,
                                           num_experts_per_tok=2),
        "gpt_neox": lambda: T.GPTNeoXConfig(**COMMON, intermediate_size=256, rotary_pct=0.25),
        "gpt_neox_sequential": lambda: T.GPTNeoXConfig(**COMMON, intermediate_size=256, rotary_pct=0.5,
                                                       use_parallel_residual=False),
        # Falcon 7B's block: multi-query attention, parallel attention and MLP sharing one norm
        "falcon": lambda: T.FalconConfig(**COMMON),
        # Llama 3.1's rotary scaling; an original context of 8 puts the 12-token tests in the scaled regime
        "llama31": lambda: T.LlamaConfig(**COMMON, num_key_value_heads=2, intermediate_size=96, rope_theta=500000.0,
                                         rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8}),
        # YaRN (Qwen2.5/Qwen3 long-context configs): an original context of 4 puts the tests in the scaled range
        "llama_yarn": lambda: T.LlamaConfig(**COMMON, num_key_value_heads=2, intermediate_size=96,
                                            rope_scaling={"rope_type": "yarn", "factor": 4.0,
                                                          "original_max_position_embeddings": 4}),
        # DeepSeek's form: the attention factor is a ratio of two mscales
        "llama_yarn_mscale": lambda: T.LlamaConfig(**COMMON, num_key_value_heads=2, intermediate_size=96,
                                                   rope_scaling={"rope_type": "yarn", "factor": 4.0, "mscale": 0.707,
                                                                 "mscale_all_dim": 1.0, "beta_fast": 16,
                                                                 "original_max_position_embeddings": 4}),
        "llama_linear": lambda: T.LlamaConfig(**COMMON, num_key_value_heads=2, intermediate_size=96,
                                              rope_scaling={"rope_type": "linear", "factor": 4.0}),
        # the new decoder architecture (Falcon 40B/180B): grouped KV heads, one norm per branch
        "falcon_new_gqa": lambda: T.FalconConfig(**COMMON, new_decoder_architecture=True, num_kv_heads=2, bias=True),
        # new decoder architecture with multi-query attention and a shared norm
        "falcon_new_mqa": lambda: T.FalconConfig(**COMMON, new_decoder_architecture=True, num_kv_heads=1,
                                                 num_ln_in_parallel_attn=1),
        "falcon_sequential_mha": lambda: T.FalconConfig(**COMMON, multi_query=False, parallel_attn=False, bias=True),
        "gemma": lambda: T.GemmaConfig(**COMMON, num_key_value_heads=1, head_dim=32, intermediate_size=96),
        # families not in the list, made of the same blocks
        "qwen2": lambda: T.Qwen2Config(**COMMON, num_key_value_heads=2, intermediate_size=96, use_sliding_window=True,
                                       sliding_window=5, max_window_layers=1),
        # Gemma 2: sandwich norms, local/global layers, soft-capping (caps this low so that they bite on tiny models)
        "gemma2": lambda: T.Gemma2Config(**COMMON, num_key_value_heads=2, head_dim=32, intermediate_size=96,
                                         sliding_window=5, query_pre_attn_scalar=24, attn_logit_softcapping=0.5,
                                         final_logit_softcapping=2.0),
        # OLMo 2: norms after attention and MLP (inside the residual, none before), qk-norm over all heads
        "olmo2": lambda: T.Olmo2Config(**COMMON, num_key_value_heads=2, intermediate_size=96),
        # Gemma 3 (text): sandwich norms, qk-norm with (1 + w), 5 local : 1 global layers with their own rotary
        # (the global ones linearly scaled); a window of 5 and 6 layers so that both kinds matter
        "gemma3": lambda: T.Gemma3TextConfig(**{**COMMON, "num_hidden_layers": 6}, num_key_value_heads=2, head_dim=32,
                                             intermediate_size=96, sliding_window=5, query_pre_attn_scalar=24,
                                             rope_parameters={"sliding_attention": {"rope_type": "default",
                                                                                    "rope_theta": 10000.0},
                                                              "full_attention": {"rope_type": "linear", "factor": 8.0,
                                                                                 "rope_theta": 1000000.0}}),
        "qwen3_moe": lambda: T.Qwen3MoeConfig(**COMMON, num_key_value_heads=2, head_dim=32, intermediate_size=96,
                                              moe_intermediate_size=48, num_experts=4, num_experts_per_tok=2,
                                              norm_topk_prob=False),
        "qwen2_moe": lambda: T.Qwen2MoeConfig(**COMMON, num_key_value_heads=2, intermediate_size=96,
                                              moe_intermediate_size=48, shared_expert_intermediate_size=80,
                                              num_experts=4, num_experts_per_tok=2, norm_topk_prob=False),
        # dense and sparse layers mixed: every second layer sparse (a repeat pattern), and an irregular
        # mlp_only_layers (a repeat per run of equal layers)
        "qwen2_moe_step2": lambda: T.Qwen2MoeConfig(**{**COMMON, "num_hidden_layers": 4}, num_key_value_heads=2,
                                                    intermediate_size=96, moe_intermediate_size=48,
                                                    shared_expert_intermediate_size=80, num_experts=4,
                                                    num_experts_per_tok=2, decoder_sparse_step=2),
        "qwen3_moe_mixed": lambda: T.Qwen3MoeConfig(**{**COMMON, "num_hidden_layers": 12}, num_key_value_heads=2,
                                                    head_dim=32, intermediate_size=96, moe_intermediate_size=48,
                                                    num_experts=4, num_experts_per_tok=2, mlp_only_layers=[0, 1, 5]),
        "qwen3": lambda: T.Qwen3Config(**COMMON, num_key_value_heads=2, head_dim=32, intermediate_size=96),
        # parallel attention and MLP sharing one norm, partial rotary, biases everywhere, a biased LM head
        "phi": lambda: T.PhiConfig(**COMMON, intermediate_size=96, partial_rotary_factor=0.5),
        # Cohere (Command R): parallel block, LayerNorm without bias, interleaved rotary, scaled logits
        "cohere": lambda: T.CohereConfig(**COMMON, num_key_value_heads=2, intermediate_size=96, logit_scale=0.5),
        # OLMoE: pre-norm, qk-norm over all heads, 4 experts top 2 not renormalised
        "olmoe": lambda: T.OlmoeConfig(**COMMON, num_key_value_heads=2, intermediate_size=48, num_experts=4,
                                       num_experts_per_tok=2, norm_topk_prob=False),
        # ALiBi families: BLOOM (a norm after the embedding, biases, per-head fused QKV; 6 heads, not a power
        # of 2, so the interleaved slopes are used) and MPT (no biases anywhere, LayerNorms without a shift)
        "bloom": lambda: T.BloomConfig(n_layer=2, hidden_size=96, n_head=6, vocab_size=VOCAB),
        "mpt": lambda: T.MptConfig(n_layers=2, d_model=64, n_heads=4, vocab_size=VOCAB, max_seq_len=64),
        # Granite: Llama blocks with embedding, residual, attention and logit multipliers (and the MoE variant)
        "granite": lambda: T.GraniteConfig(**COMMON, num_key_value_heads=2, intermediate_size=96, **GRANITE),
        "granitemoe": lambda: T.GraniteMoeConfig(**COMMON, num_key_value_heads=2, intermediate_size=48, num_local_experts=4,
                                                 num_experts_per_tok=2, **GRANITE),
        "deepseek_v3": lambda: T.DeepseekV3Config(**DEEPSEEK, q_lora_rank=24),
        # queries straight from the stream, two shared experts, weights not renormalised
        "deepseek_v3_noq": lambda: T.DeepseekV3Config(**DEEPSEEK, q_lora_rank=None, n_shared_experts=2,
                                                      norm_topk_prob=False),
        # YaRN with DeepSeek's mscale: cos/sin factor 1 and the softmax scale times mscale²
        "deepseek_v3_yarn": lambda: T.DeepseekV3Config(**DEEPSEEK, q_lora_rank=24, rope_parameters={
            "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4, "mscale": 1.0,
            "mscale_all_dim": 1.0, "beta_fast": 32, "beta_slow": 1, "rope_theta": 10000.0}),
        # no shared expert: transformers keeps zero-width shared-expert weights, which hold nothing
        "deepseek_v3_noshared": lambda: T.DeepseekV3Config(**DEEPSEEK, q_lora_rank=24, n_shared_experts=0),
        # DeepSeek-V2: softmax experts, top k not renormalised, scaled; greedy, or within groups by their best score
        "deepseek_v2": lambda: T.DeepseekV2Config(**{**DEEPSEEK, "n_routed_experts": 8}, q_lora_rank=None,
                                                  routed_scaling_factor=2.0),
        "deepseek_v2_group": lambda: T.DeepseekV2Config(**DEEPSEEK, q_lora_rank=24, routed_scaling_factor=2.0,
                                                        topk_method="group_limited_greedy"),
        "gptj": lambda: T.GPTJConfig(n_layer=2, n_embd=64, n_head=4, vocab_size=VOCAB, rotary_dim=8, n_positions=64),
        "phi3": lambda: T.Phi3Config(**COMMON, num_key_value_heads=2, intermediate_size=96, pad_token_id=0,
                                     bos_token_id=1, eos_token_id=2),
        "starcoder2": lambda: T.Starcoder2Config(**COMMON, num_key_value_heads=2, intermediate_size=96, sliding_window=5),
        "stablelm": lambda: T.StableLmConfig(**COMMON, num_key_value_heads=2, intermediate_size=96,
                                             use_parallel_residual=True, partial_rotary_factor=0.25),
        # GLM and GLM-4: biases on q/k/v only, rotary on adjacent pairs of half of each head; GLM-4 with
        # norms after attention and MLP too
        "glm": lambda: T.GlmConfig(**COMMON, num_key_value_heads=2, head_dim=16, intermediate_size=96,
                                   partial_rotary_factor=0.5, attention_bias=True, pad_token_id=0, eos_token_id=2),
        "glm4": lambda: T.Glm4Config(**COMMON, num_key_value_heads=2, head_dim=16, intermediate_size=96,
                                     partial_rotary_factor=0.5, attention_bias=True, pad_token_id=0, eos_token_id=2),
        # GPT-Neo: unscaled scores, a global and a local layer (window 5 < the 12-token sequences)
        "gpt_neo": lambda: T.GPTNeoConfig(num_layers=2, hidden_size=64, num_heads=4, vocab_size=VOCAB,
                                          max_position_embeddings=64, attention_types=[[["global", "local"], 1]],
                                          window_size=5),
        "ernie4_5": lambda: T.Ernie4_5Config(**COMMON, num_key_value_heads=2, head_dim=16, intermediate_size=96),
        "helium": lambda: T.HeliumConfig(**COMMON, num_key_value_heads=2, head_dim=16, intermediate_size=96),
        "vaultgemma": lambda: T.VaultGemmaConfig(**COMMON, num_key_value_heads=2, head_dim=16, intermediate_size=96,
                                                 sliding_window=5, query_pre_attn_scalar=24,
                                                 attn_logit_softcapping=0.5, final_logit_softcapping=2.0),
    }


FAMILIES = sorted(_configs())


@functools.lru_cache(maxsize=None)  # built once per family and shared: tests never change its weights
def hf_model(name: str, seed: int = 0):
    """A transformers causal LM of a tiny config, every parameter (norms and biases too) randomised."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers.AutoModelForCausalLM.from_config(_configs()[name]()).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
        for name, b in model.named_buffers():  # checkpoint state that is not a parameter
            if name.endswith("e_score_correction_bias"):
                b.add_(torch.randn(b.shape, generator=g) * 0.05)
    return model


def batch(padding: str, seed: int = 0):
    """Tokens (3, 12) and their mask: padding "none", or "left" (rows 1 and 2 padded by 5 and 2), or
    "right" (the same, at the end; for from_pretrained loading only: in a causal model padding after
    the real tokens cannot affect them, so it tests nothing of the mask)."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(3, VOCAB, (3, 12), generator=g)
    mask = torch.ones(3, 12, dtype=torch.long)
    for row, n in enumerate([0, 5, 2] if padding != "none" else []):
        if n:
            if padding == "left":
                mask[row, :n] = 0
            else:
                mask[row, -n:] = 0
    tokens = tokens.masked_fill(mask == 0, 0)
    return tokens, mask


def max_diff(ours: torch.Tensor, theirs: torch.Tensor, mask: torch.Tensor) -> float:
    real = mask.bool()
    return (ours[real] - theirs[real]).abs().max().item()


def assert_parity(ours: torch.Tensor, theirs: torch.Tensor, mask: torch.Tensor, family: str) -> None:
    """Bit-identical for the EXACT families, within TOL for the others (real tokens only)."""
    assert ours.shape == theirs.shape
    diff = max_diff(ours, theirs, mask)
    bound = 0.0 if family in EXACT else TOL * max(1.0, theirs[mask.bool()].abs().max().item())
    assert diff <= bound, f"{family}: logits differ from transformers' by {diff:.3g} (bound {bound:g})"


def side_inputs(reference, mask: torch.Tensor) -> dict:
    """transformers' position ids under left padding (counting real tokens only, as generate does);
    ALiBi models take none (their bias sees relative positions only)."""
    if "position_ids" not in inspect.signature(type(reference).forward).parameters:
        return {}
    return {"position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}


def logits_case(family: str, padding: str):
    """(model converted from the transformers model, check(model): its logits equal transformers')."""
    reference = hf_model(family)
    tokens, mask = batch(padding)
    kwargs = side_inputs(reference, mask) if padding == "left" else {}
    given = mask if padding != "none" else None
    with torch.no_grad():
        theirs = reference(tokens, attention_mask=given, **kwargs).logits
    assert theirs[mask.bool()].abs().max() > 0.5, "logits too small for the comparison to mean anything"

    def check(model):
        with torch.no_grad():
            assert_parity(model(tokens, given, **kwargs), theirs, mask, family)
    return hf.from_hf(reference), check


@pytest.mark.parametrize("family", FAMILIES)
def test_unpadded_logits_match_transformers(family):
    """Logits equal transformers' on an unpadded batch."""
    model, check = logits_case(family, "none")
    check(model)


@pytest.mark.parametrize("family", FAMILIES)
def test_left_padded_logits_match_transformers(family):
    """Logits equal transformers' on a left-padded batch with its mask and position ids: the padding
    mask is tested (with left padding the real tokens would see the padding without it)."""
    model, check = logits_case(family, "left")
    check(model)


def test_a_wrongly_mapped_weight_is_detected():
    """The comparison has teeth: a transposed projection or a wrong rotary base shows up."""
    reference = hf_model("llama")
    model = hf.from_hf(reference)
    tokens, mask = batch("none")
    with torch.no_grad():
        qkv = model.get_submodule("layers.0.residual_0.attention").qkv.weight
        qkv.copy_(qkv.flip(0))
        assert max_diff(model(tokens), reference(tokens).logits, mask) > 1e-2
    with pytest.raises(ValueError, match="differ"):  # a spec whose rotary base is not the checkpoint's
        hf.from_hf(reference, spec=hf.spec_yaml_from_config(reference.config).replace("rope_theta: 500000.0",
                                                                                      "rope_theta: 10000.0"))


@pytest.mark.parametrize("family,setting,changed", [
    ("mistral", "local_window: 5", "local_window: 12"),  # the window matters on 12-token sequences
    ("gpt_neox", "rotary_fraction: 0.25", "rotary_fraction: 0.5"),
    ("gemma", "unit_offset: true", "unit_offset: false"),
    ("falcon", "causal: true", "causal: false"),
    ("gpt2", "activation: gelu_tanh", "activation: gelu"),
    ("llama31", "original_max_len: 8", "original_max_len: 64"),
    ("llama31", "high_freq_factor: 4.0", "high_freq_factor: 2.0"),
    ("llama_linear", "factor: 4.0", "factor: 2.0"),
    ("llama_yarn", "factor: 4.0", "factor: 2.0"),
    ("llama_yarn", "original_max_len: 4", "original_max_len: 64"),
    ("qwen3", "qk_norm_eps: $eps", "qk_norm_eps: 0.5"),
    ("olmo2", "qk_norm_eps: $eps", "qk_norm_eps: 0.5"),
    ("qwen3_moe", "normalize: false", "normalize: true"),
    ("qwen2_moe", "normalize: false", "normalize: true"),
    ("gptj", "interleaved: true", "interleaved: false"),
    ("cohere", "scale: 0.5", "scale: 1.0"),
    ("bloom", "positional: alibi", "positional: none"),
    ("mpt", "kind: alibi", "kind: none"),
    ("granite", "residual_scale: 0.3", "residual_scale: 0.5"),
    ("deepseek_v3", "routed_scale: 2.5", "routed_scale: 1.0"),
    ("deepseek_v3", "top_groups: 2", "top_groups: 4"),
    ("deepseek_v3", "interleaved: true", "interleaved: false"),
    ("deepseek_v3_noq", "normalize: false", "normalize: true"),
    ("deepseek_v3_yarn", "factor: 4.0", "factor: 2.0"),
    ("deepseek_v2", "routed_scale: 2.0", "routed_scale: 1.0"),
    ("deepseek_v2_group", "group_score: max", "group_score: top2_sum"),
    ("granite", "scale: 3.0", "scale: 1.0"),
    ("granite", "scale: 0.05", "scale: 0.125"),
    ("granite", "scale: 2.0", "scale: 1.0"),
    ("gemma3", "rope_factor: 8.0", "rope_factor: 2.0"),
    ("gemma3", "local_rope_theta: 10000.0", "local_rope_theta: 1000000.0"),
    ("gemma3", "qk_norm_unit_offset: true", "qk_norm_unit_offset: false"),
    ("gemma2", "softcap: 0.5", "softcap: 5.0"),
    ("gemma2", "softcap: 2.0", "softcap: 20.0"),
    ("gemma2", "pattern: [local, global]", "pattern: [global, local]"),
    ("gpt_neo", "scale: 1.0", "scale: 0.25"),
    ("gpt_neo", "pattern: [global, local]", "pattern: [local, global]"),
    ("glm4", "interleaved: true", "interleaved: false"),
    ("glm4", "rotary_fraction: 0.5", "rotary_fraction: 1.0"),
    ("helium", "interleaved: true", "interleaved: false"),
])
def test_each_family_setting_matters(family, setting, changed):
    reference = hf_model(family)
    text = hf.spec_yaml_from_config(reference.config)
    assert setting in text
    hf.from_hf(reference, spec=text, verify=True)
    with pytest.raises(ValueError, match="differ"):
        hf.from_hf(reference, spec=text.replace(setting, changed))


@pytest.mark.parametrize("family", ["gpt2", "llama", "mixtral", "gpt_neox", "falcon_new_gqa", "gemma", "bloom", "mpt", "granitemoe",
                                    "deepseek_v3"])
def test_from_pretrained_reads_sharded_safetensors(tmp_path, family):
    reference = hf_model(family)
    reference.save_pretrained(tmp_path, max_shard_size="50KB", safe_serialization=True)
    assert (tmp_path / "model.safetensors.index.json").is_file(), "expected a sharded checkpoint"
    assert len(list(tmp_path.glob("*.safetensors"))) > 1
    model = hf.from_pretrained(tmp_path)
    tokens, mask = batch("left")
    kwargs = side_inputs(reference, mask)
    with torch.no_grad():
        assert_parity(model(tokens, mask, **kwargs), reference(tokens, attention_mask=mask, **kwargs).logits, mask, family)


def test_from_pretrained_reads_a_single_file(tmp_path):
    reference = hf_model("mistral")
    reference.save_pretrained(tmp_path)
    model = hf.from_pretrained(tmp_path, dtype=torch.float64)
    assert next(model.parameters()).dtype == torch.float64
    tokens, mask = batch("left")
    kwargs = side_inputs(reference, mask)
    with torch.no_grad():  # float64 against float32: within the reference's own float32 error
        diff = max_diff(model(tokens, mask, **kwargs).float(), reference(tokens, attention_mask=mask, **kwargs).logits, mask)
    assert diff <= TOL


def test_legacy_mixtral_checkpoint_layout_loads():
    """Mixtral checkpoints on disk keep one module per expert (block_sparse_moe.experts.j.w1/w2/w3)."""
    reference = hf_model("mixtral")
    state = {}
    for key, value in reference.state_dict().items():
        if key.endswith("mlp.experts.gate_up_proj"):
            base = key.replace("mlp.experts.gate_up_proj", "block_sparse_moe.experts")
            for j, expert in enumerate(value):
                gate, up = expert.chunk(2)
                state[f"{base}.{j}.w1.weight"], state[f"{base}.{j}.w3.weight"] = gate, up
        elif key.endswith("mlp.experts.down_proj"):
            base = key.replace("mlp.experts.down_proj", "block_sparse_moe.experts")
            for j, expert in enumerate(value):
                state[f"{base}.{j}.w2.weight"] = expert
        else:
            state[key.replace(".mlp.gate.", ".block_sparse_moe.gate.")] = value
    model = hf._build(hf.spec_from_config(reference.config), torch.float32, "cpu")
    src = hf._Source({k: (lambda t=t: t) for k, t in state.items()}, None)
    hf._assign(model, hf._Mapper(hf.features_from_config(reference.config), src, model).run())
    tokens, mask = batch("left")
    kwargs = side_inputs(reference, mask)
    with torch.no_grad():
        assert_parity(model.eval()(tokens, mask, **kwargs), reference(tokens, attention_mask=mask, **kwargs).logits, mask,
                      "mixtral")


def test_router_aux_loss_matches_transformers():
    from archdsl.blocks import router_aux_loss

    reference = hf_model("mixtral")
    model = hf.from_hf(reference)
    tokens, mask = batch("left")
    with torch.no_grad():
        model(tokens, mask)
        out = reference(tokens, attention_mask=mask, output_router_logits=True)
        assert torch.allclose(router_aux_loss(model, mask), out.aux_loss, atol=1e-6)
        model(tokens)
        unmasked = reference(tokens, output_router_logits=True).aux_loss
        assert torch.allclose(router_aux_loss(model), unmasked, atol=1e-6)
        assert torch.allclose(router_aux_loss(model, scaled=True),
                              unmasked * reference.config.router_aux_loss_coef, atol=1e-7)


# ------------------------------------------------------------------------------- generation
GENERATION_FAMILIES = ["gpt2", "llama", "llama31", "llama_yarn", "mistral", "mixtral", "gpt_neox", "falcon", "falcon_new_mqa", "gemma",
                       "qwen3", "qwen3_moe", "qwen2_moe", "gemma2", "olmo2", "gemma3", "phi", "gptj", "cohere", "olmoe", "bloom", "mpt",
                       "granite", "granitemoe", "deepseek_v3", "deepseek_v3_noq", "deepseek_v3_yarn",
                       "deepseek_v2", "deepseek_v2_group", "qwen2_moe_step2", "qwen3_moe_mixed", "glm4", "gpt_neo"]


NEW_TOKENS = 32
# distinct new tokens per row at least: no row repeats one token (Gemma and BLOOM did, with attention zeroed or
# not). Random models fall into cycles of 2 or 3 tokens after a while; the controls (tests/test_controls.py) show
# that zeroing attention, dropping the mask or the positions changes what they generate.
MIN_DISTINCT = 2


@functools.lru_cache(maxsize=None)
def hf_generation_model(name: str):
    """A transformers model whose greedy tokens depend on the context, as a trained model's do.

    The parity weights (hf_model) leave each token's own embedding dominant, and with a tied LM head
    the argmax is then that token again: Gemma and BLOOM repeated the last prompt token 32 times,
    with attention zeroed or not. Here every matrix is N(0, 1/fan_in), so that attention and MLP
    keep the scale of their input; vectors (norms, biases) move by N(0, 0.1); the token embedding is
    small (N(0, 0.01)), and so is the norm BLOOM applies to it.
    """
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers.AutoModelForCausalLM.from_config(_configs()[name]()).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for key, p in model.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]))
            else:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
            if key.endswith("word_embeddings_layernorm.weight"):  # BLOOM normalises its embedding
                p.mul_(0.1)
        model.get_input_embeddings().weight.normal_(0.0, 0.01, generator=g)
        for key, b in model.named_buffers():
            if key.endswith("e_score_correction_bias"):
                b.add_(torch.randn(b.shape, generator=g) * 0.1)
    model.generation_config.eos_token_id = None  # generate all the tokens in both
    model.generation_config.pad_token_id = 0
    return model


def generation_case(family: str):
    """(converted model, check(model): its greedy tokens on a left-padded batch equal transformers')."""
    reference = hf_generation_model(family)
    tokens, mask = batch("left")
    with torch.no_grad():
        theirs = reference.generate(tokens, attention_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=False,
                                    eos_token_id=None, pad_token_id=0)
    distinct = [len(set(row[tokens.shape[1]:].tolist())) for row in theirs]
    assert min(distinct) >= MIN_DISTINCT, f"{family}: rows generate only {distinct} distinct tokens"

    def check(model):
        ours = model.generate(tokens, NEW_TOKENS, attention_mask=mask)
        assert ours.shape == theirs.shape == (3, tokens.shape[1] + NEW_TOKENS)
        assert torch.equal(ours, theirs)
    return hf.from_hf(reference), check


@pytest.mark.parametrize("family", GENERATION_FAMILIES)
def test_greedy_generation_matches_transformers(family):
    """Greedy tokens equal transformers' generate on a left-padded batch, every row generating at
    least MIN_DISTINCT distinct tokens."""
    model, check = generation_case(family)
    check(model)


def half_precision_case():
    """(llama converted in bfloat16, check(model): its logits at positions 3000.. equal transformers'
    bit for bit). Weights as hf_generation_model's (every matrix N(0, 1/fan_in)), so that attention,
    where the rotary angles act, weighs in the logits."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = transformers.AutoModelForCausalLM.from_config(_configs()["llama"](), dtype=torch.bfloat16).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in reference.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]))
            else:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    tokens = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(0))
    positions = torch.arange(3000, 3012).expand(2, 12)
    with torch.no_grad():
        theirs = reference(tokens, position_ids=positions).logits

    def check(model):
        assert next(model.parameters()).dtype == torch.bfloat16
        with torch.no_grad():
            ours = model(tokens, position_ids=positions)
        # bit-identical, as the float32 model is; one bf16 step at these logits (|x| < 4) is 0.016 and
        # frequencies rounded to bf16 move them by 0.049, so no bound above 0 would have a wide margin
        assert torch.equal(ours, theirs), (ours.float() - theirs.float()).abs().max().item()
    return hf.from_hf(reference), check


def test_half_precision_keeps_rotary_frequencies_in_float32():
    """Loaded in bfloat16, parameters are bf16 but rotary frequencies stay float32 (as transformers
    keeps them): the logits at positions 3000.. equal transformers' bit for bit."""
    from archdsl.blocks.embedding import Rotary

    model, check = half_precision_case()
    assert all(m.inv_freq.dtype == torch.float32 for m in model.modules() if isinstance(m, Rotary))
    check(model)


# ------------------------------------------------------------------------------- negative controls
LOGITS_EXEMPT = {"deepseek_v3_yarn": {"round_buffers_bf16": "its rotary frequencies are 1 (exact in bf16) and 0.0025 (off by "
                                                           "2.4e-6 in bf16): angles move by < 3e-5 at 12 positions, below "
                                                           "float32 parity; deepseek_v3's 0.01 is caught"}}
GENERATION_EXEMPT = {"round_buffers_bf16": "rounded frequencies move logits by ~1e-3 at these short positions, "
                                           "less than greedy margins; the logits tests catch them"}


def control_cases():
    """Every check above, for tests/controls.py (the breakages each must notice)."""
    for family in FAMILIES:
        tolerance = "bit-identical" if family in EXACT else f"<= {TOL:g} x max(1, max |logit|)"
        exempt = LOGITS_EXEMPT.get(family, {})
        yield Case(test_unpadded_logits_match_transformers, family,
                   functools.partial(logits_case, family, "none"), tolerance, exempt)
        yield Case(test_left_padded_logits_match_transformers, family,
                   functools.partial(logits_case, family, "left"), tolerance, exempt)
    for family in GENERATION_FAMILIES:
        yield Case(test_greedy_generation_matches_transformers, family, functools.partial(generation_case, family),
                   "equal tokens", GENERATION_EXEMPT)
    yield Case(test_half_precision_keeps_rotary_frequencies_in_float32, "llama-bf16", half_precision_case,
               "bit-identical (bf16)")
