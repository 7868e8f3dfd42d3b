"""`rlhf-trust dpo`: DPO from the SFT model with the SFT model as the reference (TRL DPOTrainer).

With LoRA (default) the reference is the same network with the adapter disabled: one model in
memory instead of two. The LM head runs on completion tokens only (train/fast_dpo.py). Reports
held-out preference accuracy (with a bootstrap CI) and implicit-reward margin.
"""

from __future__ import annotations

from rlhf_trust.train import checkpoints, inputs, monitor, precision, scoring, stage_cli, trl_setup

STAGE = "dpo"


def build(cfg, inp: inputs.Inputs, ckpt_dir, callbacks: list | None = None):
    """The policy (SFT + LoRA), its reference (None with LoRA: the adapter-disabled network) and
    their trainer, in `cfg.precision` (the stage's and benchmarks/train_steps.py's)."""
    from datasets import Dataset
    from trl import DPOConfig

    from rlhf_trust.models import load_merged_causal_lm
    from rlhf_trust.train.fast_dpo import trainer_class

    train = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in inp.train])
    model = load_merged_causal_lm(inp.parent)
    peft = trl_setup.lora_config(cfg, "CAUSAL_LM")
    ref = None if peft else load_merged_causal_lm(inp.parent)  # full fine-tuning: an explicit frozen SFT copy
    args = trl_setup.trl_args(DPOConfig, cfg, ckpt_dir, STAGE, max_length=cfg.max_length, beta=cfg.beta,
                           loss_type=[cfg.loss_type])
    trainer = trainer_class()(model=model, ref_model=ref, args=args, train_dataset=train, processing_class=inp.tok,
                              peft_config=peft, callbacks=[monitor.nan_guard(STAGE)] + list(callbacks or []))
    return precision.mixed_precision(trainer, cfg), ref


def run(cfg, layout: inputs.Layout | None = None, callbacks: list | None = None) -> dict:
    layout = layout or inputs.Layout()
    inp = inputs.stage_inputs(STAGE, cfg, layout)
    parent, tok, rows, heldout, md5 = inp.parent, inp.tok, inp.train, inp.heldout, inp.data_md5
    ckpt_dir = layout.checkpoints(STAGE)
    resume = checkpoints.checkpoint_to_resume(
        ckpt_dir, checkpoints.fingerprint(cfg, {"data": md5, "parent": checkpoints.model_md5(parent)}), cfg.resume)
    trainer, ref = build(cfg, inp, ckpt_dir, callbacks)
    checkpoints.train(trainer, resume)
    metrics = {**monitor.train_metrics(trainer), **monitor.count_params(trainer.model),
               "train_pairs": len(rows), "train_tokens": monitor.train_tokens(tok, rows, ("chosen", "rejected"), cfg),
               "resumed_from_step": checkpoints.checkpoint_step(resume), "beta": cfg.beta}
    with precision.heldout_autocast(cfg, trainer.model, ref):
        metrics.update(heldout_metrics(trainer.model, ref, tok, heldout, cfg.beta, cfg.eval_batch_size,
                                        cfg.seed))
    checkpoints.save_model_dir(trainer.model, tok, layout.model(STAGE), stage=STAGE, task="causal_lm",
                          parent=parent, data_md5=md5, cfg=cfg)
    checkpoints.discard_checkpoints(ckpt_dir)
    return metrics


def implicit_rewards(policy, ref, tok, rows: list[dict], beta: float, batch_size: int):
    """beta * (log pi(y|x) - log pi_ref(y|x)) for chosen and rejected responses.

    `ref=None` with a PEFT policy: the reference is the policy with its adapter disabled."""
    import contextlib

    sides = ([r["prompt"] for r in rows], [r["chosen"] for r in rows], [r["rejected"] for r in rows])
    (pol_c, _), (pol_r, _) = scoring.pair_logps(policy, tok, *sides, batch_size)  # prompt run once per pair
    with policy.disable_adapter() if ref is None else contextlib.nullcontext():
        (ref_c, _), (ref_r, _) = scoring.pair_logps(ref if ref is not None else policy, tok, *sides, batch_size)
    return beta * (pol_c - ref_c), beta * (pol_r - ref_r)


def heldout_metrics(policy, ref, tok, rows: list[dict], beta: float, batch_size: int, seed: int = 0) -> dict:
    """Held-out preference accuracy (implicit reward of chosen > rejected) and mean reward margin."""
    chosen, rejected = implicit_rewards(policy, ref, tok, rows, beta, batch_size)
    return scoring.pairwise(chosen, rejected, seed=seed)  # the seed draws the CI's bootstrap


def cli(args) -> int:
    return stage_cli.run_cli(STAGE, args, run, lambda layout: [layout.split("hh_train"), layout.split("hh_heldout"),
                                                               layout.model("sft")])
