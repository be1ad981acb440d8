"""The linear-recurrent and convolutional mixers (gated_deltanet, short_conv, rg_lru, lightning_attention) and
the attention output gate: each module equals transformers' module on the same perturbed weights; cached decoding,
chunked prefill and generation equal the full forward; padding leaves real rows unchanged; the hybrid
compiles with fullgraph; the full-size specs have transformers' parameter counts.
"""
from __future__ import annotations

import functools
import textwrap
import warnings

import pytest
import torch

import archdsl
from conftest import need
from archdsl.blocks import ForwardContext
from archdsl.blocks.attention import Attention
from archdsl.blocks.linear_mixers import (GatedDeltaNet, LightningAttention, RecurrentBlock, ShortConv,
                                          delta_rule_chunked, delta_rule_recurrent, linear_scan)
from archdsl.errors import SpecError

transformers = need("transformers")
T = transformers
warnings.filterwarnings("ignore", message=".*falling back to its reference PyTorch implementation.*")


def perturbed(module: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> torch.nn.Module:
    """Every parameter replaced by noise: no weight sits at its initial value (ones, zeros), so a
    swapped gate or a missing scale shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * scale)
    return module.eval()


def context(B: int, S: int, mask: torch.Tensor | None = None) -> ForwardContext:
    return ForwardContext(positions=torch.arange(S).expand(B, S), key_padding=None if mask is None else mask.bool())


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> float:
    err = (a - b).abs().max().item()
    assert err <= tol * max(1.0, b.abs().max().item()), f"max abs difference {err}"
    return err


# ----------------------------------------------------------------------------- gated DeltaNet
def qwen3_next_config(**kw) -> T.Qwen3NextConfig:
    base = dict(hidden_size=32, linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=8,
                linear_value_head_dim=6, linear_conv_kernel_dim=4, num_hidden_layers=1,
                layer_types=["linear_attention"], num_attention_heads=4, num_key_value_heads=2, head_dim=8)
    return T.Qwen3NextConfig(**{**base, **kw})


def gdn_from_qwen3_next(hf, chunk_size: int = 64) -> GatedDeltaNet:
    """Our module with the weights of Qwen3NextGatedDeltaNet, whose in_proj_qkvz / in_proj_ba interleave
    q, k, v, z (and b, a) per query/key head."""
    Hk, Dk, Hv, Dv = hf.num_k_heads, hf.head_k_dim, hf.num_v_heads, hf.head_v_dim
    r, D = Hv // Hk, hf.hidden_size
    ours = GatedDeltaNet(D, Hk, Dk, Hv, Dv, conv_kernel=hf.conv_kernel_size, norm_eps=hf.layer_norm_epsilon,
                         allow_neg_eigval=False, chunk_size=chunk_size).eval()
    with torch.no_grad():
        q, k, v, z = hf.in_proj_qkvz.weight.view(Hk, 2 * Dk + 2 * r * Dv, D).split([Dk, Dk, r * Dv, r * Dv], 1)
        ours.qkv.weight.copy_(torch.cat([q.reshape(-1, D), k.reshape(-1, D), v.reshape(-1, D)]))
        ours.z.weight.copy_(z.reshape(-1, D))
        b, a = hf.in_proj_ba.weight.view(Hk, 2 * r, D).split([r, r], 1)
        ours.b.weight.copy_(b.reshape(-1, D))
        ours.a.weight.copy_(a.reshape(-1, D))
        ours.conv.weight.copy_(hf.conv1d.weight)
        for name in ("A_log", "dt_bias"):
            getattr(ours, name).copy_(getattr(hf, name))
        ours.norm.weight.copy_(hf.norm.weight)
        ours.out.weight.copy_(hf.out_proj.weight)
    return ours


def qwen3_next_deltanet_case(chunk_size: int):
    """(our gated DeltaNet on Qwen3NextGatedDeltaNet's weights, check(module): its outputs equal
    transformers', unpadded and left-padded, and the padded row is the row alone)."""
    from transformers.models.qwen3_next.modeling_qwen3_next import Qwen3NextGatedDeltaNet

    hf = perturbed(Qwen3NextGatedDeltaNet(qwen3_next_config(), 0))
    ours = gdn_from_qwen3_next(hf, chunk_size)
    x = torch.randn(2, 70, 32, generator=torch.Generator().manual_seed(1))  # two of transformers' 64-chunks
    mask = torch.ones(2, 70, dtype=torch.long)
    mask[1, :9] = 0  # left padding, as generation pads
    with torch.no_grad():
        unpadded, padded_hf = hf(x), hf(x, attention_mask=mask)

    def check(ours):
        with torch.no_grad():
            close(ours(x, context(2, 70)), unpadded)
            padded = ours(x, context(2, 70, mask))
            close(padded, padded_hf)
            alone = ours(x[1:, 9:], context(1, 61))  # the padded row computes what the row alone computes
            close(padded[1:, 9:], alone)
    return ours, check


@pytest.mark.parametrize("chunk_size", [64, 8])
def test_gated_deltanet_equals_qwen3_next(chunk_size):
    """The gated DeltaNet computes Qwen3-Next's, unpadded and left-padded, chunked by 64 or 8."""
    ours, check = qwen3_next_deltanet_case(chunk_size)
    check(ours)


def olmo_hybrid_deltanet_case():
    """(our gated DeltaNet with negative eigenvalues on OLMo-hybrid's weights, check(module): its
    outputs equal transformers')."""
    from transformers.models.olmo_hybrid.modeling_olmo_hybrid import OlmoHybridGatedDeltaNet

    config = T.OlmoHybridConfig(hidden_size=32, linear_num_key_heads=2, linear_num_value_heads=2,
                                linear_key_head_dim=8, linear_value_head_dim=8, linear_conv_kernel_dim=4,
                                linear_allow_neg_eigval=True, num_hidden_layers=2, num_attention_heads=4,
                                layer_types=["linear_attention", "full_attention"])
    hf = perturbed(OlmoHybridGatedDeltaNet(config, 0))
    ours = GatedDeltaNet(32, 2, 8, 2, 8, conv_kernel=4, norm_eps=1e-5, allow_neg_eigval=True, chunk_size=16).eval()
    with torch.no_grad():  # OLMo-hybrid's separate projections are our layout already
        ours.qkv.weight.copy_(torch.cat([hf.q_proj.weight, hf.k_proj.weight, hf.v_proj.weight]))
        for ours_name, theirs in (("z", "g_proj"), ("b", "b_proj"), ("a", "a_proj"), ("out", "o_proj")):
            getattr(ours, ours_name).weight.copy_(getattr(hf, theirs).weight)
        ours.conv.weight.copy_(hf.conv1d.weight)
        ours.A_log.copy_(hf.A_log)
        ours.dt_bias.copy_(hf.dt_bias)
        ours.norm.weight.copy_(hf.o_norm.weight)
        x = torch.randn(2, 40, 32, generator=torch.Generator().manual_seed(2))
        theirs = hf(x)

    def check(ours):
        with torch.no_grad():
            close(ours(x, context(2, 40)), theirs)
    return ours, check, lambda ours: (ours(x, context(2, 40)) - theirs).abs().max()


def test_gated_deltanet_equals_olmo_hybrid_with_negative_eigenvalues():
    """The gated DeltaNet with negative eigenvalues computes OLMo-hybrid's."""
    ours, check, difference = olmo_hybrid_deltanet_case()
    check(ours)
    ours.allow_neg_eigval = False  # the field matters
    with torch.no_grad():
        assert difference(ours) > 1e-2


def test_chunked_and_recurrent_delta_rule_agree_and_continue_from_a_state():
    g = torch.Generator().manual_seed(3)
    B, H, S, Dk, Dv = 2, 3, 37, 8, 5
    q = torch.nn.functional.normalize(torch.randn(B, H, S, Dk, generator=g), dim=-1) * Dk ** -0.5
    k = torch.nn.functional.normalize(torch.randn(B, H, S, Dk, generator=g), dim=-1)
    v = torch.randn(B, H, S, Dv, generator=g)
    decay = -torch.rand(B, H, S, generator=g)
    beta = torch.rand(B, H, S, generator=g)
    state0 = torch.randn(B, H, Dk, Dv, generator=g)
    ref, ref_state = delta_rule_recurrent(q, k, v, decay, beta, state0)
    for chunk in (4, 16, 64):
        out, state = delta_rule_chunked(q, k, v, decay, beta, state0, chunk)
        close(out, ref)
        close(state, ref_state)
    first, mid = delta_rule_chunked(q[:, :, :20], k[:, :, :20], v[:, :, :20], decay[:, :, :20], beta[:, :, :20],
                                    state0, 8)
    second, end = delta_rule_chunked(q[:, :, 20:], k[:, :, 20:], v[:, :, 20:], decay[:, :, 20:], beta[:, :, 20:],
                                     mid, 8)
    close(torch.cat([first, second], 2), ref)
    close(end, ref_state)


# ----------------------------------------------------------------------------- short conv, RG-LRU
def short_conv_case(bias: bool):
    """(our short conv on Lfm2ShortConv's weights, check(module): its outputs equal transformers',
    and a left-padded row is the row alone)."""
    from transformers.models.lfm2.modeling_lfm2 import Lfm2ShortConv

    config = T.Lfm2Config(hidden_size=32, conv_L_cache=3, conv_bias=bias, num_hidden_layers=1, layer_types=["conv"])
    hf = perturbed(Lfm2ShortConv(config, 0))
    ours = ShortConv(32, 3, bias).eval()
    ours.load_state_dict(hf.state_dict())  # the same names and shapes: in_proj, conv, out_proj
    x = torch.randn(2, 11, 32, generator=torch.Generator().manual_seed(4))
    mask = torch.ones(2, 11, dtype=torch.long)
    mask[0, :3] = 0
    with torch.no_grad():
        unpadded, padded_hf = hf(x), hf(x, attention_mask=mask)

    def check(ours):
        with torch.no_grad():
            close(ours(x, context(2, 11)), unpadded)
            padded = ours(x, context(2, 11, mask))
            close(padded[:1, 3:], ours(x[:1, 3:], context(1, 8)))
            if not bias:  # with biases transformers' masked input still writes bias ⊙ bias into the window
                close(padded, padded_hf)
    return ours, check


@pytest.mark.parametrize("bias", [False, True])
def test_short_conv_equals_lfm2(bias):
    """The short conv computes LFM2's, and a left-padded row is the row alone."""
    ours, check = short_conv_case(bias)
    check(ours)


def rg_lru_case():
    """(our RG-LRU block on RecurrentGemmaRecurrentBlock's weights, check(module): its outputs equal
    transformers', also for a row of two documents (positions restarting), and a left-padded row is
    the row alone)."""
    from transformers.models.recurrent_gemma.modeling_recurrent_gemma import RecurrentGemmaRecurrentBlock

    config = T.RecurrentGemmaConfig(hidden_size=32, lru_width=48, num_attention_heads=4, conv1d_width=4,
                                    num_hidden_layers=1)
    hf = perturbed(RecurrentGemmaRecurrentBlock(config, 0))
    ours = RecurrentBlock(32, 48, 4, 4, "gelu_tanh", 8.0).eval()
    ours.load_state_dict(hf.state_dict())  # named as transformers: linear_x/y/out, conv_1d, rg_lru.*
    x = torch.randn(2, 33, 32, generator=torch.Generator().manual_seed(5))
    positions = torch.arange(33).expand(2, 33)
    restart = torch.cat([torch.arange(20), torch.arange(13)]).expand(2, 33)  # two documents in one row
    mask = torch.ones(2, 33, dtype=torch.long)
    mask[1, :6] = 0
    with torch.no_grad():
        theirs, restarted = hf(x, positions, None, use_cache=False)[0], hf(x, restart, None, use_cache=False)[0]

    def check(ours):
        with torch.no_grad():
            close(ours(x, context(2, 33)), theirs)
            close(ours(x, ForwardContext(positions=restart)), restarted)
            padded = ours(x, context(2, 33, mask))  # positions 0..32: the first real token still restarts
            close(padded[1:, 6:], ours(x[1:, 6:], context(1, 27)))
    return ours, check, lambda ours: (ours(x, context(2, 33)) - theirs).abs().max()


def test_rg_lru_block_equals_recurrent_gemma():
    """The RG-LRU block computes RecurrentGemma's, positions restarting too, and pads like the row alone."""
    ours, check, difference = rg_lru_case()
    check(ours)
    with torch.no_grad():
        ours.rg_lru.recurrent_param.add_(1.0)
        assert difference(ours) > 1e-3


def lightning_case(layer: int):
    """(our lightning attention on MiniMaxLightningAttention's weights at a layer's depth, check(module):
    its outputs equal transformers', unpadded and left-padded, and a left-padded row is the row alone)."""
    from transformers.models.minimax.modeling_minimax import MiniMaxLightningAttention

    config = T.MiniMaxConfig(hidden_size=32, num_attention_heads=4, num_hidden_layers=4, block_size=16,
                             layer_types=["linear_attention"] * 4)
    hf = perturbed(MiniMaxLightningAttention(config, layer))
    factor = 1 - layer / (4 - 1 + 1e-5) + 1e-5  # what the builder derives from the layer's depth
    ours = LightningAttention(32, 4, 8, block_size=16, decay_factor=factor, norm_eps=1e-6).eval()
    ours.load_state_dict({k: v for k, v in hf.state_dict().items() if not k.endswith(("_rate", "_decay"))})
    close(ours.decay_rates, hf.slope_rate.flatten())
    x = torch.randn(2, 40, 32, generator=torch.Generator().manual_seed(12))  # two and a half blocks
    mask = torch.ones(2, 40, dtype=torch.long)
    mask[0, :5] = 0
    with torch.no_grad():
        theirs, padded_hf, alone_hf = hf(x, None, None)[0], hf(x, None, mask)[0], hf(x[:1, 5:], None, None)[0]

    # within 1.3e-7 of the largest value; decay rates rounded to bf16 (at layer 0, 2^-k · 1.00001) move it by 1.7e-6
    tol = 1e-6

    def check(ours):
        with torch.no_grad():
            close(ours(x, context(2, 40)), theirs, tol)
            padded = ours(x, context(2, 40, mask))
            close(padded[mask.bool()], padded_hf[mask.bool()], tol)  # transformers zeroes q, k, v there too
            close(padded[:1, 5:], ours(x[:1, 5:], context(1, 35)), tol)
            close(padded[:1, 5:], alone_hf, tol)
    return ours, check


@pytest.mark.parametrize("layer", [0, 2])
def test_lightning_attention_equals_minimax(layer):
    """Lightning attention computes MiniMax's at two depths (decay rates), unpadded and left-padded."""
    ours, check = lightning_case(layer)
    check(ours)


def test_linear_scan_equals_the_sequential_recurrence():
    g = torch.Generator().manual_seed(6)
    a, u, h0 = torch.rand(2, 45, 7, generator=g), torch.randn(2, 45, 7, generator=g), torch.randn(2, 7, generator=g)
    h, expected = h0, []
    for t in range(45):
        h = a[:, t] * h + u[:, t]
        expected.append(h)
    close(linear_scan(a, u, h0), torch.stack(expected, 1))


# ----------------------------------------------------------------------------- gated attention
def gated_attention_case():
    """(our attention with an output gate on Qwen3NextAttention's weights, check(module): its outputs
    equal transformers' on the same rotary tables and causal mask)."""
    from transformers.models.qwen3_next.modeling_qwen3_next import Qwen3NextAttention, Qwen3NextRotaryEmbedding

    config = qwen3_next_config(layer_types=["full_attention"], rope_parameters={
        "rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5})
    config._attn_implementation = "eager"
    hf = perturbed(Qwen3NextAttention(config, 0), scale=0.2)
    H, kv, hd, D = 4, 2, 8, 32
    ours = Attention(D, H, kv, hd, causal=True, window=None, dropout=0.0, bias=False, out_bias=False, scale=None,
                     rotary=("rope", False), alibi=False, qk_norm_eps=1e-6, qk_norm_unit_offset=True,
                     output_gate=True).eval()
    with torch.no_grad():
        q, gate = hf.q_proj.weight.view(H, 2 * hd, D).split([hd, hd], 1)  # per head: [query, gate]
        ours.qkv.weight.copy_(torch.cat([q.reshape(-1, D), hf.k_proj.weight, hf.v_proj.weight, gate.reshape(-1, D)]))
        ours.out.weight.copy_(hf.o_proj.weight)
        ours.q_norm.weight.copy_(hf.q_norm.weight)
        ours.k_norm.weight.copy_(hf.k_norm.weight)
        x = torch.randn(2, 9, D, generator=torch.Generator().manual_seed(7))
        positions = torch.arange(9).expand(2, 9)
        cos, sin = Qwen3NextRotaryEmbedding(config)(x, positions)
        causal = torch.full((9, 9), float("-inf")).triu(1)[None, None]
        ref, _ = hf(x, (cos, sin), causal)

    def ctx():
        out = context(2, 9)
        out.rope["rope"] = (cos[:, None], sin[:, None])
        return out

    def check(ours):
        with torch.no_grad():
            close(ours(x, ctx()), ref)
    return ours, check, lambda ours: (ours(x, ctx()) - ref).abs().max()


def test_attention_output_gate_equals_qwen3_next_attention():
    """Attention with Qwen3-Next's output gate computes Qwen3NextAttention's."""
    ours, check, difference = gated_attention_case()
    check(ours)
    with torch.no_grad():
        ours.qkv.weight[-ours.out.weight.shape[1]:].zero_()  # the gate matters: sigmoid(0) halves every output
        assert difference(ours) > 1e-3


# ----------------------------------------------------------------------------- hybrid models
HYBRID = textwrap.dedent("""\
    archdsl: 1
    name: tiny-hybrid
    description: Qwen3-Next's arrangement (3 gated DeltaNet layers per gated attention layer) with LFM2's and Griffin's mixers.
    blocks:
      ffn:
        - residual: [{rmsnorm: {unit_offset: true}}, {mlp: {hidden: 64, activation: swiglu, bias: false}}]
      delta:
        - residual: [{rmsnorm: {unit_offset: true}}, {gated_deltanet: {heads: 2, head_dim: 8, value_heads: 4, value_dim: 6, chunk_size: 4}}]
        - ffn
      conv:
        - residual: [{rmsnorm: {unit_offset: true}}, {short_conv: 3}]
        - ffn
      lru:
        - residual: [{rmsnorm: {unit_offset: true}}, {rg_lru: {heads: 4, lru_width: 48}}]
        - ffn
      light:
        - residual: [{rmsnorm: {unit_offset: true}}, {lightning_attention: {heads: 4, block_size: 4}}]
        - ffn
      attend:
        - residual: [{rmsnorm: {unit_offset: true}}, {attention: {heads: 4, kv_heads: 2, causal: true, bias: false,
                     qk_norm: true, output_gate: true}}]
        - ffn
    model:
      width: 32
      layers:
        - embedding: {name: wte, vocab: 67}
        - positional: {kind: rotary, fraction: 0.5}
        - repeat: LAYERS
          name: layers
          pattern: PATTERN
        - rmsnorm
        - lm_head: {vocab: 67}
    """)


PATTERNS = ["[delta, delta, delta, attend]", "[conv, lru, light, attend]"]


def hybrid(pattern: str = "[delta, delta, delta, attend]", layers: int = 4) -> archdsl.ArchModel:
    text = HYBRID.replace("PATTERN", pattern).replace("LAYERS", str(layers))
    model = archdsl.compile(text, seed=0).eval()
    generator = torch.Generator().manual_seed(8)
    with torch.no_grad():  # non-trivial norms and gates: nothing at its initial value
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.1)
    return model


@pytest.mark.parametrize("pattern", PATTERNS)
def test_hybrid_decodes_generates_and_pads_like_the_full_forward(pattern):
    """Cached decoding, generation and a left-padded batch of a hybrid equal its full forward, its
    argmax continuation and each row alone."""
    model, check = hybrid_case(pattern)
    assert archdsl.summary(model.spec).total_params == model.num_parameters()
    check(model)


def test_hybrid_compiles_without_graph_breaks_and_trains():
    model = hybrid("[delta, conv, lru, light, attend]", layers=5)
    tokens = torch.randint(0, 67, (2, 9), generator=torch.Generator().manual_seed(11))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[0, :2] = 0
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        close(compiled(tokens, mask), model(tokens, mask))
    model.train()
    loss = torch.nn.functional.cross_entropy(compiled(tokens[:, :-1]).reshape(-1, 67), tokens[:, 1:].reshape(-1))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_decode_state_is_fixed_and_counted():
    model = hybrid()
    summary = archdsl.summary(model.spec)
    conv_channels, state = 2 * 2 * 8 + 4 * 6, 4 * 8 * 6  # q, k, v channels; 4 value heads of 8 x 6
    assert summary.state_bytes == 3 * (conv_channels * 3 + state) * 2  # three DeltaNet layers, bf16
    assert summary.kv_cache_bytes_per_token == 2 * 2 * 8 * 2  # one attention layer: keys and values of 2 heads
    cache = model.new_cache(1, 64)
    with torch.no_grad():
        model(torch.zeros(1, 40, dtype=torch.long), cache=cache)
        before = [s.nbytes() for s in cache.states if not hasattr(s, "keys")]
        model(torch.zeros(1, 20, dtype=torch.long), cache=cache)
    assert before == [s.nbytes() for s in cache.states if not hasattr(s, "keys")]  # does not grow


# ----------------------------------------------------------------------------- specs, errors, diagrams
FULL = {
    "lfm2-1.2b": (lambda: T.Lfm2Config(
        vocab_size=65536, hidden_size=2048, intermediate_size=12288, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, max_position_embeddings=128000, norm_eps=1e-5, conv_L_cache=3, conv_bias=False,
        block_multiple_of=256, block_ffn_dim_multiplier=1.0, block_auto_adjust_ff_dim=True,
        full_attn_idxs=[2, 5, 8, 10, 12, 14], rope_theta=1000000.0, tie_word_embeddings=True), 1_170_340_608),
    "recurrentgemma-2b": (lambda: T.RecurrentGemmaConfig(
        num_hidden_layers=26, vocab_size=256000, hidden_size=2560, intermediate_size=15360, num_attention_heads=10,
        num_key_value_heads=1, lru_width=2560, attention_window_size=2048, conv1d_width=4, logits_soft_cap=30.0,
        rms_norm_eps=1e-6, block_types=["recurrent", "recurrent", "attention"], partial_rotary_factor=0.5),
        2_682_862_080),
    "qwen3-next-80b-a3b": (lambda: T.Qwen3NextConfig(
        vocab_size=151936, hidden_size=2048, intermediate_size=5120, num_hidden_layers=48, num_attention_heads=16,
        num_key_value_heads=2, head_dim=256, linear_conv_kernel_dim=4, linear_key_head_dim=128,
        linear_value_head_dim=128, linear_num_key_heads=16, linear_num_value_heads=32, moe_intermediate_size=512,
        shared_expert_intermediate_size=512, num_experts=512, num_experts_per_tok=10, norm_topk_prob=True,
        max_position_embeddings=262144, rms_norm_eps=1e-6, decoder_sparse_step=1, mlp_only_layers=[],
        full_attention_interval=4, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25}),
        79_674_391_296),
}


@pytest.mark.parametrize("name", sorted(FULL))
def test_full_size_specs_have_the_transformers_count(root, name):
    make, count = FULL[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.device("meta"):
            hf_model = T.AutoModelForCausalLM.from_config(make())
    assert sum(p.numel() for p in hf_model.parameters()) == count
    path = root / "specs" / f"{name}.yaml"
    assert archdsl.summary(path).total_params == count
    assert archdsl.compile(path, device="meta").num_parameters() == count


def test_errors_name_the_field_and_line(tmp_path):
    text = HYBRID.replace("PATTERN", "[delta, attend]").replace("LAYERS", "2")
    path = tmp_path / "bad.yaml"
    path.write_text(text.replace("value_heads: 4", "value_heads: 3"))
    with pytest.raises(SpecError, match=r"bad\.yaml:8:.*value_heads 3 is not a multiple of heads 2"):
        archdsl.load_spec(path)
    path.write_text(text.replace("delta, attend", "lru, attend").replace("lru_width: 48", "lru_width: 50"))
    with pytest.raises(SpecError, match=r"bad\.yaml:14:.*4 gate blocks do not divide the recurrence width 50"):
        archdsl.load_spec(path)
    path.write_text(text.replace("delta, attend", "conv, attend").replace("short_conv: 3", "short_conv: 0"))
    with pytest.raises(SpecError, match=r"bad\.yaml:11:.*short_conv.kernel.*must be > 0"):
        archdsl.load_spec(path)


def test_diagram_titles_and_labels():
    model = hybrid("[delta, conv, lru, light, attend]", layers=5)
    dot = archdsl.render(model.spec, format="dot")
    for text in ("Gated DeltaNet", "2 heads × 8, 4 v-heads × 6, conv 4", "Short conv", "k=3, C ⊙ conv(B ⊙ x)",
                 "RG-LRU block", "width 48, 4 gate blocks, conv 4", "Lightning attention", "4 heads, block 4",
                 "output gate"):
        assert text in dot, text


def hybrid_case(pattern: str):
    """(the hybrid of a layer pattern, check(model): cached decoding in float64 and float32 gives its
    full-forward logits, generate its argmax continuation, a left-padded batch what each row generates
    alone); the references are the unbroken hybrid's."""
    model = hybrid(pattern)
    tokens = torch.randint(0, 67, (2, 11), generator=torch.Generator().manual_seed(9))
    prompts = torch.randint(0, 67, (2, 6), generator=torch.Generator().manual_seed(10))
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[0, :2] = 0
    with torch.no_grad():
        full = {dtype: model.to(dtype)(tokens) for dtype in (torch.float64, torch.float32)}
        expected = tokens[:, :5]
        for _ in range(8):
            expected = torch.cat([expected, model(expected)[:, -1].argmax(-1, keepdim=True)], 1)
    alone = [model.generate(prompts[:1, 2:], 6)[0], model.generate(prompts[1:], 6)[0]]

    def check(model):
        # float64: the chunked and recurrent forms are the same arithmetic; float32: the per-head norm of the
        # DeltaNet output amplifies rounding where that output is small
        for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 5e-5)):
            m = model.to(dtype)
            with torch.no_grad():
                cache = m.new_cache(2, 11)
                pieces = [m(tokens[:, :3], cache=cache), m(tokens[:, 3:7], cache=cache)]  # prefill in two pieces
                pieces += [m(tokens[:, i:i + 1], cache=cache) for i in range(7, 11)]
                close(torch.cat(pieces, 1), full[dtype], tol)
        out = model.generate(tokens[:, :5], 8)
        assert torch.equal(out, expected)
        # a left-padded batch generates what each row generates alone
        batched = model.generate(prompts, 6, attention_mask=mask)
        assert torch.equal(batched[0, 2:], alone[0])
        assert torch.equal(batched[1], alone[1])
    assert len(set(expected[0, 5:].tolist())) > 1
    return model, check


def control_cases():
    """The module and hybrid checks above for tests/controls.py (docs/testing.md)."""
    from controls import Case

    tolerance = "<= 1e-5 x max(1, max |value|)"
    for chunk in (64, 8):
        yield Case(test_gated_deltanet_equals_qwen3_next, f"chunk{chunk}",
                   functools.partial(qwen3_next_deltanet_case, chunk), tolerance)
    yield Case(test_gated_deltanet_equals_olmo_hybrid_with_negative_eigenvalues, "olmo_hybrid",
               lambda: olmo_hybrid_deltanet_case()[:2], tolerance)
    for bias in (False, True):
        yield Case(test_short_conv_equals_lfm2, f"bias={bias}", functools.partial(short_conv_case, bias), tolerance)
    yield Case(test_rg_lru_block_equals_recurrent_gemma, "recurrent_gemma", lambda: rg_lru_case()[:2], tolerance)
    for layer in (0, 2):
        yield Case(test_lightning_attention_equals_minimax, f"layer{layer}", functools.partial(lightning_case, layer),
                   "<= 1e-6 x max(1, max |value|)")
    yield Case(test_attention_output_gate_equals_qwen3_next_attention, "qwen3_next",
               lambda: gated_attention_case()[:2], tolerance)
    for pattern in PATTERNS:
        yield Case(test_hybrid_decodes_generates_and_pads_like_the_full_forward, pattern,
                   functools.partial(hybrid_case, pattern), "<= 1e-12 (float64), 5e-5 (float32) x max(1, max |logit|); "
                   "equal tokens")
