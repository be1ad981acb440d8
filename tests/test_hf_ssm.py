"""Hugging Face import of the state-space families (archdsl/interop/hf_ssm.py, reached through interop.hf):
tiny random-weight transformers models of Mamba, FalconMamba, Mamba-2, Jamba and Bamba give the same
logits (padded batches too), the same greedy generation as hf_model.generate, load from a saved
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
    if family == "falcon_h1":  # every μP multiplier away from 1, so that each one's place is tested
        return T.FalconH1ForCausalLM(T.FalconH1Config(
            vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, mamba_d_ssm=32, mamba_n_heads=4, mamba_d_head=8, mamba_n_groups=2,
            mamba_d_state=8, mamba_chunk_size=4, mamba_rms_norm=True, mamba_norm_before_gate=True,
            lm_head_multiplier=0.5, embedding_multiplier=2.0, mlp_multipliers=[1.5, 0.5], key_multiplier=0.8,
            attention_in_multiplier=1.2, attention_out_multiplier=0.7, ssm_in_multiplier=1.1, ssm_out_multiplier=0.6,
            ssm_multipliers=[0.9, 1.1, 0.8, 1.2, 1.3], tie_word_embeddings=False))
    raise AssertionError(family)


FAMILIES = ["mamba", "falcon_mamba", "mamba2", "jamba", "bamba", "falcon_h1"]


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
    prompt = torch.randint(0, VOCAB, (2, 7), generator=torch.Generator().manual_seed(3))
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
    """Falcon-H1's spec writes its μP multipliers as fields (branch scales, attention scale, MLP residual scale,
    embedding and logits scales, the mixer's in_scale and projection_scales); resetting any one of them in the
    transformers model changes its logits, so the parity test above sees every one."""
    text = hf.spec_yaml_from_config(tiny("falcon_h1").config)
    for field in ("scales: [0.6, 0.84", "scale: 0.5", "in_scale: 1.1", "projection_scales: [0.9, 1.1, 0.8, 1.2, 1.3]",
                  "gate_norm: before_gate", "embedding: {name: embed_tokens, vocab: $vocab, scale: 2.0}",
                  "lm_head: {vocab: $vocab, scale: 0.5}", "gate multiplier (1.5) is folded"):
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


@pytest.mark.parametrize("family, key", [("zamba2", "hybrid_layer_ids"),
                                         ("nemotron_h", "mlp_hidden_act"),
                                         ("granitemoehybrid", "residual_multiplier")])
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
