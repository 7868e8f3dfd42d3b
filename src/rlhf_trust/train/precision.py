"""Mixed precision of the training stages: bf16 autocast on the CPU, frozen weights held as bf16
copies, and the held-out passes' own precision."""

from __future__ import annotations

import contextlib
from typing import Any

from rlhf_trust.train.runtime import cpu_bf16


def autocast(cfg: Any, enabled: bool = True):
    """bf16 autocast on the CPU when `<stage>.precision` is bfloat16 (else a no-op context).

    This Xeon runs bf16 matmuls through AMX (oneDNN): ~6x fp32's GFLOP/s, gemma passes ~2x. The
    weights (and LoRA's trainable ones, the optimiser state) stay fp32: only the matmuls inside the
    context run in bf16. On a GPU, TRL's own `bf16=True` (accelerate's autocast) does this."""
    import contextlib

    import torch

    if not (enabled and cpu_bf16(cfg)):
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16)


@contextlib.contextmanager
def heldout_autocast(cfg: Any, *models: Any):
    """The held-out passes' precision (`<stage>.heldout_precision`), whatever the stage trained in
    (DPO and PPO train fp32 but score their held-out sets in bf16 by default: benchmarks/heldout_precision.py).

    In bf16 the frozen Linear weights of `models` are held as bf16 copies for the pass (train/frozen_bf16.py,
    the helper training uses): each cast once per pass instead of on every forward and decoded token."""
    import torch

    if cpu_bf16(cfg, "heldout_precision"):
        from rlhf_trust.train.frozen_bf16 import frozen_bf16

        with torch.autocast("cpu", dtype=torch.bfloat16), frozen_bf16(*models):
            yield
    else:
        yield


def frozen_weights(cfg: Any, *models: Any):
    """`frozen_bf16(*models)` (train/frozen_bf16.py) where `autocast(cfg)` is bf16, else a no-op."""
    import contextlib

    from rlhf_trust.train.frozen_bf16 import frozen_bf16

    if cpu_bf16(cfg):
        return frozen_bf16(*models)
    return contextlib.nullcontext()


def mixed_precision(trainer: Any, cfg: Any) -> Any:
    """Run the trainer's whole `compute_loss` under `autocast(cfg)` on the CPU.

    TRL's `bf16=True` (not passed on the CPU: `_trl_config`) makes accelerate wrap only
    `model.forward` in autocast, for good; the losses that run the LM
    head themselves (TRL's chunked SFT NLL, fast_dpo's chunked head, fast_rm's prefix + KV-cache
    continuations) call the network's parts outside that wrapper and would stay fp32. Trainer
    enters `autocast_smart_context_manager()` around every `compute_loss` (training and TRL's
    reference log-probs); backward and the optimiser step stay outside it, as torch recommends.
    While `train()` runs, the frozen Linear weights are held as bf16 copies (train/frozen_bf16.py:
    the same products without autocast's per-call recast); the fp32 weights are back afterwards."""
    if cpu_bf16(cfg):
        from rlhf_trust.train.frozen_bf16 import train_with_frozen_bf16

        trainer.autocast_smart_context_manager = lambda cache_enabled=True: autocast(cfg)
        train_with_frozen_bf16(trainer)
    return trainer
