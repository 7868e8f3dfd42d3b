"""Frozen Linear weights held as bf16 copies while a bf16 autocast runs: training and held-out passes.

Why hand-written: torch autocast caches its fp32 -> bf16 cast only for leaf tensors that require
grad, so every FROZEN weight (LoRA's base layers, the tied 262k x 640 LM head, the reward model) was
re-cast on every call: per forward, per recomputed head chunk, per reference pass, per decoded token.
Profiled at 1 thread on gemma-3-270m (docs/training.md) that `aten::copy_` was 14-37% of a training
step. Autocast would cast these weights to bf16 anyway, so giving the Linear a bf16 copy for the
duration computes the same bf16 products (bit-identical: tests) without the per-call copy. Only plain
`nn.Linear` weights that are frozen and fp32 are swapped (LoRA's own A/B matrices, norms and
embeddings stay as they are: peft casts its input to A's dtype, so A/B keep fp32); a tied head is
untied only for the duration (the embedding lookup keeps the fp32 table). On exit the exact fp32
Parameter objects are put back (ties included), so later passes and saved models see the weights
they had before.

The one helper for this problem: training enters it around TRL's `train()` (`precision.mixed_precision`,
SFT / RM / DPO, whose every loss runs under autocast) or around PPO's loop (run whole under
autocast); held-out passes through `precision.heldout_autocast(cfg, *models)` in bf16. Not for code
that runs the model outside autocast while swapped (an fp32 input to a bf16 weight raises), nor for
a pass that changes the weights in place (a LoRA merge): merge first, then swap.
"""

from __future__ import annotations

import contextlib
from typing import Any


@contextlib.contextmanager
def frozen_bf16(*models: Any):
    """Swap each frozen fp32 `nn.Linear` weight of `models` for a bf16 copy; restore on exit."""
    import torch

    from rlhf_trust.models.cpu_head import is_plain_linear

    swapped = []
    mods = {id(m): (n, m) for model in models if model is not None for n, m in model.named_modules()}
    with torch.no_grad():
        for name, mod in mods.values():
            w = mod._parameters.get("weight") if is_plain_linear(mod) else None
            if w is None or w.requires_grad or w.dtype != torch.float32 or ".lora_" in f".{name}":
                continue
            mod._parameters["weight"] = torch.nn.Parameter(w.detach().to(torch.bfloat16), requires_grad=False)
            swapped.append((mod, w))
    try:
        yield len(swapped)
    finally:
        for mod, w in swapped:
            mod._parameters["weight"] = w


def train_with_frozen_bf16(trainer: Any) -> Any:
    """Make `trainer.train()` run inside `frozen_bf16(trainer.model)`."""
    train = trainer.train

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with frozen_bf16(trainer.model):
            return train(*args, **kwargs)

    trainer.train = wrapped
    return trainer
