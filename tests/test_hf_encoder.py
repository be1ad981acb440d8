"""Encoders laid out like BERT import from what the transformers model is (archdsl/interop/hf_encoder.py).

Each case builds a tiny transformers model with random weights (every parameter perturbed, so that a
misplaced norm, bias or activation shows), converts it with ``from_hf`` and compares the outputs on the
real tokens of a padded batch (right-padded for an encoder, left-padded with counted positions for a
decoder): logits of the masked-LM and causal-LM classes, hidden states and the pooled output of the bare
model. Refusals name what archdsl does not express; layers that share BERT's tensor names but not its
attention (MRA, YOSO) are refused by running them, not by name.
"""
from __future__ import annotations

import sys
import warnings

import pytest

from conftest import ROOT, need
from controls import Case

T = need("transformers")
import torch  # noqa: E402

import archdsl  # noqa: E402
from archdsl.errors import SpecError  # noqa: E402
from archdsl.interop import hf, hf_encoder  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
import hf_coverage  # noqa: E402

SIZES = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
             max_position_embeddings=40)
TOL = 1e-5  # float32, relative to the largest value (when above 1)

# id -> (config class, model class, extra config values)
CASES = {
    "bert-mlm": ("BertConfig", "BertForMaskedLM", {}),
    "bert-model": ("BertConfig", "BertModel", {}),
    "bert-causal": ("BertConfig", "BertLMHeadModel", {"is_decoder": True}),
    "roberta-mlm": ("RobertaConfig", "RobertaForMaskedLM", {"pad_token_id": 1}),
    "roberta-causal": ("RobertaConfig", "RobertaForCausalLM", {"is_decoder": True, "pad_token_id": 1}),
    "electra-mlm": ("ElectraConfig", "ElectraForMaskedLM", {"embedding_size": 16}),  # projected embeddings
    "albert-mlm": ("AlbertConfig", "AlbertForMaskedLM", {"embedding_size": 16, "hidden_act": "gelu_new"}),
    "distilbert-mlm": ("DistilBertConfig", "DistilBertForMaskedLM", {}),
    "xlm-roberta-xl-mlm": ("XLMRobertaXLConfig", "XLMRobertaXLForMaskedLM", {"pad_token_id": 1}),  # pre-norm
    "megatron-mlm": ("MegatronBertConfig", "MegatronBertForMaskedLM", {}),  # pre-norm, no embedding norm
    "rembert-mlm": ("RemBertConfig", "RemBertForMaskedLM", {"input_embedding_size": 16, "output_embedding_size": 24}),
}


def _config(config_class: str, extra: dict):
    sizes = dict(SIZES)
    if config_class == "DistilBertConfig":  # its own names for the sizes
        sizes = dict(vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=48, max_position_embeddings=40)
    return getattr(T, config_class)(**sizes, **extra)


def random_model(case: str):
    config_class, model_class, extra = CASES[case]
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = getattr(T, model_class)(_config(config_class, extra)).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def encoder_case(case: str):
    """(the imported model, check(model): its outputs equal transformers' on the real tokens of a padded batch)."""
    reference = random_model(case)
    d = hf_encoder.identify(reference)
    model = hf.from_hf(reference, verify=False)
    tokens, mask, types = hf_encoder.probe_batch(d, d.vocab)
    kwargs = {"token_type_ids": types} if types is not None else {}
    ours_kwargs, theirs_kwargs = dict(kwargs), dict(kwargs)
    if d.causal:
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        ours_kwargs["position_ids"] = positions
        if not d.offset:  # RoBERTa numbers positions from padding_idx + 1 itself
            theirs_kwargs["position_ids"] = positions
    with torch.no_grad():
        expected = reference(input_ids=tokens, attention_mask=mask, **theirs_kwargs)
    real = mask.bool()

    @torch.no_grad()
    def check(m):
        got = m(tokens, mask, **ours_kwargs)
        if isinstance(got, torch.Tensor):
            pairs = [(got[real], expected.logits[real])]
        else:
            pairs = [(got.last_hidden_state[real], expected.last_hidden_state[real])]
            if getattr(expected, "pooler_output", None) is not None:
                pairs.append((got.pooler_output, expected.pooler_output))
        for ours, theirs in pairs:
            diff = (ours - theirs).abs().max().item()
            assert diff <= TOL * max(1.0, theirs.abs().max().item()), diff
    return model, check


