"""Batch-1 and batch-8 greedy decoding against its own bound: eager, compiled, transformers, and the matmuls alone.

Run as a section of the benchmark harness (``python benchmarks/run.py --only decode``). The bound is
measured, not assumed: one decode step must at least multiply its B new rows by every weight matrix
the step uses (each attention and MLP projection and the vocabulary head), so the harness times exactly
those matrix products, ``F.linear`` on the model's own weights in the same order, with nothing between
them. Each implementation's time per token is then reported as a fraction of that bound (bound / time:
1.0 would be a step that costs nothing but its matmuls). Attention over the cache, norms, rotary and
sampling are what the rest of a step spends.

``archdsl compiled`` is ``generate(..., compile=True)`` (``--smoke``: the ``eager`` backend, so the
harness check does not wait for code generation) (archdsl/decoding.py): inductor on a CPU,
``mode="reduce-overhead"`` (CUDA graphs) on a GPU; its first call compiles, reported in the note and
not timed.
"""
from __future__ import annotations

import gc
import statistics
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from archdsl.blocks.heads import LMHead


def matmul_weights(model: nn.Module) -> list[torch.Tensor]:
    """The weight matrices one decode step multiplies by, in forward order: every Linear and the head
    (a tied head's weight is the embedding's, multiplied here; the embedding lookup itself is not)."""
    return [m.weight for m in model.modules() if isinstance(m, (nn.Linear, LMHead))]


def matmul_bound(model: nn.Module, batch: int, timer: Any, reps: int) -> list[float]:
    """Seconds per decode step of the matmuls alone: (batch, in) @ weight.T for every weight matrix."""
    weights = matmul_weights(model)
    inputs = {w.shape[1]: torch.randn(batch, w.shape[1], dtype=w.dtype, device=w.device) for w in weights}

    def step():
        with torch.inference_mode():
            for w in weights:
                F.linear(inputs[w.shape[1]], w)
    for _ in range(3):
        step()
    steps = 32
    return [timer(lambda: [step() for _ in range(steps)]) / steps for _ in range(reps)]


def decoding(res: Any, size: dict, device: torch.device, timer: Any, interleaved: Any) -> None:
    import bench_models
    import competitors

    P, N = size["prompt"], size["new"]
    compile_ = size.get("decode_compile", True)  # --smoke: Dynamo without code generation, to stay fast
    for arch in bench_models.ARCHS:
        impls = ["archdsl", "hf-sdpa"] if competitors.HAVE_HF else ["archdsl"]
        models = bench_models.build_all(arch, size, device, impls=impls)
        ours = models["archdsl"][0].eval()
        hf = models["hf-sdpa"][0].eval() if "hf-sdpa" in models else None
        for B in size["gen_batches"]:
            prompt = torch.randint(0, size["vocab"], (B, P), generator=torch.Generator().manual_seed(B)).to(device)
            outs: dict[str, torch.Tensor] = {}
            fns = {"archdsl": lambda: outs.__setitem__("archdsl", ours.generate(prompt, N)),
                   "archdsl-compiled": lambda: outs.__setitem__("archdsl-compiled", ours.generate(prompt, N, compile=compile_))}
            if hf is not None:
                fns["hf-sdpa"] = lambda: outs.__setitem__("hf-sdpa", hf.generate(
                    prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=N, min_new_tokens=N,
                    do_sample=False, pad_token_id=0))
            first = timer(fns["archdsl-compiled"])  # compiles the step for this batch and bucket
            (decoder,) = [d for k, d in ours._compiled_decoders.items() if k[0] == B]
            interleaved(fns, 1, 0, timer)  # warm-up
            samples = interleaved(fns, 0, size["gen_reps"], timer)
            per_token = {k: [t / N for t in v] for k, v in samples.items()}
            per_token["bound"] = matmul_bound(ours, B, timer, size["gen_reps"])
            bound = statistics.median(per_token["bound"])
            fraction = {k: bound / statistics.median(v) for k, v in per_token.items() if k != "bound"}
            same = [k for k in outs if k != "archdsl" and torch.equal(outs[k], outs["archdsl"])]
            note = (f"fraction of the matmul bound: " + ", ".join(f"{k} {v:.0%}" for k, v in fraction.items()) +
                    f"; compile {decoder.compile_seconds:.1f} s (first call {first:.1f} s); "
                    f"same tokens as archdsl: {', '.join(same) or 'none'}")
            res.add(f"decode step, {N} tok, B{B}, prompt {P}, {bench_models.LABEL[arch]}", "ms/token",
                    per_token, 1e3, note, fmt="{:.2f}")
        ours.__dict__.pop("_compiled_decoders", None)
        torch._dynamo.reset()
        del models, ours, hf
        gc.collect()


