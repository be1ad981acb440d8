"""Vision: patch embedding, class token, 1-D and 2-D learned positions, the classifier head, and
parity with Hugging Face ViTModel / ViTForImageClassification on tiny random-weight models."""
from __future__ import annotations

import functools

import pytest
import torch

import archdsl
from archdsl.cli import main
from archdsl.errors import SpecError
from conftest import ROOT
from controls import Case

VIT = ROOT / "specs" / "vit-base-16.yaml"
TINY = dict(image_size=32, patch_size=8, d_model=32, heads=4, layers=2, ffn=37)
TOL = 0.0  # bit-identical to transformers: the same operations in the same order (float32)


def tiny_hf_config(**extra):
    from transformers import ViTConfig

    args = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, image_size=32,
                patch_size=8, num_channels=3, initializer_range=0.5, layer_norm_eps=1e-12)
    return ViTConfig(**{**args, **extra})


def pixels(batch=2, size=32, channels=3, seed=0):
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


def max_diff(a, b) -> float:
    return (a.float() - b.float()).abs().max().item()


def hf_vit(cls_name: str, seed: int, **extra):
    """A transformers ViT of the tiny config with every parameter random: matrices N(0, 0.5) (the
    config's initializer_range), and every vector (biases, LayerNorm scales and shifts, the class
    token) moved by N(0, 0.1), so that a swapped bias or norm shows."""
    import transformers

    torch.manual_seed(seed)
    extra = dict(extra)
    kwargs = {"add_pooling_layer": extra.pop("add_pooling_layer")} if "add_pooling_layer" in extra else {}
    model = getattr(transformers, cls_name)(tiny_hf_config(**extra), **kwargs).eval()
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def _output(out):
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else getattr(out, "logits", out)


def parity_case(cls_name: str, seed: int, batch: int, spec=None, overrides=None, **extra):
    """(archdsl's model of transformers' ViT (converted, or `spec` loaded with its weights), check(model):
    hidden states (and the pooled output) or class logits equal transformers')."""
    from archdsl.interop import hf_vision

    reference = hf_vit(cls_name, seed, **extra)
    x = pixels(batch)
    with torch.no_grad():
        theirs = reference(pixel_values=x)
    assert _output(theirs).abs().max() > 0.5  # the comparison is not between near-zero tensors

    @torch.no_grad()
    def check(model):
        ours = model(x)
        assert _output(ours).shape == _output(theirs).shape
        assert max_diff(_output(ours), _output(theirs)) <= TOL
        if getattr(theirs, "pooler_output", None) is not None:
            assert max_diff(ours.pooler_output, theirs.pooler_output) <= TOL
    model = hf_vision.from_hf(reference, spec=spec, overrides=overrides) if spec else hf_vision.from_hf(reference)
    assert model.num_parameters() == sum(p.numel() for p in reference.parameters())
    return model, check


# ------------------------------------------------------------------------------------ parity
def test_parity_with_vit_model_hidden_states_and_pooler():
    """Hidden states and pooled output equal transformers' ViTModel on its (perturbed) weights."""
    model, check = parity_case("ViTModel", 0, 2)
    assert model(pixels()).last_hidden_state.shape == (2, 17, 32)  # 16 patches + [CLS]
    check(model)


def test_parity_with_vit_for_image_classification_logits():
    """Class logits equal transformers' ViTForImageClassification."""
    model, check = parity_case("ViTForImageClassification", 1, 3, num_labels=5)
    assert model.graph.graph["output"] == "classes" and not model.returns_logits
    assert model(pixels(3)).shape == (3, 5)
    check(model)


def test_library_spec_takes_hf_weights_and_matches():
    """specs/vit-base-16.yaml at tiny sizes is the same architecture as a tiny ViTModel."""
    model, check = parity_case("ViTModel", 2, 1, spec=VIT, overrides=TINY)  # verify=True: raises if outputs differ
    check(model)


def test_transformers_4_checkpoint_names_are_mapped():
    """Checkpoints on disk (google/vit-base-patch16-224) use the older encoder.layer.i.attention.attention.query names."""
    from archdsl.interop import hf_vision
    from archdsl.interop.hf import _assign

    hf = hf_vit("ViTForImageClassification", 3, num_labels=4)
    old = {}
    for key, tensor in hf.state_dict().items():
        for new, was in ((".layers.", ".encoder.layer."), ("attention.q_proj", "attention.attention.query"),
                         ("attention.k_proj", "attention.attention.key"), ("attention.v_proj", "attention.attention.value"),
                         ("attention.o_proj", "attention.output.dense"), ("mlp.fc1", "intermediate.dense"),
                         ("mlp.fc2", "output.dense")):
            key = key.replace(new, was)
        old[key] = tensor
    assert "vit.encoder.layer.1.attention.attention.query.weight" in old
    model = archdsl.compile(hf_vision.spec_from_config(hf.config, classifier=True), seed=0).eval()
    _assign(model, hf_vision._Mapper(old, model).run())
    x = pixels(2)
    with torch.no_grad():
        assert max_diff(model(x), hf(pixel_values=x).logits) <= TOL


