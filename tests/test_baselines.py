"""The pre-attention baselines: conv1d, lstm and gru as node kinds, mixed with attention.

Parameter counts against the built modules, causality of causal convolutions, bidirectional
widths, errors at the right line, padding that changes nothing at real tokens, cached
generation equal to full forwards, and the LSTM and conv/attention hybrid specs learning a
small copy task in 50 steps.
"""
from __future__ import annotations

import textwrap

import pytest
import torch
from torch.nn import functional as F

import archdsl


def spec_with(*nodes: str, width: int = 32, vocab: int = 50, head: bool = True) -> str:
    """A spec: embedding, the given node lines (YAML flow mappings), and an lm_head."""
    body = "\n".join(f"    - {n}" for n in nodes)
    return (f"name: baseline\ndescription: test\nmodel:\n  width: {width}\n  layers:\n"
            f"    - embedding: {{vocab: {vocab}}}\n{body}\n" + (f"    - lm_head: {vocab}\n" if head else ""))


def module_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


NODES = [
    "conv1d: 3",
    "conv1d: {kernel: 4, causal: true}",
    "conv1d: {kernel: 3, causal: true, activation: glu, dilation: 2}",
    "conv1d: {kernel: 5, padding: 2, out: 48, bias: false}",
    "conv1d: {kernel: 3, groups: 32, activation: silu}",  # depthwise
    "conv1d: {kernel: 2, groups: 4, out: 16, activation: glu}",
    "lstm",
    "lstm: 24",
    "lstm: {hidden: 24, layers: 3, dropout: 0.1}",
    "lstm: {hidden: 20, layers: 2, bidirectional: true, bias: false}",
    "gru: {layers: 2}",
    "gru: {hidden: 16, layers: 2, bidirectional: true}",
]


@pytest.mark.parametrize("node", NODES)
def test_param_counts_and_widths_equal_the_built_modules(node):
    text = spec_with(node)
    g = archdsl.graph(text)
    model = archdsl.compile(text, seed=0).eval()
    assert model.num_parameters() == g.graph["total_params"]
    kind = node.split(":")[0]
    data = g.nodes[kind]
    assert module_params(model.get_submodule(kind)) == data["params"] > 0
    assert data["flops"] > 0 and data["family"] == ("conv" if kind == "conv1d" else "recurrent")
    out = model.get_submodule(kind)(torch.randn(2, 7, 32), _ctx(2, 7))
    assert out.shape == (2, 7, data["out_width"])


def _ctx(batch: int, seq: int, key_padding: torch.Tensor | None = None):
    from archdsl.blocks import ForwardContext

    return ForwardContext(positions=torch.arange(seq).expand(batch, seq), key_padding=key_padding)


def test_full_size_lstm_lm_is_zaremba_medium(root):
    path = root / "specs/lstm-lm.yaml"
    # embedding 10000x650 + 2 x LSTM(650, 650) with torch's two biases + 650->10000 head with bias
    expected = 10000 * 650 + 2 * (4 * 650 * (650 + 650) + 8 * 650) + 650 * 10000 + 10000
    assert expected == 19_780_400
    assert archdsl.summary(path).total_params == expected
    assert archdsl.compile(path, seed=0).num_parameters() == expected


def test_bidirectional_recurrence_doubles_the_width():
    for kind in ("lstm", "gru"):
        text = spec_with(f"{kind}: {{hidden: 24, bidirectional: true}}")
        g = archdsl.graph(text)
        assert g.nodes[kind]["out_width"] == 48 and g.nodes["lm_head"]["in_width"] == 48
        logits = archdsl.compile(text, seed=0)(torch.randint(0, 50, (2, 6)))
        assert logits.shape == (2, 6, 50)
    with pytest.raises(archdsl.SpecError, match="changes the width from 32 to 64"):
        archdsl.load_spec(spec_with("residual: [{lstm: {bidirectional: true}}]"))


def test_causal_conv_is_causal_and_a_centred_one_is_not():
    def earlier_outputs_change(node: str) -> bool:
        model = archdsl.compile(spec_with(node, node), seed=0).eval()
        tokens = torch.randint(0, 50, (1, 12), generator=torch.Generator().manual_seed(0))
        changed = tokens.clone()
        changed[0, 7] = (tokens[0, 7] + 1) % 50
        a, b = model(tokens), model(changed)
        assert not torch.allclose(a[0, 7], b[0, 7])  # the changed token itself does matter
        return not torch.allclose(a[0, :7], b[0, :7], atol=0, rtol=0)

    assert not earlier_outputs_change("conv1d: {kernel: 4, causal: true, dilation: 2, activation: glu}")
    assert not earlier_outputs_change("conv1d: {kernel: 3, padding: causal}")
    assert earlier_outputs_change("conv1d: {kernel: 3}")


