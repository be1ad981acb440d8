#!/usr/bin/env python
"""A Mamba-2-shaped model in archdsl against transformers' Mamba2ForCausalLM (its PyTorch path, the same
weights), and the cost of one decoding step as the position grows, beside an attention model.

    python benchmarks/ssm.py            # 4 layers, width 256, 8 heads × 64, state 64; about a minute
    python benchmarks/ssm.py --threads 2

Prefill: one forward of (batch 4, 256 tokens), no cache. Decode: greedy generation of 64 tokens after a
16-token prompt, batch 1, as tokens per second (transformers' generate with min_new_tokens = 64 so that
both produce the same count). Per-step cost: one cached token at positions 128, 1024 and 4096 for the
Mamba-2 model and for a Llama-shaped archdsl model of the same width and depth (4 heads, 2 KV heads):
attention's step reads a KV cache as long as the position, Mamba-2's a fixed state. Medians of
interleaved repetitions; ratios are archdsl / transformers for times (below 1: archdsl faster).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import archdsl  # noqa: E402


def median_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    import transformers

    from archdsl.interop.hf import from_hf

    torch.manual_seed(0)
    cfg = transformers.Mamba2Config(vocab_size=8192, hidden_size=256, num_hidden_layers=4, num_heads=8, head_dim=64,
                                    state_size=64, n_groups=1, chunk_size=64, tie_word_embeddings=True)
    theirs = transformers.Mamba2ForCausalLM(cfg).eval()
    ours = from_hf(theirs)
    tokens = torch.randint(0, 8192, (4, 256))
    with torch.inference_mode():
        assert (ours(tokens) - theirs(tokens).logits).abs().max() < 1e-3  # the same model
        rows = []
        pre = [[], []]
        for _ in range(args.reps):  # interleaved, so a burst of load hits both
            pre[0].append(median_time(lambda: ours(tokens), 1))
            pre[1].append(median_time(lambda: theirs(tokens), 1))
        rows.append(("prefill (4 × 256 tokens)", statistics.median(pre[0]), statistics.median(pre[1]), "s"))
        prompt = tokens[:1, :16]
        ours.generate(prompt, 4)
        dec = [[], []]
        for _ in range(max(2, args.reps // 2)):
            dec[0].append(64 / median_time(lambda: ours.generate(prompt, 64), 1))
            dec[1].append(64 / median_time(lambda: theirs.generate(prompt, max_new_tokens=64, min_new_tokens=64,
                                                                     do_sample=False, pad_token_id=0), 1))
        rows.append(("decode (batch 1, 64 tokens)", statistics.median(dec[0]), statistics.median(dec[1]), "tok/s"))
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {args.threads} thread(s)")
    print(f"{'':30} {'archdsl':>10} {'transformers':>13} {'ratio':>7}")
    for name, a, b, unit in rows:
        ratio = a / b if unit == "s" else b / a  # archdsl / transformers time
        print(f"{name:30} {a:>10.4g} {b:>13.4g} {ratio:>7.2f}  ({unit}; ratio = archdsl time / transformers time)")

    llama = archdsl.compile(ROOT / "specs" / "llama3-8b.yaml", overrides={
        "vocab": 8192, "d_model": 256, "layers": 4, "heads": 4, "kv_heads": 2, "ffn": 688, "context": 8192}, seed=0)
    print("\none decoding step (ms) at position:")
    positions = (128, 1024, 4096)
    print(f"{'':30} " + " ".join(f"{p:>8}" for p in positions))
    for name, model in (("mamba-2 (archdsl)", ours), ("llama-shaped attention", llama.eval())):
        steps = []
        for position in positions:
            cache = model.new_cache(1, position + 8)
            with torch.inference_mode():
                model(torch.randint(0, 8192, (1, position)), cache=cache)
                token = torch.randint(0, 8192, (1, 1))
                times = []
                for _ in range(7):
                    start = time.perf_counter()
                    model(token, cache=cache)
                    times.append(time.perf_counter() - start)
            steps.append(statistics.median(times) * 1e3)
        print(f"{name:30} " + " ".join(f"{t:>8.2f}" for t in steps))


if __name__ == "__main__":
    main()
