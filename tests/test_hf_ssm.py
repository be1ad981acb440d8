"""Hugging Face import of the state-space families (archdsl/interop/hf_ssm.py, reached through interop.hf):
tiny random-weight transformers models of Mamba, FalconMamba, Mamba-2, Jamba, Bamba, Nemotron-H, Granite 4.0 and
Falcon-H1 give the same logits (padded batches too), the same greedy generation as hf_model.generate, load from a saved
checkpoint, and full-size configs convert at transformers' parameter counts; the families archdsl
cannot write yet are refused with the missing feature named."""
from __future__ import annotations

import copy
import functools

import pytest
import torch

import archdsl
from conftest import need
from archdsl.errors import SpecError
from archdsl.interop import hf

from test_kinds import assert_cached_decoding_equals_full_forward

transformers = need("transformers")
VOCAB = 97


def tiny(family: str):
    T = transformers
    if family == "mamba":
        return T.MambaForCausalLM(T.MambaConfig(vocab_size=VOCAB, hidden_size=32, state_size=8, num_hidden_layers=2,
                                                conv_kernel=4, time_step_rank=6, use_bias=True))
    if family == "falcon_mamba":
        return T.FalconMambaForCausalLM(T.FalconMambaConfig(vocab_size=VOCAB, hidden_size=32, state_size=8,
                                                            num_hidden_layers=2, mixer_rms_eps=1e-6))
    if family == "mamba2":
        return T.Mamba2ForCausalLM(T.Mamba2Config(vocab_size=VOCAB, hidden_size=32, state_size=8, num_hidden_layers=2,
                                                  num_heads=8, head_dim=8, n_groups=2, chunk_size=4,
                                                  time_step_limit=(0.0, 4.0)))
    if family == "jamba":
        return T.JambaForCausalLM(T.JambaConfig(
            vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, expert_layer_period=2,
            expert_layer_offset=1, attn_layer_period=4, attn_layer_offset=2, mamba_d_state=8, mamba_dt_rank=4))
    if family == "bamba":
        return T.BambaForCausalLM(T.BambaConfig(
            vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, attn_layer_indices=[2], mamba_n_heads=4, mamba_d_head=16, mamba_d_state=8,
            mamba_chunk_size=4))
    if family in ("nemotron_h", "nemotron_h_moe"):  # Mamba-2 'M', attention '*', squared-ReLU MLP '-', MoE 'E'
        moe = family == "nemotron_h_moe"
        model = T.NemotronHForCausalLM(T.NemotronHConfig(
            vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2,
            head_dim=8, hybrid_override_pattern="ME*-E" if moe else "M*-M-", mamba_num_heads=4, mamba_head_dim=16,
            ssm_state_size=8, n_groups=2, chunk_size=4, time_step_min=0.01, n_routed_experts=4, num_experts_per_tok=2,
            moe_intermediate_size=16, moe_shared_expert_intermediate_size=24, n_group=2, topk_group=1,
            routed_scaling_factor=2.5, mlp_bias=not moe))
        with torch.no_grad():  # the experts' choice bias is a buffer: not perturbed with the parameters
            for name, buffer in model.named_buffers():
                if name.endswith("e_score_correction_bias"):
                    buffer.copy_(torch.randn(buffer.shape, generator=torch.Generator().manual_seed(5)) * 0.1)
        return model
    if family in ("granitemoehybrid", "granitemoehybrid_dense"):  # Granite 4.0-H (MoE + shared MLP, no positions)
        dense = family.endswith("dense")  # and a dense one: the shared MLP alone, rotary attention
        return T.GraniteMoeHybridForCausalLM(T.GraniteMoeHybridConfig(
            vocab_size=VOCAB, hidden_size=32, intermediate_size=16, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, num_local_experts=0 if dense else 4, num_experts_per_tok=2,
            shared_intermediate_size=24, embedding_multiplier=4.0, residual_multiplier=0.5, attention_multiplier=0.1,
            logits_scaling=2.0, layer_types=["linear_attention", "full_attention", "linear_attention", "linear_attention"],
            mamba_n_heads=4, mamba_d_head=16, mamba_d_state=8, mamba_chunk_size=4,
            position_embedding_type="rope" if dense else None))
    if family == "falcon_h1":  # attention and Mamba-2 side by side, every multiplier away from 1, biases everywhere
        return T.FalconH1ForCausalLM(T.FalconH1Config(
            vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, mamba_d_ssm=64, mamba_n_heads=4, mamba_d_head=16, mamba_d_state=8,
            mamba_chunk_size=4, mamba_n_groups=2, mamba_rms_norm=True, mamba_norm_before_gate=True,
            embedding_multiplier=2.0, lm_head_multiplier=0.5, mlp_multipliers=[1.3, 0.7], key_multiplier=0.8,
            attention_in_multiplier=1.2, attention_out_multiplier=0.9, ssm_multipliers=[1.1, 0.9, 1.2, 0.8, 1.05],
            ssm_in_multiplier=0.95, ssm_out_multiplier=1.1, mlp_bias=True, attention_bias=True, projectors_bias=True))
    raise AssertionError(family)