def test_spec_from_config_and_unsupported_configs():
    from archdsl.interop import hf_vision

    text = hf_vision.spec_yaml_from_config(tiny_hf_config(hidden_dropout_prob=0.1, qkv_bias=False))
    spec = archdsl.load_spec(text)
    assert spec.model.input == "image"
    assert "dropout: $dropout" in text and "bias: false, out_bias: true" in text
    classifier = hf_vision.spec_from_config(tiny_hf_config(num_labels=7, architectures=["ViTForImageClassification"]))
    assert classifier.model.layers[-1].kind == "classifier" and classifier.model.layers[-1].classes == 7
    with pytest.raises(SpecError, match="non-square"):
        hf_vision.spec_from_config(tiny_hf_config(image_size=[32, 16]))
    with pytest.raises(SpecError, match="pooler of width"):
        hf_vision.spec_from_config(tiny_hf_config(pooler_output_size=16))


def test_qkv_without_bias_converts():
    """A ViT without query/key/value biases and without a pooler converts and matches."""
    model, check = parity_case("ViTModel", 4, 1, qkv_bias=False, add_pooling_layer=False)  # from_hf verifies
    assert not model.has_pooler
    check(model)


# ------------------------------------------------------------------------------------ sizes
def test_full_size_count_equals_vit_base_patch16_224():
    from transformers import ViTConfig, ViTModel

    assert archdsl.summary(VIT).total_params == 86_389_248
    assert archdsl.compile(VIT, device="meta").num_parameters() == 86_389_248
    with torch.device("meta"):
        hf = ViTModel(ViTConfig())  # the vit-base-patch16-224 defaults
    assert sum(p.numel() for p in hf.parameters()) == 86_389_248


OPTION_SPECS = [  # (width, layers): 2-D positions + a mean classifier; no class token, 1 channel; a narrower dim
    (32, ["patch_embedding: {image_size: 32, patch_size: 8, positions: learned_2d}",
          "residual: [layernorm, {attention: {heads: 4}}]", "classifier: {classes: 10, reduce: mean, bias: false}"]),
    (16, ["patch_embedding: {image_size: 28, patch_size: 7, channels: 1, class_token: false, bias: false}",
          "residual: [layernorm, {attention: {heads: 4}}]"]),
    (32, ["patch_embedding: {image_size: 32, patch_size: 4, dim: 24}", "linear: 32",
          "residual: [layernorm, {attention: {heads: 4}}]"]),
]


@pytest.mark.parametrize("width,layers", OPTION_SPECS, ids=["learned_2d", "one_channel", "dim"])
def test_built_counts_equal_the_summary_for_every_option(width, layers):
    text = f"name: t\nmodel:\n  input: image\n  width: {width}\n  layers:\n" + "".join(f"    - {n}\n" for n in layers)
    model = archdsl.compile(text, seed=0).eval()
    assert model.num_parameters() == archdsl.summary(text).total_params
    spec = archdsl.load_spec(text)
    assert archdsl.load_spec(spec.to_yaml()) == spec  # input: image survives the round trip
    first = spec.model.layers[0]
    with torch.no_grad():
        out = model(pixels(2, first.image_size, first.channels))
    assert out.shape[0] == 2 and torch.isfinite(out).all()


# ------------------------------------------------------------------------------------ behaviour
def test_class_token_positions_and_shapes():
    model = archdsl.compile(VIT, overrides=TINY, seed=0).eval()
    g = model.graph
    assert g.graph["inputs"] == ["image"]
    assert g.nodes["image_input"]["out_shape"] == ("batch", "channels", "height", "width")
    assert g.nodes["patch_embedding"]["in_shape"] == ("batch", 3, 32, 32)
    assert g.nodes["patch_embedding"]["out_shape"] == ("batch", 17, 32)
    assert g.graph["seq_len"] == 17  # attention FLOPs at the patch count
    assert model.patch_embedding.class_token.shape == (32,)
    assert model.position_embeddings.weight.shape == (17, 32)
    # the class token is the first token: with one layer of nothing after the embedding it is the same for all images
    x = pixels(2)
    with torch.no_grad():
        emb = model.patch_embedding(x, None)
    assert emb.shape == (2, 17, 32) and torch.equal(emb[0, 0], emb[1, 0])


