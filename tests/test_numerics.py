"""Compiled models against hand-written reference forwards on the same weights.

The references are written out longhand (explicit softmax, explicit rotary, repeat_interleave
for GQA), so they share no code with archdsl's blocks. Hugging Face parity lives in
test_hf_parity.py; these catch mistakes in the blocks themselves.
"""
from __future__ import annotations

import functools
import json
import math

import pytest
import torch
import torch.nn.functional as F

import archdsl
from conftest import ROOT
from controls import Case, context_weights

TOL = 1e-6  # float32, relative to the largest value (when above 1); the largest difference seen is 3.6e-7 of it


def _attention_reference(x, qkv_w, qkv_b, out_w, out_b, heads, kv_heads, causal, mask=None, rope=None):
    B, S, D = x.shape
    hd = qkv_w.shape[0] // (heads + 2 * kv_heads)
    qkv = x @ qkv_w.T + (qkv_b if qkv_b is not None else 0)
    q, k, v = qkv.split([heads * hd, kv_heads * hd, kv_heads * hd], dim=-1)
    q = q.view(B, S, heads, hd).transpose(1, 2)
    k = k.view(B, S, kv_heads, hd).transpose(1, 2).repeat_interleave(heads // kv_heads, dim=1)
    v = v.view(B, S, kv_heads, hd).transpose(1, 2).repeat_interleave(heads // kv_heads, dim=1)
    if rope is not None:
        q, k = rope(q), rope(k)
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
    allowed = torch.ones(B, 1, S, S, dtype=torch.bool)
    if causal:
        allowed = allowed & torch.ones(S, S, dtype=torch.bool).tril()
    if mask is not None:
        allowed = allowed & mask[:, None, None, :].bool()
    allowed = allowed | ~allowed.any(-1, keepdim=True)  # a padding query with no key to read reads all (not compared)
    y = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1) @ v
    y = y.transpose(1, 2).reshape(B, S, heads * hd)
    return y @ out_w.T + (out_b if out_b is not None else 0)


def _left_padded(batch: int, seq: int, vocab: int, pads: list[int], seed: int):
    tokens = torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones(batch, seq, dtype=torch.long)
    for row, n in enumerate(pads):
        mask[row, :n] = 0  # left padding: without the mask the real tokens would read it
    return tokens, mask


def _compare_on_real_tokens(expected: torch.Tensor, mask: torch.Tensor | None, tol: float):
    real = mask.bool() if mask is not None else torch.ones(expected.shape[:2], dtype=torch.bool)

    bound = tol * max(1.0, expected[real].abs().max().item())

    def compare(got: torch.Tensor) -> None:
        diff = (got[real] - expected[real]).abs().max().item()
        assert diff <= bound, diff
    return compare


def gpt2_case(root):
    """(a gpt2-shaped model, every parameter random, check(model): its logits on a left-padded batch equal
    the reference written out from the unbroken model's weights)."""
    model = context_weights(archdsl.compile(root / "specs/gpt2.yaml", overrides={
        "layers": 2, "d_model": 64, "heads": 4, "vocab": 97, "context": 32}, seed=0).eval())
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    tokens, mask = _left_padded(2, 9, 97, [0, 3], seed=1)
    x = sd["wte.weight"][tokens] + sd["wpe.weight"][torch.arange(9)]
    for i in range(2):
        p = f"h.{i}."
        h = F.layer_norm(x, (64,), sd[p + "residual_0.layernorm.weight"], sd[p + "residual_0.layernorm.bias"], 1e-5)
        x = x + _attention_reference(h, sd[p + "residual_0.attention.qkv.weight"], sd[p + "residual_0.attention.qkv.bias"],
                                     sd[p + "residual_0.attention.out.weight"], sd[p + "residual_0.attention.out.bias"],
                                     4, 4, causal=True, mask=mask)
        h = F.layer_norm(x, (64,), sd[p + "residual_1.layernorm.weight"], sd[p + "residual_1.layernorm.bias"], 1e-5)
        h = F.gelu(h @ sd[p + "residual_1.mlp.up.weight"].T + sd[p + "residual_1.mlp.up.bias"], approximate="tanh")
        x = x + h @ sd[p + "residual_1.mlp.down.weight"].T + sd[p + "residual_1.mlp.down.bias"]
    x = F.layer_norm(x, (64,), sd["ln_f.weight"], sd["ln_f.bias"], 1e-5)
    compare = _compare_on_real_tokens(x @ sd["wte.weight"].T, mask, TOL)

    @torch.no_grad()
    def check(model):
        compare(model(tokens, mask))
    return model, check


def test_gpt2_shaped_model_matches_a_handwritten_reference(root):
    """A gpt2-shaped model (learned positions, pre-norm, biases, tied head) computes the longhand
    reference's logits on a left-padded batch."""
    model, check = gpt2_case(root)
    check(model)


def llama_case(root):
    """(a llama-shaped model, every parameter random, check(model): the longhand reference's logits)."""
    model = context_weights(archdsl.compile(root / "specs/llama-small.yaml", overrides={
        "layers": 2, "d_model": 64, "heads": 4, "kv_heads": 2, "ffn": 80, "vocab": 97}, seed=0).eval())
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    S, hd, theta = 11, 16, 10000.0
    tokens, mask = _left_padded(2, S, 97, [0, 4], seed=2)
    inv = 1.0 / theta ** (torch.arange(0, hd, 2).float() / hd)
    ang = torch.arange(S).float()[:, None] * inv  # (S, hd/2)

    def rope(t):  # rotate halves, as Llama / NeoX do
        t1, t2 = t[..., : hd // 2], t[..., hd // 2:]
        cos, sin = ang.cos(), ang.sin()
        return torch.cat((t1 * cos - t2 * sin, t2 * cos + t1 * sin), dim=-1)

    def rms(t, w):
        return w * (t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-5))

    x = sd["embed_tokens.weight"][tokens]
    for i in range(2):
        p = f"layers.{i}."
        h = rms(x, sd[p + "residual_0.input_norm.weight"])
        x = x + _attention_reference(h, sd[p + "residual_0.attention.qkv.weight"], None,
                                     sd[p + "residual_0.attention.out.weight"], None, 4, 2, causal=True, mask=mask,
                                     rope=rope)
        h = rms(x, sd[p + "residual_1.post_attention_norm.weight"])
        gate, up = (h @ sd[p + "residual_1.mlp.up.weight"].T).chunk(2, dim=-1)
        x = x + (F.silu(gate) * up) @ sd[p + "residual_1.mlp.down.weight"].T
    compare = _compare_on_real_tokens(rms(x, sd["norm.weight"]) @ sd["lm_head.weight"].T, mask, TOL)

    @torch.no_grad()
    def check(model):
        compare(model(tokens, mask))
    return model, check


def test_llama_shaped_model_matches_a_handwritten_reference(root):
    """A llama-shaped model (rotary, RMSNorm, grouped KV heads, SwiGLU) computes the longhand
    reference's logits on a left-padded batch."""
    model, check = llama_case(root)
    check(model)


def bert_case(root):
    """(a bert-shaped encoder, every parameter random, check(model): hidden states and pooled output
    of the longhand reference, on a right-padded batch: the encoder is bidirectional)."""
    model = context_weights(archdsl.compile(root / "specs/bert-base.yaml", overrides={
        "layers": 1, "d_model": 32, "heads": 4, "ffn": 48, "vocab": 50, "context": 16}, seed=0).eval())
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    tokens = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(3))
    types = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 1]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    x = sd["word_embeddings.weight"][tokens] + sd["position_embeddings.weight"][torch.arange(6)] \
        + sd["token_type_embeddings.weight"][types]
    x = F.layer_norm(x, (32,), sd["embeddings_norm.weight"], sd["embeddings_norm.bias"], 1e-12)
    p = "encoder.0."
    a = _attention_reference(x, sd[p + "residual_0.attention.qkv.weight"], sd[p + "residual_0.attention.qkv.bias"],
                             sd[p + "residual_0.attention.out.weight"], sd[p + "residual_0.attention.out.bias"],
                             4, 4, causal=False, mask=mask)
    x = F.layer_norm(x + a, (32,), sd[p + "layernorm_0.weight"], sd[p + "layernorm_0.bias"], 1e-12)
    h = F.gelu(x @ sd[p + "residual_1.mlp.up.weight"].T + sd[p + "residual_1.mlp.up.bias"])
    x = F.layer_norm(x + h @ sd[p + "residual_1.mlp.down.weight"].T + sd[p + "residual_1.mlp.down.bias"], (32,),
                     sd[p + "layernorm_1.weight"], sd[p + "layernorm_1.bias"], 1e-12)
    pooled = torch.tanh(x[:, 0] @ sd["pooler.dense.weight"].T + sd["pooler.dense.bias"])
    compare_hidden = _compare_on_real_tokens(x, mask, TOL)

    @torch.no_grad()
    def check(model):
        out = model(tokens, mask, token_type_ids=types)
        compare_hidden(out.last_hidden_state)
        assert (out.pooler_output - pooled).abs().max().item() <= TOL
    return model, check


