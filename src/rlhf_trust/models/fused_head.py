"""log p(target | hidden) through the LM head without vocabulary-sized activations.

Why hand-written: at Gemma 3's 262k-token vocabulary the plain path (logits -> log_softmax ->
cross_entropy, kept for backward) writes and re-reads several (tokens x vocab) float tensors, about
1 GB per 1,000 tokens each, and on a CPU that memory traffic costs as much as the head's matrix
products. The fused linear cross-entropy of Liger-Kernel does this on GPUs (Triton only); nothing
well kept does it on a CPU. Here the head runs in chunks of tokens and, because d log p_t / d h_t =
W^T (onehot(y_t) - softmax(z_t)) needs nothing from later layers, the gradient with respect to each
hidden state is formed in the same pass: backward is then one multiply per token. Same numbers as
the plain path (tests), two matrix products per token as before, no (tokens x vocab) tensor kept.
"""

from __future__ import annotations

from typing import Any

CHUNK_ELEMENTS = 1 << 27  # logits per chunk (512 MB in float32): 512 tokens at Gemma 3's vocabulary
VOCAB_BLOCK = 4096  # logits per token per matrix product on a CPU


def _chunk_logits(h, weight, bias, softcap: float | None, cap_grad: bool):
    """float32 (tokens, vocab) logits of one chunk, soft-capped (cap * tanh(z / cap)), and the cap's
    derivative 1 - tanh^2 when `cap_grad` (else None).

    On a CPU the head's product runs in vocabulary blocks and each block is capped while it is in
    cache: at 262k columns one product writes a 1 MB row per token and runs ~1.3x slower than
    4,096-column blocks (gemma-3-270m, 2 threads), and the cap over the whole chunk re-read it
    three more times. Same numbers either way (each output element is the same dot product)."""
    import torch

    if h.device.type != "cpu":
        z = torch.nn.functional.linear(h, weight, bias).float()
        if not softcap:
            return z, None
        t = torch.tanh(z / softcap)
        return t * softcap, (1 - t * t) if cap_grad else None
    z = torch.empty(h.shape[0], weight.shape[0], dtype=torch.float32, device=h.device)
    slope = torch.empty_like(z) if softcap and cap_grad else None
    for b in range(0, weight.shape[0], VOCAB_BLOCK):
        zb = torch.nn.functional.linear(h, weight[b:b + VOCAB_BLOCK],
                                        None if bias is None else bias[b:b + VOCAB_BLOCK]).float()
        if softcap:
            zb.div_(softcap).tanh_()
            if slope is not None:
                torch.mul(zb, zb, out=slope[:, b:b + VOCAB_BLOCK]).neg_().add_(1)
            zb.mul_(softcap)
        z[:, b:b + VOCAB_BLOCK] = zb
    return z, slope


def token_logps(hidden, weight, bias, targets, softcap: float | None = None, stats: dict | None = None):
    """(K,) log-probabilities of `targets` (K,) under softmax(cap(hidden @ weight.T + bias)),
    differentiable with respect to `hidden` (K, H); weight and bias are treated as frozen.

    `stats` (a dict), when given, receives TRL's SFT metrics from the same pass at the cost of one
    more chunk buffer and a batched dot: "correct" (targets at the maximum logit; a tie counts as correct) and
    "entropy_sum" (summed softmax entropy, nats), both float32 scalars."""
    import torch

    class _Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, h):
            need = h.requires_grad
            out = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
            grad = torch.empty_like(h) if need else None
            if stats is not None:
                stats["correct"] = torch.zeros((), dtype=torch.float32, device=h.device)
                stats["entropy_sum"] = torch.zeros((), dtype=torch.float32, device=h.device)
            step = max(1, CHUNK_ELEMENTS // weight.shape[0])
            for s in range(0, h.shape[0], step):
                z, slope = _chunk_logits(h[s:s + step], weight, bias, softcap, need)
                y = targets[s:s + step, None]
                zmax = z.amax(dim=-1, keepdim=True)
                zy = z.gather(1, y)
                if stats is None:
                    total = z.sub_(zmax).exp_().sum(dim=-1, keepdim=True)  # in place: z <- exp(z - max)
                else:  # H = log(sum e) - sum(e (z - max)) / sum e with e = exp(z - max), a batched dot
                    zs = z.sub_(zmax)
                    z = torch.exp(zs)
                    total = z.sum(dim=-1, keepdim=True)
                    with torch.no_grad():
                        dot = torch.bmm(z.unsqueeze(1), zs.unsqueeze(2))[:, :, 0]
                        stats["correct"] += (zy >= zmax).sum()
                        stats["entropy_sum"] += (total.log() - dot / total).sum()
                    del zs
                out[s:s + step] = (zy - zmax - total.log())[:, 0]
                if need:  # d log p / d z = onehot(y) - softmax(z), through the cap, then through the head
                    d = z.div_(total.neg_())
                    d.scatter_add_(1, y, torch.ones_like(y, dtype=d.dtype))
                    if slope is not None:
                        d.mul_(slope)
                    grad[s:s + step] = (d.to(weight.dtype) @ weight).to(h.dtype)
            if need:
                ctx.save_for_backward(grad)
            return out

        @staticmethod
        def backward(ctx, g):
            (grad,) = ctx.saved_tensors
            return g.to(grad.dtype)[:, None] * grad

    return _Fn.apply(hidden)


def decoder_of(model) -> tuple[Any, Any] | None:
    """(transformers model, its decoder body) of a model, PEFT-wrapped or not; None when the model
    names no decoder distinct from itself."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        decoder = base.get_decoder()
    except (AttributeError, NotImplementedError, ValueError):  # transformers raises for bespoke layouts
        return None
    return None if decoder is None or decoder is base else (base, decoder)


def split_head(model) -> tuple[Any, Any, float | None] | None:
    """(decoder, lm_head Linear, final logit softcap) of a causal LM (PEFT-wrapped or not), or None
    when the model has no such plain split (then callers use its own forward)."""
    from rlhf_trust.models.cpu_head import is_plain_linear

    parts = decoder_of(model)
    if parts is None:
        return None
    base, decoder = parts
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if not is_plain_linear(head):
        return None
    return decoder, head, getattr(base.config, "final_logit_softcapping", None)