# ---------------------------------------------------------------------------- where a step's time goes
_CATEGORIES = (  # aten op name fragments -> what the time is spent on
    ("matmuls (the bound's work)", ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear")),
    ("attention over the cache", ("scaled_dot_product", "flash_attention")),
    ("cache writes and indexing", ("index", "copy_", "scatter", "slice_scatter", "select_scatter")),
    ("norms, rotary, activations and other elementwise", ("norm", "mul", "add", "rsqrt", "pow", "mean", "neg", "cat",
                                                          "silu", "gelu", "tanh", "div", "sub", "exp", "softmax")),
    ("sampling (argmax)", ("argmax", "max")),
)


def _op_time(model: nn.Module, prompt: torch.Tensor, new: int) -> tuple[float, dict[str, float]]:
    """(unprofiled wall seconds, profiled self CPU seconds per category) of generate(prompt, new)."""
    import time

    from torch.profiler import profile

    start = time.perf_counter()
    model.generate(prompt, new)
    wall = time.perf_counter() - start
    with profile() as prof:
        model.generate(prompt, new)
    totals: dict[str, float] = {}
    for event in prof.key_averages():
        if event.key.startswith("aten::"):
            group = next((label for label, names in _CATEGORIES if any(n in event.key for n in names)), "other aten ops")
            totals[group] = totals.get(group, 0.0) + event.self_cpu_time_total / 1e6
    return wall, totals


def profile_decode(arch: str, batch: int, mode: str = "full", steps: int = 64) -> None:
    """Print where greedy decode steps of archdsl (eager) spend their wall time: torch.profiler's self CPU
    time per aten op, grouped, and what is left over (Python and dispatch between the ops). The prefill
    and first token are taken out: each figure is generate(steps + 1) minus generate(1), per step."""
    import bench_models
    import run

    size = run.SIZES[mode]
    model = bench_models.archdsl_model(arch, size, torch.device("cpu")).eval()
    prompt = torch.randint(0, size["vocab"], (batch, size["prompt"]), generator=torch.Generator().manual_seed(batch))
    model.generate(prompt, steps + 1)  # warm-up
    wall_all, all_ops = _op_time(model, prompt, steps + 1)
    wall_one, one_ops = _op_time(model, prompt, 1)
    wall = (wall_all - wall_one) / steps
    per_step = {k: (v - one_ops.get(k, 0.0)) / steps for k, v in all_ops.items()}
    ops = sum(per_step.values())
    print(f"{bench_models.LABEL[arch]}, {mode} size, B{batch}, prompt {size['prompt']}, {steps} decode steps, "
          f"{torch.get_num_threads()} thread(s): {wall * 1e3:.2f} ms per step unprofiled")
    for group, seconds in sorted(per_step.items(), key=lambda kv: -kv[1]):
        print(f"  {group:<52} {seconds * 1e3:7.3f} ms  {seconds / wall:5.1%} of the step")
    print(f"  {'Python and dispatch between the ops (the rest)':<52} {(wall - ops) * 1e3:7.3f} ms  "
          f"{(wall - ops) / wall:5.1%} of the step")


if __name__ == "__main__":
    import argparse
    import sys
    from pathlib import Path

    sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]
    parser = argparse.ArgumentParser(description="Where archdsl's greedy decode steps spend their time "
                                     "(python benchmarks/decode.py --profile [--threads N]); the timed rows are "
                                     "`python benchmarks/run.py --only decode`.")
    parser.add_argument("--profile", action="store_true", required=True)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--mode", default="full", choices=("smoke", "quick", "full"))
    parser.add_argument("--steps", type=int, default=64)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for arch_name in ("gpt", "llama"):
        for b in (1, 8):
            profile_decode(arch_name, b, args.mode, args.steps)