def test_learned_2d_positions_are_row_and_column_halves():
    text = ("name: t\nmodel:\n  input: image\n  width: 8\n  layers:\n"
            "    - patch_embedding: {image_size: 12, patch_size: 4, positions: learned_2d, class_token: false}\n")
    model = archdsl.compile(text, seed=0)
    pe = model.patch_embedding
    assert pe.row_positions.shape == pe.column_positions.shape == (3, 4)
    with torch.no_grad():
        pe.projection.weight.zero_()
        out = model(torch.zeros(1, 3, 12, 12))[0]  # positions only
    assert torch.equal(out[1 * 3 + 2, :4], pe.row_positions[1]) and torch.equal(out[1 * 3 + 2, 4:], pe.column_positions[2])


def test_classifier_reduces_first_mean_and_pooled():
    base = "name: t\nmodel:\n  input: image\n  width: 16\n  layers:\n    - patch_embedding: {image_size: 16, patch_size: 8}\n"
    x = pixels(2, 16)
    for head in ("classifier: 3", "classifier: {classes: 3, reduce: mean}",
                 "pooler\n    - classifier: {classes: 3, reduce: pooled}"):
        model = archdsl.compile(base + f"    - {head}\n", seed=0).eval()
        with torch.no_grad():
            logits = model(x)
            tokens = model.patch_embedding(x, None)
        assert logits.shape == (2, 3), head
        c = model.classifier
        if "mean" in head:
            expected = tokens.mean(1) @ c.weight.T + c.bias
        elif "pooled" in head:
            expected = torch.tanh(model.pooler.dense(tokens[:, 0])) @ c.weight.T + c.bias
        else:
            expected = tokens[:, 0] @ c.weight.T + c.bias
        assert max_diff(logits, expected) <= 1e-6, head
    # a classifier also ends a token model (sequence classification, BERT-style)
    text = "name: t\nmodel:\n  width: 16\n  layers:\n    - embedding: 50\n    - classifier: {classes: 2, reduce: mean}\n"
    model = archdsl.compile(text, seed=0).eval()
    assert model(torch.randint(0, 50, (3, 5))).shape == (3, 2)
    assert archdsl.graph(text).nodes["output"]["out_shape"] == ("batch", 2)


def test_seeded_initialisation_is_deterministic_and_covers_vision_parameters():
    a = archdsl.compile(VIT, overrides=TINY, seed=7).state_dict()
    b = archdsl.compile(VIT, overrides=TINY, seed=7).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["patch_embedding.class_token"].std() > 0.005
    assert torch.equal(a["patch_embedding.projection.bias"], torch.zeros(32))


def test_wrong_pixel_values_are_refused():
    model = archdsl.compile(VIT, overrides=TINY, seed=0).eval()
    with pytest.raises(ValueError, match=r"\(batch, 3, 32, 32\), got \(2, 3, 64, 64\)"):
        model(pixels(2, 64))
    with pytest.raises(ValueError, match="floating-point"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.long))
    with pytest.raises(ValueError, match="got \\(2, 32\\)"):
        model(torch.randint(0, 10, (2, 32)))  # token ids given to an image model


# ------------------------------------------------------------------------------------ errors
SPEC = "archdsl: 1\nname: t\nmodel:\n  input: {inp}\n  width: {w}\n  layers:\n{layers}"
ERRORS = [
    ("image", 32, ["patch_embedding: {image_size: 30, patch_size: 8}"], 7,
     "model.layers[0].patch_embedding.patch_size", "patch_size 8 does not divide image_size 30"),
    ("image", 32, ["embedding: 10"], 7, "model.layers[0].embedding", "the input is an image"),
    ("tokens", 32, ["patch_embedding: {image_size: 32, patch_size: 8}"], 7, "model.layers[0].patch_embedding",
     "must be the first node of a stack with input: image"),
    ("image", 32, ["patch_embedding: {image_size: 32, patch_size: 8}", "patch_embedding: {image_size: 32, patch_size: 8}"],
     8, "model.layers[1].patch_embedding", "must be the first node"),
    ("image", 32, ["patch_embedding: {image_size: 32, patch_size: 8}", "positional: {kind: learned, max_len: 16}"], 8,
     "model.layers[1].positional.max_len", "16 learned positions cannot cover the 17 patch tokens"),
    ("image", 32, ["patch_embedding: {image_size: 32, patch_size: 8}", "classifier: 10", "layernorm"], 8,
     "model.layers[1].classifier", "must be the last node"),
    ("image", 32, ["patch_embedding: {image_size: 32, patch_size: 8}", "classifier: {classes: 10, reduce: pooled}"], 8,
     "model.layers[1].classifier.reduce", "no pooler comes before"),
    ("image", 33, ["patch_embedding: {image_size: 32, patch_size: 8, positions: learned_2d}"], 7,
     "model.layers[0].patch_embedding.positions", "must be even"),
    ("image", 32, ["patch_embedding: {image_size: 32, patch_size: 8}", "residual: [classifier: 32]"], 8,
     "model.layers[1].residual.body[0].classifier", "top level"),
]


