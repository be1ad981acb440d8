"""Prefill and decode of the linear/recurrent hybrids: archdsl against transformers' torch path on the same weights.

    PYTHONPATH=. python benchmarks/linear_mixers.py            # the table of docs/linear-mixers.md
    PYTHONPATH=. python benchmarks/linear_mixers.py --quick    # smaller, a smoke run
    PYTHONPATH=. python benchmarks/linear_mixers.py --parity   # logits differences of the import tests' models

Each family is a transformers model of a small shape (random weights), imported with
archdsl.interop.hf.from_hf, so both run the same weights. One thread, float32, CPU; times are
process CPU seconds (robust on a shared machine), the best of `repeats` runs. Ratios < 1 mean
archdsl takes less time. The last table is the decode time per token as the context grows, for a
stack of gated DeltaNet layers (fixed state) and the same stack with attention (growing KV cache).
"""
from __future__ import annotations

import argparse
import time
import warnings

import torch

warnings.filterwarnings("ignore")


def configs(quick: bool) -> dict:
    import transformers as T

    width, layers = (64, 4) if quick else (256, 4)
    return {
        "qwen3_next": T.Qwen3NextConfig(
            vocab_size=1024, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
            num_attention_heads=4, num_key_value_heads=2, head_dim=width // 4, linear_num_key_heads=4,
            linear_num_value_heads=8, linear_key_head_dim=width // 8, linear_value_head_dim=width // 8,
            num_experts=8, num_experts_per_tok=2, moe_intermediate_size=width // 2,
            shared_expert_intermediate_size=width // 2, eos_token_id=None),
        "lfm2": T.Lfm2Config(vocab_size=1024, hidden_size=width, intermediate_size=3 * width, num_hidden_layers=layers,
                             num_attention_heads=4, num_key_value_heads=2, full_attn_idxs=[1], eos_token_id=None),
        "recurrent_gemma": T.RecurrentGemmaConfig(
            vocab_size=1024, hidden_size=width, intermediate_size=6 * width, num_hidden_layers=layers,
            num_attention_heads=4, num_key_value_heads=1, attention_window_size=256, eos_token_id=None),
    }


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def family_rows(quick: bool, repeats: int) -> list[tuple[str, float, float, float, float]]:
    import transformers as T

    from archdsl.interop import hf

    prefill, prompt, new = (64, 8, 8) if quick else (512, 16, 64)
    rows = []
    for name, config in configs(quick).items():
        torch.manual_seed(0)
        theirs = T.AutoModelForCausalLM.from_config(config).eval()
        ours = hf.from_hf(theirs)
        tokens = torch.randint(0, 1024, (1, prefill))
        with torch.inference_mode():
            t_ours = best(lambda: ours(tokens), repeats)
            t_theirs = best(lambda: theirs(tokens, use_cache=False), repeats)
        start = tokens[:, :prompt]
        mask = torch.ones_like(start)
        g_ours = best(lambda: ours.generate(start, new), repeats)
        g_theirs = best(lambda: theirs.generate(start, attention_mask=mask, max_new_tokens=new, do_sample=False),
                        repeats)
        rows.append((name, t_ours, t_theirs, new / g_ours, new / g_theirs))
    return rows


def per_token(quick: bool, repeats: int) -> list[tuple[int, float, float]]:
    import archdsl

    def stack(mixer: str) -> archdsl.ArchModel:
        text = f"""
archdsl: 1
name: bench
model:
  width: 256
  layers:
    - embedding: {{name: wte, vocab: 1024}}
    - positional: {{kind: rotary}}
    - repeat: 4
      body:
        - residual: [rmsnorm, {mixer}]
    - rmsnorm
    - lm_head: {{vocab: 1024, tie: wte}}
"""
        return archdsl.compile(text, seed=0).eval()

    delta = stack("{gated_deltanet: {heads: 4, head_dim: 32, value_heads: 8}}")
    attention = stack("{attention: {heads: 8, kv_heads: 2, causal: true, bias: false}}")
    positions = (64, 256) if quick else (64, 512, 2048, 4096)
    out = []
    for position in positions:
        row = []
        for model in (delta, attention):
            cache = model.new_cache(1, position + 8)
            with torch.inference_mode():
                model(torch.zeros(1, position, dtype=torch.long), cache=cache)
                token = torch.zeros(1, 1, dtype=torch.long)

                def step() -> None:
                    cache.length = position  # decode the same position again
                    model(token, cache=cache)
                row.append(best(lambda: [step() for _ in range(8)], repeats) / 8)
        out.append((position, *row))
    return out


def parity() -> None:
    """Max-abs-diff of the logits against transformers for the tiny models of tests/test_hf_linear.py."""
    import sys
    from pathlib import Path

    import transformers as T

    from archdsl.interop import hf

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_hf_linear import TINY, tokens

    for family in sorted(TINY):
        torch.manual_seed(0)
        theirs = T.AutoModelForCausalLM.from_config(TINY[family]()).eval()
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():  # as the test's fixture perturbs them
            for p in theirs.parameters():
                p.add_(torch.randn(p.shape, generator=generator) * 0.2)
        ours = hf.from_hf(theirs)
        x = tokens(2, 13)
        mask = torch.ones_like(x)
        mask[0, :4] = 0
        with torch.no_grad():
            reference = theirs(x).logits
            plain = (ours(x) - reference).abs().max().item()
            padded = ours(x, mask)
            alone = (padded[0, 4:] - theirs(x[:1, 4:]).logits[0]).abs().max().item()
            both = (padded[mask.bool()] - theirs(x, attention_mask=mask).logits[mask.bool()]).abs().max().item()
        print(f"{family}: logits {plain:.2g} (|logits| <= {reference.abs().max().item():.2g}), padded row vs the "
              f"row alone {alone:.2g}, padded batch vs transformers' padded batch {both:.2g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--parity", action="store_true", help="print the logits differences only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.parity:
        return parity()
    print(f"torch {torch.__version__}, 1 thread, CPU seconds, best of {args.repeats}")
    print("\n| family | prefill archdsl | prefill transformers | ratio | decode tok/s archdsl | transformers | ratio |")
    print("|---|---|---|---|---|---|---|")
    for name, a, b, ga, gb in family_rows(args.quick, args.repeats):
        print(f"| {name} | {a * 1e3:.1f} ms | {b * 1e3:.1f} ms | {a / b:.2f}× | {ga:.0f} | {gb:.0f} | {ga / gb:.2f}× |")
    print("\n| context | gated DeltaNet stack, ms/token | attention stack, ms/token |")
    print("|---|---|---|")
    for position, d, a in per_token(args.quick, args.repeats):
        print(f"| {position} | {d * 1e3:.2f} | {a * 1e3:.2f} |")


if __name__ == "__main__":
    main()
