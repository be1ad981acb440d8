#!/usr/bin/env python
"""Peak memory and time of loading a checkpoint, each loader in a fresh process.

    python benchmarks/load.py make DIR [--layers 16 --hidden 1024 --ffn 2816 --vocab 32000]
        a Llama checkpoint saved by transformers' save_pretrained (5 shards of <= 200 MB at the
        default size: ~246M parameters, 938 MiB of float32), and DIR/archdsl/model.safetensors, the
        same model saved by archdsl's model.save
    python benchmarks/load.py measure LOADER DIR [--dtype bfloat16]
        LOADER: archdsl (interop.hf.from_pretrained), transformers (AutoModelForCausalLM.from_pretrained),
        safetensors (safetensors.torch.load_file of every shard), archdsl-file (archdsl.load_model of
        DIR/archdsl/model.safetensors); prints one JSON line
    python benchmarks/load.py compare DIR [--dtype bfloat16] [--runs 2]
        every loader, each in its own process, alternating; prints a table (run.py's `load` row uses this)

What is reported: the process's peak resident set during the load (VmHWM, which is ru_maxrss of
this process's memory, its high-water mark reset through /proc/self/clear_refs just before), minus
the resident set after the imports, so the figure is what loading costs and not torch's own libraries (the total is printed too); the load's wall time; and the resident set after touching every weight
(summing each tensor), since a loader that leaves tensors memory-mapped and unread looks smaller
until the first forward reads them.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOADERS = ("archdsl", "transformers", "safetensors", "archdsl-file")


def _status(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _rss() -> int:
    return _status("VmRSS")


def _maxrss() -> int:
    """The peak resident set of this process's memory: VmHWM. (getrusage's ru_maxrss is the same in a
    process started from a small one, but Linux carries it across exec: in a child of a large process,
    such as run.py after making the checkpoint, it reports the parent's size.)"""
    return _status("VmHWM")


def make(directory: Path, layers: int, hidden: int, ffn: int, vocab: int) -> None:
    import torch
    import transformers

    sys.path.insert(0, str(HERE.parent))
    from archdsl.interop.hf import from_hf

    config = transformers.LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn,
                                      num_hidden_layers=layers, num_attention_heads=16, num_key_value_heads=4)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(directory, max_shard_size="200MB")
    own = directory / "archdsl" / "model.safetensors"  # a subfolder: from_pretrained reads DIR/*.safetensors
    own.parent.mkdir(exist_ok=True)
    from_hf(model).save(own)
    shards = sorted(directory.glob("*.safetensors"))
    size = sum(p.stat().st_size for p in shards)
    print(f"wrote {directory}: {sum(p.numel() for p in model.parameters()):,} parameters, {len(shards)} file(s), "
          f"{size / 2**20:.0f} MiB; {own.relative_to(directory)} {own.stat().st_size / 2**20:.0f} MiB")


def measure(loader: str, directory: Path, dtype_name: str | None) -> dict:
    import torch

    sys.path.insert(0, str(HERE.parent))
    torch.set_num_threads(int(os.environ.get("LOAD_THREADS", torch.get_num_threads())))
    dtype = getattr(torch, dtype_name) if dtype_name else None
    if loader == "transformers":
        import transformers
        load = lambda: transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=dtype or torch.float32)  # noqa: E731
    elif loader == "archdsl":
        from archdsl.interop.hf import from_pretrained
        import transformers  # noqa: F401  (config reading; imported before the baseline as for transformers)
        load = lambda: from_pretrained(directory, dtype=dtype)  # noqa: E731
    elif loader == "archdsl-file":
        import archdsl
        from archdsl import checkpoint  # noqa: F401
        if dtype not in (None, torch.float32):
            raise SystemExit("archdsl-file loads the file's own dtype (float32 here)")
        load = lambda: archdsl.load_model(directory / "archdsl" / "model.safetensors")  # noqa: E731
    elif loader == "safetensors":
        from safetensors.torch import load_file

        def load():
            out = {}
            for p in sorted(directory.glob("*.safetensors")):
                out.update({k: (v.to(dtype) if dtype else v) for k, v in load_file(str(p)).items()})
            return out
    else:
        raise SystemExit(f"unknown loader {loader}; one of {', '.join(LOADERS)}")
    base_max = _maxrss()
    with open("/proc/self/clear_refs", "w") as f:  # reset the high-water mark VmHWM to the current RSS
        f.write("5")
    base_rss = _rss()
    start = time.perf_counter()
    model = load()
    seconds = time.perf_counter() - start
    peak = _maxrss()
    tensors = list(model.values()) if isinstance(model, dict) else list(model.state_dict().values())
    weight_bytes = sum(t.numel() * t.element_size() for t in {id(t): t for t in tensors}.values())
    with torch.no_grad():
        for t in tensors:  # fault in every page a forward would read
            t.float().sum() if t.is_floating_point() else t.sum()
    touched_rss = _rss()
    return {"loader": loader, "dtype": dtype_name or "float32", "seconds": round(seconds, 3),
            "peak_mib": round((peak - base_rss) / 2**20, 1), "peak_total_mib": round(peak / 2**20, 1),
            "baseline_mib": round(base_rss / 2**20, 1),
            "peak_before_load_mib": round(base_max / 2**20, 1), "weights_mib": round(weight_bytes / 2**20, 1),
            "resident_after_touch_mib": round((touched_rss - base_rss) / 2**20, 1)}


def run_fresh(loader: str, directory: Path, dtype_name: str | None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "measure", loader, str(directory)]
    if dtype_name:
        cmd += ["--dtype", dtype_name]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if res.returncode:
        return {"loader": loader, "error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def compare(directory: Path, dtype_name: str | None, runs: int, loaders=LOADERS) -> list[dict]:
    results: dict[str, list[dict]] = {name: [] for name in loaders}
    for _ in range(runs):
        for name in loaders:
            if name == "archdsl-file" and dtype_name not in (None, "float32"):
                continue
            results[name].append(run_fresh(name, directory, dtype_name))
    return [r for rs in results.values() for r in rs]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("make")
    p.add_argument("dir", type=Path)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--ffn", type=int, default=2816)
    p.add_argument("--vocab", type=int, default=32000)
    p = sub.add_parser("measure")
    p.add_argument("loader", choices=LOADERS)
    p.add_argument("dir", type=Path)
    p.add_argument("--dtype", default=None)
    p = sub.add_parser("compare")
    p.add_argument("dir", type=Path)
    p.add_argument("--dtype", default=None)
    p.add_argument("--runs", type=int, default=2)
    args = ap.parse_args(argv)
    if args.cmd == "make":
        make(args.dir, args.layers, args.hidden, args.ffn, args.vocab)
    elif args.cmd == "measure":
        print(json.dumps(measure(args.loader, args.dir, args.dtype)))
    else:
        rows = compare(args.dir, args.dtype, args.runs)
        keys = ["loader", "dtype", "seconds", "peak_mib", "peak_total_mib", "resident_after_touch_mib", "weights_mib",
                "baseline_mib"]
        print(" | ".join(keys))
        for r in rows:
            print(" | ".join(str(r.get(k, r.get("error", ""))) for k in keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
