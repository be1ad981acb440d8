"""Hugging Face ViT interop: a ``ViTConfig`` becomes a spec, ``ViTModel`` / ``ViTForImageClassification``
weights become an ArchModel.

    from archdsl.interop import hf_vision
    spec = hf_vision.spec_from_config(vit_config)                  # ViTModel layout (with pooler)
    spec = hf_vision.spec_from_config(vit_config, classifier=True) # ViTForImageClassification layout
    model = hf_vision.from_hf(hf_vit_model)                        # spec + weights, checked against HF

The spec is the readable YAML of :func:`spec_yaml_from_config` (the same layout as
``specs/vit-base-16.yaml``), loaded with :func:`archdsl.load_spec`. Weights are mapped by role:
the patch projection, class token and position table of ``embeddings``; per layer the two
LayerNorms, q/k/v (concatenated into archdsl's fused ``qkv``), the output projection and the
two MLP projections; the final LayerNorm, the pooler's dense layer and the classifier. Both the
module names of transformers 5 (``layers.i.attention.q_proj``) and those of checkpoints written
by transformers 4 (``encoder.layer.i.attention.attention.query``) are read. Every archdsl
parameter must be filled and every tensor used.
"""
from __future__ import annotations

import re
import textwrap
from typing import Any, Mapping

from ..errors import ErrorItem, Loc, SpecError

__all__ = ["spec_yaml_from_config", "spec_from_config", "from_hf", "VISION_MODEL_TYPES"]

VISION_MODEL_TYPES = ("vit",)

_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu",
                "silu": "silu", "swish": "silu"}


def _unsupported(cfg: Any, key: str, what: str, hint: str | None = None) -> SpecError:
    source = getattr(cfg, "_archdsl_source", "<config>")
    return SpecError([ErrorItem.at(Loc(source), key, f"archdsl cannot express {what}",
                                   hint or "convert a model without it, or write the spec by hand")])


def _square(cfg: Any, key: str) -> int:
    value = getattr(cfg, key)
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise _unsupported(cfg, key, f"a non-square {key} {list(value)}", "archdsl patches square images")
        value = value[0]
    return int(value)


def _is_classifier(cfg: Any) -> bool:
    return any(a.endswith("ForImageClassification") for a in (getattr(cfg, "architectures", None) or ()))


