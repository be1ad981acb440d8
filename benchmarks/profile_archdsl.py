#!/usr/bin/env python
"""Where archdsl spends time compared with the hand-written reference, and what candidate fixes would gain.

    python benchmarks/profile_archdsl.py [--size quick|tiny] [--reps N] [--profile]

1. Counts the aten ops each model dispatches (TorchDispatchMode) for a training forward+backward, an
   inference forward and one cached decode step, archdsl vs the reference on the same weights, and
   prints the ops whose counts differ: every extra op is Python + dispatcher work (and, in backward,
   sometimes a zero-filled buffer) that archdsl adds.
2. Times the same workloads (thread CPU time, 1 intra-op thread, min of --reps runs) with archdsl as it is
   and with candidate fixes monkeypatched in *this process only* (archdsl's files are not touched),
   one at a time and all together, so that each proposed change comes with a measured gain.
3. With --profile, prints torch.profiler tables (top ops by self CPU time) for each workload.

The candidate fixes are the ones proposed in docs/benchmarks.md; see PATCHES below.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import sys
import time
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

import bench_models  # noqa: E402
from archdsl import compiler as arch_compiler  # noqa: E402
from archdsl.blocks import attention as arch_attention  # noqa: E402
from archdsl.blocks import embedding as arch_embedding  # noqa: E402
from archdsl.blocks import norm as arch_norm  # noqa: E402
from archdsl.blocks import structure as arch_structure  # noqa: E402


# ------------------------------------------------------------------------------ candidate fixes
def _rms_fused(self, x, ctx):
    """blocks/norm.py RMSNorm.forward: one fused kernel in float32 (the float32 path is bit-for-bit the same math)."""
    if x.dtype == torch.float32:
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
    xf = x.float()
    return self.weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


def _apply_rotary_noslice(x, cos, sin, interleaved):
    """blocks/embedding.py apply_rotary: no slicing (and no slice_backward zero-fill) when every dim rotates."""
    rot = cos.shape[-1]
    if rot != x.shape[-1] or interleaved:
        return _ORIGINAL["apply_rotary"](x, cos, sin, interleaved)
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def _check_tokens_once(self, tokens, cache=None):
    """compiler.py ArchModel._check_tokens: one aminmax reduction and one host sync instead of min, max and two."""
    if tokens.dim() != 2:
        raise ValueError("tokens must be (batch, seq)")
    if self.vocab is not None and not torch.compiler.is_compiling() and tokens.numel():
        low, high = torch.aminmax(tokens)
        low, high = torch.stack((low, high)).tolist()
        if low < 0 or high >= self.vocab:
            raise ValueError("token ids out of range")


def _sequence_direct(self, x, ctx):
    """blocks/structure.py Sequence.forward calling children's forward directly (no nn.Module.__call__:
    an upper bound of what flattening the module tree / skipping hook dispatch could save)."""
    for module in self._modules.values():
        x = module.forward(x, ctx)
    return x


def _residual_direct(self, x, ctx):
    return x + _sequence_direct(self, x, ctx)


_ORIGINAL = {
    "rms": arch_norm.RMSNorm.forward,
    "apply_rotary": arch_embedding.apply_rotary,
    "check": arch_compiler.ArchModel._check_tokens,
    "sequence": arch_structure.Sequence.forward,
    "residual": arch_structure.Residual.forward,
}


@contextlib.contextmanager
def patched(names: set[str]):
    try:
        if "rmsnorm" in names:
            arch_norm.RMSNorm.forward = _rms_fused
        if "rotary" in names:
            arch_attention.apply_rotary = _apply_rotary_noslice  # attention.py imported it by name
        if "check" in names:
            arch_compiler.ArchModel._check_tokens = _check_tokens_once
        if "direct" in names:
            arch_structure.Sequence.forward = _sequence_direct
            arch_structure.Residual.forward = _residual_direct
        yield
    finally:
        arch_norm.RMSNorm.forward = _ORIGINAL["rms"]
        arch_attention.apply_rotary = _ORIGINAL["apply_rotary"]
        arch_compiler.ArchModel._check_tokens = _ORIGINAL["check"]
        arch_structure.Sequence.forward = _ORIGINAL["sequence"]
        arch_structure.Residual.forward = _ORIGINAL["residual"]


def drop_zero_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """blocks/feedforward.py build_dropout: build nothing for p == 0 (here: swap in a pass-through)."""
    class Skip(torch.nn.Module):
        def forward(self, x, ctx):
            return x
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Dropout) and child.p == 0:
                setattr(module, child_name, Skip())
    return model


PATCHES = {"rmsnorm": "RMSNorm -> F.rms_norm", "rotary": "rotary without slices", "check": "token check: 1 sync",
           "direct": "children called without Module.__call__"}
SIZES = {  # "tiny" is overhead-bound (Python + dispatch dominate), "quick" is run.py --quick's shape
    "tiny": dict(layers=4, d_model=64, heads=4, kv_heads=2, ffn=176, vocab=512, batch=1, seq=16),
}


# --------------------------------------------------------------------------------- workloads
class Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def workloads(model, logits_of, size, is_archdsl) -> dict[str, Callable[[], None]]:
    V, B, S = size["vocab"], size["batch"], size["seq"]
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, V, (B, S), generator=g)
    y = torch.randint(0, V, (B, S), generator=g)
    prompt = torch.randint(0, V, (1, 16), generator=g)

    def train():
        model.train()
        model.zero_grad(set_to_none=True)
        F.cross_entropy(logits_of(model(x)).reshape(-1, V), y.reshape(-1)).backward()

    def infer():
        model.eval()
        with torch.inference_mode():
            logits_of(model(x))

    if is_archdsl:
        cache = model.new_cache(1, 64)
        pos = torch.full((1, 1), 16)

        def decode():
            model.eval()
            with torch.inference_mode():
                cache.length = 16
                model._forward(prompt[:, :1], None, pos, None, cache, last_only=True)
        with torch.inference_mode():
            model._forward(prompt, None, None, None, cache, last_only=True)
    else:
        cache = model.new_cache(1, 64)

        def decode():
            model.eval()
            with torch.inference_mode():
                model(prompt[:, :1], cache, 16, last_only=True)
        with torch.inference_mode():
            model(prompt, cache, 0, last_only=True)
    return {"train fwd+bwd": train, "inference forward": infer, "decode step B1": decode}


def interleaved_min(rows: dict[str, tuple[set, dict]], names: list[str], reps: int) -> dict[str, dict[str, float]]:
    """Min over reps of the CPU time of this thread, variants interleaved round by round (with 1 intra-op
    thread all work runs here, and time spent preempted by other processes is not counted)."""
    out = {label: {n: float("inf") for n in names} for label in rows}
    for rep in range(reps + 1):  # round 0 warms up
        for label, (patches, w) in rows.items():
            with patched(patches):
                for n in names:
                    t = time.thread_time()
                    w[n]()
                    if rep:
                        out[label][n] = min(out[label][n], time.thread_time() - t)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=["quick", "tiny"], default="quick",
                    help="quick: run.py --quick's shapes; tiny: width 64, batch 1 x 16 tokens (overhead-bound)")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--profile", action="store_true", help="print torch.profiler tables")
    ap.add_argument("--threads", type=int, default=1,
                    help="intra-op threads (default 1: then thread CPU time is the whole cost, immune to load)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import run
    size = run.SIZES["quick"] if args.size == "quick" else SIZES["tiny"]
    print(f"sizes {run.size_model(size)}, {torch.get_num_threads()} thread(s), thread CPU time, min of {args.reps}\n")
    for arch in bench_models.ARCHS:
        models = bench_models.build_all(arch, size, impls=["archdsl", "reference"])
        arch_model, ref = models["archdsl"][0], models["reference"][0]
        if arch == "gpt":
            nodrop = drop_zero_dropout(bench_models.archdsl_model(arch, size))
            nodrop.load_state_dict(arch_model.state_dict())
        w_arch = workloads(arch_model, lambda o: o, size, True)
        w_ref = workloads(ref, lambda o: o, size, False)
        print(f"## {bench_models.LABEL[arch]}: aten ops dispatched, archdsl vs reference")
        for name in w_arch:
            with Count() as ca:
                w_arch[name]()
            with Count() as cr:
                w_ref[name]()
            diff = {k: (ca.ops.get(k, 0), cr.ops.get(k, 0)) for k in sorted(set(ca.ops) | set(cr.ops))
                    if ca.ops.get(k, 0) != cr.ops.get(k, 0)}
            print(f"- {name}: {sum(ca.ops.values())} vs {sum(cr.ops.values())}; differing (archdsl, ref): {diff}")
        print()
        variants: dict[str, tuple[set, Callable]] = {"archdsl as is": (set(), w_arch)}
        relevant = (["rmsnorm", "rotary"] if arch == "llama" else []) + ["check", "direct"]
        for p in relevant:
            variants[f"+ {PATCHES[p]}"] = ({p}, w_arch)
        if arch == "gpt":
            variants["+ no p=0 dropout modules"] = (set(), workloads(nodrop, lambda o: o, size, True))
            variants["+ all"] = (set(relevant), workloads(nodrop, lambda o: o, size, True))
        else:
            variants["+ all"] = (set(relevant), w_arch)
        print(f"## {bench_models.LABEL[arch]}: CPU ms, min of {args.reps}; ratio to the reference")
        print("| variant | " + " | ".join(w_arch) + " |")
        print("|---|" + "---|" * len(w_arch))
        rows = {"reference": (set(), w_ref), **variants}
        t = interleaved_min(rows, list(w_arch), args.reps)
        for label in rows:
            cells = [f"{t[label][n] * 1e3:.2f}" + ("" if label == "reference" else f" ({t[label][n] / t['reference'][n]:.2f}×)")
                     for n in w_arch]
            print(f"| {label} | " + " | ".join(cells) + " |")
        print()
        if args.profile:
            for name in w_arch:
                for who, fn in (("archdsl", w_arch[name]), ("reference", w_ref[name])):
                    fn()
                    with torch.profiler.profile() as prof:
                        fn()
                    print(f"### {bench_models.LABEL[arch]}, {name}, {who}")
                    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    return 0


if __name__ == "__main__":
    sys.exit(main())
