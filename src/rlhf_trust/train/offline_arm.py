"""The stage of an offline alignment arm (DPO-like: a TRL Trainer over HH records, no generation):
inputs, resume from the last matching checkpoint, train, the held-out check, the model directory.
KTO, ORPO and SimPO are this with their own trainer, data and check (train/kto.py, orpo.py, simpo.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rlhf_trust.train import checkpoints, inputs, monitor, precision


def run(stage: str, cfg: Any, layout: inputs.Layout | None, callbacks: list | None,
        build: Callable[..., Any], heldout: Callable[..., dict], parent: str) -> dict:
    """`build(cfg, inp, ckpt_dir, callbacks) -> trainer`; `heldout(model, inp, cfg) -> metrics` on
    `inp.heldout`, called in `cfg.heldout_precision` on the trained model (PEFT: adapter unmerged)."""
    layout = layout or inputs.Layout()
    inp = inputs.stage_inputs(stage, cfg, layout, parent=parent)
    ckpt_dir = layout.checkpoints(stage)
    resume = checkpoints.checkpoint_to_resume(
        ckpt_dir, checkpoints.fingerprint(cfg, {"data": inp.data_md5, "parent": checkpoints.model_md5(inp.parent)}),
        cfg.resume)
    trainer = precision.mixed_precision(build(cfg, inp, ckpt_dir, [monitor.nan_guard(stage)] + list(callbacks or [])),
                                        cfg)
    checkpoints.train(trainer, resume)
    metrics = {**monitor.train_metrics(trainer), **monitor.count_params(trainer.model),
               "train_pairs": len(inp.train),
               "train_tokens": monitor.train_tokens(inp.tok, inp.train, ("chosen", "rejected"), cfg),
               "resumed_from_step": checkpoints.checkpoint_step(resume), "beta": cfg.beta}
    with precision.heldout_autocast(cfg, trainer.model):
        metrics.update(heldout(trainer.model, inp, cfg))
    checkpoints.save_model_dir(trainer.model, inp.tok, layout.model(stage), stage=stage, task="causal_lm",
                               parent=inp.parent, data_md5=inp.data_md5, cfg=cfg)
    checkpoints.discard_checkpoints(ckpt_dir)
    return metrics


def pair_dataset(rows: list[dict]):
    from datasets import Dataset

    return Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])


def length_normalised_rewards(model: Any, tok: Any, rows: list[dict], beta: float, batch_size: int):
    """beta * mean token log p(response | prompt) of chosen and rejected: the implicit reward of the
    reference-free arms (SimPO's, and the one TRL's ORPO logs)."""
    from rlhf_trust.train import scoring

    (lp_c, n_c), (lp_r, n_r) = scoring.pair_logps(model, tok, [r["prompt"] for r in rows],
                                                  [r["chosen"] for r in rows], [r["rejected"] for r in rows],
                                                  batch_size)
    return beta * lp_c / n_c.clamp(min=1), beta * lp_r / n_r.clamp(min=1)


def reference_free_heldout(model: Any, inp: inputs.Inputs, cfg: Any) -> dict:
    """Held-out implicit-reward accuracy of a reference-free arm (chosen's length-normalised
    log-likelihood above rejected's) with its bootstrap CI and margin."""
    from rlhf_trust.train import scoring

    return scoring.pairwise(*length_normalised_rewards(model, inp.tok, inp.heldout, cfg.beta, cfg.eval_batch_size))
