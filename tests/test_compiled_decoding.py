"""Compiled decoding (archdsl/decoding.py): one torch.compile'd step of static shapes for every token.

The step is compiled with the aot_eager backend (Dynamo tracing plus AOTAutograd, no code generation)
through torch._dynamo's CompileCounter, which counts every frame Dynamo compiles: a recompile across
steps, prompt lengths or padding would show as a second frame. Tokens must equal eager decoding's.
"""
from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import torch
import torch._dynamo.testing

import archdsl
from archdsl import decoding
from archdsl.cache import ValueState
from test_generate import SPECS, VOCAB, left_padded, library_model, random_tokens


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def counter() -> torch._dynamo.testing.CompileCounterWithBackend:
    return torch._dynamo.testing.CompileCounterWithBackend("aot_eager")


# GPT-2 (learned positions, MHA), Llama (rotary, GQA), Mistral (a sliding window of 3, shorter than the
# prompts), and hybrids whose fixed-size states must be overwritten in place: Mamba-2 and a convolution
STATIC_SPECS = ["gpt2", "llama-small", "mistral-7b", "llama-mamba2-hybrid", "conv-attention-hybrid"]


@pytest.mark.parametrize("name", STATIC_SPECS)
def test_compiled_decoding_gives_eager_tokens_with_one_graph(name):
    model = library_model(SPECS / f"{name}.yaml")
    cnt = counter()
    short, long = random_tokens(2, 5, seed=3), random_tokens(2, 11, seed=4)
    padded, mask = left_padded([0, 4], 9)
    runs = [(short, None, 12), (long, None, 9), (padded, mask, 10)]  # totals 17, 20, 19: one bucket (64)
    for tokens, m, n in runs:
        eager = model.generate(tokens, n, attention_mask=m)
        compiled = model.generate(tokens, n, attention_mask=m, compile={"backend": cnt})
        assert torch.equal(compiled, eager), (name, tokens.shape, m is not None)
    assert cnt.frame_count == 1, f"{cnt.frame_count} compiled frames: the step recompiled"
    (decoder,) = model._compiled_decoders.values()
    assert decoder.cache.max_len == 64 and decoder.compile_seconds is not None
    assert decoder.cache.position is None  # generate leaves the cache out of its static mode


def test_fixed_states_are_overwritten_in_place():
    model = library_model(SPECS / "llama-mamba2-hybrid.yaml")
    cnt = counter()  # one backend object: the same options, so the same compiled decoder both times
    model.generate(random_tokens(1, 4), 3, compile={"backend": cnt})
    (decoder,) = model._compiled_decoders.values()
    fixed = [s for s in decoder.cache.states if isinstance(s, ValueState)]
    assert fixed and all(s._pinned for s in fixed)
    pointers = [[t.data_ptr() for t in s._value] for s in fixed]
    before = [s._value[1].clone() for s in fixed]  # the SSM states after the first run
    model.generate(random_tokens(1, 6, seed=9), 5, compile={"backend": cnt})
    assert list(model._compiled_decoders.values()) == [decoder] and cnt.frame_count == 1
    assert [[t.data_ptr() for t in s._value] for s in fixed] == pointers  # the same buffers ...
    assert any(not torch.equal(b, s._value[1]) for b, s in zip(before, fixed))  # ... with new contents


def test_a_new_bucket_compiles_a_new_step_and_the_old_one_is_kept():
    model = library_model(SPECS / "llama-small.yaml")
    cnt = counter()
    prompt = random_tokens(1, 5)
    model.generate(prompt, 10, compile={"backend": cnt})
    model.generate(prompt, 70, compile={"backend": cnt})  # 75 positions: the 96 bucket
    model.generate(prompt, 20, compile={"backend": cnt})  # back in the 64 bucket: no compile
    assert cnt.frame_count == 2
    assert sorted(key[1] for key in model._compiled_decoders) == [64, 96]


def test_sampling_and_eos_match_eager():
    model = library_model(SPECS / "llama-small.yaml")
    prompt = random_tokens(2, 4, seed=5)
    kwargs = dict(temperature=0.9, top_k=20, top_p=0.9)
    eager = model.generate(prompt, 15, generator=torch.Generator().manual_seed(0), **kwargs)
    compiled = model.generate(prompt, 15, generator=torch.Generator().manual_seed(0), compile={"backend": counter()},
                              **kwargs)
    assert torch.equal(compiled, eager)
    eos = int(eager[0, 6])
    assert torch.equal(model.generate(prompt, 15, eos_token_id=eos, compile={"backend": counter()}),
                       model.generate(prompt, 15, eos_token_id=eos))


def test_the_model_level_switch_and_the_default():
    model = library_model(SPECS / "gpt2.yaml")
    assert model.compile_decoding is False  # eager unless asked
    prompt = random_tokens(1, 3)
    eager = model.generate(prompt, 6)
    assert not model.__dict__.get("_compiled_decoders")
    cnt = counter()
    model.compile_decoding = {"backend": cnt}
    assert torch.equal(model.generate(prompt, 6), eager) and cnt.frame_count == 1
    assert torch.equal(model.generate(prompt, 6, compile=False), eager) and cnt.frame_count == 1
    clone = copy.deepcopy(model)  # compiled decoders belong to one model and are not copied
    assert not clone._compiled_decoders and torch.equal(clone.generate(prompt, 6, compile=False), eager)


def test_models_that_cannot_decode_statically_fall_back_to_eager_with_a_warning():
    model = archdsl.compile(SPECS / "t5-small.yaml", overrides={"vocab": VOCAB, "d_model": 64, "heads": 4,
                                                                 "layers": 1, "ffn": 128}, seed=0).eval()
    source = random_tokens(1, 5)
    eager = model.generate(source, 4, decoder_start_token_id=0)
    with pytest.warns(UserWarning, match="encoder-decoder.*decoding eagerly"):
        compiled = model.generate(source, 4, decoder_start_token_id=0, compile=True)
    assert torch.equal(compiled, eager)


@pytest.mark.parametrize("compile,error", [(1, TypeError), ({"fullgraph": False}, ValueError)])
def test_bad_compile_arguments_are_named(compile, error):
    model = library_model(SPECS / "gpt2.yaml")
    with pytest.raises(error, match="compile"):
        model.generate(random_tokens(1, 3), 2, compile=compile)


def test_options_and_buckets():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert decoding.compile_options(True, cpu) == {}
    assert decoding.compile_options(True, cuda) == {"mode": "reduce-overhead"}  # CUDA graphs on a GPU
    assert decoding.compile_options("max-autotune", cpu) == {"mode": "max-autotune"}
    assert [decoding.bucket(t) for t in (1, 64, 65, 97, 129, 193, 257, 1000)] == [64, 64, 96, 128, 192, 256, 384, 1024]
    assert decoding.bucket(1000, max_positions=512) == 512


def test_a_pinned_state_keeps_its_buffers_and_refuses_other_shapes():
    state = ValueState()
    with pytest.raises(ValueError, match="set .* before it is pinned"):
        state.pin()
    state.value = (torch.zeros(2, 3), torch.zeros(2))
    state.pin()
    buffers = state.value
    state.value = (torch.ones(2, 3), torch.full((2,), 2.0))
    assert state.value[0] is buffers[0] and torch.equal(buffers[1], torch.full((2,), 2.0))
    state.reset()
    assert state.value is None and state._value[0] is buffers[0]  # None to modules, buffers kept
    with pytest.raises(ValueError, match=r"shape \(2, 3\) cannot take \(3, 3\)"):
        state.value = (torch.ones(3, 3), torch.zeros(2))
