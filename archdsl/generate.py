"""Autoregressive generation: a static key/value cache, token sampling, and the decoding loop.

    model = archdsl.compile("specs/gpt2.yaml", overrides={"layers": 2}, seed=0)
    out = model.generate(prompt, 32)                                  # greedy
    out = model.generate(prompt, 32, temperature=0.8, top_p=0.9, generator=torch.Generator().manual_seed(0))

The cache (:class:`archdsl.cache.KVCache`) holds every layer's decode state: for an attention
layer one key and one value buffer of shape ``(batch, kv_heads, max_len, head_dim)``, allocated
once; each forward writes its new keys/values in place at ``[length, length + S)`` and attends
over the view ``[:length + S]``. Nothing is concatenated or reallocated while decoding (unless
the cache is too large to allocate up front, see archdsl/cache.py), so the Python work per step
is the same at step 1 and at step 10,000. Recurrent and convolutional layers keep a fixed-size
state in the same cache. See docs/generation.md.

Encoder-decoder graphs (:func:`generate_encoder_decoder`, docs/encoder-decoder.md): the source is
encoded once; the cache then also holds the encoder's output (``cache.memory``) and every
cross-attention layer's keys/values of it, computed on the first step.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Sequence

import torch

from . import decoding
from .cache import KVCache  # noqa: F401  (archdsl.generate.KVCache, as before)

if TYPE_CHECKING:  # pragma: no cover
    from .compiler import ArchModel


def sample(logits: torch.Tensor, *, temperature: float = 0.0, top_k: int | None = None,
           top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Next token ids (B,) from logits (B, V): argmax when temperature == 0, else sample from
    softmax(logits / temperature) restricted to the top_k tokens and then to the smallest set whose
    probability reaches top_p (nucleus; the most likely token always survives)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        ordered, order = logits.sort(dim=-1, descending=True)
        probs = ordered.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # probability mass of the tokens ranked above each one
        drop = before >= top_p
        drop[..., 0] = False
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _check_sampling(max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None,
                    eos_token_id: Any = None) -> None:
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a non-negative int, got {max_new_tokens!r}")
    if not temperature >= 0 or temperature == float("inf"):  # also refuses nan
        raise ValueError(f"temperature must be a finite number >= 0 (0 is greedy), got {temperature}")
    if eos_token_id is not None:
        ids = [eos_token_id] if isinstance(eos_token_id, int) else eos_token_id
        if isinstance(ids, torch.Tensor):
            ids = ids.flatten().tolist()
        if not isinstance(ids, (list, tuple)) or not ids or not all(isinstance(i, int) and i >= 0 for i in ids):
            raise ValueError(f"eos_token_id must be a token id or a non-empty list of them, got {eos_token_id!r}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must lie in (0, 1], got {top_p}")


def _check_decodes(model: "ArchModel") -> None:
    """Every layer that keeps decode state must be able to run one token at a time."""
    for name, module in model.named_modules():
        if getattr(module, "cache_slot", None) is not None and not module.decodes:
            raise ValueError(f"{name} of '{model.spec.name}' cannot decode one token at a time: it reads later "
                             "positions (bidirectional attention or recurrence, or a centred convolution), so a "
                             "cached prefix would not be the same model; generate needs it causal")


def outside_inference_mode(decode: Any) -> Any:
    """Run a decoding loop under torch.inference_mode() and hand back ordinary tensors.

    inference_mode skips autograd's view and version-counter bookkeeping on every op (measured
    4-5% of a CPU decode step at the benchmark's full size); its tensors, though, cannot be saved
    for backward, so the returned ids are cloned outside it and can be fed to a training forward.
    """
    @functools.wraps(decode)
    def run(*args: Any, **kwargs: Any) -> torch.Tensor:
        with torch.inference_mode():
            out = decode(*args, **kwargs)
        return out.clone()
    return run


@outside_inference_mode
def generate(model: "ArchModel", tokens: torch.Tensor, max_new_tokens: int, *, temperature: float = 0.0,
             top_k: int | None = None, top_p: float | None = None, eos_token_id: int | Sequence[int] | None = None,
             pad_token_id: int | None = None, attention_mask: torch.Tensor | None = None,
             generator: torch.Generator | None = None, compile: Any = False, memory: dict | None = None) -> torch.Tensor:
    """Prompt (B, S) -> (B, S + n) token ids, n <= max_new_tokens. See ArchModel.generate."""
    _check_sampling(max_new_tokens, temperature, top_k, top_p, eos_token_id)
    options = decoding.compile_options(compile, tokens.device) if compile not in (False, None) else None
    if not model.returns_logits:
        raise ValueError(f"'{model.spec.name}' does not end in an lm_head; generate needs logits")
    _check_decodes(model)
    model._check_tokens(tokens)
    B, S = tokens.shape
    if S == 0:
        raise ValueError("generate needs a prompt of at least one token")
    total = S + max_new_tokens
    if model.max_positions is not None and total > model.max_positions:
        raise ValueError(f"{S} prompt + {max_new_tokens} new tokens exceed the {model.max_positions} learned "
                         f"positions of '{model.spec.name}'")
    if max_new_tokens == 0:
        return tokens.clone()

    if attention_mask is not None:
        if tuple(attention_mask.shape) != (B, S):
            raise ValueError(f"attention_mask must have the prompt's shape {(B, S)}, got {tuple(attention_mask.shape)}")
        attention_mask = attention_mask.to(device=tokens.device, dtype=torch.bool)
        if bool(attention_mask.all()):
            attention_mask = None  # no padding: keep the mask-free fast path
        else:
            real_before = attention_mask.long().cummax(dim=-1).values.bool()  # True from a row's first real token on
            bad = (~attention_mask & real_before).any(dim=-1) | ~attention_mask.any(dim=-1)
            if bool(bad.any()):
                row = int(bad.nonzero()[0, 0])
                raise ValueError(f"generate needs prompts padded on the left (zeros, then the tokens) with at least "
                                 f"one real token; row {row} of attention_mask is {attention_mask[row].int().tolist()}")
    if attention_mask is not None:  # left padding: positions count real tokens (as Hugging Face's generate does)
        counts = attention_mask.long().cumsum(-1)
        positions = (counts - 1).clamp(min=0)
        next_pos = counts[:, -1:].clone()
    else:
        positions = None
        next_pos = torch.full((B, 1), S, dtype=torch.long, device=tokens.device)

    given = model._check_memory(memory, B, None)
    if options is not None and given:
        decoding.warn_eager(model, "a memory given to generate")
        options = None
    if options is not None and decoding.static_refusal(model):
        decoding.warn_eager(model, decoding.static_refusal(model))
        options = None
    was_training = model.training
    model.eval()  # dropout off while decoding; the previous mode comes back afterwards
    if options is not None:  # one compiled step of static shapes for every token (archdsl/decoding.py)
        decoder = decoding.compiled_decoder(model, B, total, tokens.device, options)
        try:
            logits = decoder.prefill(tokens, attention_mask, positions, next_pos)
            new = _decode(logits, decoder.step, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                          generator=generator, eos_token_id=eos_token_id, pad_token_id=pad_token_id)
        finally:
            decoder.finish()
            model.train(was_training)
        return torch.cat([tokens.to(torch.long), new], dim=1)
    try:
        cache = model.new_cache(B, total, device=tokens.device)
        cache.memory.update(given)  # every step reads it (with_memory blocks, cross-attention)
        logits = model._forward(tokens, attention_mask, positions, None, cache, last_only=True)[:, -1]

        def step(token: torch.Tensor) -> torch.Tensor:
            nonlocal next_pos
            logits = model._forward(token[:, None], None, next_pos, None, cache, last_only=True)[:, -1]
            next_pos = next_pos + 1
            return logits

        new = _decode(logits, step, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                      generator=generator, eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    finally:
        model.train(was_training)
    return torch.cat([tokens.to(torch.long), new], dim=1)


def _decode(logits: torch.Tensor, step: Any, max_new_tokens: int, *, temperature: float, top_k: int | None,
            top_p: float | None, generator: torch.Generator | None, eos_token_id: int | Sequence[int] | None,
            pad_token_id: int | None) -> torch.Tensor:
    """The sampling loop: pick a token from `logits`, append it, get the next logits from
    step(token); stop after max_new_tokens or when every row has emitted an eos id (later tokens
    of a finished row are pad_token_id, default the first eos id). Returns the (B, n) new ids.

    The ids go into a buffer that doubles when full, so a huge max_new_tokens that eos cuts short
    costs nothing up front."""
    B = logits.shape[0]
    out = torch.empty(B, min(max_new_tokens, 256), dtype=torch.long, device=logits.device)
    eos = None
    if eos_token_id is not None:
        eos_ids = [eos_token_id] if isinstance(eos_token_id, int) else (
            eos_token_id.flatten().tolist() if isinstance(eos_token_id, torch.Tensor) else list(eos_token_id))
        eos = torch.tensor(eos_ids, dtype=torch.long, device=out.device)
        pad = torch.tensor(pad_token_id if pad_token_id is not None else eos_ids[0], device=out.device)
        done = torch.zeros(B, dtype=torch.bool, device=out.device)
    n = 0
    for i in range(max_new_tokens):
        token = sample(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
        if eos is not None:
            token = torch.where(done, pad, token)
            done = done | torch.isin(token, eos)
        if i == out.shape[1]:
            out = torch.cat([out, torch.empty(B, min(out.shape[1], max_new_tokens - i), dtype=out.dtype,
                                              device=out.device)], dim=1)
        out[:, i] = token
        n = i + 1
        if n == max_new_tokens or (eos is not None and bool(done.all())):
            break
        logits = step(token)
    return out[:, :n]


@outside_inference_mode
def generate_encoder_decoder(model: "ArchModel", tokens: torch.Tensor, max_new_tokens: int, *,
                             decoder_start_token_id: int | None, temperature: float = 0.0, top_k: int | None = None,
                             top_p: float | None = None, eos_token_id: int | Sequence[int] | None = None,
                             pad_token_id: int | None = None, attention_mask: torch.Tensor | None = None,
                             generator: torch.Generator | None = None, compile: Any = False) -> torch.Tensor:
    """Source (B, S) -> decoder ids (B, 1 + n), n <= max_new_tokens, starting with decoder_start_token_id.

    The encoder runs once, on the first forward (its output, padding and every cross-attention
    layer's keys/values stay in the cache); then the decoder takes one token per step through its
    static self-attention cache. attention_mask (B, S) marks the source's padding (either side:
    the encoder is bidirectional and its positions are 0..S-1, as Hugging Face's T5 and BART count
    them). Sampling, eos and padding of finished rows as for ArchModel.generate.
    """
    _check_sampling(max_new_tokens, temperature, top_k, top_p, eos_token_id)
    if compile not in (False, None):
        decoding.compile_options(compile, tokens.device if isinstance(tokens, torch.Tensor) else torch.device("cpu"))
        decoding.warn_eager(model, decoding.static_refusal(model))
    if not model.returns_logits:
        raise ValueError(f"'{model.spec.name}' does not end in an lm_head; generate needs logits")
    if decoder_start_token_id is None:
        raise ValueError(f"'{model.spec.name}' is an encoder-decoder: generate needs decoder_start_token_id (the "
                         "first decoder token, e.g. T5's pad id 0 or BART's eos id 2)")
    decoders = [name for name, kind in model.stack_inputs.items() if kind == "decoder_tokens"]
    _check_decodes(model)
    if not decoders:
        raise ValueError(f"no stack of '{model.spec.name}' reads decoder_tokens: nothing to decode")
    total = 1 + max_new_tokens
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2:
        model._check_graph_inputs(tokens, tokens, None)  # names what is wrong with them
    start = torch.full((tokens.shape[0], 1), int(decoder_start_token_id), dtype=torch.long, device=tokens.device)
    model._check_graph_inputs(tokens, start, None)  # shapes and vocabularies
    for name in decoders:
        limit = model._limits.get(name, {}).get("positions")
        if limit is not None and total > limit:
            raise ValueError(f"decoder_tokens: a sequence of {total} tokens is longer than the {limit} learned "
                             f"positions of stack '{name}' of '{model.spec.name}'")
    B, S = tokens.shape
    if S == 0:
        raise ValueError("generate needs a source of at least one token")
    if max_new_tokens == 0:
        return start
    if attention_mask is not None:
        if tuple(attention_mask.shape) != (B, S):
            raise ValueError(f"attention_mask must have the source's shape {(B, S)}, got {tuple(attention_mask.shape)}")
        attention_mask = attention_mask.to(device=tokens.device, dtype=torch.bool)
        if bool(attention_mask.all()):
            attention_mask = None  # no padding: keep the mask-free fast path

    was_training = model.training
    model.eval()
    try:
        cache = model.new_cache(B, total, device=tokens.device)
        logits = model._forward_graph(tokens, attention_mask, None, None, cache, start, None, None,
                                      last_only=True)[:, -1]

        def step(token: torch.Tensor) -> torch.Tensor:
            return model._forward_graph(None, None, None, None, cache, token[:, None], None, None,
                                        last_only=True)[:, -1]

        new = _decode(logits, step, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                      generator=generator, eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    finally:
        model.train(was_training)
    return torch.cat([start, new], dim=1)
