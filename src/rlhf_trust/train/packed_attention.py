"""Attention for padding-free batches: each packed sequence attends only to itself, one causal SDPA
call per sequence, instead of one masked call over the whole flat batch.

Why hand-written: with `padding_free` TRL packs a batch into one row and transformers' `sdpa` builds
a block-diagonal causal mask from the position ids. PyTorch's CPU SDPA then computes every block of
the (tokens x tokens) scores, the off-diagonal ones included, and, since a mask is given, repeats the
key/value heads for GQA. For 4 HH pairs (~400 packed tokens) that is ~4x the attention work of the
sequences alone (attention forward + backward was ~10% of an SFT step here). flash-attn's varlen
kernel, which TRL's padding-free path is written for, does not run on CPU, and neither TRL 1.12 nor
transformers 5.x has a per-sequence SDPA path. The sequence bounds come from the position ids
(a new sequence starts where they do not go on by 1, as transformers detects packing); anything
else (a cache, a batch of several rows, a sequence longer than a sliding window, dropout) runs
transformers' `sdpa` unchanged. Same outputs and gradients as `sdpa` (tests).
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Any

NAME = "packed_sdpa"


def _segments(position_ids: Any) -> list[tuple[int, int]] | None:
    """[(start, end)] of the packed sequences of a (1, L) position-id row, or None if it is not one
    row of sequences that each start at 0 and count up by 1."""
    import torch

    if position_ids is None or position_ids.dim() != 2 or position_ids.shape[0] != 1:
        return None
    pos = position_ids[0]
    starts = torch.diff(pos, prepend=pos[:1] - 1) != 1
    starts[0] = True
    if not bool((pos[starts] == 0).all()):
        return None
    bounds = starts.nonzero().flatten().tolist() + [pos.numel()]
    return list(itertools.pairwise(bounds))


def packed_sdpa_forward(module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
                        dropout: float = 0.0, scaling: float | None = None, sliding_window: int | None = None,
                        **kwargs: Any):
    """transformers' attention-interface contract: (attn_output (B, L, heads, dim), None)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    segs = None
    if (dropout == 0.0 and query.shape[0] == 1 and query.shape[2] == key.shape[2] and kwargs.get("softcap") is None
            and not kwargs.get("output_attentions", False) and getattr(module, "is_causal", True)):
        segs = _segments(kwargs.get("position_ids"))
    if segs is None or (sliding_window and max(e - s for s, e in segs) > sliding_window):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, sliding_window=sliding_window, **kwargs)
    gqa = query.shape[1] != key.shape[1]
    out = torch.cat([torch.nn.functional.scaled_dot_product_attention(
        query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], is_causal=True, scale=scaling, enable_gqa=gqa)
        for s, e in segs], dim=2)
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Make `packed_sdpa` a transformers attention implementation (its masks are `sdpa`'s, for the fallback)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, packed_sdpa_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)


@contextlib.contextmanager
def packed_attention(model: Any):
    """`model` (and its submodules) on `packed_sdpa` while inside, when it runs `sdpa`; restored on exit,
    so nothing saved or loaded later names it."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa":
        yield
        return
    register()
    model.set_attn_implementation(NAME)
    try:
        yield
    finally:
        model.set_attn_implementation("sdpa")