@pytest.mark.parametrize("case", list(CASES))
def test_encoder_imports_exactly(case):
    """The converted model's logits (or hidden states and pooled output) equal transformers' on a padded batch."""
    model, check = encoder_case(case)
    check(model)


def control_cases():
    """The check above, for tests/controls.py (one per layout and head)."""
    for case in ("bert-mlm", "bert-model", "roberta-causal", "albert-mlm", "xlm-roberta-xl-mlm"):
        yield Case(test_encoder_imports_exactly, case, lambda case=case: encoder_case(case),
                   f"<= {TOL:g} x max(1, max |value|)")


def test_the_description_reads_the_model_not_the_family():
    """What the probes find: RoBERTa's head applies GELU whatever hidden_act says, its positions start at
    padding_idx + 1; ALBERT's one layer is shared; XLM-R XL is pre-norm; RemBERT's decoder is its own table."""
    config = _config("RobertaConfig", {"pad_token_id": 1, "hidden_act": "relu"})
    d = hf_encoder.identify(T.RobertaForMaskedLM(config))
    assert (d.activation, d.head["activation"], d.offset, d.max_len) == ("relu", "gelu", 2, 38)
    assert hf_encoder.identify(random_model("albert-mlm")).shared
    assert hf_encoder.identify(random_model("xlm-roberta-xl-mlm")).arrangement == "pre"
    rembert = hf_encoder.identify(random_model("rembert-mlm"))
    assert rembert.head["tied"] is False and rembert.embed_dim == 16 and rembert.head["dense"] == 24


def test_import_hf_of_a_full_size_config_is_short_and_counts_like_transformers(tmp_path):
    """spec_from_config of bert-base-sized and roberta-base-sized configs (probed on a small model of the
    class): the spec's parameters equal transformers'; the written YAML is short and loads back."""
    for config, cls in ((T.BertConfig(architectures=["BertForMaskedLM"]), T.BertForMaskedLM),
                        (T.RobertaConfig(vocab_size=50265, max_position_embeddings=514, pad_token_id=1,
                                         type_vocab_size=1), T.RobertaForMaskedLM)):
        text = hf.spec_yaml_from_config(config)
        assert len(text.splitlines()) <= 80, text
        with torch.device("meta"):
            theirs = cls(config)
        assert archdsl.summary(archdsl.load_spec(text)).total_params == sum(p.numel() for p in theirs.parameters())
    path = tmp_path / "config.json"
    T.AlbertConfig().to_json_file(path)
    assert hf.import_hf_main(path, tmp_path / "albert.yaml") == 0
    assert "shared: true" in (tmp_path / "albert.yaml").read_text()


