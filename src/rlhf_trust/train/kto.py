"""`rlhf-trust kto`: KTO from the SFT model, the SFT model as reference (TRL KTOTrainer).

KTO learns from unpaired examples labelled desirable or undesirable: each HH pair gives two, its
chosen response desirable and its rejected one undesirable, kept next to each other so that every
micro-batch holds both kinds (TRL estimates KTO's reference point from mismatched completions within
a micro-batch, read in order). With LoRA the reference is the adapter-disabled network. The
held-out check is DPO's: implicit reward beta * (log pi - log pi_ref) of chosen above rejected.
"""

from __future__ import annotations

from rlhf_trust.train import arms, inputs, offline_arm, stage_cli, trl_setup

STAGE = "kto"


def unpaired(rows: list[dict]) -> list[dict]:
    """HH pairs -> KTO examples: chosen desirable (label True), rejected undesirable (False), in pair order."""
    return [{"prompt": r["prompt"], "completion": r[side], "label": side == "chosen"}
            for r in rows for side in ("chosen", "rejected")]


def build(cfg, inp: inputs.Inputs, ckpt_dir, callbacks: list):
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    from rlhf_trust.models import load_merged_causal_lm

    model = load_merged_causal_lm(inp.parent)
    peft = trl_setup.lora_config(cfg, "CAUSAL_LM")
    ref = None if peft else load_merged_causal_lm(inp.parent)
    args = trl_setup.trl_args(KTOConfig, cfg, ckpt_dir, STAGE, max_length=cfg.max_length, beta=cfg.beta,
                              desirable_weight=cfg.desirable_weight, undesirable_weight=cfg.undesirable_weight,
                              train_sampling_strategy="sequential")
    trainer = KTOTrainer(model=model, ref_model=ref, args=args, train_dataset=Dataset.from_list(unpaired(inp.train)),
                         processing_class=inp.tok, peft_config=peft, callbacks=callbacks)
    return trainer


def heldout_metrics(model, inp: inputs.Inputs, cfg) -> dict:
    """Implicit-reward accuracy against the SFT reference: the adapter-disabled network with LoRA,
    the parent model loaded again with full fine-tuning."""
    from rlhf_trust.train import dpo

    ref = None
    if not hasattr(model, "disable_adapter"):
        from rlhf_trust.models import load_merged_causal_lm

        ref = load_merged_causal_lm(inp.parent).to(next(model.parameters()).device)
    return dpo.heldout_metrics(model, ref, inp.tok, inp.heldout, cfg.beta, cfg.eval_batch_size)


def run(cfg, layout: inputs.Layout | None = None, callbacks: list | None = None) -> dict:
    return offline_arm.run(STAGE, cfg, layout, callbacks, build, heldout_metrics, arms.parent(STAGE))


def cli(args) -> int:
    layout = inputs.Layout()
    return stage_cli.run_cli(STAGE, args, run, [layout.split("hh_train"), layout.split("hh_heldout"),
                                                layout.model(arms.parent(STAGE))])
