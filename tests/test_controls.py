"""The negative controls (tests/controls.py): they catch a check known to be blind, every breakage
changes a model it applies to, and a representative subset of the parity and generation checks
notices every breakage (the whole matrix: python tests/controls.py, which writes docs/testing.md)."""
from __future__ import annotations

import functools
import re

import pytest
import torch

import archdsl
import controls
from conftest import ROOT
from controls import BREAKAGES, BY_NAME, assert_catches, context_weights, run_controls


def tiny(positional: str = "rotary", **attention) -> archdsl.ArchModel:
    """A two-layer pre-norm decoder with biases, every parameter random."""
    spec = {"name": "t", "model": {"width": 32, "layers": [
        {"embedding": {"vocab": 50}}, {"positional": {"kind": positional, "max_len": 32} if positional == "learned"
                                       else {"kind": positional}},
        {"repeat": 2, "body": [{"residual": [{"layernorm": {}},
                                             {"attention": {"heads": 4, "causal": True, "bias": True, **attention}}]},
                               {"residual": [{"layernorm": {}}, {"mlp": {"hidden": 64, "bias": True}}]}]},
        {"layernorm": {}}, {"lm_head": 50}]}}
    return context_weights(archdsl.compile(spec, seed=0).eval())


def logits_check(model, padding: str):
    """check(m): m's logits equal the unbroken model's on a batch padded on the left, the right, or not."""
    tokens = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(tokens)
    if padding == "left":
        mask[1, :4] = 0
    elif padding == "right":
        mask[1, 5:] = 0
    given = None if padding == "none" else mask
    with torch.no_grad():
        expected = model(tokens, given)

    def check(m):
        with torch.no_grad():
            assert torch.equal(m(tokens, given)[mask.bool()], expected[mask.bool()])
    return check


def status(outcomes) -> dict[str, str]:
    return {o.breakage: o.status for o in outcomes}


# ------------------------------------------------------------------------------------ the helper itself
def test_a_check_known_to_be_blind_is_caught():
    """Right padding cannot reach the real tokens of a causal model: the mask test it was is blind to a
    dropped mask, and the controls say so; the same check with left padding sees it."""
    model = tiny()
    with pytest.raises(AssertionError, match=r"drop_attention_mask: survived"):
        assert_catches(model, logits_check(model, "right"))
    assert status(assert_catches(model, logits_check(model, "left")))["drop_attention_mask"] == "caught"


def test_a_check_on_initial_weights_is_caught():
    """compile()'s weights have zero biases and unit norms: swapping two of them changes nothing, and
    a check on those weights is reported blind to it."""
    model = archdsl.compile(tiny().spec, seed=0).eval()
    outcomes = status(run_controls(model, logits_check(model, "left")))
    assert outcomes["swap_biases"] == outcomes["swap_norms"] == "survived"
    assert outcomes["zero_attention"] == "caught"


def test_a_check_that_compares_nothing_survives_every_breakage():
    model = tiny()

    def shape_only(m):
        with torch.no_grad():
            assert m(torch.zeros(1, 4, dtype=torch.long)).shape == (1, 4, 50)
    outcomes = status(run_controls(model, shape_only))
    assert set(outcomes.values()) == {"survived", "not applicable", "not reached"}, outcomes


def test_the_unbroken_model_must_pass_and_exemptions_are_named():
    model = tiny()
    with pytest.raises(AssertionError):
        run_controls(model, lambda m: (_ for _ in ()).throw(AssertionError("fails unbroken")))
    with pytest.raises(AssertionError, match="unknown breakages"):
        run_controls(model, logits_check(model, "left"), exempt={"no_such_breakage": "x"})
    outcomes = run_controls(model, logits_check(model, "none"), exempt={"swap_norms": "not claimed here"})
    assert status(outcomes)["swap_norms"] == "exempt"
    assert status(outcomes)["drop_attention_mask"] == "not reached"  # no padding given
    assert status(outcomes)["zero_cross_attention"] == "not applicable"


def test_the_broken_copy_leaves_the_model_alone():
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run_controls(model, logits_check(model, "left"))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


# ------------------------------------------------------------------------------------ each breakage acts
ENCDEC = dict(vocab=50, d_model=32, heads=4, layers=2, ffn=64, context=32)


def encoder_decoder_check(model):
    src = torch.randint(3, 50, (2, 7), generator=torch.Generator().manual_seed(0))
    tgt = torch.randint(3, 50, (2, 5), generator=torch.Generator().manual_seed(1))
    src_mask = torch.ones_like(src)
    src_mask[1, 4:] = 0
    tgt_mask = torch.ones_like(tgt)
    tgt_mask[1, :2] = 0
    with torch.no_grad():
        expected = model(src, src_mask, decoder_tokens=tgt, decoder_attention_mask=tgt_mask)

    def check(m):
        with torch.no_grad():
            got = m(src, src_mask, decoder_tokens=tgt, decoder_attention_mask=tgt_mask)
        assert torch.equal(got[tgt_mask.bool()], expected[tgt_mask.bool()])
    return check


