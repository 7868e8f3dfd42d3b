"""Held-out passes in float32 vs bfloat16 on a finished run's models: same verdicts, how much faster?

For the reward model (accuracy: r(chosen) > r(rejected)), DPO (accuracy of the implicit reward) and
PPO (reward gain of the policy over SFT, per held-out prompt) this runs the stages' own held-out
code on the same units under three set-ups, side by side in one process:

- fp32: `heldout_precision: float32`;
- bf16_recast: bf16 autocast with frozen weights as the stages had them (autocast re-casts every
  frozen weight, the tied 262k head included, on every forward / head chunk / decoded token);
- bf16: `precision.heldout_autocast(cfg, *models)` in bf16: autocast with the frozen Linear weights held as
  bf16 copies for the pass (train/frozen_bf16.py: each cast once per pass), what the stages run.

It reports per set-up the statistic with its bootstrap CI and seconds, and against fp32 the share of
units with the same verdict (pair won / prompt's gain sign), the statistic's difference and the time ratio.
Models are loaded merged and frozen, as the stages hold them (the stage's LoRA reference = the SFT model).

    python benchmarks/heldout_precision.py [--models outputs/models --prepared outputs/prepared] \\
        --pairs 200 --prompts 64

`--quick` trains tiny-gpt-neox sft, rm, ppo and dpo models with the stages' own code on 32 pairs
in a temporary directory and checks 16 held-out pairs and 8 prompts there.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import harness

SETUPS = ("fp32", "bf16_recast", "bf16")


def _ctx(cfg, setup: str, models: tuple):
    from rlhf_trust.train import precision

    c = dataclasses.replace(cfg, heldout_precision="float32" if setup == "fp32" else "bfloat16")
    return precision.heldout_autocast(c, *(models if setup == "bf16" else ()))


def _units(stage: str, cfg, rows: list[dict], m: dict):
    """Per-unit (verdict value, statistic unit): margin per pair or gain per prompt."""
    from rlhf_trust.train import dpo, ppo, scoring

    if stage == "rm":
        prompts = [r["prompt"] for r in rows]
        return (scoring.reward_scores(m["rm"], m["tok"], prompts, [r["chosen"] for r in rows], cfg.eval_batch_size)
                - scoring.reward_scores(m["rm"], m["tok"], prompts, [r["rejected"] for r in rows], cfg.eval_batch_size))
    if stage == "dpo":
        c, r = dpo.implicit_rewards(m["dpo"], m["sft"], m["tok"], rows, cfg.beta, cfg.eval_batch_size)
        return c - r
    prompts = list(dict.fromkeys(r["prompt"] for r in rows))[: cfg.heldout_prompts]
    return (ppo.generate_and_score(m["ppo"], m["rm"], m["tok_left"], prompts, cfg)
            - ppo.generate_and_score(m["sft"], m["rm"], m["tok_left"], prompts, cfg))


def _stat(stage: str, values) -> dict:
    from rlhf_trust.train.scoring import mean_ci95

    units = (values > 0).float().numpy() if stage != "ppo" else values.numpy()
    return {"value": float(units.mean()), "ci95": mean_ci95(units), "n": len(units)}


def run(a) -> dict:
    import torch

    from rlhf_trust import config
    from rlhf_trust.models import load_merged_causal_lm, load_merged_seq_cls, load_tokenizer
    from rlhf_trust.train import inputs

    torch.set_num_threads(a.threads)
    layout = inputs.Layout(data_dir=a.prepared, models_dir=a.models)
    tok = load_tokenizer(a.models / "sft")
    m = {"tok": tok, "tok_left": load_tokenizer(a.models / "sft", padding_side="left"),
         "rm": load_merged_seq_cls(a.models / "rm"), "sft": load_merged_causal_lm(a.models / "sft")}
    if "dpo" in a.stages:
        m["dpo"] = load_merged_causal_lm(a.models / "dpo")
    if "ppo" in a.stages:
        m["ppo"] = load_merged_causal_lm(a.models / "ppo")
    for k, v in m.items():
        if not k.startswith("tok"):
            v.requires_grad_(False).eval()  # frozen, as LoRA's base and the reward model are in the stages
    uses = {"rm": ("rm",), "dpo": ("dpo", "sft"), "ppo": ("ppo", "sft", "rm")}
    out = {"stages": {}}
    for stage in a.stages:
        cfg = config.load(stage, a.params)
        cfg = dataclasses.replace(cfg, max_heldout_pairs=a.pairs, heldout_prompts=a.prompts,
                                  eval_batch_size=a.ppo_batch or cfg.eval_batch_size) if stage == "ppo" \
            else dataclasses.replace(cfg, max_heldout_pairs=a.pairs)
        torch.set_num_threads(a.threads)  # stage_inputs applies the stage's `threads`
        rows = inputs.stage_inputs(stage, cfg, layout, parent="sft").heldout
        torch.set_num_threads(a.threads)
        res, vals = {}, {}
        for setup in a.setups:
            t0 = time.perf_counter()
            with _ctx(cfg, setup, tuple(m[k] for k in uses[stage])):
                vals[setup] = _units(stage, cfg, rows, m).float()
            res[setup] = {**_stat(stage, vals[setup]), "seconds": round(time.perf_counter() - t0, 1)}
            print(stage, setup, res[setup], flush=True)
        ref = vals.get("fp32")
        for setup in a.setups:
            if ref is not None and setup != "fp32":
                v = vals[setup]
                res[setup]["vs_fp32"] = {
                    "same_verdict_share": float(((v > 0) == (ref > 0)).float().mean()),
                    "statistic_diff": res[setup]["value"] - res["fp32"]["value"],
                    "unit_max_abs_diff": float((v - ref).abs().max()),
                    "unit_corr": float(torch.corrcoef(torch.stack([v, ref]))[0, 1]),
                    "speedup": round(res["fp32"]["seconds"] / max(res[setup]["seconds"], 1e-9), 2)}
        out["stages"][stage] = {"units": len(vals[a.setups[0]]), "eval_batch_size": cfg.eval_batch_size, **res}
        # after each stage: a partial result survives an interruption
        harness.write_result("heldout_precision", a, out, setup={
            "threads": a.threads, "models": "tiny-gpt-neox (trained here)" if a.quick else str(a.models),
            "pairs": a.pairs, "prompts": a.prompts, "setups": list(a.setups)})
    return out


def main() -> None:
    ap = harness.parser(__doc__)
    ap.add_argument("--models", type=Path, default=Path("outputs/models"))
    ap.add_argument("--prepared", type=Path, default=Path("outputs/prepared"), help="the run's prepared splits")
    ap.add_argument("--stages", nargs="+", default=["rm", "dpo", "ppo"], choices=["rm", "dpo", "ppo"])
    ap.add_argument("--setups", nargs="+", default=list(SETUPS), choices=SETUPS)
    ap.add_argument("--pairs", type=int, default=200, help="held-out pairs (RM, DPO; PPO draws its prompts from them)")
    ap.add_argument("--prompts", type=int, default=64, help="PPO held-out prompts")
    ap.add_argument("--ppo-batch", type=int, default=None, help="PPO eval_batch_size (default: params)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    from rlhf_trust.errors import UserError

    if a.quick:
        root = harness.scratch("bench-heldout-")
        layout = harness.tiny_run(root, harness.data_dir(a), ("sft", "rm", "ppo", "dpo"))
        a.models, a.prepared, a.pairs, a.prompts = layout.models_dir, layout.data_dir, 16, 8
        a.params = root / "params.yaml"
        a.params.write_text(harness.tiny_params(("rm", "dpo", "ppo")))

    for s in ("sft", "rm", *a.stages):
        if not (a.models / s / "stage.json").exists():
            print(f"error: {a.models / s} holds no finished {s} stage", file=sys.stderr)
            raise SystemExit(2)
    try:
        run(a)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None


if __name__ == "__main__":
    main()