@pytest.mark.parametrize("config_class, extra, match", [
    ("BertConfig", {"position_embedding_type": "relative_key"}, "position_embedding_type 'relative_key'"),
    ("BigBirdConfig", {}, "block-sparse attention"),
    ("MraConfig", {}, "does not compute softmax attention over every token"),
    ("YosoConfig", {}, "does not compute softmax attention over every token"),
    ("LayoutLMConfig", {}, "x_position_embeddings"),
    ("BertConfig", {"is_decoder": True, "add_cross_attention": True}, "cross-attention"),
    ("RoFormerConfig", {"rotary_value": True}, "values rotated with the queries and keys"),
])
def test_what_archdsl_cannot_express_is_refused_by_name(config_class, extra, match):
    config = getattr(T, config_class)(**SIZES, **extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = T.AutoModelForMaskedLM.from_config(config) if not extra.get("is_decoder") else \
            T.AutoModelForCausalLM.from_config(config)
    with pytest.raises(SpecError, match=match):
        hf.from_hf(model)


@pytest.mark.parametrize("model_type,status", [
    ("bert", "exact"), ("roberta", "exact"), ("electra", "exact"), ("albert", "exact"), ("distilbert", "exact"),
    ("xlm-roberta-xl", "exact"), ("megatron-bert", "exact"), ("ibert", "exact"), ("mra", "refused"),
    ("big_bird", "refused"), ("eurobert", "exact"), ("roformer", "exact"), ("ultrabert", "exact"),
    ("nomic_bert", "exact"), ("jina_embeddings_v3", "exact"), ("gte", "exact"), ("modernbert", "exact"),
    ("mpnet", "exact"), ("esmc", "exact"), ("fnet", "exact")])
def test_coverage_sweep_masked_lm_subset(model_type, status):
    """The coverage harness's masked-LM sweep on a fixed subset (the full sweep: docs/coverage.md). EuroBERT's
    layers are Llama's, attending to every token (its attention's is_causal is False): the decoder importer reads
    it, with attention: {causal: false}. RoFormer's are BERT's with its fixed sinusoid table (encoder.embed_positions)
    rotating adjacent pairs of the queries and keys: positional: {kind: rotary, interleaved: true}. UltraBERT's are
    Llama's with sliding-window and full layers (transformers' bidirectional window is inclusive: archdsl's is one
    wider) and a head that transforms the stream (linear1, GELU, linear2, GELU) before its decoder. Nomic BERT's and
    Jina Embeddings v3's are BERT's post-norm layers under Llama's names, rotating queries and keys with their
    model's rotary_emb (run with it to probe them), Nomic's feed-forward gated; GTE's too, with the erf GELU
    (geglu_exact) and a bias on its down-projection alone (mlp: {bias: false, down_bias: true}). ModernBERT's are
    pre-norm with a fused Wqkv, a GeGLU Wi, bidirectional sliding-window and full layers with their own rotary
    settings, a first layer without the norm before its attention (an Identity), a norm on the embeddings and a
    head transform beside its own decoder. MPNet's are BERT's under one T5-style relative position bias of the stack.
    ESM-C's are Llama's under esmc (its base_model_prefix) with LayerNorms, a final one without a shift, a qk
    LayerNorm over the width without one (qk_norm_centered, qk_norm_bias: false) and residual branches divided by
    the layer's sqrt(layers / 36). FNet's are BERT's with a Fourier transform in place of attention (fourier), an
    embedding projection, and a pooler beside its head (written before it)."""
    result = hf_coverage.run_one(model_type, "masked-lm")
    assert result.status == status, result
    if status == "exact":
        assert result.full_size == "verified", result


def test_a_wrong_weight_is_caught_by_the_default_check():
    """from_hf compares the outputs by default: a model whose weights were changed after identification differs."""
    reference = random_model("bert-mlm")
    d = hf_encoder.identify(reference)
    model = hf.from_hf(reference)
    with torch.no_grad():
        model.get_parameter("encoder.0.mlp_norm.weight").mul_(1.5)
    with pytest.raises(ValueError, match="differs from the original"):
        hf_encoder.verify(d, reference, model)


@pytest.mark.parametrize("case", ["bert-mlm", "roberta-causal", "albert-mlm", "rembert-mlm"])
def test_from_pretrained_reads_a_saved_checkpoint_without_transformers_model(case, tmp_path):
    """A checkpoint written by save_pretrained (tied tensors stored once) loads into the same weights as from_hf."""
    reference = random_model(case)
    reference.save_pretrained(tmp_path)
    loaded = hf.from_pretrained(tmp_path)
    expected = hf.from_hf(reference)
    assert set(loaded.state_dict()) == set(expected.state_dict())
    for name, tensor in expected.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    bf16 = hf.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert next(bf16.parameters()).dtype == torch.bfloat16


def test_coverage_doc_is_the_recorded_sweep():
    """docs/coverage.md and the counts in docs/families.md are the sweep recorded in benchmarks/hf_coverage.json
    (regenerate both with the command in docs/coverage.md)."""
    import json

    recorded = json.loads((ROOT / "benchmarks" / "hf_coverage.json").read_text())
    doc = (ROOT / "docs" / "coverage.md").read_text()
    families = (ROOT / "docs" / "families.md").read_text()
    for key, task in (("results", "causal-lm"), ("masked_lm", "masked-lm"), ("seq2seq", "seq2seq")):
        results = [hf_coverage.Result(**r) for r in recorded[key]]
        counts = hf_coverage.markdown(results, task).splitlines()[0]
        assert counts in doc and counts in families, (task, counts)
        for r in results:
            assert f"`{r.model_type}`" in doc, r.model_type


@pytest.mark.parametrize("case", ["bert-causal", "roberta-causal"])
def test_an_encoder_run_as_a_decoder_generates_as_transformers(case):
    """BertLMHeadModel / RobertaForCausalLM (is_decoder) imported: 10 greedy tokens of a batch whose second row
    is left-padded (the KV cache, positions counted from the real tokens) equal transformers' generate for BERT,
    and for RoBERTa the greedy loop over transformers' forward, which numbers positions from padding_idx + 1 as
    RoBERTa was trained (transformers' generate passes position ids from 0 instead, which its forward then reads
    from row 0: another model)."""
    reference = random_model(case)
    model = hf.from_hf(reference)
    pad = reference.config.pad_token_id
    prompt = torch.randint(3, 99, (2, 6), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(prompt)
    mask[1, :2] = 0
    prompt = prompt.masked_fill(mask == 0, pad)
    ours = model.generate(prompt, 10, attention_mask=mask, pad_token_id=pad)
    if case == "bert-causal":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = reference.generate(prompt, attention_mask=mask, max_new_tokens=10, min_new_tokens=10,
                                        do_sample=False, pad_token_id=pad)
    else:
        theirs, full_mask = prompt, mask
        with torch.no_grad():
            for _ in range(10):
                nxt = reference(theirs, attention_mask=full_mask).logits[:, -1].argmax(-1, keepdim=True)
                theirs, full_mask = torch.cat([theirs, nxt], 1), torch.cat([full_mask, torch.ones_like(nxt)], 1)
    assert torch.equal(ours, theirs)


def test_a_heads_transform_is_read_from_its_tree_and_behaviour():
    """The head module outside the base model, ending in the vocabulary-wide Linear: its Linears and norms in order,
    the activation after each Linear found by running it (UltraBERT's tanh GELUs whatever hidden_act says; ESM-C's
    exact GELU, then a LayerNorm); a model whose lm_head is the projection itself has none."""
    from archdsl.interop.hf_probe import head_traits

    def meta(model_type, auto):
        cfg = hf_coverage.shrink(T.CONFIG_MAPPING[model_type])
        with torch.device("meta"):
            return auto.from_config(cfg)

    ultra = head_traits(meta("ultrabert", T.AutoModelForMaskedLM))["head_transform"]
    assert [(s["kind"], s["name"], s["activation"]) for s in ultra["steps"]] == [
        ("linear", "linear1", "gelu_tanh"), ("linear", "linear2", "gelu_tanh")]
    assert ultra["decoder"] == "head.decoder" and not ultra["decoder_bias"]
    esmc = head_traits(meta("esmc", T.AutoModelForMaskedLM))["head_transform"]
    assert [(s["kind"], s.get("activation")) for s in esmc["steps"]] == [("linear", "gelu"), ("layernorm", None)]
    assert esmc["decoder_bias"]
    assert head_traits(meta("llama", T.AutoModelForCausalLM)) == {}
