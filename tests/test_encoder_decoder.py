"""Encoder-decoder graphs: cross-attention, T5's relative position bias, shared embeddings, and
Hugging Face parity for T5 (v1.0 and v1.1) and BART (logits, parameter counts, greedy generation).

CPU, float32, tiny random models built offline from configs, fixed seeds.
"""
from __future__ import annotations

import functools
import math

import pytest
import torch
from torch.nn import functional as F

import archdsl
from archdsl.blocks import attention as attention_module
from archdsl.blocks.attention import CrossAttention
from archdsl.blocks.embedding import RelativePositionBias, relative_position_bucket
from conftest import ROOT, need
from controls import Case, context_weights

T = need("transformers")
from archdsl.interop import hf  # noqa: E402

SPECS = ROOT / "specs"
VOCAB = 99
TOL = 1e-6  # float32, relative to the largest logit (when above 1)


# ---------------------------------------------------------------------------------------- HF models
def _perturb(model: torch.nn.Module, scale: float, seed: int = 1) -> None:
    """Every parameter moves (norms included), so a swapped or misplaced tensor shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


CONFIGS = {
    # v1.0: ReLU, tied head scaled by d_model^-0.5; a deeper decoder than encoder
    "t5": lambda: T.T5Config(vocab_size=VOCAB, d_model=32, d_ff=64, num_layers=2, num_decoder_layers=3, num_heads=4,
                             d_kv=8, relative_attention_num_buckets=8, relative_attention_max_distance=20),
    # v1.1: gated GELU (gelu_new), untied head in the checkpoint, no rescaling; heads of 6 (not width / heads)
    "t5-v1_1": lambda: T.T5Config(vocab_size=VOCAB, d_model=32, d_ff=48, num_layers=2, num_heads=4, d_kv=6,
                                  feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                                  relative_attention_num_buckets=8, relative_attention_max_distance=20),
    "bart": lambda: T.BartConfig(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2,
                                 encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                                 decoder_ffn_dim=64, max_position_embeddings=64),
}


def _hf_model(name: str, scale: float = 0.1, **changes):
    cfg = CONFIGS[name]()
    for key, value in changes.items():
        setattr(cfg, key, value)
    cls = T.BartForConditionalGeneration if name == "bart" else T.T5ForConditionalGeneration
    torch.manual_seed(0)
    model = cls(cfg).eval()
    _perturb(model, scale)
    return model


@pytest.fixture(scope="module")
def pairs():
    """name -> (transformers model, archdsl model converted from it), built once."""
    out = {}
    for name in CONFIGS:
        theirs = _hf_model(name)
        out[name] = (theirs, hf.from_hf(theirs))
    return out


def _batch(seed: int = 0):
    """Sources (3, 11) padded on the right (the encoder is bidirectional: its real tokens would read the
    padding without the mask) and targets (3, 7) padded on the left (the decoder is causal: padding
    after its real tokens could not reach them)."""
    g = torch.Generator().manual_seed(seed)
    src, tgt = torch.randint(3, VOCAB, (3, 11), generator=g), torch.randint(3, VOCAB, (3, 7), generator=g)
    src_mask, tgt_mask = torch.ones_like(src), torch.ones_like(tgt)
    src_mask[1, 8:], src_mask[2, 4:], tgt_mask[2, :2] = 0, 0, 0
    return src, src_mask, tgt, tgt_mask


def _assert_close(ours: torch.Tensor, theirs: torch.Tensor, real: torch.Tensor | None = None) -> None:
    if real is not None:
        ours, theirs = ours[real], theirs[real]
    diff = (ours - theirs).abs().max().item()
    assert diff <= TOL * max(1.0, theirs.abs().max().item()), diff


def logits_case(name: str):
    """(the converted model, check(model): logits equal transformers' with and without masks)."""
    theirs = _hf_model(name)
    src, src_mask, tgt, tgt_mask = _batch()
    with torch.no_grad():
        expected = theirs(input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt,
                          decoder_attention_mask=tgt_mask).logits
        expected_unpadded = theirs(input_ids=src, decoder_input_ids=tgt).logits

    @torch.no_grad()
    def check(ours):
        got = ours(src, src_mask, decoder_tokens=tgt, decoder_attention_mask=tgt_mask)
        assert got.shape == expected.shape
        _assert_close(got, expected, tgt_mask.bool())
        _assert_close(ours(src, decoder_tokens=tgt), expected_unpadded)  # without masks too
    return hf.from_hf(theirs), check


# ------------------------------------------------------------------------------------- 1. parity
@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_match_transformers_with_padding_on_both_sides(name):
    """Logits equal transformers' with the source padded (right) and the target padded (left), and without padding."""
    ours, check = logits_case(name)
    check(ours)


def test_converted_specs_read_like_the_families(pairs):
    t5, v11, bart = (pairs[n][1] for n in ("t5", "t5-v1_1", "bart"))
    assert t5.decoder.lm_head.tied and t5.decoder.lm_head.scale == pytest.approx(32 ** -0.5)
    assert not v11.decoder.lm_head.tied and v11.decoder.lm_head.scale is None
    assert v11.get_submodule("encoder.block.0.residual_1.mlp").gated
    assert t5.decoder.embed_tokens.weight is t5.encoder.shared.weight  # one table for both stacks
    assert bart.decoder.lm_head.weight is bart.encoder.shared.weight
    assert bart.encoder.embed_positions.weight.shape == (64 + 2, 32)  # BART's offset of 2
    # the relative bias is one (buckets, heads) table per stack, owned by its positional node
    tables = [m for m in t5.modules() if isinstance(m, RelativePositionBias)]
    assert [tuple(m.weight.shape) for m in tables] == [(8, 4), (8, 4)]
    assert sum(1 for n, _ in t5.named_parameters() if "relative" in n) == 2


# ----------------------------------------------------------------------------------- 2. counts
def _hf_meta_count(model_cls, cfg) -> int:
    with torch.device("meta"):
        model = model_cls(cfg)
    total = sum(p.numel() for p in model.parameters())
    head = getattr(model, "lm_head", None)
    if not getattr(cfg, "scale_decoder_outputs", True) and head is not None and head.weight is model.shared.weight:
        total += head.weight.numel()  # transformers 5 ties T5's head always; v1.1 checkpoints store their own
    return total


FULL = {
    "t5-small": (lambda: T.T5ForConditionalGeneration,
                 lambda: T.T5Config(vocab_size=32128, d_model=512, d_ff=2048, num_layers=6, num_heads=8, d_kv=64),
                 60_506_624),
    "t5-v1_1-small": (lambda: T.T5ForConditionalGeneration,
                      lambda: T.T5Config(vocab_size=32128, d_model=512, d_ff=1024, num_layers=8, num_heads=6, d_kv=64,
                                         feed_forward_proj="gated-gelu", tie_word_embeddings=False),
                      76_961_152),
    "bart-base": (lambda: T.BartForConditionalGeneration,
                  lambda: T.BartConfig(vocab_size=50265, d_model=768, encoder_layers=6, decoder_layers=6,
                                       encoder_attention_heads=12, decoder_attention_heads=12, encoder_ffn_dim=3072,
                                       decoder_ffn_dim=3072, max_position_embeddings=1024),
                  139_420_416),
}


@pytest.mark.parametrize("name", list(FULL))
def test_full_size_counts_equal_transformers_on_meta(name):
    model_cls, config, count = FULL[name]
    assert _hf_meta_count(model_cls(), config()) == count
    path = SPECS / f"{name}.yaml"
    assert archdsl.summary(path).total_params == count
    assert archdsl.compile(path, device="meta").num_parameters() == count
    imported = hf.spec_from_config(config())  # the imported spec of the same config
    assert archdsl.summary(imported).total_params == count


def test_transformer_base_compiles_and_summarises():
    path = SPECS / "transformer-base.yaml"
    summary = archdsl.summary(path)
    # one 37000 x 512 table for source, target and output; 6 + 6 post-norm layers
    assert summary.total_params == 37000 * 512 + 6 * 3_152_384 + 6 * 4_204_032 == 63_082_496
    model = archdsl.compile(path, device="meta")
    assert model.num_parameters() == summary.total_params
    assert model.decoder.lm_head.weight is model.encoder.shared.weight
    assert model.decoder.embedding.weight is model.encoder.shared.weight
    assert list(model.state_dict())[0].startswith("encoder.")


# ------------------------------------------------------------------------------- 3. generation
def generation_case(name: str):
    """(the converted model, check(model): greedy tokens equal transformers', with eos or without)."""
    # perturbed further, so that greedy tokens depend on the source (a tiny fresh model repeats one token), but
    # not so far that they stop depending on its padding and positions (BART's did at 0.5, T5 v1.1's at 0.3);
    # transformers' T5 cache needs as many decoder layers as encoder layers
    theirs = _hf_model(name, 0.2, **({"num_decoder_layers": 2} if name == "t5" else {}))
    cfg = theirs.config
    start = getattr(cfg, "decoder_start_token_id", None)
    start = cfg.pad_token_id if start is None else start
    src, src_mask, _, _ = _batch(seed=3)
    # plain greedy: no forced tokens, length or repetition rules (BART's config forces eos at the end)
    theirs.generation_config = T.GenerationConfig(num_beams=1, do_sample=False, decoder_start_token_id=start,
                                                  pad_token_id=cfg.pad_token_id)
    with torch.no_grad():
        plain = theirs.generate(input_ids=src, attention_mask=src_mask, max_new_tokens=16)
        assert plain.shape == (3, 17)
        assert len({tuple(row) for row in plain[:, 1:].tolist()}) > 1  # the source matters
        eos = int(plain[0, 5])  # a token the first row emits mid-way: rows stop, finished rows are padded
        theirs.generation_config.eos_token_id = eos
        stopped = theirs.generate(input_ids=src, attention_mask=src_mask, max_new_tokens=16)

    def check(ours):
        for eos_id, expected in ((None, plain), (eos, stopped)):
            got = ours.generate(src, 16, attention_mask=src_mask, decoder_start_token_id=start, eos_token_id=eos_id,
                                pad_token_id=cfg.pad_token_id)
            assert torch.equal(got, expected), f"eos {eos_id}"
    return hf.from_hf(theirs), check


@pytest.mark.parametrize("name", ["t5", "t5-v1_1", "bart"])
def test_greedy_generation_matches_transformers(name):
    """Greedy tokens equal transformers' generate for a right-padded source, without eos and with one
    that stops rows early (finished rows padded)."""
    ours, check = generation_case(name)
    check(ours)


def test_generate_encodes_once_and_projects_the_memory_once(pairs, monkeypatch):
    ours = pairs["t5"][1]
    calls = {"encoder": 0, "memory_kv": 0}
    encoder_forward = ours.encoder.block.forward

    def spy_encoder(*args, **kwargs):
        calls["encoder"] += 1
        return encoder_forward(*args, **kwargs)

    memory_kv = CrossAttention.memory_kv

    def spy_kv(self, memory):
        calls["memory_kv"] += 1
        return memory_kv(self, memory)

    monkeypatch.setattr(ours.encoder.block, "forward", spy_encoder)
    monkeypatch.setattr(CrossAttention, "memory_kv", spy_kv)
    src, src_mask, _, _ = _batch()
    out = ours.generate(src, 12, attention_mask=src_mask, decoder_start_token_id=0)
    assert out.shape == (3, 13)
    assert calls == {"encoder": 1, "memory_kv": 3}  # one encoder pass; 3 decoder layers' cross k/v, once each


def _incremental(model, src, src_mask, tgt, tgt_mask=None, prefill=1, chunks=(1, 1, 2, 1, 3)):
    cache = model.new_cache(tgt.shape[0], tgt.shape[1])
    out, start, i = [], 0, 0
    while start < tgt.shape[1]:
        size = prefill if start == 0 else chunks[i % len(chunks)]
        i += start > 0
        end = min(tgt.shape[1], start + size)
        mask = None if tgt_mask is None else tgt_mask[:, :end]
        first = start == 0  # the encoder runs on the first call only; later calls pass no source
        out.append(model(src if first else None, src_mask if first else None, decoder_tokens=tgt[:, start:end],
                         decoder_attention_mask=mask, cache=cache))
        start = end
    assert cache.length == tgt.shape[1] and len(cache.memory) == 1
    return torch.cat(out, dim=1)


TINY_SPECS = {
    "t5-small": dict(vocab=VOCAB, d_model=32, heads=4, head_dim=8, layers=2, ffn=64, buckets=8, max_distance=20),
    "t5-v1_1-small": dict(vocab=VOCAB, d_model=32, heads=4, head_dim=8, layers=2, ffn=48, buckets=8, max_distance=20),
    "bart-base": dict(vocab=VOCAB, d_model=32, heads=4, layers=2, ffn=64, context=32),
    "transformer-base": dict(vocab=VOCAB, d_model=32, heads=4, layers=2, ffn=64),
}


def incremental_case(name: str):
    """(the spec file at tiny sizes, every parameter random, check(model): decoding through the cache
    gives the full decoder's logits, and generate the naive loop's tokens, both from the unbroken model)."""
    model = context_weights(archdsl.compile(SPECS / f"{name}.yaml", overrides=TINY_SPECS[name], seed=0).eval())
    src, src_mask, tgt, tgt_mask = _batch(seed=5)
    tgt = torch.cat([tgt, tgt[:, :6]], dim=1)  # 13 decoder positions
    with torch.no_grad():
        full = model(src, src_mask, decoder_tokens=tgt)
        seq = torch.zeros(3, 1, dtype=torch.long)
        for _ in range(10):  # the naive loop: re-run the whole decoder each step
            seq = torch.cat([seq, model(src, src_mask, decoder_tokens=seq)[:, -1].argmax(-1, keepdim=True)], dim=1)

    @torch.no_grad()
    def check(model):
        for prefill in (1, 5):
            step = _incremental(model, src, src_mask, tgt, prefill=prefill)
            assert (step - full).abs().max().item() <= 1e-5, f"prefill {prefill}"
        assert torch.equal(model.generate(src, 10, attention_mask=src_mask, decoder_start_token_id=0), seq)
    return model, check


@pytest.mark.parametrize("name", list(TINY_SPECS))
def test_incremental_decoding_equals_the_full_decoder(name):
    """Cached decoding of an encoder-decoder equals the full decoder, and generate the naive loop."""
    model, check = incremental_case(name)
    check(model)


# ---------------------------------------------------------------- 4. relative position bias (T5)
@pytest.mark.parametrize("bidirectional", [True, False])
def test_bucketing_equals_t5(bidirectional):
    from transformers.models.t5.modeling_t5 import T5Attention

    distance = torch.arange(-300, 300)[None, :] - torch.arange(0, 5)[:, None]
    for buckets, max_distance in ((32, 128), (8, 20), (6, 9)):
        expected = T5Attention._relative_position_bucket(distance, bidirectional, buckets, max_distance)
        assert torch.equal(relative_position_bucket(distance, bidirectional, buckets, max_distance), expected)


def test_relative_bias_reaches_sdpa_as_one_float_mask_per_forward(monkeypatch):
    model = archdsl.compile(SPECS / "t5-small.yaml", overrides=TINY_SPECS["t5-small"], seed=0)
    calls, sdpa = [], F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, is_causal=False, **kwargs):
        calls.append((attn_mask, is_causal))
        return sdpa(q, k, v, attn_mask=attn_mask, is_causal=is_causal, **kwargs)

    monkeypatch.setattr(attention_module.F, "scaled_dot_product_attention", spy)
    src, _, tgt, _ = _batch()
    logits = model(src, decoder_tokens=tgt)
    self_calls = calls[:2] + calls[2::2][1:]  # encoder layers, then decoder self-attention (cross interleaved)
    assert len(calls) == 2 + 2 * 2
    for mask, is_causal in self_calls:
        assert mask is not None and mask.is_floating_point() and not is_causal and mask.shape[1] == 4
    assert calls[0][0] is calls[1][0]  # built once, shared by the layers it governs
    logits.sum().backward()
    grads = [m.weight.grad for m in model.modules() if isinstance(m, RelativePositionBias)]
    assert len(grads) == 2 and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_geglu_is_t5_v1_1s_gelu_new():
    from transformers.activations import ACT2FN

    from archdsl.blocks.feedforward import ACTIVATIONS

    x = torch.linspace(-6, 6, 1001)
    assert torch.allclose(ACTIVATIONS["geglu"](x), ACT2FN["gelu_new"](x), atol=1e-6)


