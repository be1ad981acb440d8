#!/usr/bin/env python
"""archdsl against hand-written PyTorch, Hugging Face transformers and x-transformers, in one process.

    python benchmarks/run.py                 # full sizes (6 layers, width 384, seq 256, batch 8), with torch.compile
    python benchmarks/run.py --quick         # smaller sizes, fewer repetitions (about 1 min on 2 cores)
    python benchmarks/run.py --smoke         # tiny, 1-2 repetitions: checks that the harness runs (seconds)
    python benchmarks/run.py --quick --out docs/benchmarks.md    # also write the results block and the plot

Every figure is the median of repeated timings after warm-up, the implementations interleaved round by
round (so that a burst of load on the machine hits all of them alike). The same weights are used where
possible: the reference and Hugging Face models get archdsl's weights, and their logits are checked equal
before anything is timed; x-transformers has the same shape with its own weights. Ratios are
archdsl / other, for costs (time, memory): below 1 means archdsl is faster or smaller.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(ROOT), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import archdsl  # noqa: E402
from archdsl.atomic import replacing, write_text  # noqa: E402
import bench_models  # noqa: E402
import competitors  # noqa: E402
import decode  # noqa: E402
import moe  # noqa: E402
from bench_models import ARCHS, IMPLS, LABEL  # noqa: E402
from reference_gpt import RefConfig, ReferenceGPT  # noqa: E402

SIZES: dict[str, dict[str, Any]] = {
    # model shape (llama: heads / kv_heads GQA, SwiGLU hidden ffn; gpt: MLP 4 x d_model) and repetitions
    "smoke": dict(layers=1, d_model=64, heads=4, kv_heads=2, ffn=176, vocab=512, batch=2, seq=16,
                  prompt=4, new=4, gen_batches=(1,), warmup=1, reps=1, gen_reps=1, build_reps=1,
                  build_layers=1, build_vocab=1024, meta_layers=2, moe_layers=1,
                  decode_compile={"backend": "eager"}),
    "quick": dict(layers=4, d_model=256, heads=4, kv_heads=2, ffn=688, vocab=8192, batch=4, seq=128,
                  prompt=16, new=128, gen_batches=(1, 8), warmup=2, reps=7, gen_reps=2, build_reps=2,
                  build_layers=None, build_vocab=None, meta_layers=None, moe_layers=2),
    "full": dict(layers=6, d_model=384, heads=6, kv_heads=2, ffn=1024, vocab=8192, batch=8, seq=256,
                 prompt=32, new=128, gen_batches=(1, 8), warmup=2, reps=9, gen_reps=3, build_reps=5,
                 build_layers=None, build_vocab=None, meta_layers=None, moe_layers=4),
}
LLAMA_70B = dict(d_model=8192, layers=80, heads=64, kv_heads=8, ffn=28672)
LLAMA_70B_PARAMS = 70_553_706_496
DEEPSEEK_V3_PARAMS = 671_026_404_352
COLUMNS = IMPLS  # archdsl, reference, hf-sdpa, hf-eager, x-transformers; then the columns of the moe/decode rows
SHORT = {"reference": "ref", "hf-sdpa": "HF sdpa", "hf-eager": "HF eager", "x-transformers": "x-t",
         "archdsl-compiled": "compiled", "bound": "matmul bound", "hf-grouped": "HF grouped_mm",
         "hf-loop": "HF expert loop"}


class Timer:
    """Wall-clock seconds of one call (CUDA synchronised), or with clock="cpu" the CPU seconds of this
    process (time.process_time: with --threads 1 the work itself, not counting time spent preempted by
    other processes on a shared machine; with more threads it also counts OpenMP spin-waiting)."""

    def __init__(self, device: torch.device, clock: str = "wall"):
        self.cuda = device.type == "cuda"
        self.now = time.perf_counter if clock == "wall" else time.process_time

    def __call__(self, fn: Callable[[], Any]) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        t = self.now()
        fn()
        if self.cuda:
            torch.cuda.synchronize()
        return self.now() - t


def interleaved(fns: dict[str, Callable[[], Any]], warmup: int, reps: int, timer: Timer) -> dict[str, list[float]]:
    """Run every fn `warmup` times, then `reps` rounds of one timed call each; the samples per name."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            samples[name].append(timer(fn))
    return samples


