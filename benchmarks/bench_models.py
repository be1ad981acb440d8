"""The benchmarked models: archdsl and its competitors at one shape, with the same weights where possible."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

import archdsl  # noqa: E402

import competitors  # noqa: E402
from reference_gpt import RefConfig, ReferenceGPT, from_archdsl  # noqa: E402

IMPLS = ["archdsl", "reference", "hf-sdpa", "hf-eager", "x-transformers"]
ARCHS = ["gpt", "llama"]
SPEC = {"gpt": ROOT / "specs" / "gpt2.yaml", "llama": ROOT / "specs" / "llama-small.yaml"}
LABEL = {"gpt": "GPT-2-shaped", "llama": "Llama-shaped"}


def available(impl: str) -> bool:
    if impl.startswith("hf-"):
        return competitors.HAVE_HF
    if impl == "x-transformers":
        return competitors.HAVE_XT
    return True


def preload() -> None:
    """Import the competitors' modules up front (used by the fork-per-job memory worker)."""
    if competitors.HAVE_HF:
        import transformers.models.gpt2.modeling_gpt2  # noqa: F401
        import transformers.models.llama.modeling_llama  # noqa: F401
    if competitors.HAVE_XT:
        import x_transformers  # noqa: F401


def overrides(arch: str, size: dict) -> dict:
    common = {"vocab": size["vocab"], "d_model": size["d_model"], "heads": size["heads"], "layers": size["layers"]}
    if arch == "gpt":
        return {**common, "dropout": 0.0}  # no dropout anywhere, so that every implementation computes the same
    return {**common, "kv_heads": size["kv_heads"], "ffn": size["ffn"]}


def ref_config(arch: str, size: dict) -> RefConfig:
    if arch == "gpt":
        return RefConfig("gpt", size["vocab"], size["d_model"], size["layers"], size["heads"], size["heads"],
                         4 * size["d_model"], context=1024)
    return RefConfig("llama", size["vocab"], size["d_model"], size["layers"], size["heads"], size["kv_heads"],
                     size["ffn"], context=2048, rope_theta=10000.0)


def archdsl_model(arch: str, size: dict, device: Any = "cpu") -> archdsl.ArchModel:
    return archdsl.compile(SPEC[arch], overrides=overrides(arch, size), seed=0, device=device)


def _plain(out):
    return out


def _hf_logits(out):
    return out.logits


def build_all(arch: str, size: dict, device: Any = "cpu", impls=IMPLS) -> dict[str, tuple[torch.nn.Module, Callable]]:
    """impl -> (model, logits_of). archdsl's weights are copied into the reference and HF models and the
    logits are checked equal (an AssertionError otherwise); x-transformers keeps its own weights."""
    a = archdsl_model(arch, size, device)
    cfg = ref_config(arch, size)
    out: dict[str, tuple[torch.nn.Module, Callable]] = {"archdsl": (a, _plain)}
    if "reference" in impls:
        out["reference"] = (from_archdsl(a, cfg), _plain)
    for attn in ("sdpa", "eager"):
        if f"hf-{attn}" in impls and competitors.HAVE_HF:
            out[f"hf-{attn}"] = (competitors.hf_from_archdsl(a, cfg, attn), _hf_logits)
    if "x-transformers" in impls and competitors.HAVE_XT:
        out["x-transformers"] = (competitors.xt_model(cfg, device), _plain)
    return out


def build_for_training(impl: str, arch: str, size: dict, device: Any = "cpu"):
    """One model of the shape with its own (same-shaped) weights, for the memory worker."""
    if not available(impl):
        return None, None
    torch.manual_seed(0)
    cfg = ref_config(arch, size)
    if impl == "archdsl":
        return archdsl_model(arch, size, device), _plain
    if impl == "reference":
        return ReferenceGPT(cfg).to(device), _plain
    if impl.startswith("hf-"):
        return competitors.hf_model(cfg, impl[3:], device), _hf_logits
    return competitors.xt_model(cfg, device), _plain
