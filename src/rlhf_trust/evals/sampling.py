"""An exact temperature sampler for `HFBackend`, cheaper than transformers' `torch.multinomial`.

Plain temperature sampling draws the next token from softmax(logits / T). Transformers does it with
`torch.multinomial`, whose CPU kernel fills a 262k-wide `exponential_` per row and step (gemma-3's
vocabulary): ~13 ms per row per step at 1 thread, more than the LM head's share
(docs/evaluation.md "Where a generated token's time goes"). Inverse-CDF sampling needs one uniform
number per row: the unnormalised probabilities' cumulative sum (float64, so the running sum keeps
every token's mass) and a `searchsorted`, done in two levels (blocks, then one block). It is an exact draw from the same distribution; only the
random stream differs, which is why the sampler is part of the generation cache key
(`evals/cache.py`). No library offers it as a logits processor, hence this one: wrapped as a
`LogitsProcessor` that leaves only the drawn token finite, it runs under greedy decoding, so
`generate` keeps everything else (EOS, padding, KV cache, prefix reuse).
"""

from __future__ import annotations

SAMPLERS = ("inverse_cdf", "multinomial")  # ours (the default) | transformers' own


BLOCK = 512  # two-level search: 512 block sums, then one block's cumulative sum (262144 = 512 x 512)


def inverse_cdf_draw(scores, temperature: float, *, inplace: bool = False, out=None):
    """Token ids (rows, 1) drawn from softmax(scores / temperature), one uniform per row from
    torch's global generator (seeded per batch by the backend).

    Two-level inverse CDF: the uniform picks a block of `BLOCK` tokens by the blocks' cumulative
    masses, then a token inside the block by its cumulative sum (float64 running sums; each block's
    mass is a float32 sum of 512 terms, so a token's probability is exact to float32 rounding, as in
    transformers' float32 softmax). A full-vocabulary float64 cumsum cost ~5 ms per row at 1 thread.
    `inplace` overwrites `scores` (float32) with the unnormalised probabilities; other dtypes are
    upcast to float32 first (the same values as transformers' float32 copy of the logits). `out`: a
    float32 buffer of `scores`' shape to work in (evals/decode.py reuses one per batch: a fresh
    64 x 262144 float32 tensor costs ~60 ms of page faults per step, an in-place pass ~8 ms)."""
    import torch
    import torch.nn.functional as F

    rows, vocab = scores.shape
    top = scores.amax(-1, keepdim=True)  # exact in any dtype
    if out is not None:
        x = out.copy_(scores).sub_(top.float())  # the upcast is exact: the same values as a float32 copy
    elif scores.dtype == torch.float32:
        x = (scores if inplace else scores.clone()).sub_(top)
    else:
        x = scores.float().sub_(top.float())
    p = x.mul_(1.0 / temperature).exp_()  # softmax numerator; -inf -> 0
    if vocab % BLOCK:
        p = F.pad(p, (0, BLOCK - vocab % BLOCK))
    blocks = p.view(rows, -1, BLOCK)
    cum = blocks.sum(-1).double().cumsum(-1)  # (rows, n_blocks) cumulative block masses
    u = torch.rand((rows, 1), dtype=torch.float64, device=x.device) * cum[:, -1:]
    # right=True: the first block / token whose cumulative mass exceeds u (zero mass never does)
    b = torch.searchsorted(cum, u, right=True).clamp_(max=cum.shape[1] - 1)
    below = torch.where(b > 0, cum.gather(1, (b - 1).clamp(min=0)), torch.zeros_like(u))
    inner = blocks[torch.arange(rows, device=x.device), b[:, 0]].double().cumsum(-1)  # (rows, BLOCK)
    # the rest of u inside the block, rescaled to the block's own float64 total and kept below it
    r = ((u - below) / (cum.gather(1, b) - below) * inner[:, -1:]).clamp(min=0)
    r = torch.minimum(r, torch.nextafter(inner[:, -1:], torch.zeros_like(r)))
    t = torch.searchsorted(inner, r, right=True).clamp_(max=BLOCK - 1)
    return (b * BLOCK + t).clamp_(max=vocab - 1)


class InverseCDFSampler:
    """A transformers `LogitsProcessor` (duck-typed: generate only calls it) for greedy decoding:
    every score except the drawn token's becomes -inf, so greedy's argmax picks the draw."""

    def __init__(self, temperature: float):
        if not temperature > 0:
            raise ValueError(f"InverseCDFSampler: temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def __call__(self, input_ids, scores):
        idx = inverse_cdf_draw(scores, self.temperature, inplace=True)
        return scores.fill_(float("-inf")).scatter_(1, idx, 0.0)