def test_bert_shaped_encoder_is_post_norm_and_pools_the_first_token(root):
    """A bert-shaped encoder (post-norm, token types, padding mask, pooler) computes the longhand
    reference's hidden states and pooled output."""
    model, check = bert_case(root)
    check(model)


@pytest.mark.parametrize("positional", ["{kind: rotary, base: 10000}", "{kind: sinusoidal, max_len: 4096}", "alibi"])
def test_compile_in_bfloat16_keeps_derived_buffers_float32(positional):
    """compile(dtype=bf16): weights bf16, rotary/sinusoidal frequencies and ALiBi slopes float32 and
    exact, so rotary angles at long positions equal the float32 model's (bf16 frequencies drift)."""
    spec = f"""
archdsl: 1
name: mixed
vars: {{vocab: 64, d_model: 32}}
model:
  width: $d_model
  layers:
    - embedding: {{vocab: $vocab}}
    - positional: {positional}
    - residual:
        - rmsnorm: {{}}
        - attention: {{heads: 4, causal: true}}
    - lm_head: {{vocab: $vocab}}
"""
    full = archdsl.compile(spec, seed=0)
    half = archdsl.compile(spec, seed=0, dtype=torch.bfloat16)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    buffers = dict(half.named_buffers())
    assert buffers and all(b.dtype == torch.float32 for b in buffers.values()), {k: b.dtype for k, b in buffers.items()}
    for name, b in full.named_buffers():
        assert torch.equal(buffers[name], b), name
    tokens = torch.randint(0, 64, (1, 8))
    assert half(tokens).dtype == torch.bfloat16


