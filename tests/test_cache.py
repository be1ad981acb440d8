"""The decode cache (archdsl/cache.py): one object for every layer's state, allocated whole when that is
cheap and grown by doubling when it is not — with the same results either way."""
from __future__ import annotations

from pathlib import Path

import torch

import archdsl
from archdsl import cache as cache_module
from archdsl.cache import KVState, ValueState

ROOT = Path(__file__).resolve().parents[1]
LLAMA = ROOT / "specs" / "llama-small.yaml"
TINY = dict(vocab=97, d_model=64, heads=4, kv_heads=2, layers=2, ffn=128, context=4096)


def llama() -> archdsl.ArchModel:
    return archdsl.compile(LLAMA, overrides=TINY, seed=0).eval()


def test_a_hybrid_keeps_kv_and_fixed_state_in_one_cache():
    text = (ROOT / "specs" / "conv-attention-hybrid.yaml").read_text()
    model = archdsl.compile(text, overrides={"vocab": 97, "d_model": 64, "heads": 4, "layers": 2, "ffn": 128},
                            seed=0).eval()
    cache = model.new_cache(2, 12)
    kinds = {type(s) for s in cache.states}
    assert kinds == {KVState, ValueState}, kinds
    tokens = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(tokens)
        steps = torch.cat([model(tokens[:, :5], cache=cache)] + [model(tokens[:, i:i + 1], cache=cache)
                                                                 for i in range(5, 12)], 1)
        torch.testing.assert_close(steps, full, rtol=1e-5, atol=1e-5)
        cache.reset()  # a reset cache starts afresh: the conv state is dropped with the keys
        torch.testing.assert_close(model(tokens, cache=cache), full, rtol=1e-5, atol=1e-5)


def test_a_large_cache_grows_by_doubling_and_gives_the_same_tokens(monkeypatch):
    model = llama()
    prompt = torch.randint(0, 97, (2, 5), generator=torch.Generator().manual_seed(1))
    static = model.generate(prompt, 40)
    static_cache = model.new_cache(2, 45)
    assert static_cache.states[0].capacity == 45  # small: allocated whole
    monkeypatch.setattr(cache_module, "STATIC_BYTES", 1)  # every cache is now "too large" ...
    monkeypatch.setattr(cache_module, "MIN_CAPACITY", 4)  # ... and starts with room for 4 positions
    grown = model.new_cache(2, 45)
    assert grown.states[0].capacity < 45
    seen = []
    original = KVState._grow

    def spy(self, end):
        original(self, end)
        seen.append(self.capacity)

    monkeypatch.setattr(KVState, "_grow", spy)
    assert torch.equal(model.generate(prompt, 40), static)
    assert seen and seen == sorted(seen) and max(seen) <= 45  # doubled, capped at max_len


def test_generate_with_a_huge_budget_allocates_as_it_goes(monkeypatch):
    model = llama()
    prompt = torch.randint(0, 97, (1, 4), generator=torch.Generator().manual_seed(2))
    first = int(model.generate(prompt, 1)[0, -1])
    caches, new_cache = [], model.new_cache
    monkeypatch.setattr(model, "new_cache", lambda *a, **k: caches.append(new_cache(*a, **k)) or caches[-1])
    out = model.generate(prompt, 10**7, eos_token_id=first)  # ~5 GB of keys and values if allocated up front
    assert out.shape == (1, 5) and int(out[0, -1]) == first
    (cache,) = caches
    assert cache.max_len == 4 + 10**7
    assert cache.nbytes() <= cache_module.STATIC_BYTES, f"{cache.nbytes() / 2**20:.0f} MiB allocated"


def test_a_layer_that_cannot_decode_is_named():
    text = (ROOT / "specs" / "llama3-8b.yaml").read_text().replace("causal: true", "causal: false")
    model = archdsl.compile(text, overrides=TINY, seed=0)
    try:
        model.generate(torch.zeros(1, 3, dtype=torch.long), 2)
    except ValueError as exc:
        assert "layers.0.residual_0.attention" in str(exc) and "one token at a time" in str(exc)
    else:
        raise AssertionError("generate accepted bidirectional attention")
