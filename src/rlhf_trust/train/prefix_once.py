"""Run a batch of shared prefixes through a decoder once and several continuations of each on its
KV cache: the one forward behind DPO training (train/fast_dpo.py), reward-model training
(train/fast_rm.py) and held-out DPO scoring (train/scoring.py).

Why hand-written: TRL 1.12 (DPO, reward and its collators) and transformers' `generate`/`forward`
take whole sequences, so a prompt shared by a chosen and a rejected response goes through the
network twice (about two thirds of an HH pair's tokens here); neither has a prompt-once path.
Each prefix is left-padded with explicit position ids, its cache is repeated to its continuations,
and the continuations are right-padded with positions that go on from the prefix: every row then
equals its unpadded full sequence (tests). Gradients flow into a prefix's keys and values from all
its continuations. Dtype-agnostic: hidden states keep the decoder's (or autocast's) dtype; only
`token_logps` forms log-softmax in float32.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Continuations(NamedTuple):
    """Per continuation row j (which continues prefix j // repeat): token ids (N, W), mask (N, W),
    the decoder's hidden states at those tokens (N, W, H), and `pred` (N, W, H): the state that
    predicts each token (the prefix's last state for token 0, the continuation's state t - 1 for t)."""

    ids: Any
    mask: Any
    hidden: Any
    pred: Any


def _padded(seqs: list, device: Any, left: bool):
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.zeros((len(seqs), width), dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        sl = slice(width - len(s), width) if left else slice(0, len(s))
        ids[i, sl], mask[i, sl] = torch.as_tensor(s, device=device), 1
    return ids, mask


def prefix_once(decoder: Any, prefixes: list, continuations: list, repeat: int = 2) -> Continuations:
    """`prefixes` (B token-id sequences, lists or 1-D tensors, each >= 1 token) run once through
    `decoder` (a transformers decoder body), then `continuations` (repeat * B sequences, each >= 1
    token; row j continues prefix j // repeat) on the expanded KV cache."""
    import torch

    if len(continuations) != repeat * len(prefixes) or min(map(len, (*prefixes, *continuations))) < 1:
        raise ValueError("prefix_once: need repeat non-empty continuations per non-empty prefix")
    device = next(decoder.parameters()).device
    p_ids, p_mask = _padded(prefixes, device, left=True)
    c_ids, c_mask = _padded(continuations, device, left=False)
    out = decoder(input_ids=p_ids, attention_mask=p_mask, position_ids=(p_mask.cumsum(1) - 1).clamp(min=0),
                  use_cache=True)
    cache = out.cache
    cache.batch_repeat_interleave(repeat)
    p_mask = p_mask.repeat_interleave(repeat, dim=0)
    c_pos = p_mask.sum(1, keepdim=True) + torch.arange(c_ids.shape[1], device=device).unsqueeze(0)
    hidden = decoder(input_ids=c_ids, attention_mask=torch.cat([p_mask, c_mask], 1), position_ids=c_pos,
                     cache=cache, use_cache=True).last_hidden_state
    first = out.last_hidden_state[:, -1:].repeat_interleave(repeat, dim=0)  # predicts each continuation's token 0
    return Continuations(c_ids, c_mask, hidden, torch.cat([first, hidden[:, :-1]], 1))


def continuation_logps(decoder: Any, head: Any, softcap: Any, prefixes: list, continuations: list,
                       repeat: int = 2) -> Any:
    """(N,) sum of log p(continuation tokens | prefix) per continuation row of `prefix_once`, the LM
    head (`head`, a Linear, with the final logit `softcap`) run on continuation tokens only."""
    import torch

    from rlhf_trust.models.fused_head import token_logps

    c = prefix_once(decoder, prefixes, continuations, repeat)
    keep = c.mask.bool()
    owner = torch.arange(keep.shape[0], device=keep.device)[:, None].expand_as(keep)[keep]
    lp = token_logps(c.pred[keep], head.weight, head.bias, c.ids[keep], softcap)
    return torch.zeros(keep.shape[0], dtype=lp.dtype, device=lp.device).index_add(0, owner, lp)
