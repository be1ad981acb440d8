"""Encoder-decoders import by their layout, read from the model (archdsl/interop/hf_seq2seq.py).

The layout (T5's blocks of sub-layers or BART's layers) is found from the transformers model's tensor
names, not its model_type, so mT5, mBART, PLBart, Blenderbot, Marian and Pegasus convert through the
same code as T5 and BART. What their configs do not state is read from a small random model of the
class: pre- or post-norm (its encoder layer run against both), final and embedding norms, the
embedding scale, the position table's offset or its being Marian's fixed [sin | cos] table, and whether
T5-style heads scale their input. That small model is then checked against its own description, so a
class whose code does something else (Blenderbot-small norms the decoder's embeddings before adding the
positions) is described so (the description that gives the small model's logits, of the places the tree
allows) or refused instead of converted differently.
"""
from __future__ import annotations

import sys
import warnings

import pytest

import archdsl

from conftest import ROOT, need

T = need("transformers")
import torch  # noqa: E402

from archdsl.blocks.context import ForwardContext  # noqa: E402
from archdsl.blocks.embedding import SinusoidalPositional  # noqa: E402
from archdsl.errors import SpecError  # noqa: E402
from archdsl.interop import hf  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
import hf_coverage  # noqa: E402


@pytest.mark.parametrize("model_type", ["mt5", "mbart", "plbart", "blenderbot", "blenderbot-small", "marian",
                                        "pegasus", "m2m_100", "umt5", "mvp", "fsmt",
                                        "switch_transformers"])
def test_seq2seq_layouts_import_exactly(model_type):
    """Logits of a random-weight tiny model on a padded source and target equal transformers' (the coverage
    harness's seq2seq sweep), and the class-default config verifies at full size."""
    result = hf_coverage.run_one(model_type, "seq2seq")
    assert result.status == "exact", result
    assert result.full_size == "verified", result


@pytest.mark.parametrize("model_type, extra, match", [
    ("switch_transformers", {"router_ignore_padding_tokens": True}, "leaves padding out of capacity"),
    ("mvp", {"use_prompt": True}, "no role for: .*self_attn_prompt"),  # MVP's layers take prompts
])
def test_what_a_layout_cannot_express_is_refused_by_name(model_type, extra, match):
    config = hf_coverage.shrink(T.CONFIG_MAPPING[model_type])
    for key, value in extra.items():
        setattr(config, key, value)
    with pytest.raises(SpecError, match=match):
        hf.spec_from_config(config)


def test_sinusoidal_halves_is_marians_table():
    """positional: {kind: sinusoidal, halves: true} computes Marian's fixed table (sines, then cosines), to
    float32 precision over its 512 positions, for even and odd widths."""
    from transformers.models.marian.modeling_marian import MarianSinusoidalPositionalEmbedding

    for dim in (32, 33):
        theirs = MarianSinusoidalPositionalEmbedding(512, dim)
        table = theirs.create_weight() if hasattr(theirs, "create_weight") else theirs.weight
        ctx = ForwardContext(positions=torch.arange(512).unsqueeze(0), key_padding=None, token_type_ids=None,
                             cache=None)
        ours = SinusoidalPositional(dim, halves=True)(torch.zeros(1, 512, dim), ctx)[0]
        assert (ours - table).abs().max().item() <= 1e-6


def test_sinusoidal_tensor2tensor_is_fairseqs_table():
    """spacing: tensor2tensor with offset 2 computes the table of XGLM and M2M-100 (frequencies 10000^(-i/(d/2 - 1)),
    position p at row p + 2) bit for bit, in float32 as they compute it, over 4096 positions, even and odd widths."""
    from transformers.models.m2m_100.modeling_m2m_100 import M2M100SinusoidalPositionalEmbedding
    from transformers.models.xglm.modeling_xglm import XGLMSinusoidalPositionalEmbedding

    positions = torch.arange(4096).unsqueeze(0)
    ctx = ForwardContext(positions=positions, key_padding=None, token_type_ids=None, cache=None)
    for dim in (64, 33):
        ours = SinusoidalPositional(dim, halves=True, spacing="tensor2tensor", offset=2)(torch.zeros(1, 4096, dim), ctx)[0]
        assert torch.equal(ours, XGLMSinusoidalPositionalEmbedding(4096, dim, padding_idx=1)(positions)[0])
        m2m = M2M100SinusoidalPositionalEmbedding(4096, dim, padding_idx=1)
        assert torch.equal(ours, m2m(input_ids=torch.full((1, 4096), 5))[0])  # real tokens count from row 2
    with pytest.raises(SpecError, match="spacing applies to kind: sinusoidal only"):
        archdsl.load_spec({"name": "x", "model": {"width": 8, "layers": [
            {"embedding": {"vocab": 10}}, {"positional": {"kind": "rotary", "spacing": "tensor2tensor"}}]}})
    with pytest.raises(SpecError, match="offset applies to learned and sinusoidal positions only"):
        archdsl.load_spec({"name": "x", "model": {"width": 8, "layers": [
            {"embedding": {"vocab": 10}}, {"positional": {"kind": "rotary", "offset": 2}}]}})


def test_marian_from_pretrained_reads_a_saved_checkpoint(tmp_path):
    """save_pretrained of a tiny Marian model (its fixed table computed, not stored as a weight of archdsl's)
    loads into the weights from_hf gives."""
    cfg = hf_coverage.shrink(T.CONFIG_MAPPING["marian"])
    reference = hf_coverage.random_model(cfg, task="seq2seq")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference.save_pretrained(tmp_path)
    loaded = hf.from_pretrained(tmp_path)
    expected = hf.from_hf(reference, verify=True)
    for name, tensor in expected.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def _imports_exactly(model_type: str, sizes: dict):
    """The shrunk class default with `sizes` set: a random model's logits on the harness's padded source and target
    equal the import's, and its trainable parameter count. Returns the config."""
    config = hf_coverage.shrink(T.CONFIG_MAPPING[model_type])
    for key, value in sizes.items():
        setattr(config, key, value)
    model = hf_coverage.random_model(config, task="seq2seq")
    ours = hf.from_hf(model)
    assert hf_coverage.max_diff(model, hf_coverage.hf_logits(model), ours) < 1e-5
    assert ours.num_parameters() == sum(p.numel() for p in model.parameters() if p.requires_grad)
    return config


@pytest.mark.parametrize("sizes", [{"src_vocab_size": 120, "tgt_vocab_size": 150},
                                   {"tie_word_embeddings": True}])
def test_fsmt_tables_import_exactly(sizes):
    """FSMT keeps a source and a target table (of different sizes here) and its head apart
    (model.decoder.output_projection, which its get_output_embeddings does not name): the spec has two
    embeddings, vocab and target_vocab; tied, the encoder's table is the one table."""
    _imports_exactly("fsmt", sizes)


@pytest.mark.parametrize("sizes", [{"expert_capacity": 1}, {"expert_capacity": 2, "num_layers": 5,
                                                           "encoder_sparse_step": 3, "decoder_sparse_step": 1}])
def test_switch_transformers_capacity_and_sparse_layers_import_exactly(sizes):
    """Switch Transformers' experts (top-1, a float32 router, no renormalisation) in the layers its sparse steps
    pick (read from its module tree: a repeat with a pattern of dense and sparse blocks), with a capacity small
    enough that tokens of the 8-token sequences overflow it (moe: {capacity}): the same logits."""
    config = _imports_exactly("switch_transformers", sizes)
    text = hf.spec_yaml_from_config(config)
    assert f"capacity: {sizes['expert_capacity']}" in text and "pattern: [" in text
