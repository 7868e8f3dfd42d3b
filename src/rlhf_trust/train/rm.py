"""`rlhf-trust rm`: Bradley-Terry reward model on HH pairs (TRL RewardTrainer, num_labels=1, each
pair's prompt run once: train/fast_rm.py), initialised from the SFT model (or `rm.init_from`);
reports held-out pairwise accuracy."""

from __future__ import annotations

from rlhf_trust.train import checkpoints, inputs, monitor, precision, scoring, stage_cli, trl_setup

STAGE = "rm"


def build(cfg, inp: inputs.Inputs, ckpt_dir, callbacks: list | None = None):
    """The reward model (SFT network + a new score head, LoRA) and its trainer, in `cfg.precision`
    (the stage's and benchmarks/train_steps.py's)."""
    from datasets import Dataset
    from trl import RewardConfig

    from rlhf_trust.models import load_merged_causal_lm, seq_cls_from_causal
    from rlhf_trust.train.fast_rm import trainer_class

    train = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in inp.train])
    model = seq_cls_from_causal(load_merged_causal_lm(inp.parent), num_labels=1)
    model.config.pad_token_id = inp.tok.pad_token_id
    args = trl_setup.trl_args(RewardConfig, cfg, ckpt_dir, STAGE, max_length=cfg.max_length)
    trainer = trainer_class()(model=model, args=args, train_dataset=train, processing_class=inp.tok,
                              peft_config=trl_setup.lora_config(cfg, "SEQ_CLS"),
                              callbacks=[monitor.nan_guard(STAGE)] + list(callbacks or []))
    return precision.mixed_precision(trainer, cfg)


def run(cfg, layout: inputs.Layout | None = None, callbacks: list | None = None) -> dict:
    layout = layout or inputs.Layout()
    inp = inputs.stage_inputs(STAGE, cfg, layout, parent=cfg.init_from)
    parent, tok, rows, heldout, md5 = inp.parent, inp.tok, inp.train, inp.heldout, inp.data_md5
    ckpt_dir = layout.checkpoints(STAGE)
    resume = checkpoints.checkpoint_to_resume(
        ckpt_dir, checkpoints.fingerprint(cfg, {"data": md5, "parent": checkpoints.model_md5(parent)}), cfg.resume)
    trainer = build(cfg, inp, ckpt_dir, callbacks)
    checkpoints.train(trainer, resume)
    metrics = {**monitor.train_metrics(trainer), **monitor.count_params(trainer.model),
               "train_pairs": len(rows), "train_tokens": monitor.train_tokens(tok, rows, ("chosen", "rejected"), cfg),
               "resumed_from_step": checkpoints.checkpoint_step(resume)}
    with precision.heldout_autocast(cfg, trainer.model):
        metrics.update(heldout_metrics(trainer.model, tok, heldout, cfg.eval_batch_size, cfg.seed))
    checkpoints.save_model_dir(trainer.model, tok, layout.model(STAGE), stage=STAGE, task="seq_cls",
                          parent=parent, data_md5=md5, cfg=cfg)
    checkpoints.discard_checkpoints(ckpt_dir)
    return metrics


def heldout_metrics(model, tok, rows: list[dict], batch_size: int, seed: int = 0) -> dict:
    """Pairwise accuracy (r(chosen) > r(rejected)) and mean reward margin on held-out pairs."""
    prompts = [r["prompt"] for r in rows]
    chosen = scoring.reward_scores(model, tok, prompts, [r["chosen"] for r in rows], batch_size)
    rejected = scoring.reward_scores(model, tok, prompts, [r["rejected"] for r in rows], batch_size)
    return scoring.pairwise(chosen, rejected, seed=seed)  # the seed draws the CI's bootstrap


def cli(args) -> int:
    return stage_cli.run_cli(STAGE, args, run, lambda layout: [layout.split("hh_train"), layout.split("hh_heldout"),
                                                               layout.model("sft")])
