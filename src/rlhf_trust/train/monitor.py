"""What a training run reports and guards: its loss and steps, the tokens it fed, its parameter
counts, and the NaN guard that stops it when the loss stops being finite."""

from __future__ import annotations

import math
from typing import Any

from rlhf_trust.errors import UserError


def nan_guard(stage: str):
    """A TrainerCallback that stops the run with one line when the loss stops being finite."""
    from transformers import TrainerCallback

    class NaNGuard(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            for k in ("loss", "train_loss", "grad_norm", "loss/policy_avg", "loss/value_avg"):
                v = (logs or {}).get(k)
                if isinstance(v, float) and not math.isfinite(v):
                    raise UserError(f"{stage}: {k} became {v} at step {state.global_step}; "
                                    f"lower {stage}.learning_rate or check the data")

    return NaNGuard()


def train_metrics(trainer: Any) -> dict[str, float]:
    """Final training loss (last logged), mean of the logged losses and steps, from the log history.

    The history survives a resume (it is in the checkpoint); Trainer's own `train_loss` would
    average only the steps after the resume."""
    losses = [float(h["loss"]) for h in trainer.state.log_history if "loss" in h]
    out: dict[str, float] = {"train_steps": int(trainer.state.global_step)}
    if losses:
        out["train_loss_last"] = losses[-1]
        out["train_loss_mean"] = sum(losses) / len(losses)
    for k, v in out.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise UserError(f"{trainer.args.run_name}: {k} is {v}; lower the learning rate or check the data")
    return out


def train_tokens(tok: Any, rows: list[dict], sides: tuple[str, ...], cfg: Any) -> int:
    """Tokens the trainer feeds per epoch (prompt + each response side) times the epochs run."""
    per_epoch = sum(len(tok(r["prompt"] + r[s])["input_ids"]) for r in rows for s in sides)
    epochs = cfg.epochs if cfg.max_steps <= 0 else cfg.max_steps * cfg.batch_size * cfg.grad_accum / len(rows)
    return int(per_epoch * epochs)


def count_params(model: Any) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"params_total": total, "params_trainable": trainable}
