"""Every spec in specs/ validates, summarises and compiles; named models have their exact sizes."""
from __future__ import annotations

import pytest
import torch

import archdsl
from conftest import SPECS

TINY = {"layers": 2, "d_model": 64, "heads": 4, "kv_heads": 2, "ffn": 96, "vocab": 97, "context": 64,
        "local_window": 4, "head_dim": 16, "experts": 4, "top_k": 2, "shared_ffn": 96,
        # DeepSeek-V3: latent attention, expert groups, the first layers dense
        "dense_layers": 1, "dense_ffn": 96, "kv_rank": 16, "q_rank": 24, "rope_dim": 8, "v_dim": 16, "groups": 2,
        "top_groups": 1,
        # state-space mixers (Mamba-2 2.7B, Jamba, Bamba)
        "ssm_state": 16, "ssm_groups": 2, "ssm_heads": 8, "dt_rank": 4, "mamba_lead": 1, "mamba_gap": 1, "mamba_tail": 1,
        # Qwen3-Next's gated DeltaNet
        "linear_heads": 2, "linear_value_heads": 4, "linear_head_dim": 16,
        # Granite 4.0-H's routed experts (nine layers of them at the smallest pattern)
        "expert_ffn": 32}

# Hugging Face's counts for the same models (GPT2LMHeadModel, BertModel, LlamaForCausalLM, ViTModel;
# Mamba2ForCausalLM, JambaForCausalLM, BambaForCausalLM and GraniteMoeHybridForCausalLM built on meta from the
# checkpoints' config values).
EXACT_PARAMS = {"gpt2": 124_439_808, "bert-base": 109_482_240, "llama3-8b": 8_030_261_248,
                "vit-base-16": 86_389_248, "mamba2-2.7b": 2_702_599_680, "jamba-v0.1": 51_570_323_328,
                "bamba-9b": 9_780_235_392, "falcon-h1-tiny-90m": 91_131_072, "granite-4.0-h-tiny": 6_939_037_248}


def tiny_overrides(path) -> dict:
    spec = archdsl.load_spec(path)
    return {k: v for k, v in TINY.items() if k in spec.vars}


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_spec_validates_summarises_and_compiles(path):
    spec = archdsl.load_spec(path)
    assert spec.description.strip(), "every spec says what makes its family different"
    summary = archdsl.summary(spec)
    assert summary.total_params > 0 and summary.flops_per_token > 0
    meta = archdsl.compile(spec, device="meta")
    assert meta.num_parameters() == summary.total_params

    small = archdsl.compile(path, overrides=tiny_overrides(path), seed=0).eval()
    assert small.num_parameters() == archdsl.summary(path, overrides=tiny_overrides(path)).total_params
    generator = torch.Generator().manual_seed(0)
    inputs = small.graph.graph["inputs"]
    if "image" in inputs:
        from archdsl.blocks.vision import random_images
        out = small(random_images(small, 2, generator=generator))
    else:
        tokens = torch.randint(0, small.vocab, (2, 8), generator=generator)
        extra = {"decoder_tokens": tokens[:, :5]} if "decoder_tokens" in inputs else {}
        out = small(tokens, **extra)
    hidden = out[0] if isinstance(out, tuple) else out
    assert hidden.shape[0] == 2
    assert torch.isfinite(hidden).all()


@pytest.mark.parametrize("name,count", sorted(EXACT_PARAMS.items()))
def test_exact_parameter_counts(root, name, count):
    path = root / "specs" / f"{name}.yaml"
    assert archdsl.summary(path).total_params == count
    device = "cpu" if count < 200_000_000 else "meta"  # the built module, not just the arithmetic
    assert archdsl.compile(path, device=device, seed=0).num_parameters() == count


def test_lm_returns_logits_and_encoder_returns_hidden_and_pooled(root):
    lm = archdsl.compile(root / "specs/gpt2.yaml", overrides={"layers": 1}, seed=0).eval()
    logits = lm(torch.randint(0, 50257, (2, 5)))
    assert logits.shape == (2, 5, 50257)
    bert = archdsl.compile(root / "specs/bert-base.yaml", overrides={"layers": 1}, seed=0).eval()
    out = bert(torch.randint(0, 30522, (2, 5)), torch.ones(2, 5, dtype=torch.long),
               token_type_ids=torch.zeros(2, 5, dtype=torch.long))
    assert out.last_hidden_state.shape == (2, 5, 768)
    assert out.pooler_output.shape == (2, 768)


def test_tied_head_shares_the_embedding_tensor(root):
    model = archdsl.compile(root / "specs/gpt2.yaml", overrides={"layers": 1}, seed=0)
    assert model.lm_head.weight is model.wte.weight
    assert "lm_head.weight" in model.state_dict() and "wte.weight" in model.state_dict()


def test_falcon_h1_spec_has_the_parameters_of_transformers_falcon_h1():
    """specs/falcon-h1-tiny-90m.yaml against FalconH1ForCausalLM of the checkpoint's sizes, on meta: the same
    total and the same count per layer part (Mamba-2 mixer, attention, MLP), so the parallel layer is the one
    transformers builds."""
    from conftest import need

    transformers = need("transformers")
    spec = archdsl.load_spec(SPECS[0].parent / "falcon-h1-tiny-90m.yaml")
    v = spec.vars
    config = transformers.FalconH1Config(
        vocab_size=v["vocab"], hidden_size=v["d_model"], intermediate_size=v["ffn"], num_hidden_layers=v["layers"],
        num_attention_heads=v["heads"], num_key_value_heads=v["kv_heads"], head_dim=v["d_model"] // v["heads"],
        tie_word_embeddings=True, mamba_d_ssm=v["ssm_heads"] * v["ssm_head_dim"], mamba_n_heads=v["ssm_heads"],
        mamba_d_head=v["ssm_head_dim"], mamba_d_state=v["ssm_state"], mamba_n_groups=1, mamba_rms_norm=False)
    with torch.device("meta"):
        reference = transformers.AutoModelForCausalLM.from_config(config)
    layer = reference.model.layers[0]
    rows = {r.kind: r.params for r in archdsl.summary(spec).rows if r.copies == v["layers"]}
    assert rows["mamba2"] == sum(p.numel() for p in layer.mamba.parameters())
    assert rows["attention"] == sum(p.numel() for p in layer.self_attn.parameters())
    assert rows["mlp"] == sum(p.numel() for p in layer.feed_forward.parameters())
    assert archdsl.summary(spec).total_params == sum(p.numel() for p in reference.parameters()) == 91_131_072
