"""`rlhf-trust simpo`: SimPO from the SFT model (TRL 1.12 experimental CPOTrainer, loss_type="simpo").

SimPO is reference-free: its implicit reward is beta times the mean token log-likelihood of a
response, and its loss asks chosen's to beat rejected's by a margin gamma (TRL's `simpo_gamma`;
`cpo_alpha=0` drops CPO's extra NLL term, as the SimPO paper's loss has none). The held-out check is
that reward's accuracy on held-out pairs, with its bootstrap CI.
"""

from __future__ import annotations

from rlhf_trust.train import arms, inputs, offline_arm, stage_cli, trl_setup

STAGE = "simpo"


def build(cfg, inp: inputs.Inputs, ckpt_dir, callbacks: list):
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    from rlhf_trust.models import load_merged_causal_lm

    args = trl_setup.trl_args(CPOConfig, cfg, ckpt_dir, STAGE, max_length=cfg.max_length,
                              max_completion_length=cfg.max_length - cfg.max_prompt_length, beta=cfg.beta,
                              loss_type="simpo", simpo_gamma=cfg.gamma, cpo_alpha=0.0)
    return CPOTrainer(model=load_merged_causal_lm(inp.parent), args=args,
                      train_dataset=offline_arm.pair_dataset(inp.train), processing_class=inp.tok,
                      peft_config=trl_setup.lora_config(cfg, "CAUSAL_LM"), callbacks=callbacks)


def run(cfg, layout: inputs.Layout | None = None, callbacks: list | None = None) -> dict:
    return offline_arm.run(STAGE, cfg, layout, callbacks, build, offline_arm.reference_free_heldout,
                           arms.parent(STAGE))


def cli(args) -> int:
    layout = inputs.Layout()
    return stage_cli.run_cli(STAGE, args, run, [layout.split("hh_train"), layout.split("hh_heldout"),
                                                layout.model(arms.parent(STAGE))])
