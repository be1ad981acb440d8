"""Per-forward state shared by the blocks: positions, padding and the masks built from them.

Built once per call of the model; attention layers ask it for masks so that a 24-layer model
builds each distinct mask once, not 24 times.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class ForwardContext:
    positions: torch.Tensor  # (B, S) position ids of the current tokens
    key_padding: torch.Tensor | None = None  # (B, S_k) True where a real token sits
    token_type_ids: torch.Tensor | None = None  # (B, S)
    rope: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # positional id -> (cos, sin)
    pooled: torch.Tensor | None = None
    cache: Any = None  # archdsl.generate.KVCache during cached (incremental) decoding, else None
    # encoder-decoder graphs: stack name -> (its output (B, S_m, D), its key padding (B, S_m) or None),
    # read by cross-attention; and the relative position bias modules of this stack, by node id
    memory: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = field(default_factory=dict)
    relative: dict[str, Any] = field(default_factory=dict)
    _masks: dict[Any, Any] = field(default_factory=dict)

    def attention_mask(self, q_len: int, k_len: int, causal: bool, window: int | None,
                       alibi_slopes: torch.Tensor | None, dtype: torch.dtype,
                       relative: Any = None) -> tuple[torch.Tensor | None, bool]:
        """(attn_mask, is_causal) for scaled_dot_product_attention.

        Queries are the last q_len positions of the k_len keys (bottom-right aligned, as in
        cached decoding). The common cases (no padding, no window, no bias; full-sequence or
        one-token queries) return no mask at all so SDPA can use its fastest kernel. Otherwise a
        boolean keep-mask, or a float bias for ALiBi and for a relative position bias (`relative`:
        a RelativePositionBias module; its bias is computed once per forward and shared by every
        layer it governs).
        """
        if self.key_padding is None and window is None and alibi_slopes is None and relative is None and (
                not causal or q_len == k_len or q_len == 1):
            return None, causal and q_len == k_len  # one query at the end sees every key: no mask
        key = (q_len, k_len, causal, window, None if alibi_slopes is None else id(alibi_slopes),
               None if relative is None else id(relative), dtype)
        if key not in self._masks:
            self._masks[key] = self._build(q_len, k_len, causal, window, alibi_slopes, dtype, relative)
        return self._masks[key], False

    def memory_mask(self, name: str) -> torch.Tensor | None:
        """Boolean keep-mask (B, 1, 1, S_m) over the keys of stack `name`'s output, or None without padding."""
        padding = self.memory[name][1]
        if padding is None:
            return None
        key = ("memory", name)
        if key not in self._masks:
            keep = padding.bool()
            keep = keep | ~keep.any(dim=-1, keepdim=True)  # an all-padding row attends anywhere, never NaN
            self._masks[key] = keep[:, None, None, :]
        return self._masks[key]

    def _build(self, q_len, k_len, causal, window, slopes, dtype, relative=None):
        device = self.positions.device
        i = torch.arange(k_len - q_len, k_len, device=device)[:, None]  # query index in the key timeline
        j = torch.arange(k_len, device=device)[None, :]
        keep = torch.ones(q_len, k_len, dtype=torch.bool, device=device)
        if causal:
            keep = keep & (j <= i)
        if window is not None:
            keep = keep & (i - j < window) & (j - i < window)
        keep = keep[None, None]  # (1, 1, Sq, Sk)
        if self.key_padding is not None:
            keep = keep & self.key_padding[:, None, None, :].bool()
        keep = keep | ~keep.any(dim=-1, keepdim=True)  # fully masked rows (padding queries) attend anywhere, never NaN
        if relative is not None:  # (1, H, Sq, Sk) learned bias of the bucketed distance j - i
            bias = relative.bias(j - i, causal)
            return bias.masked_fill(~keep, float("-inf")).to(dtype)
        if slopes is None:
            return keep
        distance = (j - i).to(torch.float32)
        distance = distance if causal else -distance.abs()
        bias = slopes.to(torch.float32)[None, :, None, None] * distance[None, None]  # (1, H, Sq, Sk)
        return bias.masked_fill(~keep, float("-inf")).to(dtype)
