"""A decoder used alone: `with_memory`, `memories`, and the importer of BartForCausalLM and the classes
like it (archdsl/interop/hf_decoder.py).

Transformers' decoders run each cross-attention block, its norm included, only when given encoder
states; `with_memory: {needs: NAME, body: [...]}` is that block, and `memories: {NAME: WIDTH}` the
states the model is given when called. The imported models must give transformers' logits both ways:
as a causal LM (no states) and with an encoder's states and their padding.
"""
from __future__ import annotations

import json

import sys
import warnings

import pytest
import torch

import archdsl
from archdsl.compiler import compile_spec
from archdsl.errors import SpecError
from conftest import ROOT, need

T = need("transformers")
from archdsl.interop import hf, hf_decoder  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
import hf_coverage  # noqa: E402

SPEC = """\
archdsl: 1
name: lone-decoder
blocks:
  layer:
    - residual:
        - attention: {heads: 4, causal: true, name: self_attn}
    - layernorm: {name: self_attn_layer_norm}
    - with_memory:
        needs: encoder
        body:
          - residual:
              - attention: {heads: 4, cross: encoder, name: encoder_attn}
          - layernorm: {name: encoder_attn_layer_norm}
    - residual:
        - mlp: {hidden: 96, activation: gelu}
    - layernorm: {name: final_layer_norm}
model:
  width: 64
  memories: {encoder: 48}
  layers:
    - embedding: {vocab: 97}
    - positional: {kind: learned, max_len: 64}
    - repeat: 2
      body: layer
    - lm_head: {vocab: 97, tie: embedding}
"""


