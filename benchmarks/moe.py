"""Mixtures of experts against transformers on the same weights: a train step, an inference forward, decoding.

Run as a section of the benchmark harness (``python benchmarks/run.py --only moe``). Two tiny causal LMs
whose feed-forward layers are all routed experts: a Mixtral-shaped one (8 experts, top 2, SwiGLU experts
as wide as a dense FFN) and a Qwen3-MoE-shaped one (64 narrow experts, top 8, normalised top-k weights).
transformers runs each in its default experts implementation (``grouped_mm`` where it dispatches, the
same torch._grouped_mm archdsl uses) and in its ``eager`` one (a Python loop over the experts that have
tokens, as archdsl did before it grouped tokens per expert). archdsl's model is imported from the
transformers model (``archdsl.interop.hf.from_hf``), and its logits are checked equal to both before
anything is timed.
"""
from __future__ import annotations

import copy
import gc
import statistics
from typing import Any

import torch
from torch.nn import functional as F

SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "Mixtral-shaped": ("MixtralConfig", dict(num_local_experts=8, num_experts_per_tok=2, intermediate_size=512,
                                             sliding_window=None)),
    "Qwen3-MoE-shaped": ("Qwen3MoeConfig", dict(num_experts=64, num_experts_per_tok=8, moe_intermediate_size=96,
                                                intermediate_size=512, norm_topk_prob=True, decoder_sparse_step=1,
                                                mlp_only_layers=[], head_dim=64)),
}


def hf_moe(config_class: str, extra: dict[str, Any], size: dict, experts: str) -> torch.nn.Module:
    import transformers

    config = getattr(transformers, config_class)(
        vocab_size=size["vocab"], hidden_size=256, num_hidden_layers=size["moe_layers"], num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=False, **extra)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, experts_implementation=experts)
    with torch.no_grad():  # transformers' init leaves some routers at zero: every token would tie
        for p in model.parameters():
            p.normal_(0.0, 0.05)
    return model


def moe(res: Any, size: dict, device: torch.device, timer: Any, interleaved: Any) -> None:
    import competitors
    from archdsl.interop.hf import from_hf

    if not competitors.HAVE_HF:
        print("skipped: the MoE rows compare with transformers, which is not installed", flush=True)
        return
    B, S, V, P, N = size["batch"], size["seq"], size["vocab"], size["prompt"], size["new"]
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, V, (B, S), generator=g).to(device)
    y = torch.randint(0, V, (B, S), generator=g).to(device)
    prompt = torch.randint(0, V, (1, P), generator=g).to(device)
    for label, (config_class, extra) in SHAPES.items():
        grouped = hf_moe(config_class, extra, size, "grouped_mm").to(device)
        eager = hf_moe(config_class, extra, size, "eager").to(device)
        eager.load_state_dict(grouped.state_dict())
        ours = from_hf(copy.deepcopy(grouped), verify=False).to(device)
        hf = {"hf-grouped": grouped, "hf-loop": eager}
        for m in (ours, *hf.values()):
            m.eval()
        with torch.no_grad():
            want = ours(x)
            for name, m in hf.items():
                diff = (m(x).logits - want).abs().max().item()
                assert diff < 1e-4, f"{label}: archdsl's logits differ from transformers' {name} by {diff}"
        used = grouped.config._experts_implementation
        print(f"{label}: archdsl logits equal transformers' (grouped_mm: dispatched as {used!r}, eager); "
              f"params {sum(p.numel() for p in ours.parameters()):,}", flush=True)
        shape = f"{label}, B{B}×S{S}"
        models = {"archdsl": (ours, lambda out: out), **{k: (m, lambda out: out.logits) for k, m in hf.items()}}

        fns = {}
        for name, (m, logits_of) in models.items():
            m.train()
            opt = torch.optim.AdamW(m.parameters(), lr=1e-4)

            def step(m=m, logits_of=logits_of, opt=opt):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(logits_of(m(x)).reshape(-1, V), y.reshape(-1)).backward()
                opt.step()
            fns[name] = step
        res.add(f"MoE train step, {shape}", "ms", interleaved(fns, size["warmup"], size["reps"], timer), 1e3)

        for m, _ in models.values():
            m.eval()

        def forward(m):
            def run():
                with torch.inference_mode():
                    m(x)
            return run
        res.add(f"MoE inference forward, {shape}", "ms",
                interleaved({k: forward(m) for k, (m, _) in models.items()}, size["warmup"], size["reps"], timer), 1e3)

        outs: dict[str, torch.Tensor] = {}

        def generate(name, m, n):
            if name == "archdsl":
                return lambda: outs.__setitem__(name, m.generate(prompt, n))
            return lambda: outs.__setitem__(name, m.generate(prompt, attention_mask=torch.ones_like(prompt),
                                                             max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                                             pad_token_id=0))
        interleaved({k: generate(k, m, min(N, 8)) for k, (m, _) in models.items()}, 1, 0, timer)  # warm-up
        samples = interleaved({k: generate(k, m, N) for k, (m, _) in models.items()}, 0, size["gen_reps"], timer)
        same = [k for k in hf if torch.equal(outs[k], outs["archdsl"])]
        tok_s = N / statistics.median(samples["archdsl"])
        res.add(f"MoE greedy generate {N} tok, B1, prompt {P}, {label}", "ms/token", samples, 1e3 / N,
                f"archdsl {tok_s:.0f} tok/s; same tokens as archdsl: {', '.join(same) or 'none'}")
        del models, fns, hf, grouped, eager, ours
        gc.collect()