class Results:
    def __init__(self):
        self.rows: list[dict] = []

    def add(self, label: str, unit: str, samples: dict[str, list[float]], scale: float = 1.0, note: str = "",
            fmt: str = "{:.1f}") -> dict:
        values = {k: statistics.median(v) * scale for k, v in samples.items() if v}
        ratios = {}
        a = samples.get("archdsl")
        for k, v in samples.items():
            if k == "archdsl" or not v or not a:
                continue
            # rounds were interleaved: the median of per-round ratios cancels load that drifts between rounds
            ratios[k] = statistics.median(x / y for x, y in zip(a, v)) if len(v) == len(a) else values["archdsl"] / values[k]
        row = dict(label=label, unit=unit, values=values, ratios=ratios, samples=samples, note=note, fmt=fmt)
        self.rows.append(row)
        line = ", ".join(f"{k} {fmt.format(v)}" for k, v in values.items())
        print(f"  {label} [{unit}]: {line}" + (f"  ({note})" if note else ""), flush=True)
        return row

    def columns(self) -> list[str]:
        """COLUMNS (always, "–" where not installed), then the other implementations rows measured, in first use."""
        seen = [c for r in self.rows for c in r["values"]]
        return COLUMNS + list(dict.fromkeys(c for c in seen if c not in COLUMNS))

    def table(self) -> str:
        columns = self.columns()
        head = ["measurement", *columns, *(f"archdsl/{SHORT.get(c, c)}" for c in columns[1:]), "note"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.rows:
            v = r["values"]
            cells = [f"{r['label']} ({r['unit']})"]
            cells += [r["fmt"].format(v[c]) if c in v else "–" for c in columns]
            cells += [f"{r['ratios'][c]:.2f}" if c in r["ratios"] else "–" for c in columns[1:]]
            cells.append(r["note"])
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- tasks
def training_and_inference(res: Results, size: dict, device: torch.device, timer: Timer, compile_: bool) -> None:
    B, S, V = size["batch"], size["seq"], size["vocab"]
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, V, (B, S), generator=g).to(device)
    y = torch.randint(0, V, (B, S), generator=g).to(device)
    for arch in ARCHS:
        models = bench_models.build_all(arch, size, device)
        print(f"{LABEL[arch]}: outputs of reference{', HF eager, HF sdpa' if competitors.HAVE_HF else ''} "
              f"equal archdsl's (checked); params: " +
              ", ".join(f"{k} {sum(p.numel() for p in m.parameters()):,}" for k, (m, _) in models.items()), flush=True)
        shape = f"{LABEL[arch]}, B{B}×S{S}"

        def train_step(model, logits_of, opt):
            def step():
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(logits_of(model(x)).reshape(-1, V), y.reshape(-1))
                loss.backward()
                opt.step()
            return step

        fns = {}
        for name, (model, logits_of) in models.items():
            model.train()
            fns[name] = train_step(model, logits_of, torch.optim.AdamW(model.parameters(), lr=1e-4))
        train = res.add(f"train step, {shape}", "ms", interleaved(fns, size["warmup"], size["reps"], timer), 1e3)

        def infer(model, logits_of):
            def fwd():
                with torch.inference_mode():
                    logits_of(model(x))
            return fwd

        for model, _ in models.values():
            model.eval()
        fns = {name: infer(m, lo) for name, (m, lo) in models.items()}
        res.add(f"inference forward, {shape}", "ms", interleaved(fns, size["warmup"], size["reps"], timer), 1e3)

        if compile_:
            compiled_training(res, arch, models, x, y, size, timer, train)
        del models, fns
        gc.collect()