# ----------------------------------------------------------------------------- 5. language
@pytest.mark.parametrize("positional,message", [
    ({"kind": "relative"}, "needs heads"),
    ({"kind": "relative", "heads": 4, "buckets": 2}, "at least 4 buckets"),
    ({"kind": "relative", "heads": 4, "buckets": 32, "max_distance": 16}, "must exceed half the buckets"),
    ({"kind": "rotary", "buckets": 8}, "kind: relative only"),
    ({"kind": "rotary", "offset": 2}, "learned and sinusoidal positions only"),
])
def test_positional_field_errors(positional, message):
    spec = {"name": "x", "model": {"width": 32, "layers": [{"embedding": 10}, {"positional": positional},
                                                            {"attention": {"heads": 4}}]}}
    with pytest.raises(archdsl.SpecError, match=message):
        archdsl.load_spec(spec)


def test_relative_bias_heads_must_match_the_attention():
    spec = {"name": "x", "model": {"width": 32, "layers": [
        {"embedding": 10}, {"positional": {"kind": "relative", "heads": 2}}, {"attention": {"heads": 4}}]}}
    with pytest.raises(archdsl.SpecError, match="relative position bias .* 2 heads"):
        archdsl.graph(spec)


def test_import_hf_writes_a_readable_graph_spec(pairs):
    text = hf.spec_yaml_from_config(pairs["t5"][0].config)
    assert "graph:" in text and "cross: encoder" in text and "kind: relative" in text
    assert "scale: ${d_model ** -0.5}" in text.replace('"', "")
    spec = archdsl.load_spec(text)
    assert archdsl.summary(spec).total_params == pairs["t5"][1].num_parameters()


