"""`rlhf-trust sft`: supervised fine-tuning on prompt + chosen, loss on the completion only (TRL SFTTrainer)."""

from __future__ import annotations

from rlhf_trust.errors import UserError
from rlhf_trust.train import checkpoints, inputs, monitor, precision, scoring, stage_cli, trl_setup

STAGE = "sft"


def build(cfg, inp: inputs.Inputs, ckpt_dir, callbacks: list | None = None):
    """The policy (base + LoRA) and its trainer, in `cfg.precision` (the stage's and
    benchmarks/train_steps.py's)."""
    from datasets import Dataset
    from trl import SFTConfig

    from rlhf_trust.models import load_merged_causal_lm
    from rlhf_trust.train.fast_sft import trainer_class

    train = Dataset.from_list([{"prompt": r["prompt"], "completion": r["chosen"]} for r in inp.train])
    model = load_merged_causal_lm(inp.parent)
    # padding_free: each batch is one flat sequence with position ids (no pad tokens through the
    # model; equal loss and gradients, tests). TRL then wants max_length=None: `inputs.clip` already
    # cut every record to fit cfg.max_length.
    args = trl_setup.trl_args(SFTConfig, cfg, ckpt_dir, STAGE, max_length=None, padding_free=True,
                           completion_only_loss=True, packing=False, dataset_num_proc=None)
    # TRL's chunked completion-only NLL, its loss function swapped for the fused head (train/fast_sft.py)
    trainer = trainer_class()(model=model, args=args, train_dataset=train, processing_class=inp.tok,
                              peft_config=trl_setup.lora_config(cfg, "CAUSAL_LM"),
                              callbacks=[monitor.nan_guard(STAGE)] + list(callbacks or []))
    return precision.mixed_precision(trainer, cfg)


def run(cfg, layout: inputs.Layout | None = None, callbacks: list | None = None) -> dict:
    layout = layout or inputs.Layout()
    inp = inputs.stage_inputs(STAGE, cfg, layout, heldout=layout.split("hh_heldout").is_file())
    parent, tok, rows, md5 = inp.parent, inp.tok, inp.train, inp.data_md5
    ckpt_dir = layout.checkpoints(STAGE)
    resume = checkpoints.checkpoint_to_resume(
        ckpt_dir, checkpoints.fingerprint(cfg, {"data": md5, "parent": checkpoints.model_md5(parent)}), cfg.resume)
    trainer = build(cfg, inp, ckpt_dir, callbacks)
    checkpoints.train(trainer, resume)
    metrics = {**monitor.train_metrics(trainer), **monitor.count_params(trainer.model),
               "train_pairs": len(rows), "train_tokens": monitor.train_tokens(tok, rows, ("chosen",), cfg),
               "resumed_from_step": checkpoints.checkpoint_step(resume)}
    if not trainer.state.log_history or metrics["train_steps"] == 0:
        raise UserError(f"{STAGE}: no training step ran (empty data after clipping?)")
    if inp.heldout:
        with precision.heldout_autocast(cfg, trainer.model):
            metrics.update(heldout_metrics(trainer.model, tok, inp.heldout, cfg.eval_batch_size))
    checkpoints.save_model_dir(trainer.model, tok, layout.model(STAGE), stage=STAGE, task="causal_lm",
                          parent=parent, data_md5=md5, cfg=cfg)
    checkpoints.discard_checkpoints(ckpt_dir)
    return metrics


def heldout_metrics(model, tok, rows: list[dict], batch_size: int) -> dict:
    """Mean completion NLL (per token) of the chosen responses of the held-out split."""
    lp, n = scoring.sequence_logps(model, tok, [r["prompt"] for r in rows], [r["chosen"] for r in rows],
                                   batch_size)
    return {"heldout_chosen_nll_per_token": float(-lp.sum() / n.sum())}


def cli(args) -> int:
    return stage_cli.run_cli(STAGE, args, run, lambda layout: [layout.split("hh_train"), layout.model("base")])