@pytest.mark.parametrize("attention", [
    "{heads: 4, causal: true}", "{heads: 4, kv_heads: 2, causal: true, window: 3}", "{heads: 4}",
    "{heads: 4, kv_heads: 1, causal: true, scale: 0.3}"])
@pytest.mark.parametrize("positional", ["rotary", "alibi"])
def test_softcapped_attention_is_sdpa_when_the_cap_is_far(attention, positional):
    """softcap · tanh(s / softcap) -> s as softcap grows: the explicit path equals SDPA's, with every
    mask ForwardContext builds (causal, window, padding, ALiBi bias) and under cached decoding; a
    tight cap changes the result."""
    def spec(extra):
        return f"""
archdsl: 1
name: capped
model:
  width: 32
  layers:
    - embedding: 50
    - positional: {positional}
    - residual:
        - layernorm
        - attention: {attention[:-1]}{extra}}}
    - lm_head: 50
"""
    plain = archdsl.compile(spec(""), seed=0).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # weights large enough that the scores reach a tight cap
        for p in plain.parameters():
            p.normal_(0.0, 0.3, generator=g)
    far = archdsl.compile(spec(", softcap: 1.0e+6"), seed=0).eval()
    tight = archdsl.compile(spec(", softcap: 1.0"), seed=0).eval()
    far.load_state_dict(plain.state_dict())
    tight.load_state_dict(plain.state_dict())
    tokens = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, :3] = 0
    with torch.no_grad():
        for m in (None, mask):
            assert (plain(tokens, m) - far(tokens, m)).abs().max() < 1e-4
        assert (plain(tokens, mask) - tight(tokens, mask)).abs().max() > 1e-1
        if "causal" in attention:
            cache = far.new_cache(2, 9)
            steps = [far(tokens[:, :5], mask[:, :5], cache=cache)] + [
                far(tokens[:, i:i + 1], mask[:, :i + 1], cache=cache) for i in range(5, 9)]
            full = plain(tokens, mask)
            assert (torch.cat(steps, 1) - full)[mask.bool()].abs().max() < 1e-4


