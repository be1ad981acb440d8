#!/usr/bin/env python
"""Which transformers causal LMs archdsl imports exactly: a sweep of MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.

    HF_HUB_OFFLINE=1 python benchmarks/hf_coverage.py                 # every model type (minutes)
    HF_HUB_OFFLINE=1 python benchmarks/hf_coverage.py llama glm4      # some
    HF_HUB_OFFLINE=1 python benchmarks/hf_coverage.py --json benchmarks/hf_coverage.json --markdown table.md
    HF_HUB_OFFLINE=1 python benchmarks/hf_coverage.py --time-70b      # seconds of the meta check at 70B

For each model type: the config class's defaults, shrunk to a tiny size (width 64, 2 layers, 4 heads,
vocab 97, ...; the layer pattern kept), become a transformers model with random weights (every parameter
perturbed, so that a misplaced norm or bias shows); ``spec_from_config`` (which compares the spec with
the transformers model on meta) and ``from_hf`` convert it, and the logits of a left-padded batch are
compared (unpadded for PADDING_LEAKS, whose transformers code lets the padding in). Each type is then one of

- ``exact``: logits within 1e-5 of the largest (at least 1e-5; and the class-default config, at full size,
  verified on meta). A looser 1e-4 let GPT-1's tanh GELU read as exact GELU pass (7e-5 at logits of 2.5);
  float32 noise here is at most 3e-6, bfloat16-rounded rotary frequencies included;
- ``refused``: a SpecError naming what archdsl does not express (a config feature, or the first role
  whose parameters differ from transformers'), or the weights refused by name;
- ``differs``: converted without an error but the logits differ (a silently different model: a bug);
- ``crashed``: another exception in archdsl (a bug);
- ``transformers-cannot-build``: transformers itself cannot make the config or the model here;
- ``skipped``: the shrunk config is still large (sizes in sub-configs the sweep does not shrink).

A type that verification refuses although its converted logits are exact is reported as ``crashed``
(verification is then wrong). tests/test_hf_verify.py runs a fast subset and checks that every type
recorded as exact in benchmarks/hf_coverage.json verifies at full size.
"""
from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import re
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

VOCAB, WIDTH, HEADS, HEAD_DIM, LAYERS, TOL = 97, 64, 4, 16, 2, 1e-5  # of max(1, the largest logit)

# config key -> tiny value, set where the class has the key with an int value
_SIZES = {
    "vocab_size": VOCAB, "hidden_size": WIDTH, "n_embd": WIDTH, "d_model": WIDTH, "word_embed_proj_dim": WIDTH,
    "num_attention_heads": HEADS, "n_head": HEADS, "n_heads": HEADS, "num_heads": HEADS,
    "head_dim": HEAD_DIM, "intermediate_size": 96, "ffn_hidden_size": 96, "ffn_dim": 96, "n_inner": 96,
    "moe_intermediate_size": 32, "shared_expert_intermediate_size": 48, "expert_intermediate_size": 32,
    "num_local_experts": 4, "num_experts": 4, "n_routed_experts": 4, "num_experts_per_tok": 2, "moe_top_k": 2,
    "n_group": 2, "topk_group": 1, "kv_lora_rank": 16, "q_lora_rank": 24, "qk_nope_head_dim": 8,
    "qk_rope_head_dim": 8, "v_head_dim": 16, "sliding_window": 5, "window_size": 5, "rotary_dim": 8,
    "encoder_attention_heads": HEADS, "decoder_attention_heads": HEADS, "encoder_ffn_dim": 96, "decoder_ffn_dim": 96,
}
_LAYER_KEYS = ("num_hidden_layers", "n_layer", "n_layers", "num_layers", "encoder_layers", "decoder_layers",
               "num_decoder_layers")
_KV_KEYS = ("num_key_value_heads", "num_kv_heads", "n_kv_heads")
# (Mamba-2 heads, head dim) whose product transformers requires to be mamba_expand × hidden_size (Bamba,
# Granite 4.0-H, Zamba2); Falcon-H1 sets its own inner width (mamba_d_ssm) and is left as it is
_MAMBA_HEADS = (("mamba_n_heads", "mamba_d_head"), ("n_mamba_heads", "mamba_headdim"))


class TooBig(Exception):
    pass


@dataclass
class Result:
    model_type: str
    status: str  # exact | refused | differs | crashed | transformers-cannot-build
    detail: str = ""
    full_size: str = ""  # verified | refused: ... | unverified: ... (the class-default config on meta)
    seconds: float = 0.0


