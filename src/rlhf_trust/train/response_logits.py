"""LM-head logits at PPO's response positions only, inside TRL 1.12's PPOTrainer.

Why hand-written: TRL's PPO `forward` asks the policy for logits at every position of
prompt + response and then keeps `logits[:, context_length - 1 : -1]`, the response_length
positions that predict the response (for the reference log-probs and for each training
micro-batch, with gradient). Its PPOConfig has no logits_to_keep. At gemma-3's 262k vocabulary the
head over the ~90 prompt positions of an HH rollout was about a quarter of a PPO update: dropping
it made `train()` 1.31x faster on an AVX2 CPU (docs/measurements/2026-12-03-bench-ppo-precision.md).
Here, while `response_logits_only` is active, a forward pre-hook on the policy adds transformers'
`logits_to_keep=response_length + 1` to exactly those calls, and a forward hook hands back the kept
logits as `TailLogits`, which answers TRL's one slice with the same values. Any other indexing
raises, so a TRL that reads the logits differently fails loudly instead of reading wrong ones.
Generation (`generate` calls the inner model) and every other call pass through unchanged.
"""

from __future__ import annotations

import contextlib
from typing import Any


class TailLogits:
    """The last `tail.shape[1]` positions' logits of a (batch, length, vocab) output, indexable as
    the full tensor's `[:, length - tail.shape[1] : -1]` only."""

    def __init__(self, tail: Any, length: int):
        self.tail, self.length = tail, length

    def __getitem__(self, key):
        start = self.length - self.tail.shape[1]
        if (isinstance(key, tuple) and len(key) == 2 and key[0] == slice(None) and isinstance(key[1], slice)
                and key[1].step is None and key[1].stop == -1 and key[1].start in (start, start - self.length)):
            return self.tail[:, :-1]
        raise TypeError(f"response logits: only positions {start}.. were computed, not {key!r}")


def _trl_forward(kwargs: dict) -> bool:
    """The call TRL's ppo_trainer.forward makes: ids, mask, position ids, hidden states, no cache."""
    return (kwargs.get("output_hidden_states") is True and kwargs.get("return_dict") is True
            and kwargs.get("position_ids") is not None and kwargs.get("input_ids") is not None
            and "logits_to_keep" not in kwargs and kwargs.get("past_key_values") is None)


@contextlib.contextmanager
def response_logits_only(policy: Any, response_length: int):
    """While active, TRL-style forwards of `policy` compute the LM head on the last
    response_length + 1 positions (the last one predicts nothing TRL reads; it keeps the slice
    arithmetic of the full tensor)."""
    keep = response_length + 1
    ours = [False]  # did `pre` ask for the tail in the call now returning (calls do not nest)?

    def pre(module, args, kwargs):
        ours[0] = not args and _trl_forward(kwargs) and kwargs["input_ids"].shape[1] > keep
        return (args, {**kwargs, "logits_to_keep": keep}) if ours[0] else None

    def post(module, args, kwargs, output):
        if ours[0]:
            output.logits = TailLogits(output.logits, kwargs["input_ids"].shape[1])
        return output

    handles = [policy.register_forward_pre_hook(pre, with_kwargs=True),
               policy.register_forward_hook(post, with_kwargs=True)]
    try:
        yield policy
    finally:
        for h in handles:
            h.remove()
