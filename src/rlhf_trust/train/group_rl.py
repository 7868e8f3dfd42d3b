"""The stage of an online arm with a group baseline (GRPO, RLOO: TRL's GRPOTrainer / RLOOTrainer):
the policy from SFT, its completions scored by the reward model (train/grpo.py, train/rloo.py).

Per prompt the policy samples `num_generations` completions; each one's advantage is its reward-model
score against the other completions of its prompt (GRPO: the group's mean, over its standard
deviation; RLOO: the mean of the others), so no value model is trained: two transformer copies are
held (policy, reward model) instead of PPO's three. With LoRA and `kl_coef > 0` the KL reference is
the adapter-disabled SFT network. TRL's Trainer checkpoints hold the adapter, optimiser and RNG
states and every optimiser step generates its own batch, so a run resumed from a checkpoint
continues exactly. The held-out check is PPO's: reward of greedy responses over the SFT policy's
under the reward model, per held-out prompt, with its bootstrap CI.
"""

from __future__ import annotations

from typing import Any

from rlhf_trust.train import arms, checkpoints, inputs, monitor, precision, stage_cli, trl_setup


def build(stage: str, cfg, inp: inputs.Inputs, rm_dir, ckpt_dir, callbacks: list, extra: dict):
    """The policy (SFT + LoRA), the frozen reward model and the arm's TRL trainer (`arms.ARMS[stage]`)."""
    from datasets import Dataset

    from rlhf_trust.models import load_merged_causal_lm, load_merged_seq_cls, load_tokenizer

    spec = arms.spec(stage)
    trainer_cls, config_cls = _resolve(spec.trainer), _resolve(spec.trl_config)
    prompts = list(dict.fromkeys(r["prompt"] for r in inp.train))
    reward = load_merged_seq_cls(rm_dir).requires_grad_(False).eval()
    args = trl_setup.trl_args(config_cls, cfg, ckpt_dir, stage, num_generations=cfg.num_generations,
                              max_completion_length=cfg.response_length, temperature=cfg.temperature,
                              beta=cfg.kl_coef, **extra)
    trainer = trainer_cls(model=load_merged_causal_lm(inp.parent), reward_funcs=reward, args=args,
                          train_dataset=Dataset.from_dict({"prompt": prompts}),
                          processing_class=load_tokenizer(inp.parent, padding_side="left"),
                          reward_processing_classes=load_tokenizer(rm_dir),
                          peft_config=trl_setup.lora_config(cfg, "CAUSAL_LM"), callbacks=callbacks)
    return precision.mixed_precision(trainer, cfg), reward, len(prompts)


def _resolve(target: str) -> Any:
    import importlib

    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def run(stage: str, cfg, layout: inputs.Layout | None = None, callbacks: list | None = None,
        extra: dict | None = None) -> dict:
    """Train, check and save arm `stage`; `extra`: its own TRL config settings (e.g. GRPO's loss_type)."""
    from rlhf_trust.models import load_tokenizer
    from rlhf_trust.train import ppo

    layout = layout or inputs.Layout()
    inp = inputs.stage_inputs(stage, cfg, layout, parent=arms.parent(stage))
    rm_dir = inputs.parent_dir(stage, layout, cfg.reward_model)
    ckpt_dir = layout.checkpoints(stage)
    resume = checkpoints.checkpoint_to_resume(
        ckpt_dir, checkpoints.fingerprint(cfg, {"data": inp.data_md5, "parent": checkpoints.model_md5(inp.parent),
                                                "reward": checkpoints.model_md5(rm_dir)}), cfg.resume)
    trainer, reward, n_prompts = build(stage, cfg, inp, rm_dir, ckpt_dir,
                                       [monitor.nan_guard(stage)] + list(callbacks or []), extra or {})
    checkpoints.train(trainer, resume)
    history = [h for h in trainer.state.log_history if "reward" in h]
    metrics = {**monitor.train_metrics(trainer), **monitor.count_params(trainer.model),
               "train_prompts": n_prompts, "resumed_from_step": checkpoints.checkpoint_step(resume),
               "reward_mean": sum(h["reward"] for h in history) / max(1, len(history)),
               "reward_last": history[-1]["reward"] if history else float("nan")}
    policy, tok = trainer.model, load_tokenizer(inp.parent, padding_side="left")
    metrics.update(ppo.heldout_metrics(policy, reward, tok, inp.heldout, cfg, inp.parent))
    checkpoints.save_model_dir(policy, load_tokenizer(inp.parent), layout.model(stage), stage=stage,
                               task="causal_lm", parent=inp.parent, data_md5=inp.data_md5, cfg=cfg,
                               extra={"reward_model_dir": str(rm_dir.resolve())})
    checkpoints.discard_checkpoints(ckpt_dir)
    return metrics



def cli(stage: str, args, run_stage) -> int:
    layout = inputs.Layout()
    return stage_cli.run_cli(stage, args, run_stage, [layout.split("hh_train"), layout.split("hh_heldout")]
                             + [layout.model(m) for m in arms.models_read(stage)])