def spec_yaml_from_config(config: Any, *, classifier: bool | None = None, pooler: bool = True) -> str:
    """The readable YAML spec of a ViT config: ViTModel (with its tanh pooler unless ``pooler=False``),
    or ViTForImageClassification with ``classifier=True`` (default: when the config's architectures
    name it). Raises SpecError for what archdsl cannot express."""
    from .hf import _scalar, load_config

    cfg = load_config(config)
    if cfg.model_type not in VISION_MODEL_TYPES:
        raise _unsupported(cfg, "model_type", f"model_type '{cfg.model_type}' as a vision model",
                           f"supported: {', '.join(VISION_MODEL_TYPES)}")
    classifier = _is_classifier(cfg) if classifier is None else classifier
    act = _ACTIVATIONS.get(cfg.hidden_act)
    if act is None:
        raise _unsupported(cfg, "hidden_act", f"the activation '{cfg.hidden_act}'")
    width, heads = cfg.hidden_size, cfg.num_attention_heads
    if width % heads:
        raise _unsupported(cfg, "num_attention_heads", f"{heads} heads that do not divide hidden_size {width}")
    head_dim = getattr(cfg, "head_dim", None) or width // heads
    if head_dim * heads != width:
        raise _unsupported(cfg, "head_dim", f"head_dim {head_dim} × {heads} heads ≠ hidden_size {width}")
    image, patch = _square(cfg, "image_size"), _square(cfg, "patch_size")
    if not classifier and pooler:
        if getattr(cfg, "pooler_output_size", width) not in (None, width):
            raise _unsupported(cfg, "pooler_output_size", f"a pooler of width {cfg.pooler_output_size} ≠ {width}")
        if getattr(cfg, "pooler_act", "tanh") != "tanh":
            raise _unsupported(cfg, "pooler_act", f"the pooler activation '{cfg.pooler_act}'")
    classes = int(getattr(cfg, "num_labels", 0) or 0)
    if classifier and classes < 1:
        raise _unsupported(cfg, "num_labels", "a classifier without labels (nn.Identity)")

    v = {"image_size": image, "patch_size": patch, "channels": cfg.num_channels, "d_model": width, "heads": heads,
         "layers": cfg.num_hidden_layers, "ffn": cfg.intermediate_size, "eps": cfg.layer_norm_eps}
    if classifier:
        v["classes"] = classes
    dropout, attn_dropout = cfg.hidden_dropout_prob, cfg.attention_probs_dropout_prob
    if dropout:
        v["dropout"] = dropout
    if attn_dropout:
        v["attn_dropout"] = attn_dropout
    attention = "{heads: $heads" + ("" if cfg.qkv_bias else ", bias: false, out_bias: true") + \
        (", dropout: $attn_dropout" if attn_dropout else "") + "}"
    drop = ["    - dropout: $dropout"] if dropout else []
    what = "ViTForImageClassification" if classifier else "ViTModel"
    name = getattr(cfg, "name_or_path", "") or "vit"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(name).rstrip("/").rsplit("/", 1)[-1]) or "vit"
    description = (f"Imported from a Hugging Face 'vit' config as {what}: {image}px images in {patch}×{patch} "
                   f"patches, a [CLS] token and 1-D learned positions, a pre-norm encoder with {act} MLPs, "
                   + ("a linear classifier on the [CLS] token." if classifier else
                      "a final LayerNorm" + (" and a tanh pooler on the [CLS] token." if pooler else ".")))
    lines = ["# Written by archdsl from a Hugging Face ViT config; edit freely.", "archdsl: 1", f"name: {_scalar(name)}",
             "description: >"] + ["  " + line for line in textwrap.wrap(description, 94)]
    lines += ["vars:"] + [f"  {k}: {_scalar(val)}" for k, val in v.items()]
    lines += ["", "blocks:", "  encoder_layer:", "    - residual:",
              "        - layernorm: {eps: $eps, name: layernorm_before}", f"        - attention: {attention}"]
    lines += ["    " + d for d in drop]
    lines += ["    - residual:", "        - layernorm: {eps: $eps, name: layernorm_after}",
              f"        - mlp: {{hidden: $ffn, activation: {act}}}"]
    lines += ["    " + d for d in drop]
    lines += ["", "model:", "  input: image", "  width: $d_model", "  layers:",
              "    - patch_embedding: {image_size: $image_size, patch_size: $patch_size, channels: $channels}",
              '    - positional: {kind: learned, max_len: "${(image_size // patch_size) ** 2 + 1}", '
              "name: position_embeddings}"]
    if dropout:
        lines.append("    - dropout: $dropout")
    lines += ["    - repeat: $layers", "      name: layers", "      body: encoder_layer", "    - layernorm: {eps: $eps}"]
    if classifier:
        lines.append("    - classifier: {classes: $classes, reduce: first}")
    elif pooler:
        lines.append("    - pooler: {reduce: first, activation: tanh}")
    return "\n".join(lines) + "\n"


def spec_from_config(config: Any, *, classifier: bool | None = None, pooler: bool = True) -> Any:
    """An archdsl.Spec from a ViT config (object, dict, or config.json path); see spec_yaml_from_config."""
    from ..loader import load_spec

    return load_spec(spec_yaml_from_config(config, classifier=classifier, pooler=pooler))