def compiled_training(res, arch, models, x, y, size, timer, eager_row) -> None:
    """torch.compile (inductor) training step of archdsl and the reference; compile time reported in the note."""
    V = size["vocab"]
    fns, compile_s = {}, {}
    for name in ("archdsl", "reference"):
        model, logits_of = models[name]
        model.train()
        compiled = torch.compile(model, fullgraph=True)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(compiled=compiled, opt=opt):
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(compiled(x).reshape(-1, V), y.reshape(-1))
            loss.backward()
            opt.step()
        compile_s[name] = timer(step)  # first call: compiles forward and backward
        fns[name] = step
    samples = interleaved(fns, size["warmup"], size["reps"], timer)
    speedup = eager_row["values"]["archdsl"] / (statistics.median(samples["archdsl"]) * 1e3)
    note = (f"archdsl eager/compiled {speedup:.2f}×; first call (compile) archdsl {compile_s['archdsl']:.0f} s, "
            f"ref {compile_s['reference']:.0f} s")
    res.add(f"train step torch.compile, {LABEL[arch]}", "ms", samples, 1e3, note)
    torch._dynamo.reset()


def generation(res: Results, size: dict, device: torch.device, timer: Timer) -> None:
    if not hasattr(archdsl.ArchModel, "generate"):
        print("skipped: generate not available", flush=True)
        return
    P, N = size["prompt"], size["new"]
    for arch in ARCHS:
        models = bench_models.build_all(arch, size, device)
        for m, _ in models.values():
            m.eval()
        for B in size["gen_batches"]:
            prompt = torch.randint(0, size["vocab"], (B, P), generator=torch.Generator().manual_seed(B)).to(device)
            mask = torch.ones_like(prompt)
            outs: dict[str, torch.Tensor] = {}

            def run(name, model, n):
                if name in ("archdsl", "reference"):
                    return lambda: outs.__setitem__(name, model.generate(prompt, n))
                if name.startswith("hf-"):
                    return lambda: outs.__setitem__(name, model.generate(
                        prompt, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                        use_cache=True, pad_token_id=0))
                from x_transformers import AutoregressiveWrapper
                wrapper = AutoregressiveWrapper(model)
                return lambda: outs.__setitem__(name, wrapper.generate(prompt, n, temperature=0.0, cache_kv=True))

            interleaved({name: run(name, m, min(N, 8)) for name, (m, _) in models.items()}, 1, 0, timer)  # warm-up
            fns = {name: run(name, m, N) for name, (m, _) in models.items()}
            samples = interleaved(fns, 0, size["gen_reps"], timer)
            ref = outs["archdsl"][:, P:]
            same = [SHORT[k] for k in ("reference", "hf-sdpa", "hf-eager") if k in outs
                    and torch.equal(outs[k][:, P:], ref)]
            differ = [SHORT[k] for k in ("reference", "hf-sdpa", "hf-eager") if k in outs and SHORT[k] not in same]
            tok_s = B * N / statistics.median(samples["archdsl"])
            note = f"archdsl {tok_s:.0f} tok/s; same tokens as archdsl: {', '.join(same) or 'none'}"
            if differ:
                note += f"; different: {', '.join(differ)}"
            res.add(f"greedy generate {N} tok, B{B}, prompt {P}, {LABEL[arch]}", "ms/token", samples, 1e3 / N, note)
        del models
        gc.collect()