def _model(text: str = SPEC, seed: int = 0) -> archdsl.ArchModel:
    torch.manual_seed(seed)
    model = compile_spec(archdsl.load_spec(text)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model


# ---------------------------------------------------------------------------------------- the language
def test_without_the_memory_the_block_is_skipped_whole():
    """With no memory the model equals the same spec without the with_memory block (norm included), with the
    same weights; with one, the cross-attention changes the logits."""
    model = _model()
    plain = compile_spec(archdsl.load_spec(SPEC.replace(SPEC[SPEC.index("    - with_memory:"):
                                                            SPEC.index("    - residual:\n        - mlp")], "")
                                           .replace("  memories: {encoder: 48}\n", ""))).eval()
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all(".with_memory." in k for k in unexpected) and unexpected
    tokens = torch.randint(0, 97, (2, 7), generator=torch.Generator().manual_seed(1))
    memory = torch.randn(2, 5, 48, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        alone, reference = model(tokens), plain(tokens)
        given = model(tokens, memory={"encoder": memory})
    assert torch.equal(alone, reference)
    assert (given - alone).abs().max() > 1e-2


def test_a_padded_memory_is_masked_and_cached_decoding_reads_the_first_calls_memory():
    model = _model()
    tokens = torch.randint(0, 97, (2, 7), generator=torch.Generator().manual_seed(1))
    memory = torch.randn(2, 5, 48, generator=torch.Generator().manual_seed(2))
    padding = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with torch.no_grad():
        full = model(tokens, memory={"encoder": (memory, padding)})
        cut = model(tokens[1:], memory={"encoder": memory[1:, :3]})
        assert torch.allclose(full[1:], cut, atol=1e-5)  # padded memory positions are never attended
        cache = model.new_cache(2, 10)
        first = model(tokens[:, :4], cache=cache, memory={"encoder": (memory, padding)})
        rest = model(tokens[:, 4:], cache=cache)  # the memory stays in the cache
    assert torch.allclose(torch.cat([first, rest], 1), full, atol=1e-5)
    greedy = model.generate(tokens, 5, memory={"encoder": (memory, padding)})
    x = tokens
    with torch.no_grad():
        for _ in range(5):
            x = torch.cat([x, model(x, memory={"encoder": (memory, padding)})[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(greedy, x)


@pytest.mark.parametrize("memory, message", [
    ({"enc": torch.zeros(2, 3, 48)}, "reads no memory 'enc' \\(memories: encoder\\)"),
    ({"encoder": torch.zeros(2, 3, 40)}, "must be states of shape \\(2, length, 48\\)"),
    ({"encoder": torch.zeros(1, 3, 48)}, "must be states of shape \\(2, length, 48\\)"),
    ({"encoder": (torch.zeros(2, 3, 48), torch.ones(2, 4))}, "padding mask of memory 'encoder' must have shape"),
    ([torch.zeros(2, 3, 48)], "memory must be a dict"),
])
def test_a_wrong_memory_is_named(memory, message):
    with pytest.raises((ValueError, TypeError), match=message):
        _model()(torch.zeros(2, 4, dtype=torch.long), memory=memory)


@pytest.mark.parametrize("edit, message", [
    (("  memories: {encoder: 48}", "  memories: {enc: 48}"),
     ":9:16: .*with_memory.needs: 'encoder' is not a memory the model is given \\(memories: enc\\)"),
    (("    - with_memory:\n        needs: encoder\n        body:\n          - residual:\n              - attention: "
      "{heads: 4, cross: encoder, name: encoder_attn}\n          - layernorm: {name: encoder_attn_layer_norm}",
      "    - residual:\n        - attention: {heads: 4, cross: encoder, name: encoder_attn}"),
     ":9:11: .*attention: this reads the memory 'encoder', which the model is given when called, outside a "
     "with_memory"),
    (("          - layernorm: {name: encoder_attn_layer_norm}", "          - linear: {out: 32}"),
     ":8:7: .*with_memory: the body changes the width from 64 to 32"),
    (("        needs: encoder\n", ""), ":8:7: .*with_memory.needs: missing required key 'needs'"),
])
def test_misuse_is_refused_at_file_line(tmp_path, edit, message):
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.replace(*edit))
    assert SPEC.replace(*edit) != SPEC
    with pytest.raises(SpecError, match=message):
        archdsl.load_spec(path)


def test_summary_and_diagram_show_the_block():
    """validate/summary stay torch-free; the diagram draws the block as a cluster saying when it runs."""
    from archdsl.diagram import build_view, to_dot
    from archdsl.ir import build_graph

    spec = archdsl.load_spec(SPEC)
    assert archdsl.summary(spec).total_params == compile_spec(spec, device="meta").num_parameters()
    for detail in ("blocks", "layers", "full"):
        view = build_view(build_graph(spec), detail)
        dot = to_dot(view)
        if detail != "layers":  # the layers view draws each layer as one box
            assert [c.label for c in view.clusters.values() if c.kind == "with_memory"] == ["with encoder"] * (
                1 if detail == "blocks" else 2)
            assert "with encoder" in dot and "skipped without it" in dot


# ---------------------------------------------------------------------------------------- the importer
@pytest.mark.parametrize("model_type", ["bart", "mbart", "pegasus", "blenderbot-small", "bigbird_pegasus", "trocr",
                                        "xglm", "biogpt"])
def test_lone_decoders_import_exactly(model_type):
    """The coverage sweep's check (a left-padded batch, logits within 1e-5 of the largest), and the class
    default's decoder counted at full size: post- and pre-norm, Pegasus' fixed sinusoids, Blenderbot-small's norm
    before the positions, BigBird-Pegasus' 'layernorm_embedding' that runs after the last layer, TrOCR; XGLM, the
    same layers without cross-attention and with fairseq's sinusoids (tensor2tensor's frequencies, from row 2);
    BioGPT's, under biogpt.layers, with an output_projection head."""
    result = hf_coverage.run_one(model_type)
    assert result.status == "exact", result
    cfg = T.CONFIG_MAPPING[model_type]()  # the class default as a decoder alone, at full size, on meta
    cfg.is_decoder, cfg.is_encoder_decoder = True, False
    spec = hf.spec_from_config(cfg)  # its parameter count checked against transformers' on meta
    if model_type in ("xglm", "biogpt"):  # BART's layers without cross-attention (XGLM: fairseq's sinusoids)
        assert not spec.model.memories and ("spacing: tensor2tensor" in spec.to_yaml()) == (model_type == "xglm")
        return
    assert spec.model.memories == {"encoder": hf_decoder._meta(cfg).model.decoder.layers[0].encoder_attn.k_proj
                                   .in_features}


def test_encoder_states_give_transformers_logits():
    """With encoder states of another width (TrOCR's cross_attention_hidden_size) and their padding, the
    imported model gives transformers' logits; from_hf checks both ways by default."""
    cfg = hf_coverage.shrink(T.CONFIG_MAPPING["trocr"])
    cfg.cross_attention_hidden_size = 40
    theirs = hf_coverage.random_model(cfg).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = hf.from_hf(theirs)
    assert ours.graph.graph["memories"] == {"encoder": 40}
    tokens = torch.randint(3, 97, (2, 6), generator=torch.Generator().manual_seed(0))
    states = torch.randn(2, 5, 40, generator=torch.Generator().manual_seed(1))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    with torch.no_grad():
        expected = theirs(input_ids=tokens, encoder_hidden_states=states, encoder_attention_mask=mask,
                          use_cache=False).logits
        got = ours(tokens, memory={"encoder": (states, mask)})
    assert (got - expected).abs().max() <= 1e-5 * max(1.0, expected.abs().max().item())


def test_the_written_spec_reads_like_the_checkpoint():
    text = hf.spec_yaml_from_config(hf_coverage.random_model(hf_coverage.shrink(T.CONFIG_MAPPING["bart"])).config)
    assert "memories:" in text and "with_memory:" in text and "needs: encoder" in text
    for name in ("embed_tokens", "embed_positions", "layernorm_embedding", "self_attn_layer_norm", "encoder_attn",
                 "encoder_attn_layer_norm", "final_layer_norm"):
        assert f"name: {name}" in text, name
    assert archdsl.load_spec(text).model.memories == {"encoder": 64}


def test_from_pretrained_reads_a_saved_checkpoint(tmp_path):
    theirs = hf_coverage.random_model(hf_coverage.shrink(T.CONFIG_MAPPING["mbart"])).eval()
    theirs.save_pretrained(tmp_path)
    ours = hf.from_pretrained(tmp_path)
    tokens = torch.randint(3, 97, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (ours(tokens) - theirs(tokens, use_cache=False).logits).abs().max() <= 1e-5


def test_whispers_keys_without_bias_import_exactly_with_and_without_the_encoder():
    """Whisper's decoder: q and v projections with a bias, k without (attention key_bias: false, self and cross),
    the encoder's states given as encoder_outputs; the same logits with and without them, and the same count."""
    theirs = hf_coverage.random_model(hf_coverage.shrink(T.CONFIG_MAPPING["whisper"])).eval()
    text = hf.spec_yaml_from_config(theirs.config)
    assert text.count("key_bias: false") == 2
    ours = hf.from_hf(theirs)  # its own check runs both ways (hf_decoder._largest_difference)
    assert ours.num_parameters() == sum(p.numel() for p in theirs.parameters())
    tokens = torch.randint(3, 61, (2, 6), generator=torch.Generator().manual_seed(0))
    states = torch.randn(2, 5, theirs.config.d_model, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = theirs(input_ids=tokens, encoder_outputs=(states,), use_cache=False).logits
        assert (ours(tokens, memory={"encoder": states}) - expected).abs().max() <= 1e-5


def test_attention_without_a_key_bias_is_the_model_with_a_zero_key_bias():
    """key_bias: false: the fused projection's bias covers q and v only; its output is that of a full bias with zeros
    for the keys, and the parameter count is the spec summary's."""
    spec = {"name": "t", "model": {"width": 16, "layers": [{"embedding": 11}, {"attention": {
        "heads": 2, "kv_heads": 1, "key_bias": False}}, {"lm_head": 11}]}}
    model = compile_spec(archdsl.load_spec(json.dumps(spec)))
    attn = next(m for m in model.modules() if hasattr(m, "qkv"))
    assert tuple(attn.qkv.bias.shape) == (16 + 8,) and archdsl.summary(archdsl.load_spec(json.dumps(spec))).total_params == \
        model.num_parameters()
    with torch.no_grad():
        attn.qkv.bias.normal_()
        x = torch.randn(3, 16)
        full = torch.cat([attn.qkv.bias[:16], torch.zeros(8), attn.qkv.bias[16:]])
        assert torch.allclose(attn.qkv(x), x @ attn.qkv.weight.T + full)


def test_a_tensor_with_no_role_is_named():
    theirs = hf_coverage.random_model(hf_coverage.shrink(T.CONFIG_MAPPING["bart"]))
    d = hf_decoder.describe(theirs)
    model = compile_spec(archdsl.load_spec(hf_decoder.spec_yaml(d)))
    tensors = hf_decoder._tensors(theirs)
    tensors["model.decoder.extra.weight"] = lambda: torch.zeros(1)
    with pytest.raises(ValueError, match="tensors the spec does not use: model.decoder.extra.weight"):
        hf_decoder.map_weights(d, tensors, model)


def test_the_spec_and_a_saved_model_keep_the_memory(tmp_path):
    """spec.to_yaml() keeps memories and with_memory; a saved model loads back giving the same logits both ways."""
    model = _model()
    assert archdsl.load_spec(model.spec.to_yaml()) == model.spec
    model.save(tmp_path / "m.safetensors")
    again = archdsl.load_model(tmp_path / "m.safetensors")
    tokens = torch.randint(0, 97, (2, 7), generator=torch.Generator().manual_seed(1))
    memory = torch.randn(2, 5, 48, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(again(tokens), model(tokens))
        assert torch.equal(again(tokens, memory={"encoder": memory}), model(tokens, memory={"encoder": memory}))