# ------------------------------------------------------------------------------ negative controls
def control_cases():
    """The reference checks above, for tests/controls.py."""
    for test, case in ((test_gpt2_shaped_model_matches_a_handwritten_reference, gpt2_case),
                       (test_llama_shaped_model_matches_a_handwritten_reference, llama_case),
                       (test_bert_shaped_encoder_is_post_norm_and_pools_the_first_token, bert_case)):
        yield Case(test, case.__name__.removesuffix("_case"), functools.partial(case, ROOT),
                   f"<= {TOL:g} x max(1, max |value|)")


def test_attention_sinks_are_one_more_logit_in_the_softmax():
    """attention: {sinks: true} computes softmax over [scores, sink] with the sink column dropped (GPT-OSS's
    form), on a left-padded causal batch, and a sink of -inf is plain attention."""
    import archdsl

    spec = {"name": "s", "model": {"width": 16, "layers": [
        {"embedding": {"vocab": 20}},
        {"attention": {"heads": 2, "causal": True, "sinks": True, "bias": False}}, {"lm_head": 20}]}}
    model = archdsl.compile(spec, seed=0).eval()
    attn = model.get_submodule("attention")
    with torch.no_grad():
        attn.sinks.copy_(torch.tensor([0.5, -1.0]))
    tokens = torch.randint(0, 20, (2, 5), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(tokens)
    mask[1, :2] = 0
    x = model.get_submodule("embedding").weight[tokens]
    q, k, v = attn.qkv(x).split(16, dim=-1)
    q, k, v = (t.view(2, 5, 2, 8).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / 8 ** 0.5
    keep = torch.ones(5, 5, dtype=torch.bool).tril() & mask.bool()[:, None, None, :]
    scores = scores.masked_fill(~keep, float("-inf"))
    sink = attn.sinks.view(1, 2, 1, 1).expand(2, 2, 5, 1)
    probs = torch.softmax(torch.cat([scores, sink], -1), -1)[..., :-1]
    expected = model.get_submodule("lm_head")(attn.out((probs @ v).transpose(1, 2).reshape(2, 5, 16)), None)
    with torch.no_grad():
        got = model(tokens, mask)
        real = mask.bool()
        assert torch.allclose(got[real], expected[real], atol=1e-5)
        attn.sinks.fill_(float("-inf"))
        plain = archdsl.compile({**spec, "model": {**spec["model"], "layers": [
            spec["model"]["layers"][0], {"attention": {"heads": 2, "causal": True, "bias": False}},
            spec["model"]["layers"][2]]}}, seed=0).eval()
        plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.endswith("sinks")})
        assert torch.allclose(model(tokens, mask)[real], plain(tokens, mask)[real], atol=1e-6)


