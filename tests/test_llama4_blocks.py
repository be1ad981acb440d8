"""Llama 4's blocks in the language: chunked attention (`attention: {chunk}`), the query temperature of its NoPE
layers (`attention: {temperature_floor, temperature_scale}`) and experts whose routing weight scales their input
(`moe: {scale_inputs: true}`), each against a direct computation from the module's own weights, and through the
decode cache."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import archdsl
from archdsl.compiler import compile_spec
from archdsl.errors import SpecError


def _model(attention: dict | None = None, moe: dict | None = None, width: int = 32, seed: int = 0):
    layer = [{"residual": [{"rmsnorm": {}}, {"attention": {"heads": 4, "causal": True, **(attention or {})}}]}]
    if moe is not None:
        layer.append({"residual": [{"rmsnorm": {}}, {"moe": moe}]})
    spec = {"name": "t", "model": {"width": width, "layers": [
        {"embedding": {"vocab": 50}}, {"positional": {"kind": "rotary"}},
        {"repeat": {"times": 2, "body": layer}}, {"rmsnorm": {}}, {"lm_head": {"vocab": 50}}]}}
    torch.manual_seed(seed)
    model = compile_spec(archdsl.load_spec(spec)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model


def _cached(model, tokens, steps=(3, 1, 2, 1, 1, 4)):
    cache = model.new_cache(tokens.shape[0], tokens.shape[1])
    out, start = [], 0
    for n in steps:
        if start >= tokens.shape[1]:
            break
        out.append(model(tokens[:, start:start + n], cache=cache))
        start += n
    return torch.cat(out, 1)


def test_chunked_attention_sees_only_its_own_chunk():
    """chunk: 4 equals an explicit mask of aligned chunks, causal within each; decoding through the cache gives the
    same logits; a model whose chunk covers the sequence is plain causal attention."""
    from archdsl.blocks.attention import Attention
    from archdsl.blocks.context import ForwardContext

    torch.manual_seed(0)
    att = Attention(32, 4, 4, 8, causal=True, window=None, dropout=0.0, bias=False, out_bias=False, scale=None,
                    rotary=None, alibi=False, chunk=4).eval()
    x = torch.randn(2, 11, 32)
    with torch.no_grad():
        ours = att(x, ForwardContext(positions=torch.arange(11).expand(2, 11)))
        q, k, v = att.qkv(x).split(32, dim=-1)
        q, k, v = (t.view(2, 11, 4, 8).transpose(1, 2) for t in (q, k, v))
        i, j = torch.arange(11)[:, None], torch.arange(11)[None]
        keep = (j <= i) & (i // 4 == j // 4)
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=keep).transpose(1, 2).reshape(2, 11, 32)
        assert torch.allclose(ours, att.out(ref), atol=1e-6)
    model = _model({"chunk": 4})
    tokens = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(tokens)
        assert torch.allclose(_cached(model, tokens), full, atol=1e-5)
        wide = _model({"chunk": 64})
        plain = _model()
        assert torch.allclose(wide(tokens), plain(tokens), atol=1e-6)
        assert not torch.allclose(full, plain(tokens), atol=1e-3)


def test_the_query_temperature_follows_the_sequence_index():
    """temperature_floor: 3, scale 0.5: queries times 1 + 0.5 · log(1 + floor((t + 1) / 3)); the same through the
    cache (t continues the cached tokens) and in a left-padded batch (t counts the padding, as Llama 4's does)."""
    from archdsl.blocks.attention import Attention
    from archdsl.blocks.context import ForwardContext

    torch.manual_seed(0)
    kwargs = dict(causal=True, window=None, dropout=0.0, bias=False, out_bias=False, scale=None, rotary=None,
                  alibi=False)
    hot = Attention(32, 4, 4, 8, temperature=(3, 0.5), **kwargs).eval()
    cold = Attention(32, 4, 4, 8, **kwargs).eval()
    cold.load_state_dict(hot.state_dict())
    x = torch.randn(1, 9, 32)
    with torch.no_grad():
        ours = hot(x, ForwardContext(positions=torch.arange(9)[None]))
        t = torch.arange(9).float()
        factor = torch.log1p(torch.floor((t + 1) / 3)) * 0.5 + 1
        q, k, v = hot.qkv(x).split(32, dim=-1)
        q, k, v = (u.view(1, 9, 4, 8).transpose(1, 2) for u in (q, k, v))
        ref = F.scaled_dot_product_attention(q * factor[None, None, :, None], k, v, is_causal=True)
        assert torch.allclose(ours, hot.out(ref.transpose(1, 2).reshape(1, 9, 32)), atol=1e-6)
        assert not torch.allclose(ours, cold(x, ForwardContext(positions=torch.arange(9)[None])), atol=1e-4)
    model = _model({"temperature_floor": 3, "temperature_scale": 0.5})
    tokens = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(_cached(model, tokens), model(tokens), atol=1e-5)
        mask = torch.ones(2, 12, dtype=torch.long)
        mask[1, :3] = 0
        greedy = model.generate(tokens, 4, attention_mask=mask)
        seq, m = tokens, mask
        for _ in range(4):  # the definition: the whole sequence again every step
            pos = (m.cumsum(-1) - 1).clamp(min=0)
            seq = torch.cat([seq, model(seq, m, position_ids=pos)[:, -1].argmax(-1, keepdim=True)], 1)
            m = torch.cat([m, torch.ones_like(m[:, :1])], 1)
        assert torch.equal(greedy, seq)


def _loop_moe(moe, x):
    """Each token through its experts one by one, the routing weight multiplying the input (Llama 4)."""
    flat = x.reshape(-1, x.shape[-1])
    _, weights, chosen = moe.route(flat)
    out = torch.zeros_like(flat)
    ex = moe.experts
    for n in range(flat.shape[0]):
        for w, e in zip(weights[n], chosen[n]):
            h = F.linear(flat[n] * w, ex.up[e])
            gate, up = h.chunk(2)
            out[n] += F.linear(F.silu(gate) * up, ex.down[e])
    if moe.shared is not None:
        out = out + moe.shared(flat, None)
    return out.view(x.shape)


def test_experts_whose_input_is_scaled_by_their_weight():
    """scale_inputs: expert(w · x) for each chosen expert, plus the shared expert: the grouped path of a forward and
    the gathered and dense paths of compiled decoding equal a loop over tokens and experts, and differ from
    w · expert(x)."""
    from archdsl.blocks.feedforward import MoE

    torch.manual_seed(0)
    moe = MoE(16, 4, 1, 8, "swiglu", False, False, False, 0.0, True, shared_hidden=8, scoring="sigmoid",
              scale_inputs=True).eval()
    plain = MoE(16, 4, 1, 8, "swiglu", False, False, False, 0.0, True, shared_hidden=8, scoring="sigmoid").eval()
    with torch.no_grad():
        for p in moe.parameters():
            p.normal_(0, 0.5)
        plain.load_state_dict(moe.state_dict())
        x = torch.randn(2, 5, 16)
        reference = _loop_moe(moe, x)
        assert torch.allclose(moe(x, None), reference, atol=1e-5)
        assert not torch.allclose(plain(x, None), reference, atol=1e-3)
        flat = x.reshape(-1, 16)
        _, weights, chosen = moe.route(flat)
        gathered = moe.experts.gathered(flat, chosen, weights).sum(1) + moe.shared(flat, None)
        assert torch.allclose(gathered, reference.reshape(-1, 16), atol=1e-5)
        dense = torch.zeros(10, 4).scatter(1, chosen, weights).t()
        out = (moe.experts.dense(flat, dense) * (dense != 0)[..., None]).sum(0) + moe.shared(flat, None)
        assert torch.allclose(out, reference.reshape(-1, 16), atol=1e-5)
    model = _model(moe={"experts": 4, "top_k": 1, "hidden": 8, "scoring": "sigmoid", "normalize": False,
                        "scale_inputs": True, "shared_hidden": 8})
    tokens = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(_cached(model, tokens), model(tokens), atol=1e-5)


@pytest.mark.parametrize("attention, message", [
    ({"chunk": 4, "causal": False}, "chunked attention is causal"),
    ({"temperature_scale": 0.2}, "temperature_scale without temperature_floor"),
])
def test_misuse_is_named(attention, message):
    spec = {"name": "t", "model": {"width": 32, "layers": [
        {"embedding": {"vocab": 50}}, {"attention": {"heads": 4, "causal": True, **attention}}, {"lm_head": 50}]}}
    with pytest.raises(SpecError, match=message):
        archdsl.load_spec(spec)


def test_summary_names_them():
    spec = archdsl.load_spec({"name": "t", "model": {"width": 32, "layers": [
        {"embedding": {"vocab": 50}},
        {"attention": {"heads": 4, "causal": True, "chunk": 8, "temperature_floor": 16}}, {"lm_head": 50}]}})
    args = archdsl.summary(spec).rows[1].args
    assert "chunks of 8" in args and "query temperature" in args and math.isfinite(archdsl.summary(spec).total_params)