def construction(res: Results, size: dict, timer: Timer) -> None:
    reps = size["build_reps"]
    # GPT-2 small, real initialisation on CPU
    layers, vocab = size["build_layers"], size["build_vocab"]
    gpt_over = {k: v for k, v in (("layers", layers), ("vocab", vocab)) if v} or None
    cfg = RefConfig("gpt", vocab or 50257, 768, layers or 12, 12, 12, 3072, context=1024)
    fns: dict[str, Callable] = {
        "archdsl": lambda: archdsl.compile(ROOT / "specs/gpt2.yaml", overrides=gpt_over, seed=0),
        "reference": lambda: ReferenceGPT(cfg),
    }
    if competitors.HAVE_HF:
        fns["hf-sdpa"] = lambda: competitors.hf_model(cfg, "sdpa")
    if competitors.HAVE_XT:
        fns["x-transformers"] = lambda: competitors.xt_model(cfg)
    samples, counts = timed_builds(fns, reps, timer)
    what = "GPT-2 small" if not gpt_over else "GPT-2 small with " + ", ".join(f"{k} {v}" for k, v in gpt_over.items())
    res.add(f"build {what}, real init, from YAML", "ms", samples, 1e3,
            f"params archdsl {counts['archdsl']:,}" + (f", HF {counts['hf-sdpa']:,}" if "hf-sdpa" in counts else ""),
            fmt="{:.0f}")
    gc.collect()

    # Llama-3-70B on meta
    over = dict(LLAMA_70B)
    if size["meta_layers"]:
        over["layers"] = size["meta_layers"]
    cfg = RefConfig("llama", 128256, over["d_model"], over["layers"], over["heads"], over["kv_heads"], over["ffn"],
                    context=8192, rope_theta=500000.0)
    meta = torch.device("meta")
    fns = {"archdsl": lambda: archdsl.compile(ROOT / "specs/llama3-8b.yaml", overrides=over, device="meta")}

    def ref_meta():
        with meta:
            return ReferenceGPT(cfg)
    fns["reference"] = ref_meta
    if competitors.HAVE_HF:
        fns["hf-sdpa"] = lambda: competitors.hf_model(cfg, "sdpa", device="meta")
    if competitors.HAVE_XT:
        fns["x-transformers"] = lambda: competitors.xt_model(cfg, device="meta")
    first = timer(fns["archdsl"])  # the first build in the process (cold caches)
    samples, counts = timed_builds(fns, max(reps, 3), timer)
    if not size["meta_layers"]:
        assert counts["archdsl"] == LLAMA_70B_PARAMS, counts
        if "hf-sdpa" in counts:
            assert counts["hf-sdpa"] == LLAMA_70B_PARAMS, counts
    what = "Llama-3-70B" if not size["meta_layers"] else f"Llama-3-70B at {size['meta_layers']} layers"
    exact = "exact" if counts["archdsl"] == (LLAMA_70B_PARAMS if not size["meta_layers"] else counts["archdsl"]) else "WRONG"
    res.add(f"build {what} on meta, from YAML", "ms", samples, 1e3,
            f"{counts['archdsl']:,} params ({exact}); archdsl first build in process {first * 1e3:.0f} ms",
            fmt="{:.0f}")
    gc.collect()

    # DeepSeek-V3 on meta: 58 layers of 256 experts plus latent attention (archdsl and transformers only:
    # the reference and x-transformers have no such blocks); 2 builds each, transformers' take seconds
    layers = size["meta_layers"] + 3 if size["meta_layers"] else None  # the 3 dense layers, then experts
    fns = {"archdsl": lambda: archdsl.compile(ROOT / "specs/deepseek-v3.yaml", device="meta",
                                              overrides={"layers": layers} if layers else None)}
    if competitors.HAVE_HF:
        fns["hf-sdpa"] = lambda: competitors.hf_deepseek_v3(layers, device="meta")
    samples, counts = timed_builds(fns, 2, timer)
    if not layers:
        assert counts["archdsl"] == DEEPSEEK_V3_PARAMS and counts.get("hf-sdpa", DEEPSEEK_V3_PARAMS) == \
            DEEPSEEK_V3_PARAMS, counts
    same = "hf-sdpa" not in counts or counts["hf-sdpa"] == counts["archdsl"]
    res.add("build DeepSeek-V3" + (f" at {layers} layers" if layers else "") + " on meta, from YAML", "ms", samples,
            1e3, f"{counts['archdsl']:,} params ({'equal to transformers' if same else 'DIFFERENT from transformers'})",
            fmt="{:.0f}")
    gc.collect()