@pytest.mark.parametrize("node, message", [
    ({"positional": {"kind": "rotary", "halves": True}}, "halves applies to kind: sinusoidal only"),
    ({"positional": {"kind": "learned", "max_len": 8, "reverse": True}}, "reverse applies to kind: rotary only"),
    ({"rmsnorm": {"scale": False, "unit_offset": True}}, "unit_offset without a learned scale"),
    ({"mlp": {"hidden": 8, "activation": "gelu", "xielu_beta": 0.3}}, "xielu_beta with activation 'gelu'"),
    ({"attention": {"heads": 2, "qk_norm_scale": False}}, "qk_norm_scale without qk_norm: true"),
    ({"attention": {"heads": 2, "qk_norm_centered": True}}, "qk_norm_centered without qk_norm: true"),
    ({"attention": {"heads": 2, "qk_norm": True, "qk_norm_bias": False}}, "qk_norm_bias without qk_norm_centered"),
    ({"moe": {"experts": 4, "hidden": 8, "scoring": "sigmoid", "bias_on_logits": True}}, "bias_on_logits without score_bias"),
    ({"moe": {"experts": 4, "hidden": 8, "capacity": 2, "scale_inputs": True}}, "capacity with scale_inputs"),
    ({"attention": {"heads": 2, "bias": False, "key_bias": False}}, "key_bias: false without bias"),
    ({"attention": {"heads": 2, "out_norm_eps": 0.001}}, "out_norm_eps without out_norm: true"),
    ({"mlp": {"hidden": 8, "inner_norm_eps": 0.001}}, "inner_norm_eps without inner_norm: true"),
    ({"mlp": {"hidden": 8, "activation": "swiglu", "swiglu_limit": 3.0}}, "swiglu_limit with activation 'swiglu'"),
    ({"moe": {"experts": 4, "hidden": 8, "sparsemixer_eps": 0.1}}, "sparsemixer_eps without scoring: sparsemixer"),
    ({"moe": {"experts": 4, "hidden": 8, "scoring": "sparsemixer", "score_bias": True}},
     "score_bias with scoring: sparsemixer"),
])
def test_the_new_fields_refuse_their_misuse_with_a_location(node, message):
    """This session's fields say where and what when misused (a SpecError at the spec's line, not a traceback)."""
    import archdsl

    text = f"name: t\nmodel:\n  width: 16\n  layers:\n    - embedding: 10\n    - {json.dumps(node)}\n"
    with pytest.raises(archdsl.SpecError, match=message) as exc:
        archdsl.load_spec(text, text_name="t.yaml")
    assert "t.yaml:6" in str(exc.value)


def test_sparsemixer_rounds_pick_the_best_remaining_expert_and_weigh_it_among_its_near_rivals():
    """scoring: sparsemixer (PhiMoE) at inference, against a direct reading of its rule, for top_k 2 and 3."""
    from archdsl.blocks.feedforward import MoE

    scores = torch.tensor([[2.0, 1.99, 0.5, -1.0], [0.1, 0.3, 0.29, 0.0]])
    for top_k in (2, 3):
        moe = MoE(4, 4, top_k, 8, "swiglu", False, False, True, 0.0, True, scoring="sparsemixer", sparsemixer_eps=0.01)
        weights, chosen = moe.sparsemixer(scores)
        for row in range(2):
            left = list(range(4))
            for r in range(top_k):
                best = max(left, key=lambda e: scores[row, e].item())
                near = [e for e in left if (scores[row, best] - scores[row, e]) / max(abs(scores[row, e].item()),
                                                                                    scores[row, best].item()) <= 0.02]
                expected = torch.softmax(scores[row, near], dim=0)[near.index(best)]
                assert chosen[row, r].item() == best and torch.isclose(weights[row, r], expected)
                left.remove(best)