# ------------------------------------------------------------------------------------------ weights
# role -> candidate names (transformers 5, then transformers 4 / checkpoints on disk); {i} is the layer
_TOP = {
    "cls": ["embeddings.cls_token"],
    "positions": ["embeddings.position_embeddings"],
    "patch.weight": ["embeddings.patch_embeddings.projection.weight"],
    "patch.bias": ["embeddings.patch_embeddings.projection.bias"],
    "norm.weight": ["layernorm.weight"],
    "norm.bias": ["layernorm.bias"],
    "pooler.weight": ["pooler.dense.weight"],
    "pooler.bias": ["pooler.dense.bias"],
}
_LAYER = {
    "norm1": ["layers.{i}.layernorm_before", "encoder.layer.{i}.layernorm_before"],
    "norm2": ["layers.{i}.layernorm_after", "encoder.layer.{i}.layernorm_after"],
    "q": ["layers.{i}.attention.q_proj", "encoder.layer.{i}.attention.attention.query"],
    "k": ["layers.{i}.attention.k_proj", "encoder.layer.{i}.attention.attention.key"],
    "v": ["layers.{i}.attention.v_proj", "encoder.layer.{i}.attention.attention.value"],
    "out": ["layers.{i}.attention.o_proj", "encoder.layer.{i}.attention.output.dense"],
    "up": ["layers.{i}.mlp.fc1", "encoder.layer.{i}.intermediate.dense"],
    "down": ["layers.{i}.mlp.fc2", "encoder.layer.{i}.output.dense"],
}


class _Mapper:
    def __init__(self, state: Mapping[str, Any], model: Any):
        self.state, self.model, self.used = dict(state), model, set()
        prefixes = {k.split("embeddings.cls_token")[0] for k in state if k.endswith("embeddings.cls_token")}
        if len(prefixes) != 1:
            raise ValueError("not a ViT state dict: no single embeddings.cls_token")
        self.prefix = prefixes.pop()  # "" for ViTModel, "vit." for ViTForImageClassification
        self.out: dict[str, Any] = {}
        self.errors: list[str] = []

    def find(self, names: list[str], suffix: str = "", i: int | None = None) -> str | None:
        for name in names:
            key = self.prefix + name.format(i=i) + suffix
            if key in self.state:
                return key
        return None

    def take(self, target: str, names: list[str], suffix: str = "", i: int | None = None, transform=None) -> None:
        key = self.find(names, suffix, i)
        if key is None:
            self.errors.append(f"no tensor for {target} (looked for {self.prefix + names[0].format(i=i) + suffix})")
            return
        self.used.add(key)
        tensor = self.state[key]
        self.out[target] = transform(tensor) if transform else tensor

    def run(self) -> dict[str, Any]:
        import torch

        from ..ir import leaves

        g = self.model.graph
        norms_seen: dict[tuple, int] = {}  # (repeat, layer) -> layernorms met so far in it
        for node in leaves(g):
            data = g.nodes[node]
            kind, copy = data["kind"], data.get("copy", ())
            if copy:
                i = copy[0][1]  # the layer index of the (outermost) repeat
                if kind == "layernorm":
                    seen = norms_seen[copy[0][:2]] = norms_seen.get(copy[0][:2], 0) + 1
                    role = "norm1" if seen == 1 else "norm2"
                    if seen > 2:
                        self.errors.append(f"{node}: a third layernorm in encoder layer {i} has no ViT counterpart")
                        continue
                    self.take(f"{node}.weight", _LAYER[role], ".weight", i)
                    self.take(f"{node}.bias", _LAYER[role], ".bias", i)
                elif kind == "attention":
                    for part in ("weight", "bias"):
                        keys = [self.find(_LAYER[r], f".{part}", i) for r in ("q", "k", "v")]
                        if all(keys):
                            self.used.update(keys)  # type: ignore[arg-type]
                            self.out[f"{node}.qkv.{part}"] = torch.cat([self.state[k] for k in keys], dim=0)
                        elif any(keys) or part == "weight":
                            self.errors.append(f"layer {i}: the checkpoint lacks some of the q/k/v {part}s")
                        self.take(f"{node}.out.{part}", _LAYER["out"], f".{part}", i)
                elif kind == "mlp":
                    for part in ("weight", "bias"):
                        self.take(f"{node}.up.{part}", _LAYER["up"], f".{part}", i)
                        self.take(f"{node}.down.{part}", _LAYER["down"], f".{part}", i)
                elif kind not in ("dropout", "add", "sum"):
                    self.errors.append(f"{node}: a '{kind}' inside the encoder layer has no ViT counterpart")
                continue
            if kind == "patch_embedding":
                self.take(f"{node}.projection.weight", _TOP["patch.weight"])
                self.take(f"{node}.projection.bias", _TOP["patch.bias"])
                self.take(f"{node}.class_token", _TOP["cls"], transform=lambda t: t.reshape(-1))
            elif kind == "positional":
                self.take(f"{node}.weight", _TOP["positions"], transform=lambda t: t.reshape(t.shape[-2], t.shape[-1]))
            elif kind == "layernorm":
                self.take(f"{node}.weight", _TOP["norm.weight"])
                self.take(f"{node}.bias", _TOP["norm.bias"])
            elif kind == "pooler":
                self.take(f"{node}.dense.weight", _TOP["pooler.weight"])
                self.take(f"{node}.dense.bias", _TOP["pooler.bias"])
            elif kind == "classifier":
                for part in ("weight", "bias"):
                    key = f"classifier.{part}"
                    if key in self.state:
                        self.used.add(key)
                        self.out[f"{node}.{part}"] = self.state[key]
                    else:
                        self.errors.append(f"no tensor for {node}.{part} (looked for {key})")
            elif kind not in ("dropout", "add", "sum"):
                self.errors.append(f"{node}: a '{kind}' node has no ViT counterpart")
        unused = sorted(k for k in self.state if k not in self.used and not k.endswith("mask_token"))
        if unused:
            shown = ", ".join(unused[:8]) + (f" and {len(unused) - 8} more" if len(unused) > 8 else "")
            self.errors.append(f"checkpoint tensors the spec does not use: {shown}")
        if self.errors:
            raise ValueError("cannot map the ViT checkpoint onto the archdsl spec:\n  " + "\n  ".join(self.errors))
        return self.out