def timed_builds(fns: dict[str, Callable], reps: int, timer: Timer) -> tuple[dict, dict]:
    """Interleaved timed constructions (no warm-up: construction is a one-off); parameter counts of the built models."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    counts: dict[str, int] = {}
    for _ in range(reps):
        for name, fn in fns.items():
            gc.collect()
            built = []
            samples[name].append(timer(lambda: built.append(fn())))
            counts[name] = sum(p.numel() for p in built[0].parameters())
            del built
    gc.collect()
    return samples, counts


def memory(res: Results, size: dict, device: torch.device, threads: int) -> None:
    impls = ["archdsl", "reference"] if size is SIZES["smoke"] else IMPLS  # smoke: exercise the worker, quickly
    jobs = [dict(impl=i, arch=a, size=size_model(size), threads=threads, device=str(device))
            for a in ARCHS for i in impls if bench_models.available(i)]
    # glibc raises its mmap threshold after large frees, so whether a freed tensor's pages return to the OS
    # depended on what ran before: a fixed threshold maps (and unmaps) every tensor >= 64 KiB on its own,
    # and the high-water mark becomes the peak of live tensors (repeatable to 0.1 MiB)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    proc = subprocess.run([sys.executable, str(HERE / "memory.py"), json.dumps(jobs)], capture_output=True,
                          text=True, timeout=900, env=env)
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
        raise SystemExit(f"memory worker failed ({proc.returncode})")
    found = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    for arch in ARCHS:
        samples = {}
        for r in found:
            if r["arch"] == arch and "peak_delta" in r:
                samples[r["impl"]] = [r["peak_delta"] / 2**20]
            elif r["arch"] == arch and "error" in r:
                print(f"  memory {r['impl']} {arch}: {r['error']}", file=sys.stderr)
        what = found[0]["what"] if found else ""
        res.add(f"train-step peak memory, {LABEL[arch]}, B{size['batch']}×S{size['seq']}", "MiB", samples,
                note=f"{what} around one step, fresh process per model")


LOAD_SIZES = {  # the Llama checkpoint the `load` rows read (load.py make); full: the ~1 GB of issue 14
    "smoke": dict(layers=1, hidden=64, ffn=176, vocab=512),
    "quick": dict(layers=4, hidden=1024, ffn=2816, vocab=32000),
    "full": dict(layers=16, hidden=1024, ffn=2816, vocab=32000),
}


def loading(res: Results, mode: str) -> None:
    """Checkpoint loading, each loader in a fresh process (benchmarks/load.py): archdsl's from_pretrained
    against transformers' from_pretrained on one save_pretrained checkpoint (shards of <= 200 MB), in
    float32 and converted to bfloat16, and archdsl.load_model of the same weights saved by model.save."""
    import tempfile

    import load as load_bench

    if not competitors.HAVE_HF:
        print("  load: needs transformers, skipped", flush=True)
        return
    runs = 1 if mode == "smoke" else 2
    with tempfile.TemporaryDirectory(prefix="archdsl-load-") as tmp:
        directory = Path(tmp)
        shape = LOAD_SIZES[mode]
        load_bench.make(directory, **shape)
        shards = sorted(directory.glob("*.safetensors"))
        mib = sum(p.stat().st_size for p in shards) / 2**20
        what = f"Llama {shape['layers']} layers × {shape['hidden']}, {mib:.0f} MiB in {len(shards)} file(s)"
        for dtype in (None,) if mode == "smoke" else (None, "bfloat16"):
            rows = load_bench.compare(directory, dtype, runs, loaders=("archdsl", "transformers"))
            errors = [r for r in rows if "error" in r]
            for r in errors:
                print(f"  load {r['loader']}: {r['error']}", file=sys.stderr)
            by = {"archdsl": [r for r in rows if r.get("loader") == "archdsl" and "error" not in r],
                  "hf-sdpa": [r for r in rows if r.get("loader") == "transformers" and "error" not in r]}
            tag = "" if dtype is None else ", to bfloat16"
            touched = {k: max((r["resident_after_touch_mib"] for r in v), default=0) for k, v in by.items()}
            res.add(f"load from_pretrained {what}{tag}: peak RSS", "MiB",
                    {k: [r["peak_mib"] for r in v] for k, v in by.items()},
                    note=f"over the RSS after imports; resident after touching every weight: archdsl "
                         f"{touched['archdsl']:.0f}, transformers {touched['hf-sdpa']:.0f} (it leaves weights "
                         "memory-mapped and unread)")
            res.add(f"load from_pretrained {what}{tag}: time", "s",
                    {k: [r["seconds"] for r in v] for k, v in by.items()}, fmt="{:.2f}")
        own = [r for r in load_bench.compare(directory, None, runs, loaders=("archdsl-file",)) if "error" not in r]
        if own:
            res.add(f"load_model of the same weights saved by model.save ({own[0]['weights_mib']:.0f} MiB), "
                    "checksums verified: peak RSS", "MiB", {"archdsl": [r["peak_mib"] for r in own]},
                    note=f"time {statistics.median(r['seconds'] for r in own):.2f} s")


def size_model(size: dict) -> dict:
    return {k: size[k] for k in ("layers", "d_model", "heads", "kv_heads", "ffn", "vocab", "batch", "seq")}


# ----------------------------------------------------------------------------------------- reporting
def machine() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": str(os.cpu_count()), "torch threads": str(torch.get_num_threads()),
            "python": platform.python_version(), "platform": platform.platform()}
    info.update(competitors.package_versions())
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def plot(res: Results, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in res.rows if "archdsl" in r["values"]]
    others = [c for c in res.columns()[1:] if any(c in r["ratios"] for r in rows)]
    fig, ax = plt.subplots(figsize=(10, 0.55 * len(rows) * max(1, len(others)) / 2 + 1.5))
    h = 0.8 / max(1, len(others))
    for j, other in enumerate(others):
        ys, xs = [], []
        for i, r in enumerate(rows):
            if other in r["ratios"]:
                ys.append(i + (j - (len(others) - 1) / 2) * h)
                xs.append(r["ratios"][other])
        ax.barh(ys, [x - 1.0 for x in xs], left=1.0, height=h, label=f"archdsl / {other}")  # bars grow from 1
    ax.axvline(1.0, color="black", lw=1)
    ratios = [x for r in rows for x in r["ratios"].values()] or [1.0]
    ax.set_xlim(min(min(ratios), 1.0) * 0.85, max(max(ratios), 1.0) * 1.15)  # room for every bar
    ax.set_yticks(range(len(rows)), [r["label"] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("ratio archdsl / other (time or memory; < 1: archdsl better)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with replacing(path) as tmp:  # atomic, as every file archdsl writes
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")  # long row labels are not cut off
    plt.close(fig)


def write_doc(out: Path, res: Results, command: str, info: dict, mode: str, size: dict, elapsed: float,
              load: tuple[tuple, tuple], png: Path, key: str) -> None:
    """Replace the block between this run's markers (one block per mode/clock/threads) or append it."""
    begin, end = f"<!-- results {key}: begin (written by benchmarks/run.py) -->", f"<!-- results {key}: end -->"
    lines = [begin, "", f"Command: `{command}` (mode `{mode}`, {elapsed:.0f} s wall in total).", ""]
    lines.append("Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()) + ".")
    lines.append(f"Load average (1/5/15 min) at start {'/'.join(f'{x:.1f}' for x in load[0])}, "
                 f"at end {'/'.join(f'{x:.1f}' for x in load[1])} — the machine is shared, so absolute times "
                 "are noisy; implementations are interleaved round by round, so the ratios are less so.")
    lines.append("")
    lines.append(f"Model sizes: {json.dumps(size_model(size))} (GPT MLP hidden = 4 × d_model; Llama uses "
                 f"`ffn` and `kv_heads`); warm-up {size['warmup']}, repetitions {size['reps']} "
                 f"(generation {size['gen_reps']}, construction {size['build_reps']}); values are medians.")
    lines += ["", res.table(), "", f"![ratios archdsl / other]({png.name})", "", end]
    block = "\n".join(lines)
    text = out.read_text() if out.exists() else "# Benchmarks\n"
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    write_text(out, text)
    print(f"wrote {out} and {png}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="smaller sizes, fewer repetitions")
    group.add_argument("--smoke", action="store_true", help="tiny sizes, 1-2 repetitions (seconds)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--out", type=Path, help="write the results block of this markdown file and a PNG next to it")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="also time a torch.compile (inductor) training step (default: on for the full run only)")
    ap.add_argument("--only", nargs="+", choices=["train", "generate", "decode", "moe", "build", "memory", "load"],
                    help="run only these sections")
    ap.add_argument("--json", type=Path, help="write every sample as JSON")
    ap.add_argument("--threads", type=int, help="intra-op threads (default: every core this process may use)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall-clock time (default) or process CPU time (use with --threads 1 on a loaded machine)")
    args = ap.parse_args(argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    size = SIZES[mode]
    compile_ = args.compile if args.compile is not None else mode == "full"
    device = torch.device(args.device)
    threads = args.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    torch.set_num_threads(threads)
    sections = set(args.only or ["train", "generate", "decode", "moe", "build", "memory", "load"])
    command = "python benchmarks/run.py " + " ".join(sys.argv[1:] if argv is None else argv)
    load0 = os.getloadavg()
    info = machine()
    print(f"archdsl benchmarks, mode {mode}, device {device}, {threads} threads, {args.clock} clock; " +
          ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    missing = [name for name, ok in (("transformers", competitors.HAVE_HF), ("x-transformers", competitors.HAVE_XT))
               if not ok]
    if missing:
        print(f"not installed, columns skipped: {', '.join(missing)}", flush=True)
    timer = Timer(device, args.clock)
    res = Results()
    t0 = time.perf_counter()
    for name, fn in (("train", lambda: training_and_inference(res, size, device, timer, compile_)),
                     ("generate", lambda: generation(res, size, device, timer)),
                     ("decode", lambda: decode.decoding(res, size, device, timer, interleaved)),
                     ("moe", lambda: moe.moe(res, size, device, timer, interleaved)),
                     ("build", lambda: construction(res, size, timer)),
                     ("memory", lambda: memory(res, size, device, threads)),
                     ("load", lambda: loading(res, mode))):
        if name in sections:
            t = time.perf_counter()
            fn()
            print(f"[{name}: {time.perf_counter() - t:.0f} s]", flush=True)
    elapsed = time.perf_counter() - t0
    print()
    print("ratios are archdsl / other (time or memory): < 1 means archdsl is faster or smaller")
    print(res.table())
    print(f"\ntotal {elapsed:.0f} s")
    if args.json:
        write_text(args.json, json.dumps({"mode": mode, "machine": info, "rows": res.rows}, indent=1, default=str))
    if args.out:
        key = f"{mode}-{args.device}-{threads}t-{args.clock}" + ("-compile" if compile_ else "") + \
            (f"-only-{'-'.join(sorted(sections))}" if args.only else "")
        png = args.out.with_name(f"{args.out.stem}-{key}.png")
        plot(res, png, f"archdsl / other, {mode} mode, {args.clock} clock, {info['cpu']} ({threads} threads), "
                       f"torch {info['torch']}")
        write_doc(args.out, res, command, info, mode, size, elapsed, (load0, os.getloadavg()), png, key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