def test_from_pretrained_reads_a_saved_checkpoint(pairs, tmp_path):
    """A checkpoint saved by transformers loads into a model with transformers' logits."""
    theirs, _ = pairs["bart"]
    theirs.save_pretrained(tmp_path)
    loaded = hf.from_pretrained(tmp_path)
    src, src_mask, tgt, tgt_mask = _batch()
    with torch.no_grad():
        expected = theirs(input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt,
                          decoder_attention_mask=tgt_mask).logits
        _assert_close(loaded(src, src_mask, decoder_tokens=tgt, decoder_attention_mask=tgt_mask), expected,
                      tgt_mask.bool())


def test_other_encoder_decoders_are_refused_by_name():
    """An encoder-decoder laid out as neither T5 nor BART (LED's long-document attention) is refused as such;
    Pegasus, laid out as BART, converts (tests/test_hf_seq2seq_layouts.py)."""
    cfg = T.LEDConfig(vocab_size=VOCAB, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                      decoder_attention_heads=2, encoder_ffn_dim=48, decoder_ffn_dim=48, attention_window=[4])
    with pytest.raises(archdsl.SpecError, match="encoder-decoder"):
        hf.spec_from_config(cfg)


# ------------------------------------------------------------------------------ 6. training
def test_tiny_transformer_base_learns_a_copy_task():
    torch.manual_seed(0)
    vocab, length = 16, 8
    model = archdsl.compile(SPECS / "transformer-base.yaml", seed=0,
                            overrides=dict(vocab=vocab, d_model=32, heads=4, layers=2, ffn=64, dropout=0.0))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(200):
        src = torch.randint(2, vocab, (16, length), generator=g)
        tgt = torch.cat([torch.zeros(16, 1, dtype=torch.long), src], dim=1)  # 0 starts the decoder
        logits = model(src, decoder_tokens=tgt[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, vocab), tgt[:, 1:].reshape(-1))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[0] > 0.9 * math.log(vocab - 2)
    assert sum(losses[-10:]) / 10 < 0.2 * losses[0]
    model.eval()
    src = torch.randint(2, vocab, (4, length), generator=g)
    out = model.generate(src, length, decoder_start_token_id=0)
    assert (out[:, 1:] == src).float().mean() > 0.8  # it copies the source after 200 steps


# ------------------------------------------------------------------------------ negative controls
def control_cases():
    """The checks above, for tests/controls.py."""
    tolerance = f"<= {TOL:g} x max(1, max |logit|)"
    for name in CONFIGS:
        yield Case(test_logits_match_transformers_with_padding_on_both_sides, name,
                   functools.partial(logits_case, name), tolerance)
    for name in ["t5", "t5-v1_1", "bart"]:
        yield Case(test_greedy_generation_matches_transformers, name, functools.partial(generation_case, name),
                   "equal tokens")
    for name in TINY_SPECS:
        yield Case(test_incremental_decoding_equals_the_full_decoder, name, functools.partial(incremental_case, name),
                   "<= 1e-05; equal tokens")
