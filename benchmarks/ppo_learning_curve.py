"""PPO learning curve: held-out reward gain over SFT (bootstrap CI over prompts) vs episodes, one run.

    .venv/bin/python benchmarks/ppo_learning_curve.py --points 32 64 96 128 [--heldout 128]

Runs the PPO stage itself (`train/ppo.run`, params.yaml's `ppo` section, `total_episodes` =
max(points), `max_train_pairs` = max(points) unless `--train-prompts`: no prompt seen twice) from
the SFT and reward models in `--models` (a finished default run's outputs/models), writing its own
model and checkpoints to a temporary directory so the run's outputs stay as they are. Each time
`points` episodes have been trained, a callback scores the policy on the held-out prompts with the
stage's own greedy generation and reward-model scoring (`ppo.generate_and_score`): the SFT side once
(adapter disabled), the policy at every point. The policy is scored with its adapter unmerged, so
the evaluation leaves the weights untouched (merging and unmerging in place would move them by fp32
rounding and change the rest of the run); the last point is also scored merged, as the stage scores
what it saves. Float32 throughout (the stage's `heldout_precision` and `precision` are overridden):
scoring a bf16 policy inside the training loop's frozen-weight swap is not supported here, and
float32 is what a CPU without native bf16 runs anyway. Greedy decoding draws no random numbers, so
the training run itself is the one the stage would make with `total_episodes` = max(points); the
learning rate is constant and the prompt schedule prefix-stable, so the point at E episodes is what
a run of E episodes would reach (with the same training prompts). Every point is written to `--out`
as it is measured; TRL's MLflow logging goes to a temporary store.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--models", default="outputs/models", help="where the run's sft and rm models are")
    p.add_argument("--data-dir", default=None, help="the prepared splits (default: the stage's)")
    p.add_argument("--points", type=int, nargs="+", default=[32, 64, 96, 128], help="episodes")
    p.add_argument("--heldout", type=int, default=None, help="held-out prompts (default ppo.heldout_prompts)")
    p.add_argument("--train-prompts", type=int, default=None,
                   help="distinct training prompts (default: max(points), so no prompt repeats)")
    p.add_argument("--out", default=str(HERE / "results" / "ppo_learning_curve.json"))
    a = p.parse_args()

    import torch
    from transformers import TrainerCallback

    from rlhf_trust import config
    from rlhf_trust.train import inputs, ppo
    from rlhf_trust.train.scoring import mean_ci95

    cfg = config.load("ppo", a.params)
    cfg = dataclasses.replace(cfg, total_episodes=max(a.points), precision="float32", heldout_precision="float32",
                              resume=False, heldout_prompts=a.heldout or cfg.heldout_prompts,
                              max_train_pairs=a.train_prompts or max(a.points))
    per_update = cfg.batch_size * cfg.grad_accum
    bad = [n for n in a.points if n % per_update]
    if bad:
        raise SystemExit(f"--points must be multiples of ppo.batch_size x grad_accum = {per_update}: {bad}")
    tmp = Path(tempfile.mkdtemp(prefix="ppo-curve-"))
    # TRL's MLflow callback logs this benchmark's updates to a throw-away store, not the project's
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
    (tmp / "models").mkdir()
    for name in ("sft", "rm"):
        os.symlink(Path(a.models).resolve() / name, tmp / "models" / name)
    layout = inputs.Layout(models_dir=tmp / "models", checkpoints_dir=tmp / "checkpoints", metrics_dir=tmp)
    if a.data_dir:
        layout = dataclasses.replace(layout, data_dir=Path(a.data_dir))
    from rlhf_trust.models import load_merged_seq_cls, load_tokenizer

    inp = inputs.stage_inputs("ppo", cfg, layout)  # the stage's own clipped held-out rows
    prompts = list(dict.fromkeys(r["prompt"] for r in inp.heldout))[: cfg.heldout_prompts]
    tok = load_tokenizer(inp.parent, padding_side="left")
    reward = load_merged_seq_cls(Path(a.models) / "rm").requires_grad_(False).eval()
    out: dict = {"setup": {"params": a.params, "points": a.points, "per_update": per_update,
                           "train_prompts": len(dict.fromkeys(r["prompt"] for r in inp.train)),
                           "heldout_prompts": len(prompts), "learning_rate": cfg.learning_rate,
                           "kl_coef": cfg.kl_coef, "response_length": cfg.response_length,
                           "temperature": cfg.temperature, "precision": "float32",
                           "threads": torch.get_num_threads(), "cpus": os.cpu_count()},
                 "points": []}
    state = {"sft": None, "t": time.perf_counter()}

    def write() -> None:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(out, indent=2) + "\n")

    def score(policy) -> dict:
        t0 = time.perf_counter()
        if state["sft"] is None:
            with policy.disable_adapter():
                state["sft"] = ppo.generate_and_score(policy, reward, tok, prompts, cfg)
        final = ppo.generate_and_score(policy, reward, tok, prompts, cfg)
        gain = (final - state["sft"]).numpy()
        return {"heldout_reward_gain": float(gain.mean()), "heldout_reward_gain_ci95": mean_ci95(gain, cfg.seed),
                "heldout_n": len(gain), "heldout_reward_policy": float(final.mean()),
                "heldout_reward_sft": float(state["sft"].mean()), "eval_s": round(time.perf_counter() - t0, 1)}

    class Curve(TrainerCallback):
        def on_step_end(self, args, st, control, model=None, **kw):
            episodes = st.global_step * per_update
            if episodes not in a.points:
                return
            train_s = time.perf_counter() - state["t"]
            wrapper = model.module if hasattr(model, "module") else model
            logs = [h for h in st.log_history if "objective/kl" in h]
            row = {"episodes": episodes, "updates": st.global_step, "train_s_since_last": round(train_s, 1),
                   "kl_last": float(logs[-1]["objective/kl"]) if logs else None,
                   **score(wrapper.policy)}
            out["points"].append(row)
            print(json.dumps(row), flush=True)
            write()
            state["t"] = time.perf_counter()

    metrics = ppo.run(cfg, layout, callbacks=[Curve()])
    # the stage's own statistic on what it saved (merged adapter), for the last point
    out["stage_metrics_last_point"] = {k: metrics[k] for k in ("heldout_reward_gain", "heldout_reward_gain_ci95",
                                                              "heldout_n", "kl_mean")}
    write()
    print(json.dumps(out["stage_metrics_last_point"]))


if __name__ == "__main__":
    main()