FAMILIES = ["mamba", "falcon_mamba", "mamba2", "jamba", "bamba", "nemotron_h", "nemotron_h_moe", "granitemoehybrid",
            "granitemoehybrid_dense", "falcon_h1"]


@pytest.fixture(scope="module", params=FAMILIES)
def pair(request):
    return imported(request.param)


@functools.cache
def imported(family: str):
    """(family, transformers model with perturbed weights, the archdsl model imported from it)."""
    torch.manual_seed(0)
    reference = tiny(family).eval()
    with torch.no_grad():  # weights far from the initialisation, so that generation is not one repeated token
        g = torch.Generator().manual_seed(1)
        for p in reference.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.15)
    return family, reference, hf.from_hf(reference)


def test_logits_match_with_and_without_padding(pair):
    """Logits equal transformers', unpadded and on a batch padded on the left and the right."""
    family, reference, model = pair
    tokens = torch.randint(0, VOCAB, (3, 13), generator=torch.Generator().manual_seed(2))
    mask = torch.ones(3, 13, dtype=torch.long)
    mask[1, :4] = 0  # left padding
    mask[2, 10:] = 0  # right padding
    with torch.no_grad():
        for attention_mask in (None, mask):
            ours = model(tokens, attention_mask)
            theirs = reference(tokens, attention_mask=attention_mask).logits
            real = slice(None) if attention_mask is None else attention_mask.bool()
            # chunked scans against transformers' differ by up to 1.7e-6 of the largest logit (Jamba);
            # bf16-rounded rotary frequencies move Bamba's by 6e-6 of it
            assert (ours - theirs)[real].abs().max() <= 4e-6 * max(1.0, theirs[real].abs().max()), family
    assert theirs.abs().max() > 0.5


def test_greedy_generation_equals_transformers_generate(pair):
    """Greedy tokens of a left-padded batch equal transformers' generate; cached decoding the full forward."""
    family, reference, model = pair
    # with prompt seed 3, Granite 4.0-H's greedy tokens did not change when its attention or its mixers ignored
    # the padding (their logits test catches both; the greedy case must too): seed 4 for it
    seed = {"granitemoehybrid": 4}.get(family, 3)
    prompt = torch.randint(0, VOCAB, (2, 7), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, :4] = 0  # a left-padded batch (with 2 pads, a Mamba ignoring the mask generated the same tokens)
    eos = reference.generation_config.eos_token_id  # rows that reach it stop and are padded, on both sides
    ours = model.generate(prompt, 32, attention_mask=mask, eos_token_id=eos, pad_token_id=0)
    theirs = reference.generate(prompt, attention_mask=mask, max_new_tokens=32, do_sample=False, pad_token_id=0)
    assert torch.equal(ours, theirs), family
    assert len(set(ours[0, 7:].tolist())) > 1
    assert_cached_decoding_equals_full_forward(model)