@functools.cache
def probe_models() -> list:
    """(model, check) pairs that between them have every kind of node a breakage acts on."""
    models = [tiny("rotary"), tiny("learned"), tiny("sinusoidal"), tiny("alibi", window=3)]
    bart = context_weights(archdsl.compile(ROOT / "specs" / "bart-base.yaml", overrides=ENCDEC, seed=0).eval())
    t5 = context_weights(archdsl.compile(ROOT / "specs" / "t5-small.yaml", overrides=dict(
        vocab=50, d_model=32, heads=4, head_dim=8, layers=2, ffn=64, buckets=8, max_distance=20), seed=0).eval())
    from test_generate import library_model  # Mamba-2 and attention layers, shrunk

    models.append(library_model(ROOT / "specs" / "llama-mamba2-hybrid.yaml"))
    return [(m, logits_check(m, "left")) for m in models] + [(m, encoder_decoder_check(m)) for m in (bart, t5)]


@pytest.mark.parametrize("breakage", [b.name for b in BREAKAGES])
def test_every_breakage_changes_a_model_it_applies_to(breakage):
    """So that a refactor of archdsl's internals cannot turn a breakage into a silent no-op (which
    would make every control pass): each one changes the logits of a model it applies to."""
    applied = []
    for model, check in probe_models():
        outcome = status(run_controls(model, check, breakages=[BY_NAME[breakage]]))[breakage]
        assert outcome in ("caught", "not applicable"), (breakage, outcome)
        applied.append(outcome == "caught")
    assert any(applied), f"{breakage} applies to none of the models"
    if breakage == "drop_positional":
        assert all(applied), "learned, sinusoidal, rotary, ALiBi and relative positions are all dropped"


# ------------------------------------------------------------------------------------ the subset
SUBSET = {  # families whose checks were blind before (issue 16), and one case of each other check
    "test_hf_parity.py::test_left_padded_logits_match_transformers": ["llama", "bloom", "gemma2", "deepseek_v3", "phi"],
    "test_hf_parity.py::test_unpadded_logits_match_transformers": ["gpt_neox"],
    "test_hf_parity.py::test_greedy_generation_matches_transformers": ["gemma", "bloom"],
    "test_hf_parity.py::test_half_precision_keeps_rotary_frequencies_in_float32": ["llama-bf16"],
    "test_families.py::test_tiny_spec_file_computes_the_transformers_logits": ["mistral-7b"],
    "test_encoder_decoder.py::test_logits_match_transformers_with_padding_on_both_sides": ["t5"],
    "test_encoder_decoder.py::test_greedy_generation_matches_transformers": ["bart"],
    "test_bert_parity.py::test_bert_base_matches_transformers_bertmodel": ["bert-base"],
    "test_vision.py::test_parity_with_vit_model_hidden_states_and_pooler": ["ViTModel"],
    "test_numerics.py::test_gpt2_shaped_model_matches_a_handwritten_reference": ["gpt2"],
    "test_generate.py::test_greedy_generate_matches_naive_loop": ["spec:gemma-2b", "spec:bloom-560m",
                                                                 "grid:sinusoidal-kv2-w3-post"],
    "test_generate.py::test_greedy_generate_left_padded": ["spec:gpt2", "spec:jamba-v0.1", "spec:qwen3-next-80b-a3b",
                                                          "spec:bloom-560m"],
    "test_generate.py::test_incremental_matches_full_forward_left_padded": ["grid:alibi-kv1-w3-pre",
                                                                           "spec:llama-mamba2-hybrid"],
    "test_generate.py::test_left_padding_does_not_change_real_logits": ["spec:mistral-7b"],
    "test_hf_ssm.py::test_logits_match_with_and_without_padding": ["bamba"],
    "test_hf_ssm.py::test_greedy_generation_equals_transformers_generate": ["mamba2"],
    "test_hf_linear.py::test_padded_batches": ["qwen3_next"],
    "test_hf_linear.py::test_greedy_generation_equals_transformers": ["qwen3_next"],
    "test_ssm.py::test_each_mixer_equals_the_transformers_mixer": ["mamba2"],
    "test_linear_mixers.py::test_lightning_attention_equals_minimax": ["layer0"],
}
CASES = controls.all_cases()
SUBSET_CASES = [c for c in CASES if c.id in SUBSET.get(c.name.rsplit("[", 1)[0], [])]


def test_the_subset_names_existing_cases():
    assert len(SUBSET_CASES) == sum(map(len, SUBSET.values()))


@pytest.mark.parametrize("case", SUBSET_CASES, ids=[c.name for c in SUBSET_CASES])
def test_the_check_notices_every_breakage(case):
    outcomes = case.run()
    survived = [f"{o.breakage} ({o.detail})" for o in outcomes if o.status == "survived"]
    assert not survived, f"{case.name} does not notice: {', '.join(survived)}"


# ------------------------------------------------------------------------------------ docs/testing.md
def test_testing_doc_is_current():
    """docs/testing.md (python tests/controls.py --write) names every breakage, has the current table of
    tests (what each proves, its number of cases and tolerances) and case count, and says none survived."""
    text = (ROOT / controls.DOC).read_text(encoding="utf-8")
    assert re.search(r"^\*\*This run: (\d+) cases × 11 breakages: .* 0 survived\.\*\*$", text, re.M)
    assert f"This run: {len(CASES)} cases × {len(BREAKAGES)} breakages" in text, "run: python tests/controls.py --write"
    assert set(re.findall(r"^\| \w+ \| `(\w+)` \| [^|]+ \|$", text, re.M)) == {b.name for b in BREAKAGES}
    assert "\n".join(controls.tests_table(CASES)) in text, "run: python tests/controls.py --write"
    assert len(text.splitlines()) < 150, "docs/testing.md is meant to be short"