def test_geglu_exact_is_the_erf_gelu_gate():
    """geglu_exact: gelu(gate) · up with the erf GELU (GTE, ModernBERT), where geglu is the tanh one (T5 v1.1)."""
    import torch.nn.functional as F

    from archdsl.blocks.feedforward import gated_combine

    gate, up = torch.randn(5, 8, generator=torch.Generator().manual_seed(0)) * 3, torch.randn(5, 8)
    assert torch.equal(gated_combine("geglu_exact", (1.702, 7.0))(gate, up), F.gelu(gate) * up)
    assert not torch.allclose(gated_combine("geglu", (1.702, 7.0))(gate, up), F.gelu(gate) * up, atol=1e-5)


def test_a_centered_qk_norm_without_bias_is_a_layernorm_without_shift():
    """qk_norm_centered with qk_norm_bias: false (ESM-C): queries and keys over the width, mean removed, divided by
    their deviation and scaled, no shift; one weight per value and no bias in the parameter count."""
    spec = {"name": "t", "model": {"width": 16, "layers": [{"embedding": 11}, {"attention": {
        "heads": 2, "bias": False, "qk_norm": True, "qk_norm_over": "width", "qk_norm_centered": True,
        "qk_norm_bias": False, "qk_norm_eps": 0.001}}, {"lm_head": 11}]}}
    model = archdsl.compile(spec, seed=0).eval()
    attn = next(m for m in model.modules() if hasattr(m, "q_norm") and m.q_norm is not None)
    assert archdsl.summary(archdsl.load_spec(json.dumps(spec))).total_params == model.num_parameters()
    assert [n for n, _ in attn.q_norm.named_parameters()] == ["weight"]
    with torch.no_grad():
        attn.q_norm.weight.uniform_(0.5, 1.5)
        x = torch.randn(2, 5, 16)
        expected = F.layer_norm(x, (16,), attn.q_norm.weight, None, 0.001)
        assert torch.allclose(attn.q_norm(x, None), expected, atol=1e-6)


def test_moe_capacity_drops_the_tokens_over_it_in_each_sequence():
    """moe capacity (Switch Transformers): per sequence, an expert takes the first `capacity` tokens that choose it;
    a later one gets nothing from it. With every token routed to expert 0, rows 0..C-1 of each sequence get its
    output and the rest 0; without a capacity every row does."""
    from archdsl.blocks.feedforward import MoE

    def moe(capacity):
        m = MoE(8, 3, 1, 16, "relu", False, False, False, 0.0, False, capacity=capacity).eval()
        torch.manual_seed(0)
        with torch.no_grad():
            m.experts.up.normal_()
            m.experts.down.normal_()
            m.router.weight.zero_()
            m.router.weight[0].fill_(1.0)  # expert 0 scores highest for these positive inputs
        return m

    x = torch.rand(2, 5, 8) + 0.1
    with torch.no_grad():
        full, capped = moe(None)(x, None), moe(2)(x, None)
    assert torch.equal(capped[:, :2], full[:, :2]) and full[:, 2:].abs().min() > 0
    assert torch.equal(capped[:, 2:], torch.zeros_like(capped[:, 2:]))


def test_a_choice_bias_on_the_logits_ranks_logits_plus_bias():
    """moe bias_on_logits (Kolibri 1): the experts are the top-k of logits + score_bias, weighted by the sigmoid of
    their logits (renormalised); a bias on the scores would rank sigmoid(logits) + bias, which differs here."""
    from archdsl.blocks.feedforward import MoE

    logits = torch.tensor([[3.0, 2.0, -1.0, 0.5]])
    bias = torch.tensor([0.0, 0.0, 2.6, 0.0])
    picked = {}
    for on_logits in (True, False):
        moe = MoE(4, 4, 2, 8, "swiglu", False, False, True, 0.0, True, scoring="sigmoid", score_bias=True,
                  bias_on_logits=on_logits)
        moe.score_bias.copy_(bias)
        weights, chosen = moe.choose(logits)
        picked[on_logits] = sorted(chosen[0].tolist())
        if on_logits:
            expected = torch.sigmoid(logits[0, chosen[0]])
            assert torch.allclose(weights[0], expected / expected.sum())
    assert picked[True] == [0, 1] and picked[False] == [0, 2]  # 1.6 < 2.0; sigmoid(-1) + 2.6 > sigmoid(2)


