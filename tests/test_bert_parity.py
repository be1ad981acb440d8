"""bert-base.yaml is BERT: same outputs as Hugging Face's BertModel on the same (random) weights."""
from __future__ import annotations

import torch

import archdsl
from conftest import ROOT, need
from controls import Case

transformers = need("transformers")


def _copy_bert_weights(hf, model, layers: int) -> None:
    sd = hf.state_dict()
    ours = {
        "word_embeddings.weight": sd["embeddings.word_embeddings.weight"],
        "position_embeddings.weight": sd["embeddings.position_embeddings.weight"],
        "token_type_embeddings.weight": sd["embeddings.token_type_embeddings.weight"],
        "embeddings_norm.weight": sd["embeddings.LayerNorm.weight"],
        "embeddings_norm.bias": sd["embeddings.LayerNorm.bias"],
        "pooler.dense.weight": sd["pooler.dense.weight"],
        "pooler.dense.bias": sd["pooler.dense.bias"],
    }
    for i in range(layers):
        hf_p, p = f"encoder.layer.{i}.", f"encoder.{i}."
        attn = hf_p + "attention.self."
        for kind in ("weight", "bias"):
            ours[p + f"residual_0.attention.qkv.{kind}"] = torch.cat(
                [sd[attn + f"{name}.{kind}"] for name in ("query", "key", "value")])
            ours[p + f"residual_0.attention.out.{kind}"] = sd[hf_p + f"attention.output.dense.{kind}"]
            ours[p + f"layernorm_0.{kind}"] = sd[hf_p + f"attention.output.LayerNorm.{kind}"]
            ours[p + f"residual_1.mlp.up.{kind}"] = sd[hf_p + f"intermediate.dense.{kind}"]
            ours[p + f"residual_1.mlp.down.{kind}"] = sd[hf_p + f"output.dense.{kind}"]
            ours[p + f"layernorm_1.{kind}"] = sd[hf_p + f"output.LayerNorm.{kind}"]
    missing, unexpected = model.load_state_dict(ours, strict=True)
    assert not missing and not unexpected


TOL = 1e-6  # float32, relative to the largest value (when above 1)


def bert_case():
    """(bert-base.yaml at tiny sizes with a transformers BertModel's weights, every parameter random,
    check(model): hidden states and pooled output equal transformers' on a right-padded batch; the
    encoder is bidirectional, so its real tokens would read the padding without the mask)."""
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=120, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=96, max_position_embeddings=32, type_vocab_size=2)
    hf = transformers.BertModel(config).eval()
    with torch.no_grad():  # make every parameter matter (HF initialises LayerNorms to 1/0 and biases to 0)
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model = archdsl.compile(ROOT / "specs/bert-base.yaml", overrides={
        "vocab": 120, "d_model": 64, "layers": 2, "heads": 4, "ffn": 96, "context": 32}, seed=0).eval()
    _copy_bert_weights(hf, model, 2)

    tokens = torch.randint(1, 120, (3, 10), generator=torch.Generator().manual_seed(1))
    types = torch.zeros_like(tokens)
    types[:, 5:] = 1
    mask = torch.ones_like(tokens)
    mask[1, 7:] = 0  # right padding
    mask[2, 4:] = 0
    with torch.no_grad():
        expected = hf(input_ids=tokens, attention_mask=mask, token_type_ids=types)
    real = mask.bool()

    @torch.no_grad()
    def check(model):
        got = model(tokens, mask, token_type_ids=types)
        hidden_diff = (got.last_hidden_state[real] - expected.last_hidden_state[real]).abs().max().item()
        pooled_diff = (got.pooler_output - expected.pooler_output).abs().max().item()
        bound = TOL * max(1.0, expected.last_hidden_state[real].abs().max().item())
        assert hidden_diff <= bound and pooled_diff <= TOL, (hidden_diff, pooled_diff)
    return model, check


def test_bert_base_matches_transformers_bertmodel():
    """bert-base.yaml computes BertModel's hidden states and pooled output on its weights, with a padding mask."""
    model, check = bert_case()
    check(model)


def control_cases():
    """The check above, for tests/controls.py."""
    yield Case(test_bert_base_matches_transformers_bertmodel, "bert-base", bert_case, f"<= {TOL:g} x max(1, max |value|)")


def test_bert_base_full_size_count_equals_transformers():
    with torch.device("meta"):
        hf = transformers.BertModel(transformers.BertConfig())
    assert archdsl.summary(ROOT / "specs/bert-base.yaml").total_params == sum(p.numel() for p in hf.parameters())