@pytest.mark.parametrize("inp,width,layers,line,path,message", ERRORS, ids=[e[4] for e in ERRORS])
def test_vision_errors_name_the_line(inp, width, layers, line, path, message):
    text = SPEC.format(inp=inp, w=width, layers="".join(f"    - {node}\n" for node in layers))
    with pytest.raises(SpecError) as exc:
        archdsl.summary(text)
    first = exc.value.errors[0]
    assert first.path == path and message in first.message and first.line == line, str(exc.value)


def test_schema_level_errors():
    with pytest.raises(SpecError, match="expected one of: decoder_tokens, image, tokens"):
        archdsl.load_spec(SPEC.format(inp="video", w=8, layers="    - patch_embedding: {image_size: 8, patch_size: 4}\n"))
    with pytest.raises(SpecError, match="patch_size"):
        archdsl.load_spec(SPEC.format(inp="image", w=8, layers="    - patch_embedding: {image_size: 8}\n"))


# ------------------------------------------------------------------------------------ CLI
def test_cli_summary_and_build_on_the_vit_spec(capsys):
    assert main(["summary", str(VIT)]) == 0
    out = capsys.readouterr().out
    assert "86,389,248" in out and "(batch, 197, 768)" in out
    sets = [item for k, v in TINY.items() for item in ("--set", f"{k}={v}")]
    assert main(["build", str(VIT), *sets, "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "forward on pixels (2, 3, 32, 32) -> (2, 17, 32)" in out
    assert main(["build", str(VIT), "--device", "meta"]) == 0
    assert "86,389,248 parameters" in capsys.readouterr().out


def test_the_hf_entry_points_dispatch_vit(tmp_path, capsys):
    """archdsl.interop.hf takes ViT configs and models too: spec_from_config, from_hf and import-hf."""
    from archdsl.interop import hf

    config = tiny_hf_config(num_labels=5, architectures=["ViTForImageClassification"])
    spec = hf.spec_from_config(config)
    assert archdsl.graph(spec).graph["inputs"] == ["image"]
    reference = hf_vit("ViTForImageClassification", 2, num_labels=5, architectures=["ViTForImageClassification"])
    model = hf.from_hf(reference)  # verifies against the original
    x = pixels()
    with torch.no_grad():
        assert max_diff(model(x), reference(pixel_values=x).logits) <= TOL
    config.to_json_file(tmp_path / "config.json")
    assert main(["import-hf", str(tmp_path / "config.json"), "-o", str(tmp_path / "vit.yaml")]) == 0
    assert archdsl.summary(tmp_path / "vit.yaml").total_params == model.num_parameters()


# ------------------------------------------------------------------------------------ negative controls
def control_cases():
    """The parity checks above, for tests/controls.py."""
    tolerance = "bit-identical" if TOL == 0 else f"<= {TOL:g}"
    yield Case(test_parity_with_vit_model_hidden_states_and_pooler, "ViTModel",
               functools.partial(parity_case, "ViTModel", 0, 2), tolerance)
    yield Case(test_parity_with_vit_for_image_classification_logits, "ViTForImageClassification",
               functools.partial(parity_case, "ViTForImageClassification", 1, 3, num_labels=5), tolerance)
    yield Case(test_library_spec_takes_hf_weights_and_matches, "vit-base-16",
               functools.partial(parity_case, "ViTModel", 2, 1, spec=VIT, overrides=TINY), tolerance)
    yield Case(test_qkv_without_bias_converts, "no-qkv-bias",
               functools.partial(parity_case, "ViTModel", 4, 1, qkv_bias=False, add_pooling_layer=False), tolerance)