def test_a_saved_checkpoint_loads(pair, tmp_path):
    family, reference, model = pair
    reference.save_pretrained(tmp_path)
    loaded = hf.from_pretrained(tmp_path)
    tokens = torch.randint(0, VOCAB, (1, 9), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(loaded(tokens), model(tokens)), family


def test_spec_from_config_names_the_hybrid_pattern():
    text = hf.spec_yaml_from_config(tiny("jamba").config)
    assert "pattern: [mamba_dense_layer, mamba_moe_layer, attention_dense_layer, mamba_moe_layer]" in text
    assert "dt_bc_norm: rmsnorm" in text and "normalize: false" in text
    assert "positional" not in text  # Jamba's attention has no positions
    text = hf.spec_yaml_from_config(tiny("mamba2").config)
    assert "dt_ceiling: 4.0" in text and "groups: 2" in text


@pytest.mark.parametrize("family, config, count", [
    ("mamba2-2.7b", dict(model_type="mamba2", hidden_size=2560, num_hidden_layers=64, vocab_size=50288,
                         state_size=128, head_dim=64, num_heads=80, n_groups=1, tie_word_embeddings=True),
     2_702_599_680),
    ("jamba-v0.1", dict(model_type="jamba"), 51_570_323_328),
    ("bamba-9b", dict(model_type="bamba", vocab_size=128256, attn_layer_indices=[9, 18, 27], mamba_d_state=128,
                      mamba_n_heads=128, mamba_d_head=64), 9_780_235_392),
])
def test_full_size_configs_convert_at_transformers_counts(family, config, count, root):
    spec = hf.spec_from_config(config)
    assert archdsl.summary(spec).total_params == count == archdsl.summary(root / "specs" / f"{family}.yaml").total_params


def test_falcon_h1_multipliers_each_matter_and_are_fields():
    """Falcon-H1's spec writes its μP multipliers as fields (branch scales, the attention's in_scale and score
    scale, the MLP's gate_scale and residual scale, embedding and logits scales, the mixer's in_scale and
    projection_scales); resetting any one of them in the transformers model changes its logits, so the parity
    test above sees every one."""
    text = hf.spec_yaml_from_config(tiny("falcon_h1").config)
    for field in ("scales: [1.1, 0.9]", "in_scale: 1.2", "in_scale: 0.95", "projection_scales: [1.1, 0.9, 1.2, 0.8, 1.05]",
                  "gate_norm: before_gate", "gate_scale: 1.3", "ff_scale: 0.7", "embedding: {name: embed, vocab: $vocab, "
                  "scale: 2.0}", "lm_head: {vocab: $vocab, scale: 0.5}"):
        assert field in text, field
    _, reference, model = imported("falcon_h1")
    tokens = torch.randint(0, VOCAB, (1, 9), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        base = reference(tokens).logits
        for name in ("key_multiplier", "attention_in_multiplier", "ssm_out_multiplier", "attn_out_multiplier",
                     "ssm_in_multiplier", "lm_head_multiplier", "embedding_multiplier"):
            changed = copy.deepcopy(reference)
            touched = [setattr(m, name, 1.0) for m in changed.modules() if hasattr(m, name)]
            assert touched and not torch.allclose(changed(tokens).logits, base), name


def test_falcon_h1_full_size_config_converts_at_transformers_count(root):
    """specs/falcon-h1-tiny-90m.yaml's sizes through the importer: the same 91,131,072 parameters."""
    config = dict(model_type="falcon_h1", vocab_size=32768, hidden_size=512, intermediate_size=768,
                  num_hidden_layers=24, num_attention_heads=8, num_key_value_heads=2, head_dim=64,
                  tie_word_embeddings=True, mamba_d_ssm=768, mamba_n_heads=24, mamba_d_head=32, mamba_d_state=64,
                  mamba_n_groups=1, mamba_rms_norm=False)
    spec = hf.spec_from_config(config)
    assert archdsl.summary(spec).total_params == 91_131_072 == \
        archdsl.summary(root / "specs" / "falcon-h1-tiny-90m.yaml").total_params


# Granite 4.0-H-Tiny's sizes (specs/granite-4.0-h-tiny.yaml says where they come from); legacy layer names
GRANITE_4_H_TINY = dict(
    vocab_size=100352, hidden_size=1536, num_hidden_layers=40, num_attention_heads=12, num_key_value_heads=4,
    intermediate_size=512, num_local_experts=64, num_experts_per_tok=6, shared_intermediate_size=1024,
    mamba_n_heads=48, mamba_d_head=64, mamba_d_state=128, mamba_n_groups=1, embedding_multiplier=12.0,
    residual_multiplier=0.22, attention_multiplier=0.0078125, logits_scaling=6.0, rms_norm_eps=1e-5,
    tie_word_embeddings=True, position_embedding_type="nope",
    layer_types=["attention" if i in (5, 15, 25, 35) else "mamba" for i in range(40)])


def test_granite_4_h_tiny_spec_has_transformers_count_on_meta(root):
    config = transformers.GraniteMoeHybridConfig(**GRANITE_4_H_TINY)
    with torch.device("meta"):
        count = sum(p.numel() for p in transformers.GraniteMoeHybridForCausalLM(config).parameters())
    assert count == 6_939_037_248
    assert archdsl.summary(root / "specs" / "granite-4.0-h-tiny.yaml").total_params == count
    assert archdsl.compile(root / "specs" / "granite-4.0-h-tiny.yaml", device="meta").num_parameters() == count
    assert archdsl.summary(hf.spec_from_config(config)).total_params == count  # verified on meta too


@pytest.mark.parametrize("family, key", [("zamba2", "hybrid_layer_ids")])
def test_families_not_written_yet_are_refused_by_feature(family, key):
    with pytest.raises(SpecError, match=rf"{key}: unsupported feature: .*not"):
        hf.spec_from_config({"model_type": family})


def test_a_mixer_activation_archdsl_lacks_is_named():
    with pytest.raises(SpecError, match="hidden_act: unsupported feature: activation 'gelu' in the Mamba mixer"):
        hf.spec_from_config({"model_type": "mamba", "hidden_act": "gelu"})


def control_cases():
    """The parity and generation tests above for tests/controls.py: each test body runs with a broken
    copy of the imported model in its place (docs/testing.md)."""
    from controls import MUST_CATCH, pair_cases

    logits, greedy = test_logits_match_with_and_without_padding, test_greedy_generation_equals_transformers_generate
    yield from pair_cases({logits: "<= 4e-6 x max(1, max |logit|)", greedy: "equal tokens"}, FAMILIES, imported,
                          covered_by={greedy: logits}, must_catch=MUST_CATCH)
