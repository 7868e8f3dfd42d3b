"""The decode loop of `HFBackend`: greedy or inverse-CDF sampled tokens, picked on the LM head's own
output (bf16 in the default run) instead of a float32 copy of it.

Why hand-written: transformers' `generate` copies every row's last-position logits to float32 on
every step (`outputs.logits[:, -1].to(copy=True, dtype=torch.float32)`), hands that copy to the logits
processors and then takes an `argmax` over it. With gemma-3's 262,144-token vocabulary those are
three or four full-vocabulary passes per row per step (~2 ms per row per step at 1 thread, about as
much as the LM head itself at 64 rows), and `generate` has no setting that skips the copy or picks
the token any other way. This loop makes the same model calls as `generate` (same input ids,
attention mask, position ids computed the same way, the same KV cache, `logits_to_keep=1`), so the
LM head's output is bit for bit the one `generate` sees; it then picks

- greedy: `max(-1).indices` on the model-dtype logits: the same values as their float32 copy, the
  first maximum on ties as `argmax` (tests/test_evals_decode.py), ~4x cheaper than copy + argmax
  on bf16 (`Tensor.argmax` of bf16 is itself slower than `max`);
- sampled: `evals/sampling.py`'s inverse-CDF draw on those logits, which upcasts them to float32
  exactly as `generate`'s copy did and draws the same one uniform per row and step from the same
  seeded generator, in one float32 buffer reused every step (a fresh 64 x 262144 float32 tensor per
  step costs ~60 ms of page faults); the processor's `fill_(-inf)` + `scatter_` and `generate`'s
  argmax over its output are gone.

So the generated text is identical to the `generate` path for greedy and, for the same seed, for
sampled units: the sampler id in the cache key (`inverse_cdf`) stays. Finished rows keep running
(padded with `pad_id`) until every row of the batch has stopped, as in `generate`: dropping them
would change the batch's shape, and bf16 rounding depends on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _new_cache(model: Any):
    """The cache `generate` builds when none is passed (`_prepare_cache_for_generation`)."""
    from transformers import DynamicCache

    config = model.config
    get_text = getattr(config, "get_text_config", None)
    return DynamicCache(config=get_text(decoder=True) if callable(get_text) else config)


def decode(model: Any, ids, mask, *, cache: Any = None, max_new_tokens: int, eos_ids: Sequence[int],
           pad_id: int, temperature: float = 0.0):
    """New token ids (rows, steps), steps <= max_new_tokens, as `generate` returns them after the prompt.

    `ids`: the prompt tokens not in `cache` (rows, L), left-padded; `mask`: the attention mask over
    cache + ids (rows, past + L); `cache`: a KV cache of the first `past` tokens (a shared prefix),
    or None. temperature 0 = greedy, else the inverse-CDF draw from torch's global generator (the
    caller seeds it). A row stops at its first token in `eos_ids` and is padded with `pad_id` after
    it; the loop stops when every row has stopped or after `max_new_tokens` tokens."""
    import torch

    from rlhf_trust.evals.sampling import inverse_cdf_draw

    rows = ids.shape[0]
    if max_new_tokens <= 0:
        return ids.new_zeros((rows, 0))
    # generate's own position ids: real tokens counted from 0, padding at 0 (it never reads them)
    pos = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)[:, -ids.shape[1]:]
    cache = cache if cache is not None else _new_cache(model)
    eos = torch.tensor(list(eos_ids), dtype=torch.long, device=ids.device)
    live = torch.ones(rows, dtype=torch.bool, device=ids.device)
    out: list[Any] = []
    step_ids = ids
    work = None  # the sampler's float32 buffer, reused every step (a fresh one costs page faults)
    with torch.inference_mode():
        while True:
            res = model(input_ids=step_ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True,
                        logits_to_keep=1, return_dict=True)
            cache = res["cache"] if "cache" in res else res["past_key_values"]
            logits = res.logits[:, -1]  # model dtype; never copied to float32 here
            if temperature > 0:
                if work is None:
                    work = torch.empty(logits.shape, dtype=torch.float32, device=logits.device)
                tok = inverse_cdf_draw(logits, temperature, out=work)[:, 0]
            else:
                tok = logits.max(-1).indices
            del res, logits
            tok = torch.where(live, tok, torch.full_like(tok, pad_id))
            out.append(tok)
            if eos.numel():
                live &= ~torch.isin(tok, eos)
            if len(out) >= max_new_tokens or not bool(live.any()):
                break
            step_ids = tok[:, None]
            mask = torch.cat([mask, mask.new_ones((rows, 1))], -1)
            pos = pos[:, -1:] + 1
    return torch.stack(out, 1)