def test_bitnets_sub_norms_and_gated_squared_relu_against_a_direct_reading():
    """mlp relu2_glu with inner_norm (BitNet's ffn_sub_norm) and attention out_norm (its attn_sub_norm): down(rms(relu(
    gate)² · up) · w) and out(rms(heads' output) · w), each norm a learned scale of its width, in the count."""
    from archdsl.blocks.context import ForwardContext

    spec = {"name": "t", "model": {"width": 16, "layers": [{"embedding": 11}, {"attention": {
        "heads": 2, "bias": False, "out_norm": True, "out_norm_eps": 0.001}}, {"mlp": {
            "hidden": 24, "activation": "relu2_glu", "bias": False, "inner_norm": True, "inner_norm_eps": 0.001}},
        {"lm_head": 11}]}}
    model = archdsl.compile(spec, seed=0).eval()
    assert archdsl.summary(archdsl.load_spec(json.dumps(spec))).total_params == model.num_parameters()
    attn = next(m for m in model.modules() if hasattr(m, "qkv"))
    mlp = next(m for m in model.modules() if hasattr(m, "inner_norm"))
    rms = lambda t, w: t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 0.001) * w  # noqa: E731
    with torch.no_grad():
        attn.out_norm.weight.uniform_(0.5, 1.5)
        mlp.inner_norm.weight.uniform_(0.5, 1.5)
        x = torch.randn(2, 5, 16)
        gate, up = (x @ mlp.up.weight.T).chunk(2, dim=-1)
        expected = rms(F.relu(gate).square() * up, mlp.inner_norm.weight) @ mlp.down.weight.T
        assert torch.allclose(mlp(x, None), expected, atol=1e-5)
        q, k, v = (x @ attn.qkv.weight.T).split(16, dim=-1)
        q, k, v = (t.view(2, 5, 2, 8).transpose(1, 2) for t in (q, k, v))
        heads = torch.softmax(q @ k.transpose(-1, -2) / 8 ** 0.5, -1) @ v
        y = rms(heads.transpose(1, 2).reshape(2, 5, 16), attn.out_norm.weight) @ attn.out.weight.T
        ctx = ForwardContext(positions=torch.arange(5)[None].expand(2, 5), key_padding=None)
        assert torch.allclose(attn(x, ctx), y, atol=1e-5)


def test_fourier_is_the_real_part_of_the_2d_fft_and_refuses_to_decode():
    """fourier (FNet): Re(FFT over positions and width) of the stream, no parameters; a cache is refused by name."""
    from archdsl.blocks.context import ForwardContext
    from archdsl.blocks.sequence import Fourier

    x = torch.randn(2, 5, 8, dtype=torch.float64)
    ctx = ForwardContext(positions=torch.arange(5)[None].expand(2, 5), key_padding=None)
    expected = torch.stack([torch.tensor(__import__("numpy").fft.fft2(row.numpy()).real) for row in x])
    assert torch.allclose(Fourier("f")(x, ctx), expected, atol=1e-10)
    spec = {"name": "t", "model": {"width": 8, "layers": [{"embedding": 11}, {"residual": [{"fourier": {}}]},
                                                          {"lm_head": 11}]}}
    model = archdsl.compile(spec, seed=0)
    assert archdsl.summary(archdsl.load_spec(json.dumps(spec))).total_params == model.num_parameters() == 2 * 11 * 8
    with pytest.raises(ValueError, match="cannot decode one token at a time"):
        model.generate(torch.randint(0, 11, (1, 3)), 2)