@pytest.mark.parametrize("name", ["lstm-lm", "conv-attention-hybrid"])
def test_the_baseline_specs_are_causal_end_to_end(root, name):
    model = archdsl.compile(root / f"specs/{name}.yaml", overrides=TASK[name]["overrides"], seed=0).eval()
    tokens = torch.randint(0, 4, (2, 10), generator=torch.Generator().manual_seed(1))
    changed = tokens.clone()
    changed[:, 6] = (tokens[:, 6] + 1) % 4
    a, b = model(tokens), model(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6], rtol=0, atol=0)


@pytest.mark.parametrize("node", ["lstm: {layers: 2}", "gru: {hidden: 16, bidirectional: true, layers: 2}",
                                  "conv1d: {kernel: 3, causal: true}", "conv1d: {kernel: 4, dilation: 2}"])
def test_padding_changes_nothing_at_real_tokens(node):
    model = archdsl.compile(spec_with(node, "conv1d: 3"), seed=0).eval()
    tokens = torch.randint(1, 50, (2, 6), generator=torch.Generator().manual_seed(0))
    reference = model(tokens)
    pad = torch.zeros(2, 3, dtype=torch.long)
    ones, zeros = torch.ones(2, 6, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long)
    left = model(torch.cat([pad, tokens], 1), torch.cat([zeros, ones], 1))[:, 3:]
    right = model(torch.cat([tokens, pad], 1), torch.cat([ones, zeros], 1))[:, :6]
    torch.testing.assert_close(left, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(right, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["lstm-lm", "conv-attention-hybrid"])
def test_cached_generation_equals_full_forwards(root, name):
    overrides = {**TASK[name]["overrides"], "vocab": 50}
    model = archdsl.compile(root / f"specs/{name}.yaml", overrides=overrides, seed=0).eval()
    prompt = torch.randint(0, 50, (2, 5), generator=torch.Generator().manual_seed(2))
    out = model.generate(prompt, 6)
    expected = prompt
    with torch.no_grad():
        for _ in range(6):
            expected = torch.cat([expected, model(expected)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, expected)
    padded = torch.cat([torch.zeros(2, 3, dtype=torch.long), prompt], 1)
    mask = torch.cat([torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 5, dtype=torch.long)], 1)
    assert torch.equal(model.generate(padded, 6, attention_mask=mask)[:, 3:], out)


@pytest.mark.parametrize("node", ["lstm: {layers: 2}", "gru: 16", "conv1d: {kernel: 3, causal: true, dilation: 2}"])
@torch.no_grad()
def test_chunked_cached_forward_equals_one_forward_even_over_all_padding_chunks(node):
    model = archdsl.compile(spec_with(node, "lstm"), seed=0).eval()
    tokens = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(3))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, :5] = 0  # row 1 is left-padded: its first chunk of 4 is all padding
    full = model(tokens, mask)
    cache = model.new_cache(2, 9)
    chunks = [model(tokens[:, a:b], mask[:, a:b], cache=cache) for a, b in ((0, 4), (4, 6), (6, 9))]
    real = mask.bool()
    torch.testing.assert_close(torch.cat(chunks, 1)[real], full[real], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("node", ["lstm: {bidirectional: true}", "gru: {bidirectional: true}", "conv1d: 3"])
def test_generate_refuses_blocks_that_see_the_future(node):
    model = archdsl.compile(spec_with(node), seed=0).eval()
    with pytest.raises(ValueError, match="one token at a time"):
        model.generate(torch.randint(0, 50, (1, 4)), 3)


def test_seeded_initialisation_is_deterministic_and_save_load_round_trips(root, tmp_path):
    text = spec_with("conv1d: {kernel: 3, causal: true}", "lstm: {layers: 2}", "gru: 16")
    a, b, c = (archdsl.compile(text, seed=s) for s in (0, 0, 1))
    for name in ("conv1d.weight", "lstm.weight_hh_l1", "gru.bias_ih_l0"):
        assert torch.equal(a.state_dict()[name], b.state_dict()[name])
        assert not torch.equal(a.state_dict()[name], c.state_dict()[name])
    a.save(tmp_path / "m.safetensors")
    loaded = archdsl.load_model(tmp_path / "m.safetensors")
    tokens = torch.randint(0, 50, (2, 5))
    torch.testing.assert_close(loaded(tokens), a.eval()(tokens), rtol=0, atol=0)


# ----------------------------------------------------------------------------- errors
def error_at(text: str, line_text: str, path_part: str, message: str) -> None:
    """load_spec fails with an error whose line is the (unique) line containing line_text."""
    lines = text.splitlines()
    [line] = [i + 1 for i, t in enumerate(lines) if line_text in t]
    with pytest.raises(archdsl.SpecError) as info:
        archdsl.load_spec(text)
    errors = [e for e in info.value.errors if path_part in e.path]
    assert errors, str(info.value)
    assert errors[0].line == line, str(info.value)
    assert message in errors[0].message + (errors[0].hint or ""), str(info.value)


def block_spec(*lines: str) -> str:
    return textwrap.dedent("""\
        name: bad
        description: x
        model:
          width: 32
          layers:
            - embedding: {vocab: 50}
        """) + "".join(f"    {line}\n" for line in lines) + "    - lm_head: 50\n"


@pytest.mark.parametrize("lines,line_text,path,message", [
    (["- conv1d:", "    kernel: 0"], "kernel: 0", "conv1d.kernel", "> 0"),
    (["- lstm:", "    hidden: -1"], "hidden: -1", "lstm.hidden", "> 0"),
    (["- gru:", "    hidden: 8", "    layers: 0"], "layers: 0", "gru.layers", "> 0"),
    (["- conv1d:", "    kernel: 3", "    causal: true", "    padding: same"], "padding: same", "conv1d.padding",
     "contradicts"),
    (["- conv1d:", "    kernel: 3", "    padding: 3"], "padding: 3", "conv1d.padding", "padding: 1"),
    (["- conv1d:", "    kernel: 3", "    stride: 2"], "stride: 2", "conv1d.stride", "one position per token"),
    (["- conv1d:", "    kernel: 3", "    groups: 5"], "groups: 5", "conv1d.groups", "do not divide"),
    (["- conv1d:", "    kernel: 3", "    padding: left"], "padding: left", "conv1d.padding", "expected one of: causal, same"),
    (["- lstm:", "    hidden: 8", "    dropout: 0.2"], "dropout: 0.2", "lstm.dropout", "layers >= 2"),
    (["- lstm:", "    hidden: 8", "    bidirectional: yes please"], "bidirectional", "lstm.bidirectional",
     "expected true or false"),
])
def test_bad_fields_point_at_their_line(lines, line_text, path, message):
    error_at(block_spec(*lines), line_text, path, message)


# ----------------------------------------------------------------------------- training
HALF, BATCH, STEPS = 4, 64, 50
TASK = {  # vocab = alphabet: the loss can only fall below log(vocab) by copying
    "lstm-lm": {"overrides": {"vocab": 4, "d_model": 64, "layers": 1, "dropout": 0.0}, "lr": 2e-2},
    "conv-attention-hybrid": {"overrides": {"vocab": 4, "d_model": 64, "heads": 4, "layers": 2, "ffn": 128,
                                            "dropout": 0.0}, "lr": 3e-3},
}


@pytest.mark.parametrize("name", sorted(TASK))
@pytest.mark.parametrize("seed", [0, 1])
def test_baseline_specs_learn_a_copy_task(root, name, seed):
    """Sequences whose second half repeats the first: 50 AdamW steps take the loss on the second
    half from about log(vocab) to well under half of it."""
    torch.manual_seed(seed)
    task = TASK[name]
    model = archdsl.compile(root / f"specs/{name}.yaml", overrides=task["overrides"], seed=seed).train()
    vocab = task["overrides"]["vocab"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=task["lr"], weight_decay=0.0)
    data = torch.Generator().manual_seed(100 + seed)
    losses = []
    for _ in range(STEPS):
        first = torch.randint(0, vocab, (BATCH, HALF), generator=data)
        sequence = torch.cat([first, first], 1)
        logits = model(sequence[:, :-1])[:, HALF - 1:]  # the positions that predict the second half
        loss = F.cross_entropy(logits.reshape(-1, vocab), sequence[:, HALF:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    start, end = losses[0], sum(losses[-5:]) / 5
    assert start > 0.8 * torch.log(torch.tensor(float(vocab))).item()
    assert end < 0.5 * start, f"{name}: loss {start:.3f} -> {end:.3f}"


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_recurrent_blocks_are_torch_rnns_and_compile_to_the_same(kind, bidirectional):
    """The lstm/gru blocks hold torch.nn.LSTM/GRU's parameters (same state dict) and give its outputs;
    under torch.compile(fullgraph=True) the explicit per-step recurrence gives the same outputs and
    gradients, padding on either side included."""
    from archdsl.blocks.context import ForwardContext
    from archdsl.blocks.sequence import GRU, LSTM

    torch.manual_seed(0)
    block = (LSTM if kind == "lstm" else GRU)(8, 12, 2, bidirectional=bidirectional, name=kind)
    reference = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(8, 12, 2, batch_first=True,
                                                                     bidirectional=bidirectional)
    block.load_state_dict(reference.state_dict())
    x = torch.randn(3, 6, 8)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[1, 4:] = False  # right padding
    mask[2, :2] = False  # left padding
    with torch.no_grad():
        assert torch.equal(block(x, ForwardContext(positions=None, key_padding=None)), reference(x)[0])

    def run(module, xs):
        return module(xs, ForwardContext(positions=None, key_padding=mask))
    compiled = torch.compile(run, fullgraph=True, backend="aot_eager")
    xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
    eager, traced = run(block, xe), compiled(block, xc)
    assert (eager - traced).abs().max() < 1e-5
    assert eager[~mask].abs().max() == 0  # padding positions output zeros
    eager.pow(2).sum().backward()
    traced.pow(2).sum().backward()
    assert (xe.grad - xc.grad).abs().max() < 1e-5