def _short(exc: BaseException, limit: int = 220) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _reason(exc: BaseException) -> str:
    """The message of a SpecError without its location and hint; a verification's role and shapes."""
    text = " ".join(str(exc).split())
    text = re.sub(r" \(hint: .*\)$", "", re.sub(r"^<[^>]*>: ", "", text))
    m = re.search(r"is not transformers' \S+ of the same config \((archdsl [\d,]+ parameters, transformers [\d,]+)\): (.*)", text)
    if m:
        text = f"verification: {re.sub(r' [(]archdsl: .*$', '', m.group(2))} ({m.group(1)})"
    return text if len(text) <= 300 else text[:299] + "…"


def shrink(cls: Any) -> Any:
    """The class-default config of `cls` at a tiny size, its layer pattern kept (both kinds of layer)."""
    data = cls().to_dict()
    depth = next((data[k] for k in _LAYER_KEYS if isinstance(data.get(k), int) and not isinstance(data[k], bool)), None)
    # per-layer lists (layer_types, mlp_layer_types, ...): keep enough layers for every kind to appear once
    per_layer = [k for k, v in data.items() if isinstance(v, list) and depth and len(v) == depth]
    layers = LAYERS
    for key in per_layer:
        values = [json.dumps(v, sort_keys=True) for v in data[key]]
        layers = max(layers, max(values.index(v) for v in set(values)) + 1)
    for key in per_layer:
        data[key] = data[key][:layers]
    for key, value in list(data.items()):  # per-layer settings keyed by layer index
        if key.startswith("per_layer") and isinstance(value, dict) and all(str(k).isdigit() for k in value):
            data[key] = {k: v for k, v in value.items() if int(k) < layers}
    for key in _LAYER_KEYS:
        if isinstance(data.get(key), int) and not isinstance(data[key], bool):
            data[key] = layers
    for key, value in _SIZES.items():
        if isinstance(data.get(key), int) and not isinstance(data[key], bool):
            data[key] = value
    # a class default whose head_dim or num_key_value_heads is None, which transformers' own modelling code
    # then cannot build (HunYuan, Ministral, Nemotron): the sizes the config would otherwise imply
    if "head_dim" in data and data["head_dim"] is None:
        data["head_dim"] = HEAD_DIM
    if "num_key_value_heads" in data and data["num_key_value_heads"] is None:
        data["num_key_value_heads"] = data.get("num_attention_heads")
    if "qk_rope_head_dim" in data and "head_dim" in data:  # latent attention: the rotary part is the head_dim
        data["head_dim"] = data["qk_rope_head_dim"]
    heads = HEADS
    for key in _KV_KEYS:
        kv = data.get(key)
        if isinstance(kv, int) and not isinstance(kv, bool):
            data[key] = 1 if kv == 1 else 2 if kv < cls().to_dict().get("num_attention_heads", kv) else heads
    for heads_key, dim_key in _MAMBA_HEADS:  # Mamba-2's heads × head_dim must stay expand × width
        if isinstance(data.get(heads_key), int) and isinstance(data.get(dim_key), int) and "mamba_d_ssm" not in data:
            data[heads_key], data[dim_key] = HEADS, int(data.get("mamba_expand") or 2) * WIDTH // HEADS
    model_type = getattr(cls, "model_type", None)
    if model_type == "mamba2":  # its heads × head_dim too (the generic keys, shrunk above), groups dividing heads
        data["head_dim"] = int(data["expand"]) * WIDTH // data["num_heads"]
        data["n_groups"] = 2 if data["num_heads"] % 2 == 0 else 1
    if model_type in ("mamba", "falcon_mamba"):  # the inner width is expand × width
        data["intermediate_size"] = int(data["expand"]) * WIDTH
    if "use_shared_attention_adapter" in data:  # Zamba2's sizes derived from the width (its attention sees
        # [hidden; embeddings], twice the width), which the class-default dict carries at full size
        data.update(attention_hidden_size=2 * WIDTH, attention_head_dim=2 * WIDTH // HEADS, kv_channels=WIDTH // HEADS,
                    num_query_groups=HEADS)
    if isinstance(data.get("mlp_only_layers"), list):
        data["mlp_only_layers"] = [i for i in data["mlp_only_layers"] if i < layers]
    if isinstance(data.get("first_k_dense_replace"), int):
        data["first_k_dense_replace"] = min(data["first_k_dense_replace"], 1)
    if "attention_types" in data:  # GPT-Neo: [[["global", "local"], n]]
        data["attention_types"] = [[["global", "local"], layers // 2]]
        data.pop("attention_layers", None)
    for key, value in list(data.items()):  # token ids inside the tiny vocabulary
        if key.endswith("token_id") and isinstance(value, int) and value >= VOCAB:
            data[key] = min(value, VOCAB - 1) if key == "pad_token_id" else 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls.from_dict(data)


MAX_TINY = 20_000_000  # a shrunk model above this still has sizes the sweep does not know (sub-configs)


# task -> (transformers Auto class, its registry in transformers.models.auto.modeling_auto)
TASKS = {"causal-lm": ("AutoModelForCausalLM", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"),
         "masked-lm": ("AutoModelForMaskedLM", "MODEL_FOR_MASKED_LM_MAPPING_NAMES"),
         "seq2seq": ("AutoModelForSeq2SeqLM", "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES")}


def random_model(cfg: Any, seed: int = 0, task: str = "causal-lm") -> Any:
    import transformers

    auto = getattr(transformers, TASKS[task][0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.device("meta"):
            meta = auto.from_config(cfg)
        n = sum(p.numel() for p in meta.parameters())
        if n > MAX_TINY:
            raise TooBig(f"the shrunk config still has {n:,} parameters (sizes in sub-configs)")
        torch.manual_seed(seed)
        model = auto.from_config(cfg).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():  # the trained ones (a frozen sinusoid table stays what the code computes)
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype) * 0.05)
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.add_(torch.randn(b.shape, generator=g) * 0.05)
    return model


# model types whose transformers code lets padding into a real token's output (RecurrentGemma's convolution
# window reads the left padding): compared on an unpadded batch, as tests/test_hf_linear.py does
PADDING_LEAKS = {"recurrent_gemma"}


def _counts_positions_itself(hf_model: Any) -> bool:
    """Whether the model numbers positions from the padding when given none (RoBERTa's embeddings count
    real tokens after padding_idx): found by running it with and without position ids 0.. on an unpadded batch."""
    parameters = inspect.signature(type(hf_model).forward).parameters
    if "position_ids" not in parameters:
        return False
    tokens = torch.randint(3, VOCAB, (1, 6), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        try:
            default = hf_model(tokens, use_cache=False).logits
            given = hf_model(tokens, position_ids=torch.arange(6).unsqueeze(0), use_cache=False).logits
        except Exception:  # noqa: BLE001 - a forward without use_cache: judged as counting from 0
            return False
    return not torch.equal(default, given)


def left_padded_batch(hf_model: Any) -> tuple[torch.Tensor, torch.Tensor, dict, dict]:
    """Tokens (3, 12), rows 1 and 2 left-padded with the pad id (not for PADDING_LEAKS); the keyword arguments
    of transformers' forward (position ids counting real tokens, where it takes them and does not count them
    itself) and of archdsl's (position ids counting real tokens whenever transformers' count them)."""
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(3, VOCAB, (3, 12), generator=g)
    mask = torch.ones(3, 12, dtype=torch.long)
    if getattr(hf_model.config, "model_type", None) not in PADDING_LEAKS:
        mask[1, :5] = 0
        mask[2, :2] = 0
    pad = getattr(hf_model.config, "pad_token_id", None)
    tokens = tokens.masked_fill(mask == 0, pad if isinstance(pad, int) and 0 <= pad < VOCAB else 0)
    theirs, ours = {}, {}
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    if "position_ids" in inspect.signature(type(hf_model).forward).parameters:
        ours["position_ids"] = positions
        if not _counts_positions_itself(hf_model):
            theirs["position_ids"] = positions
    return tokens, mask, theirs, ours


def right_padded_batch(hf_model: Any) -> tuple[torch.Tensor, torch.Tensor, dict, dict]:
    """An encoder's batch: tokens (3, 12), rows 1 and 2 right-padded with the pad id, no position ids."""
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(3, VOCAB, (3, 12), generator=g)
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    pad = getattr(hf_model.config, "pad_token_id", None)
    pad = pad if isinstance(pad, int) and 0 <= pad < VOCAB else 0
    tokens = torch.where((tokens == pad) & (mask == 1), (pad + 1) % VOCAB, tokens).masked_fill(mask == 0, pad)
    return tokens, mask, {}, {}


def seq2seq_batch(hf_model: Any) -> tuple[torch.Tensor, torch.Tensor, dict, dict]:
    """An encoder-decoder's batch: the right-padded source of right_padded_batch and 8 target tokens per row,
    the decoder's mask right-padded too (row 1 from 6 on)."""
    tokens, mask, _, _ = right_padded_batch(hf_model)
    target = torch.randint(3, VOCAB, (3, 8), generator=torch.Generator().manual_seed(1))
    target_mask = torch.ones(3, 8, dtype=torch.long)
    target_mask[1, 6:] = 0
    theirs = {"decoder_input_ids": target, "decoder_attention_mask": target_mask}
    ours = {"decoder_tokens": target, "decoder_attention_mask": target_mask}
    return tokens, mask, theirs, ours


def batch(hf_model: Any) -> tuple[torch.Tensor, torch.Tensor, dict, dict]:
    """The task's batch: left-padded for a causal LM (as generation pads), right-padded for a masked LM, a padded
    source and target for an encoder-decoder."""
    if getattr(hf_model.config, "is_encoder_decoder", False):
        return seq2seq_batch(hf_model)
    if type(hf_model).__name__.endswith(("ForMaskedLM", "WithLMHeadModel")) and not getattr(hf_model.config, "is_decoder", False):
        return right_padded_batch(hf_model)
    return left_padded_batch(hf_model)


def _real(hf_model: Any, mask: torch.Tensor, kwargs: dict) -> torch.Tensor:
    """Where the compared logits are: the real tokens (an encoder-decoder's: the decoder's)."""
    return kwargs.get("decoder_attention_mask", mask).bool()


def hf_logits(hf_model: Any) -> torch.Tensor:
    tokens, mask, kwargs, _ = batch(hf_model)
    parameters = inspect.signature(type(hf_model).forward).parameters
    if "use_cache" in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        kwargs["use_cache"] = False  # no decoding cache: transformers' hybrid caches fail without an attention layer
    with torch.no_grad():
        return hf_model(tokens, attention_mask=mask, **kwargs).logits


def max_diff(hf_model: Any, theirs: torch.Tensor, model: Any) -> float:
    """Max |archdsl - transformers| over the real tokens of the padded batch, relative to the largest
    |logit| when that is above 1."""
    tokens, mask, _, kwargs = batch(hf_model)
    with torch.no_grad():
        ours = model(tokens, mask, **kwargs)
    ours = getattr(ours, "last_hidden_state", ours)  # logits with a pooled side output (FNet's masked LM)
    real = _real(hf_model, mask, kwargs)
    scale = max(1.0, theirs[real].float().abs().max().item())
    return (ours[real].float() - theirs[real].float()).abs().max().item() / scale


def full_size(cls: Any) -> str:
    """spec_from_config of the class-default config, compared with transformers on meta."""
    from archdsl.errors import SpecError
    from archdsl.interop import hf
    from archdsl.interop.hf_verify import UnverifiedSpecWarning

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            hf.spec_from_config(cls())
    except SpecError as exc:
        return "refused: " + _reason(exc)
    except Exception as exc:  # noqa: BLE001 - reported, not hidden
        return f"crashed: {type(exc).__name__}: {_short(exc)}"
    unverified = [w for w in caught if issubclass(w.category, UnverifiedSpecWarning)]
    return "unverified: " + _short(unverified[0].message) if unverified else "verified"


def run_one(model_type: str, task: str = "causal-lm") -> Result:
    import transformers

    from archdsl.errors import SpecError
    from archdsl.interop import hf

    start = time.perf_counter()
    result = Result(model_type, "crashed")
    try:
        cls = transformers.CONFIG_MAPPING[model_type]
        cfg = shrink(cls)
        if task == "masked-lm" and getattr(cfg, "is_encoder_decoder", False):
            raise TooBig("an encoder-decoder (its masked-LM class is its seq2seq model: see the seq2seq table)")
        hf_model = random_model(cfg, task=task)
        theirs = hf_logits(hf_model)
    except TooBig as exc:
        result.status, result.detail = "skipped", str(exc)
        result.seconds = time.perf_counter() - start
        return result
    except Exception as exc:  # noqa: BLE001 - transformers (or a package it needs) cannot make this model here
        result.status, result.detail = "transformers-cannot-build", f"{type(exc).__name__}: {_short(exc)}"
        result.seconds = time.perf_counter() - start
        return result
    verify_refusal = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hf.spec_from_config(hf_model.config)  # the model's own (BartForCausalLM changes it: a decoder alone)
    except SpecError as exc:
        if "is not transformers'" not in str(exc):  # a config feature archdsl cannot express
            result.status, result.detail = "refused", _reason(exc)
            result.seconds = time.perf_counter() - start
            return result
        verify_refusal = _reason(exc)
    except Exception as exc:  # noqa: BLE001
        result.detail = f"spec_from_config: {type(exc).__name__}: {_short(exc)}"
        result.seconds = time.perf_counter() - start
        return result
    try:  # converted without the meta check, to see whether a refusal was right
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = hf.from_hf(hf_model, verify=False)
        diff = max_diff(hf_model, theirs, model)
    except (SpecError, ValueError) as exc:
        result.status, result.detail = "refused", verify_refusal or "weights: " + _short(exc)
    except Exception as exc:  # noqa: BLE001
        result.status = "refused" if verify_refusal else "crashed"
        result.detail = verify_refusal or f"from_hf: {type(exc).__name__}: {_short(exc)}"
    else:
        if verify_refusal is not None:
            result.status, result.detail = ("refused", verify_refusal) if not diff <= TOL else (
                "crashed", f"verification refused a model whose logits match ({diff:.2g}): {verify_refusal}")
        elif diff <= TOL:
            result.status, result.detail = "exact", f"max |diff| {diff:.2g} (relative)" + (
                " (unpadded: transformers lets padding in)" if model_type in PADDING_LEAKS else "")
        else:
            result.status, result.detail = "differs", f"max |diff| {diff:.3g} with no error"
    if result.status == "exact":
        result.full_size = full_size(cls)
        # a class default refused for a config feature of its own is another model than the tiny one, not a
        # verification bug: Glm4MoeConfig() has 4096 / 96 = 42-dim heads and rotates 21 of them (transformers
        # then rotates 22 with frequencies over 21), while GLM-4.5's checkpoints have 128-dim heads
        # ... and a class default transformers itself cannot build (Ministral's head_dim None) cannot be checked
        if not result.full_size.startswith(("verified", "refused: ")) and "cannot build" not in result.full_size:
            result.status, result.detail = "crashed", f"tiny exact, but full size {result.full_size}"
    result.seconds = time.perf_counter() - start
    return result


def model_types(task: str = "causal-lm") -> list[str]:
    from transformers.models.auto import modeling_auto

    return sorted(getattr(modeling_auto, TASKS[task][1]))


def markdown(results: list[Result], task: str = "causal-lm") -> str:
    """The counts, the exact types, a table of the refused ones with their reasons, and the rest."""
    import transformers

    padding = {"causal-lm": "left-padded", "masked-lm": "right-padded"}.get(task, "right-padded source and target")

    order = ["exact", "refused", "differs", "crashed", "transformers-cannot-build", "skipped"]
    by: dict[str, list[Result]] = {s: sorted((r for r in results if r.status == s), key=lambda r: r.model_type)
                                   for s in order}
    lines = [f"transformers {transformers.__version__}, torch {torch.__version__}: {len(results)} model types; "
             + ", ".join(f"{len(by[s])} {s}" for s in order) + ".", ""]
    odd = [r for r in by["exact"] if r.full_size != "verified"]
    lines += [f"**exact** (logits within 1e-5 of the largest on a {padding} batch, and the class-default config verified at full "
              "size" + (", except " + "; ".join(f"`{r.model_type}`, whose class default is {r.full_size}" for r in odd)
                        if odd else "") + "): " + ", ".join(f"`{r.model_type}`" for r in by["exact"]) + ".", ""]
    for status in ("differs", "crashed"):
        lines += [f"**{status}**: " + "; ".join(f"`{r.model_type}` ({r.detail})" for r in by[status]) + ".", ""] \
            if by[status] else []
    lines += ["| refused | why |", "|---|---|"]
    lines += [f"| `{r.model_type}` | {r.detail.replace('|', '/')} |" for r in by["refused"]]
    for status, what in (("transformers-cannot-build", "transformers cannot build the shrunk class-default config "
                          "here"), ("skipped", "the shrunk config is still large (sizes in sub-configs)")):
        if by[status]:
            lines += ["", f"**{status}** ({what}): " + ", ".join(f"`{r.model_type}`" for r in by[status]) + "."]
    return "\n".join(lines) + "\n"


COVERAGE_INTRO = """# Coverage of transformers' registry

Generated by `HF_HUB_OFFLINE=1 python benchmarks/hf_coverage.py --json benchmarks/hf_coverage.json
--coverage docs/coverage.md` (a few minutes on 2 CPU cores; do not edit by hand). Every model type of
`transformers`' causal-LM, masked-LM and seq2seq registries is built from its config class's defaults shrunk to a tiny
size (width 64, 2 layers, 4 heads, vocab 97; the layer pattern kept) with random weights, every parameter
perturbed; `spec_from_config` and `from_hf` convert it, and the logits on the real tokens of a padded batch
are compared (causal LMs left-padded with position ids counting the real tokens, masked LMs right-padded,
encoder-decoders with a right-padded source and target).
`exact` also means the class-default config at full size converts and matches transformers' parameters on
meta. `tests/test_hf_verify.py` and `tests/test_hf_encoder.py` run a fixed subset in the normal suite.
"""


def coverage_doc(by_task: dict[str, list[Result]]) -> str:
    titles = {"causal-lm": "Causal language models (`MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`)",
              "masked-lm": "Masked language models (`MODEL_FOR_MASKED_LM_MAPPING_NAMES`)",
              "seq2seq": "Encoder-decoders (`MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES`)"}
    parts = [COVERAGE_INTRO]
    for task, results in by_task.items():
        parts += [f"## {titles[task]}", "", markdown(results, task)]
    return "\n".join(parts)


def time_70b(repeats: int = 5) -> None:
    """Best and median seconds of the meta check for Llama 3 70B's config, after a first (importing) call."""
    import statistics

    import transformers

    from archdsl.compiler import compile_spec
    from archdsl.interop import hf, hf_verify

    cfg = transformers.LlamaConfig(vocab_size=128256, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                                   num_attention_heads=64, num_key_value_heads=8, rope_theta=500000.0)
    start = time.perf_counter()
    spec = hf.spec_from_config(cfg)
    print(f"first spec_from_config (imports the modelling code): {time.perf_counter() - start:.3f} s")
    for what, run in (("transformers model on meta", lambda: hf_verify.transformers_model_on_meta(cfg)),
                      ("archdsl model on meta", lambda: compile_spec(spec, device="meta")),
                      ("hf_verify.check", lambda: hf_verify.check(cfg, spec)),
                      ("spec_from_config", lambda: hf.spec_from_config(cfg)),
                      ("spec_from_config(verify=False)", lambda: hf.spec_from_config(cfg, verify=False))):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        print(f"{what}: best {min(times):.3f} s, median {statistics.median(times):.3f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("types", nargs="*", help="model types (default: every type of each task's registry)")
    parser.add_argument("--task", choices=[*TASKS, "all"], default="all", help="which registry to sweep")
    parser.add_argument("--coverage", type=Path, help="write docs/coverage.md (every task's table)")
    parser.add_argument("--json", type=Path, help="write the results as JSON")
    parser.add_argument("--markdown", type=Path, help="write the table as Markdown")
    parser.add_argument("--time-70b", action="store_true", help="time the meta check of a 70B config instead")
    args = parser.parse_args(argv)
    if args.time_70b:
        time_70b()
        return 0
    logging.disable(logging.WARNING)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    torch.set_num_threads(1)
    by_task: dict[str, list[Result]] = {}
    for task in TASKS if args.task == "all" else [args.task]:
        registry = model_types(task)
        for model_type in [t for t in args.types if t in registry] if args.types else registry:
            r = run_one(model_type, task)
            by_task.setdefault(task, []).append(r)
            print(f"{task:9s} {r.model_type:28s} {r.status:26s} {r.seconds:5.1f}s  {r.detail[:100]}", flush=True)
    for task, results in by_task.items():
        print(f"\n{task}: " + markdown(results, task).splitlines()[0])
    if args.json:
        import transformers

        def rows(results: list[Result]) -> list[dict]:
            return [{k: v for k, v in asdict(r).items() if k != "seconds"} for r in results]
        data = {"transformers": transformers.__version__, "results": rows(by_task.get("causal-lm", []))}
        data.update({task.replace("-", "_"): rows(results) for task, results in by_task.items() if task != "causal-lm"})
        args.json.write_text(json.dumps(data, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(markdown(by_task.get("causal-lm", []), "causal-lm"))
    if args.coverage:
        args.coverage.write_text(coverage_doc(by_task))
    return 1 if any(r.status in ("differs", "crashed") for results in by_task.values() for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
