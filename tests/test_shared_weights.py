"""repeat: {shared: true}: every copy of a layer uses one set of weights (ALBERT, Universal Transformers).

The copies stay separate modules (their own names, their own cache entries when decoding); only the
Parameter objects are one. Checked: the parameters are the same objects, counted once in the model, the
summary and the budget; the output is the first layer applied `times` times; gradients from every use add
up in the one set; decoding through the cache equals the full forward; meta + materialize, dtype casts and
a saved file keep the sharing; a pattern shares one set per pattern entry.
"""
from __future__ import annotations

import textwrap

import torch

import archdsl
from test_kinds import assert_cached_decoding_equals_full_forward

SPEC = textwrap.dedent("""\
    name: albert-like
    vars: {layers: 4}
    blocks:
      layer:
        - residual: [rmsnorm, {attention: {heads: 4, causal: true}}]
        - residual: [rmsnorm, {mlp: {hidden: 64, activation: swiglu}}]
    model:
      width: 32
      layers:
        - embedding: {vocab: 50}
        - positional: rotary
        - repeat: $layers
          name: layers
          body: layer
          shared: true
        - rmsnorm
        - lm_head: 50
    """)


def _perturbed(model: archdsl.ArchModel) -> archdsl.ArchModel:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def test_copies_share_one_set_of_parameters_counted_once():
    shared = archdsl.compile(SPEC, seed=0)
    unshared = archdsl.compile(SPEC.replace("shared: true", "shared: false"), seed=0)
    one_layer = sum(p.numel() for p in unshared.layers.get_submodule("0").parameters())
    assert shared.num_parameters() == unshared.num_parameters() - 3 * one_layer
    assert archdsl.summary(SPEC).total_params == shared.num_parameters()
    for name, p in shared.layers.get_submodule("0").named_parameters():
        for i in (1, 2, 3):
            assert shared.layers.get_submodule(str(i)).get_parameter(name) is p, (i, name)
    assert "× 4, shared weights" in str(archdsl.summary(SPEC))
    assert "shared weights" in archdsl.render(SPEC)


def test_the_output_is_the_first_layer_applied_each_time_and_gradients_add_up():
    model = _perturbed(archdsl.compile(SPEC, seed=0))
    reference = archdsl.compile(SPEC.replace("shared: true", "shared: false"), seed=0)
    reference.load_state_dict({k: v for k, v in model.state_dict().items()})  # every copy gets layer 0's values
    tokens = torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(model(tokens), reference(tokens), rtol=0, atol=0)
    model(tokens).square().mean().backward()
    reference(tokens).square().mean().backward()
    for name, p in model.layers.get_submodule("0").named_parameters():
        total = sum(reference.layers.get_submodule(str(i)).get_parameter(name).grad for i in range(4))
        torch.testing.assert_close(p.grad, total, rtol=1e-5, atol=1e-7)


def test_decoding_gives_each_copy_its_own_cache():
    assert_cached_decoding_equals_full_forward(_perturbed(archdsl.compile(SPEC, seed=0)))


def test_sharing_survives_meta_materialize_casts_and_a_saved_file(tmp_path):
    meta = archdsl.compile(SPEC, device="meta").materialize("cpu")
    bf16 = archdsl.compile(SPEC, seed=0, dtype=torch.bfloat16)
    for model in (meta, bf16):
        assert model.layers.get_submodule("3").get_parameter("residual_0.attention.qkv.weight") is \
            model.layers.get_submodule("0").get_parameter("residual_0.attention.qkv.weight")
    model = _perturbed(archdsl.compile(SPEC, seed=0))
    model.save(tmp_path / "m.safetensors")
    loaded = archdsl.load_model(tmp_path / "m.safetensors")
    assert loaded.num_parameters() == model.num_parameters()
    tokens = torch.tensor([[1, 2, 3, 4]])
    assert torch.equal(loaded(tokens), model(tokens))


def test_a_pattern_shares_one_set_per_entry():
    spec = SPEC.replace("body: layer", "pattern: [layer, wide]").replace("vars: {layers: 4}", "vars: {layers: 6}")
    spec = spec.replace("model:\n", "  wide:\n    - residual: [rmsnorm, {mlp: {hidden: 96, activation: gelu}}]\nmodel:\n")
    model = archdsl.compile(spec, seed=0)
    layers = model.layers
    assert layers.get_submodule("2").get_parameter("residual_0.attention.qkv.weight") is \
        layers.get_submodule("0").get_parameter("residual_0.attention.qkv.weight")
    assert layers.get_submodule("5").get_parameter("residual.mlp.up.weight") is \
        layers.get_submodule("1").get_parameter("residual.mlp.up.weight")
    assert layers.get_submodule("1").get_parameter("residual.mlp.up.weight") is not \
        layers.get_submodule("0").get_parameter("residual_1.mlp.up.weight")
    assert archdsl.summary(spec).total_params == model.num_parameters()
