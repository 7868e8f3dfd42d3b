"""`rlhf-trust orpo`: ORPO from the base model (TRL 1.12 experimental ORPOTrainer).

ORPO is reference-free and folds SFT into its loss (chosen NLL plus beta times an odds-ratio term),
so it trains from the base model as its paper does: no SFT stage before it, no reference in memory.
The held-out check: chosen's length-normalised log-likelihood above rejected's (the implicit reward
TRL logs for ORPO), with its bootstrap CI.
"""

from __future__ import annotations

from rlhf_trust.train import arms, inputs, offline_arm, stage_cli, trl_setup

STAGE = "orpo"


def build(cfg, inp: inputs.Inputs, ckpt_dir, callbacks: list):
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    from rlhf_trust.models import load_merged_causal_lm

    args = trl_setup.trl_args(ORPOConfig, cfg, ckpt_dir, STAGE, max_length=cfg.max_length,
                              max_completion_length=cfg.max_length - cfg.max_prompt_length, beta=cfg.beta)
    return ORPOTrainer(model=load_merged_causal_lm(inp.parent), args=args,
                       train_dataset=offline_arm.pair_dataset(inp.train), processing_class=inp.tok,
                       peft_config=trl_setup.lora_config(cfg, "CAUSAL_LM"), callbacks=callbacks)


def run(cfg, layout: inputs.Layout | None = None, callbacks: list | None = None) -> dict:
    return offline_arm.run(STAGE, cfg, layout, callbacks, build, offline_arm.reference_free_heldout,
                           arms.parent(STAGE))


def cli(args) -> int:
    layout = inputs.Layout()
    return stage_cli.run_cli(STAGE, args, run, [layout.split("hh_train"), layout.split("hh_heldout"),
                                                layout.model(arms.parent(STAGE))])
