"""PPO's held-out reward gain over SFT on more prompts than the default run spends (issue 11 §3).

The ppo stage scores its policy against the SFT policy on `ppo.heldout_prompts` held-out prompts
(128 in the default run, 16 before). This re-measures the same statistic, with the stage's
own code (`ppo.heldout_metrics`: greedy responses cut at EOS, scored by the run's reward model,
gain per prompt, percentile bootstrap), on the finished run's models and N held-out prompts, to say
whether PPO moved the reward at all and how many prompts a decisive CI needs.

    .venv/bin/python benchmarks/ppo_heldout_gain.py --prompts 100 --out benchmarks/results/ppo_heldout_gain.json

(run in the finished run's workspace: it reads outputs/prepared and outputs/models)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path


def run(models: Path, params: str, n_prompts: int, threads: int) -> dict:
    import torch

    from rlhf_trust import config
    from rlhf_trust.models import load_merged_causal_lm, load_merged_seq_cls, load_stage_info, load_tokenizer
    from rlhf_trust.train import inputs, ppo

    cfg = dataclasses.replace(config.load("ppo", params), heldout_prompts=n_prompts)
    # the stage's own held-out rows: prepared split, prompts clipped to their last max_prompt_length tokens
    rows = inputs.stage_inputs("ppo", cfg, inputs.Layout()).heldout
    torch.set_num_threads(threads)
    tok = load_tokenizer(models / "sft", padding_side="left")
    policy = load_merged_causal_lm(models / "ppo").eval()
    reward = load_merged_seq_cls(models / "rm").requires_grad_(False).eval()
    t0 = time.perf_counter()
    # heldout_metrics scores each model in cfg.heldout_precision itself
    out = ppo.heldout_metrics(policy, reward, tok, rows, cfg, models / "sft")
    # the stage's own n (its first prompts, same greedy decoding): reproduces metrics/ppo.json exactly,
    # in fp32 and in bf16 (the stage scores its policy merged, as saved: tests/test_train_ppo.py)
    first = dataclasses.replace(cfg, heldout_prompts=config.load("ppo", params).heldout_prompts)
    out["stage_n_check"] = ppo.heldout_metrics(policy, reward, tok, rows, first, models / "sft")
    half = (out["heldout_reward_gain_ci95"]["high"] - out["heldout_reward_gain_ci95"]["low"]) / 2
    return {**out, "ci95_half_width": half, "wall_s": round(time.perf_counter() - t0, 1), "threads": threads,
            "ppo_model_md5": load_stage_info(models / "ppo").get("md5"),
            "rm_model_md5": load_stage_info(models / "rm").get("md5"),
            "response_length": cfg.response_length, "seed": cfg.seed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=Path("outputs/models"))
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/ppo_heldout_gain.json"))
    a = ap.parse_args()
    from rlhf_trust.errors import UserError

    if not (a.models / "ppo" / "stage.json").exists():
        print(f"error: {a.models / 'ppo'} holds no finished ppo stage: run it in a finished run's workspace",
              file=sys.stderr)
        raise SystemExit(2)
    try:
        res = run(a.models, a.params, a.prompts, a.threads)
    except UserError as e:  # missing split or model, bad params: one line, the stage's exit code
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    from rlhf_trust import fileio

    with fileio.atomic_path(a.out) as tmp:
        Path(tmp).write_text(json.dumps(res, indent=2) + "\n")
    ci = res["heldout_reward_gain_ci95"]
    print(f"ppo - sft reward gain on {res['heldout_n']} held-out prompts: {res['heldout_reward_gain']:+.3f} "
          f"[{ci['low']:+.3f}, {ci['high']:+.3f}] ({res['wall_s']} s)")


if __name__ == "__main__":
    main()
