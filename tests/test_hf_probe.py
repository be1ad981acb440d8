"""The importer reads what a family's config does not state from its model's module tree (hf_probe).

Families outside FAMILY_TRAITS used to be read with Llama's defaults, so OLMo 3's qk-norm over all
heads, Seed-OSS's biases on q/k/v only and FlexOlmo's norm placement made them refused. Here the
traits read from layer 0 of the transformers model on meta, and the families they unlock are checked
against transformers itself: logits of a left-padded batch of a random-weight tiny model
(benchmarks/hf_coverage.run_one, every parameter perturbed) and the class-default config on meta.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest

from conftest import need

T = need("transformers")
import torch  # noqa: E402

from archdsl.errors import SpecError  # noqa: E402
from archdsl.interop import hf  # noqa: E402
from archdsl.interop.hf_probe import traits_from_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import hf_coverage  # noqa: E402


def _meta(model_type: str):
    cfg = hf_coverage.shrink(T.CONFIG_MAPPING[model_type])
    with torch.device("meta"):
        return cfg, T.AutoModelForCausalLM.from_config(cfg)


def assert_greedy_equals_transformers(cfg, *, low: int, pads: int, pad_token_id: int) -> None:
    """12 greedy tokens of a 2-row batch (tokens from `low`, row 1 left-padded by `pads`) of the archdsl model
    imported from a random-weight transformers model of `cfg` equal transformers' generate."""
    reference = hf_coverage.random_model(cfg)
    model = hf.from_hf(reference)
    prompt = torch.randint(low, cfg.vocab_size, (2, 6), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(prompt)
    mask[1, :pads] = 0
    ours = model.generate(prompt, 12, attention_mask=mask, pad_token_id=pad_token_id)
    theirs = reference.generate(prompt, attention_mask=mask, max_new_tokens=12, min_new_tokens=12, do_sample=False,
                                pad_token_id=pad_token_id)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("model_type, expected", [
    ("llama", dict(qkv_bias=False, out_bias=False, mlp_bias=False, gated=True, norms="pre")),
    ("olmo3", dict(qkv_bias=False, out_bias=False, qk_norm="width", norms="post")),  # q_norm over all heads
    ("exaone4", dict(qk_norm="head", norms="post")),  # q_norm over one head's dims
    ("seed_oss", dict(qkv_bias=True, out_bias=False, norms="pre")),
    ("gemma2", dict(norms="sandwich")),
    ("glm4_moe", dict(router="sigmoid_groups", router_fp32=True)),  # layer 0 is dense: the first MoE layer is read
    ("glm4_moe_lite", dict(latent=True, router="sigmoid_groups")),  # DeepSeek's latent attention, another name
    ("gpt_neox", dict(qkv_layout="per_head", norms="pre")),  # under its base_model_prefix; qkv rows per head
])
def test_traits_are_read_from_the_first_layer(model_type, expected):
    cfg, model = _meta(model_type)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    traits = traits_from_model(model, head_dim)
    assert {k: traits.get(k) for k in expected} == expected, traits
    if not expected:
        assert "qk_norm" not in traits and "norms" not in traits


@pytest.mark.parametrize("model_type", ["olmo3", "seed_oss", "flex_olmo", "mellum", "glm4_moe", "glm4_moe_lite",
                                        "solar_open", "sarvam_moe", "sarvam_mla", "minicpm3", "youtu", "arcee",
                                        "jais2", "olmo", "nemotron", "hunyuan_v1_dense"])
def test_probed_families_import_exactly(model_type):
    """Each was refused before the probe; now its logits equal transformers' (and its class-default config
    verifies on meta, except GLM-4.5's, whose 42-dim default heads rotate an odd 21 dims, refused by name).
    Mellum also needed rotary settings given per layer type to become the model's settings when only one
    type of layer is present (no positions at all were written before); GLM-4.5's DeepSeek-V3 router its
    shared experts and mlp_layer_types; MiniCPM3 its scale_emb / scale_depth and rotation of halves; Arcee and
    Jais 2 the squared-ReLU (relu2) activation of an ungated MLP; OLMo 1 LayerNorms without parameters; Nemotron
    LayerNorm1P (1 + w; converted without it, its logits differed by 1.7); HunYuan qk-norm after the rotation
    (attention: {qk_norm_after_rotary: true})."""
    result = hf_coverage.run_one(model_type)
    # class defaults that are other models: GLM-4.5's rotates an odd 21 of 42 head dims; Nemotron's has no
    # num_key_value_heads, so transformers cannot build it and no tree is there to read
    full = {"glm4_moe": "refused: partial_rotary_factor", "nemotron": "refused: hidden_act",  # HunYuan's: head_dim None
            "hunyuan_v1_dense": "unverified: "}.get(model_type, "verified")
    assert result.status == "exact" and result.full_size.startswith(full), result
    if model_type == "mellum":
        assert "- positional: {kind: rotary, base: $rope_theta" in hf.spec_yaml_from_config(
            hf_coverage.shrink(T.CONFIG_MAPPING[model_type]), verify=False)


@pytest.mark.parametrize("model_type", ["smollm3", "exaone4", "cohere2", "flint", "exaone_moe"])
def test_families_with_layers_without_positions_import_exactly(model_type):
    """NoPE layers (attention: {nope: true}) among rotary ones: SmolLM3's no_rope_layers, Cohere2's full-attention
    layers always; EXAONE 4's and Flint's full-attention layers, which their configs do not mark, found by running
    each layer's attention with two spacings of positions (EXAONE 4's tree is OLMo 3's: converted without knowing
    it, its logits differed by 0.13; Flint's by 0.5); EXAONE-MoE's, with a dense first layer before the experts'
    (the per-layer pattern of attention kinds and of feed-forward kinds combined). Logits of a padded batch, and
    greedy generation with the cache."""
    result = hf_coverage.run_one(model_type)
    assert result.status == "exact", result
    cfg = hf_coverage.shrink(T.CONFIG_MAPPING[model_type])
    assert "nope: true" in hf.spec_yaml_from_config(cfg, verify=False)
    assert_greedy_equals_transformers(cfg, low=0, pads=2, pad_token_id=0)


@pytest.mark.parametrize("model_type", ["gpt_oss", "minimax_m3_vl_text", "minimax_m2", "hy_v3", "hunyuan_v1_moe",
                                        "phimoe", "persimmon", "ernie4_5_moe", "aria_text", "cohere2_moe",
                                        "hyperclovax", "afmoe", "modernbert-decoder"])
def test_families_read_from_behaviour_import_exactly(model_type):
    """Each was refused until the probe ran parts of the model rather than reading config keys: GPT-OSS's experts
    gate (their _apply_gate on probe values: clamped SwiGLU, gate and up rows interleaved; stored (experts, in,
    out)), router bias and attention sinks; MiniMax-M3's (1 + w) RMSNorms (a copy of its norm run with a known
    weight), the same clamped SwiGLU with halves concatenated, and a rotary table over whole heads although its
    config carries rotary_dim: 8 (the model's inv_freq decides); MiniMax-M2's and HY-V3's sigmoid router whose
    config has no n_group / norm_topk_prob (its choice bias sits on the MoE block, not the gate); HunYuan-MoE's
    ungated shared_mlp (sized from the tree); PhiMoE's nn.LayerNorm beside an rms_norm_eps key and its
    sparsemixer routing; Persimmon's fused query_key_value with biases and per-head LayerNorm qk-norm; ERNIE 4.5
    MoE's and Aria's experts counted and sized from the tree (moe_num_experts, moe_layer_start_index ... are keys
    no other family uses), ERNIE's softmax router with a choice bias and its rotation of adjacent pairs (both
    from behaviour); Cohere2-MoE's one norm per layer feeding attention and experts side by side, a LayerNorm
    without a shift (its norm run with a known weight), rotation of adjacent pairs in its sliding-window layers
    only; HyperCLOVA X's norms after attention and MLP (post_norm1/2: its use_post_norm) with Granite's
    multipliers; AFMoE's gated attention (a gate_proj as wide as q_proj: attention: {output_gate: true}), its
    sandwich norms under their own names, and its router, which takes (batch, seq, width) and the block's frozen
    expert_bias (sigmoid scores chosen with the bias, renormalised); ModernBERT-decoder's first layer without an
    attention norm (layer 0's tree lacks the norm layer 1 has), attn_norm/mlp_norm and Wo/Wi names, its erf-GELU
    gate, the norm on its embeddings and its head transform (lm_head) beside a decoder of the model's own."""
    result = hf_coverage.run_one(model_type)
    full = "unverified: " if model_type == "hunyuan_v1_moe" else "verified"  # its class default has head_dim None
    assert result.status == "exact" and result.full_size.startswith(full), result


def test_the_experts_gate_is_read_from_what_it_computes():
    """GPT-OSS says hidden_act 'silu'; its experts compute another function, with interleaved halves."""
    from archdsl.interop.hf_probe import experts_traits

    cfg, model = _meta("gpt_oss")
    traits = experts_traits(cfg, model.model.layers[0].mlp.experts)
    assert traits == dict(experts_transposed=True, experts_bias=True, experts_activation="swiglu_clamped",
                          experts_interleaved=True)
    cfg, model = _meta("mixtral")
    assert experts_traits(cfg, model.model.layers[0].mlp.experts) == dict(experts_activation="swiglu")


def test_experts_whose_gate_matches_no_activation_are_refused():
    """A gate that is none of archdsl's gated activations (here relu(gate) · up) is refused by name."""
    from archdsl.interop.hf_probe import experts_traits

    cfg, model = _meta("mixtral")
    experts = model.model.layers[0].mlp.experts
    experts.act_fn = torch.nn.ReLU()
    assert experts_traits(cfg, experts)["experts_activation"] == "unknown"
    traits = {**hf.FAMILY_TRAITS["llama"], "experts_activation": "unknown"}
    with pytest.raises(SpecError, match=r"hidden_act: unsupported feature: experts whose gated activation"):
        hf._experts_from_traits(cfg, hf.features_from_config(cfg), traits)


def test_norms_are_read_from_what_they_compute():
    """(1 + w) RMSNorm (MiniMax-M3, Gemma), plain RMSNorm (Llama), LayerNorm under an rms_norm_eps key (PhiMoE), and
    a LayerNorm without a shift (Cohere2-MoE's)."""
    from archdsl.interop.hf_probe import norm_traits

    for model_type, expected in (("minimax_m3_vl_text", dict(norm="rmsnorm", unit_offset=True)),
                                 ("llama", dict(norm="rmsnorm", unit_offset=False)),
                                 ("phimoe", dict(norm="layernorm", unit_offset=False, norm_bias=True)),
                                 ("cohere2_moe", dict(norm="layernorm", unit_offset=False, norm_bias=False))):
        _, model = _meta(model_type)
        assert norm_traits(model.model.layers[0].input_layernorm) == expected, model_type


@pytest.mark.parametrize("multi_query", [True, False])
def test_starcoder1_loads_from_a_saved_checkpoint(tmp_path, multi_query):
    """GPT-BigCode (StarCoder 1) keeps GPT-2's names but stores c_attn/c_fc as Linear, not Conv1D: read from a
    folder (where module types are unknown), the layout must be told from the shapes, with one key/value head
    or many. Logits equal transformers' on a left-padded batch."""
    data = {**hf_coverage.shrink(T.CONFIG_MAPPING["gpt_bigcode"]).to_dict(), "multi_query": multi_query}
    data.pop("num_key_value_heads")  # derived from multi_query by the config class
    cfg = T.GPTBigCodeConfig.from_dict(data)
    reference = hf_coverage.random_model(cfg)
    reference.save_pretrained(tmp_path)
    loaded = hf.from_pretrained(tmp_path)
    tokens = torch.randint(0, cfg.vocab_size, (2, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(tokens)
    mask[1, :3] = 0
    with torch.no_grad():
        theirs = reference(tokens, attention_mask=mask).logits
        ours = loaded(tokens, mask)
    real = mask.bool()
    assert (ours - theirs)[real].abs().max() <= 1e-5 * max(1.0, theirs[real].abs().max().item())


def test_opt_positions_sit_two_rows_in_and_follow_the_padding():
    """OPT (a table entry: its MLP's fc1/fc2 sit in the layer, out of the probe's sight) reads position p from row
    p + 2 of its table, counting from a row's first real token: greedy tokens of a left-padded batch equal
    transformers' generate; OPT-350m's post-norm layers are refused by name."""
    cfg = hf_coverage.shrink(T.CONFIG_MAPPING["opt"])
    assert "offset: 2" in hf.spec_yaml_from_config(cfg)
    assert_greedy_equals_transformers(cfg, low=4, pads=3, pad_token_id=1)
    with pytest.raises(SpecError, match="do_layer_norm_before: unsupported feature: OPT's post-norm"):
        hf.spec_from_config(T.OPTConfig(do_layer_norm_before=False))


@pytest.mark.parametrize("model_type, model_class, holding", [("hrm_text", "HrmTextForCausalLM", "self_attn, ")])
def test_a_layout_the_importer_does_not_read_is_named_for_what_it_is(model_type, model_class, holding):
    """Layers the importer does not read (HRM's; BERT-shaped ones are hf_encoder's, a BART
    config is the seq2seq importer's, BART-layout decoder layers, TrOCR's and BioGPT's, hf_decoder's) are refused
    as what they are, not with a Llama default's complaint (it said "a gated MLP with activation 'gelu'")."""
    with pytest.raises(SpecError, match=rf"model_type: unsupported feature: '{model_type}' is a {model_class}, whose "
                                        r"layers are \S+\.layers\.N \(not model.layers or transformer.h\), holding "
                                        + holding) as exc:
        hf.spec_from_config(hf_coverage.shrink(T.CONFIG_MAPPING[model_type]))
    assert "gated" not in str(exc.value)


@pytest.mark.parametrize("model_type", ["codegen", "nanochat", "granite_swa", "apertus", "openai-gpt"])
def test_codegen_nanochat_and_sinks_generate_as_transformers(model_type):
    """CodeGen (its qkv rows laid out for 4-way model parallelism, reordered as data), nanochat (norms
    without parameters, qk-norm after a rotation by -angle) and Granite-SWA (attention sinks, sliding-window
    layers), Apertus (xIELU, two learned scalars per MLP) and GPT-1 (a norm after each residual's sum, no
    final norm, its "gelu" the tanh one): the spec says so, and greedy tokens of a left-padded batch equal
    transformers' generate (the cached decoding steps included)."""
    cfg = hf_coverage.shrink(T.CONFIG_MAPPING[model_type])
    text = hf.spec_yaml_from_config(cfg)
    if model_type == "nanochat":
        assert "reverse: true" in text and "qk_norm_scale: false" in text and "scale: false" in text
    if model_type == "granite_swa":
        assert "sinks: true" in text
    if model_type == "apertus":
        assert "activation: xielu" in text
    if model_type == "openai-gpt":
        assert "gelu_tanh" in text and "- layernorm: {eps: $eps, name: mlp_norm}" in text
    assert_greedy_equals_transformers(cfg, low=3, pads=3, pad_token_id=0)


@pytest.mark.parametrize("model_type, expected", [
    ("ernie4_5_moe", dict(scoring="softmax", score_bias=True, normalize=True, routed_scale=1.0)),
    ("hy_v3", dict(scoring="sigmoid", score_bias=True, normalize=True, routed_scale=2.826)),  # inside its router
    ("phimoe", dict(scoring="sparsemixer", score_bias=False, normalize=True, routed_scale=1.0)),
    ("gpt_oss", dict(scoring="softmax", score_bias=False, normalize=True, routed_scale=1.0)),  # softmax of top-k
    ("qwen3_moe", dict(scoring="softmax", score_bias=False, normalize=False, routed_scale=1.0)),  # norm_topk_prob
])
def test_the_router_is_read_from_what_it_returns(model_type, expected):
    """A CPU copy of the router with random weights (and choice bias) routes probe tokens; archdsl's candidate
    routings of the same logits must choose the same experts with the same weights up to one constant."""
    from archdsl.interop.hf_probe import router_traits

    cfg, model = _meta(model_type)
    moe = next(layer.mlp for layer in model.model.layers if hasattr(layer.mlp, "experts"))
    routing = router_traits(cfg, moe)["routing"]
    assert {k: routing[k] for k in expected} == expected


def test_a_router_matching_no_routing_is_unknown_and_kolibris_is_a_choice_bias_on_logits():
    """A router that weighs its top k by a softmax at temperature 2 matches no archdsl routing ("unknown", which the
    importer refuses by name); Kolibri 1's chooses by logits + bias and weighs by the sigmoid of the chosen logits:
    moe {scoring: sigmoid, score_bias: true, bias_on_logits: true}."""
    from torch import nn

    from archdsl.interop.hf_probe import router_traits

    class Tempered(nn.Module):
        top_k = 2

        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(4, 8))

        def forward(self, x):
            logits = x @ self.weight.T
            weights, chosen = torch.topk(torch.softmax(logits / 2, dim=-1), 2, dim=-1)
            return logits, weights, chosen

    moe = nn.Module()
    moe.gate = Tempered()
    assert router_traits(T.LlamaConfig(), moe) == {"routing": "unknown"}
    _, kolibri = _meta("kolibri1")
    layer = next(layer for layer in kolibri.model.layers if hasattr(layer.mlp, "experts"))
    routing = router_traits(kolibri.config, layer.mlp)["routing"]
    assert (routing["scoring"], routing["score_bias"], routing["bias_on_logits"]) == ("sigmoid", True, True)


@pytest.mark.parametrize("model_type, expected", [
    ("llama", dict(rotary_interleaved=False, rotary_reverse=False)),
    ("ernie4_5_moe", dict(rotary_interleaved=True, rotary_reverse=False)),  # adjacent pairs
    ("nanochat", dict(rotary_interleaved=False, rotary_reverse=True)),  # by -angle
])
def test_the_rotation_is_read_from_what_the_model_computes(model_type, expected):
    from archdsl.interop.hf_probe import rotary_traits

    _, model = _meta(model_type)
    assert rotary_traits(model, model.model.layers[0].self_attn) == expected


def test_which_layers_rotate_is_read_from_what_each_computes():
    """Flint's code rotates queries and keys in its sliding-window layers only: run alone with the rotary tables of
    two spacings of positions, its full-attention layers give the same output. Llama's every layer rotates."""
    from archdsl.interop.hf_probe import rotation_traits

    _, flint = _meta("flint")
    assert rotation_traits(flint) == {"rotates": [t == "sliding_attention" for t in flint.config.layer_types]}
    assert not all(rotation_traits(flint)["rotates"]) and any(rotation_traits(flint)["rotates"])
    _, llama = _meta("llama")
    assert rotation_traits(llama) == {"rotates": [True] * len(llama.model.layers)}


def test_afmoes_mup_scales_the_embeddings():
    """AFMoE's mup_enabled multiplies the embeddings by sqrt(hidden_size) in its forward, which no module shows: the
    config says so, and from_hf's check (on by default for a family without a table entry) agrees."""
    cfg = hf_coverage.shrink(T.CONFIG_MAPPING["afmoe"])
    cfg.mup_enabled = True
    assert 'scale: "${d_model ** 0.5}"' in hf.spec_yaml_from_config(cfg, verify=False)
    reference = hf_coverage.random_model(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = hf.from_hf(reference)
    assert hf_coverage.max_diff(reference, hf_coverage.hf_logits(reference), model) <= 1e-5


def test_llama4_text_with_chunks_and_temperature_inside_the_sequence():
    """Llama 4's text model with a chunk of 4 and a temperature floor of 4, so that a 12-token left-padded batch
    crosses both: chunked attention in its rotary layers, the query temperature in its NoPE ones (t counts the
    padding, as its code does), qk-norm in the rotary layers only, top-1 sigmoid experts whose input the routing
    weight scales, a shared expert, rotation of adjacent pairs. Logits, and greedy generation through the cache."""
    cfg = hf_coverage.shrink(T.CONFIG_MAPPING["llama4_text"])
    cfg.attention_chunk_size, cfg.floor_scale, cfg.attn_scale, cfg.num_experts_per_tok = 4, 4, 0.5, 1
    cfg.num_hidden_layers, cfg.layer_types, cfg.no_rope_layers = 4, cfg.layer_types[:4], cfg.no_rope_layers[:4]
    cfg.moe_layers = [1, 3]  # dense and sparse layers interleaved, as the 128-expert model
    text = hf.spec_yaml_from_config(cfg, verify=False)
    for expected in ("chunk: $chunk", "temperature_floor: $temperature_floor", "scale_inputs: true",
                     "interleaved: true", "qk_norm_after_rotary: true", "nope: true"):
        assert expected in text, expected
    reference = hf_coverage.random_model(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = hf.from_hf(reference)
    assert hf_coverage.max_diff(reference, hf_coverage.hf_logits(reference), model) <= 1e-5
    assert_greedy_equals_transformers(cfg, low=3, pads=2, pad_token_id=0)