def from_hf(hf_model: Any, *, spec: Any = None, overrides: Mapping[str, Any] | None = None, dtype: Any = None,
            device: Any = None, verify: bool = True) -> Any:
    """An ArchModel with the architecture and weights of an in-memory ``ViTModel`` or
    ``ViTForImageClassification``. The spec is spec_from_config(hf_model.config) in the model's own
    layout, or ``spec`` (path, YAML text or Spec, with ``overrides``) of the same structure.
    ``verify`` runs both on a random image and raises if the outputs differ."""
    from ..loader import load_spec
    from .hf import _assign, _build

    classifier = hasattr(hf_model, "classifier") and hasattr(hf_model, "vit")
    pooler = getattr(hf_model, "pooler", None) is not None
    if spec is not None:
        target = load_spec(spec, overrides=overrides)
    else:
        if overrides:
            raise TypeError("overrides apply to a spec given with spec=")
        target = spec_from_config(hf_model.config, classifier=classifier, pooler=pooler)
    first = next(hf_model.parameters())
    model = _build(target, dtype or first.dtype, device or first.device)
    _assign(model, _Mapper(hf_model.state_dict(), model).run())
    model.eval()
    if verify:
        _verify(hf_model, model, classifier)
    return model


def _verify(hf_model: Any, model: Any, classifier: bool) -> None:
    import torch

    from ..blocks.vision import PatchEmbedding

    patches = next(m for m in model.modules() if isinstance(m, PatchEmbedding))
    first = next(model.parameters())
    pixels = torch.randn(1, patches.channels, patches.image_size, patches.image_size,
                         generator=torch.Generator().manual_seed(0)).to(device=first.device, dtype=first.dtype)
    was_training = hf_model.training
    hf_model.eval()
    with torch.no_grad():
        ours, theirs = model(pixels), hf_model(pixel_values=pixels)
    hf_model.train(was_training)
    pairs = [(ours, theirs.logits)] if classifier else (
        [(ours[0], theirs.last_hidden_state), (ours[1], theirs.pooler_output)] if isinstance(ours, tuple)
        else [(ours, theirs.last_hidden_state)])
    for a, b in pairs:
        diff = (a.float() - b.float()).abs().max().item()
        tol = (1e-4 if first.dtype in (torch.float32, torch.float64) else 5e-2) * max(1.0, b.abs().max().item())
        if not diff <= tol:
            raise ValueError(f"the converted ViT differs from the original by up to {diff:.3g} (tolerance {tol:.3g})")
