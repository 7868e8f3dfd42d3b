"""PPO across training draws: the held-out reward gain over SFT of the ppo stage run with several
seeds, and of the average of their weights (what budget reaches a CI above zero).

    python benchmarks/ppo_seeds.py --seeds 0 1 2 3 4 [--set missing_eos_penalty=1.0]

`--quick` trains tiny-gpt-neox sft and rm models on 32 pairs in a temporary directory and runs
seeds 0 and 1 of a tiny ppo (8 episodes, 8 held-out prompts) from them.

Each seed is the ppo stage itself (`train/ppo.run`, params.yaml's `ppo` section with `seed` = s):
the seed sets the prompt schedule (which of the training prompts each update draws), the LoRA
initialisation and the rollouts' sampling, i.e. the training draw. Seed 0 is the default run's.
Every run starts from the SFT and reward models in `--models` (a finished default run's
outputs/models) and writes its model to a temporary directory; the run's outputs stay as they are.

Each seed's metrics are the stage's own (`heldout_metrics`: its merged policy against the SFT
policy, greedy responses on the first `ppo.heldout_prompts` held-out prompts, scored by the reward
model, percentile bootstrap over prompts). The per-prompt scores are kept as well, so that:
- the spread of the gain over seeds (the training draw) sits beside each run's CI (the prompts);
- the "soup", the element-wise mean of the seeds' merged weights (= the SFT weights plus the mean
  of their LoRA updates, as every other weight is the SFT's), is scored the same way: one policy
  that costs k PPO runs of training, whose outcome varies less with the draw than any one run's.

The SFT side does not depend on the seed (greedy decoding of the adapter-disabled network, i.e. the
SFT weights), so it is scored in the first seed's stage run and reused for the others (a check: the
stage's own `heldout_reward_sft` is recorded per seed and must be identical).
Every result is saved (`save`) as it is measured; TRL's MLflow logging goes to a temporary store.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def summary(gains: list[float]) -> dict:
    """Mean over seeds with a t-interval (the seeds are the units here) and the SD of one run."""
    import numpy as np
    from scipy import stats

    g = np.asarray(gains, dtype=float)
    out = {"n_seeds": len(g), "mean": float(g.mean())}
    if len(g) >= 2:
        sd = float(g.std(ddof=1))
        half = float(stats.t.ppf(0.975, len(g) - 1) * sd / np.sqrt(len(g)))
        out.update(sd=sd, ci95={"low": out["mean"] - half, "high": out["mean"] + half})
    return out


def eos_counter():
    """A TrainerCallback that keeps TRL's per-update `val/num_eos_tokens` (rollouts that ended with
    EOS; the rest got `missing_eos_penalty` subtracted from their reward)."""
    from transformers import TrainerCallback

    class _Eos(TrainerCallback):
        def __init__(self) -> None:
            self.counts: list[float] = []

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "val/num_eos_tokens" in logs:
                self.counts.append(float(logs["val/num_eos_tokens"]))

    return _Eos()


def weight_average(model_dirs: list[Path]):
    """The element-wise mean of saved causal LMs' merged weights (the "soup"), as a plain model."""
    import torch

    from rlhf_trust.models import load_merged_causal_lm

    soup = load_merged_causal_lm(model_dirs[0]).eval()
    with torch.no_grad():
        acc = {k: v.clone() for k, v in soup.state_dict().items()}
        for d in model_dirs[1:]:
            for k, v in load_merged_causal_lm(d).state_dict().items():
                acc[k] += v
        soup.load_state_dict({k: v / len(model_dirs) for k, v in acc.items()})
    return soup


def run_seeds(base_cfg, models: Path, seeds: list[int], save: Callable[[dict], None],
              data_dir: Path | None = None) -> dict:
    """The ppo stage once per seed from `models`' sft and rm, then the soup of the seeds' policies;
    `save(result)` after every measurement. Returns the last result saved."""
    import torch

    from rlhf_trust.models import load_merged_seq_cls, load_tokenizer
    from rlhf_trust.train import inputs, ppo
    from rlhf_trust.train.scoring import mean_ci95

    base_cfg = dataclasses.replace(base_cfg, resume=False)
    tmp = Path(tempfile.mkdtemp(prefix="ppo-seeds-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"  # TRL's logging: a throw-away store
    out: dict = {"setup": {"seeds": seeds, "missing_eos_penalty": base_cfg.missing_eos_penalty, "total_episodes": base_cfg.total_episodes,
                           "train_prompts_cap": base_cfg.max_train_pairs, "heldout_prompts": base_cfg.heldout_prompts,
                           "learning_rate": base_cfg.learning_rate, "kl_coef": base_cfg.kl_coef,
                           "precision": base_cfg.precision, "heldout_precision": base_cfg.heldout_precision,
                           "threads_setting": base_cfg.threads, "cpus": os.cpu_count()},
                 "seeds": []}

    def write() -> None:
        save(out)

    def layout_for(seed: int):
        run_dir = tmp / f"seed-{seed}"
        (run_dir / "models").mkdir(parents=True, exist_ok=True)
        for name in ("sft", "rm"):
            if not (run_dir / "models" / name).exists():
                os.symlink(Path(models).resolve() / name, run_dir / "models" / name)
        layout = inputs.Layout(models_dir=run_dir / "models", checkpoints_dir=run_dir / "checkpoints",
                               metrics_dir=run_dir)
        return dataclasses.replace(layout, data_dir=Path(data_dir)) if data_dir else layout

    # heldout_metrics calls _scored twice: the SFT side (adapter disabled) first, then the merged policy
    scored: dict = {"sft": None, "calls": []}
    stage_scored = ppo._scored

    def recording_scored(policy, reward, tok, prompts, cfg):
        if not scored["calls"] and scored["sft"] is not None:
            scored["calls"].append(scored["sft"])  # the SFT side: same weights and prompts for every seed
            return scored["sft"]
        s = stage_scored(policy, reward, tok, prompts, cfg)
        scored["calls"].append(s)
        return s

    model_dirs = []
    ppo._scored = recording_scored
    try:
        for seed in seeds:
            layout = layout_for(seed)
            scored["calls"] = []
            t0 = time.perf_counter()
            cfg = dataclasses.replace(base_cfg, seed=seed)
            eos = eos_counter()
            m = ppo.run(cfg, layout, callbacks=[eos])
            sft, final = scored["calls"]
            scored["sft"] = sft
            row = {"seed": seed, "wall_s": round(time.perf_counter() - t0, 1), "threads": torch.get_num_threads(),
                   **{k: m[k] for k in ("heldout_reward_gain", "heldout_reward_gain_ci95", "heldout_n",
                                        "heldout_reward_sft", "heldout_reward_policy", "kl_mean", "kl_last",
                                        "reward_mean", "episodes", "train_prompts")},
                   "rollout_eos_rate": (sum(eos.counts) / (len(eos.counts) * cfg.batch_size * cfg.grad_accum)
                                        if eos.counts else None),
                   "gain_per_prompt": [round(float(x), 6) for x in (final - sft)]}
            out["seeds"].append(row)
            model_dirs.append(layout.model("ppo"))
            print(json.dumps({k: v for k, v in row.items() if k != "gain_per_prompt"}), flush=True)
            write()
    finally:
        ppo._scored = stage_scored

    gains = [r["heldout_reward_gain"] for r in out["seeds"]]
    out["over_seeds"] = {**summary(gains), "runs_meeting_target": sum(r["heldout_reward_gain_ci95"]["low"] > 0
                                                                      for r in out["seeds"])}
    write()
    if len(model_dirs) >= 2:
        t0 = time.perf_counter()
        soup = weight_average(model_dirs)
        tok = load_tokenizer(model_dirs[0], padding_side="left")
        reward = load_merged_seq_cls(Path(models) / "rm").requires_grad_(False).eval()
        rows = inputs.stage_inputs("ppo", base_cfg, layout_for(seeds[0])).heldout
        prompts = list(dict.fromkeys(r["prompt"] for r in rows))[: base_cfg.heldout_prompts]
        gain = (ppo._scored(soup, reward, tok, prompts, base_cfg) - scored["sft"]).numpy()
        out["soup"] = {"seeds": seeds, "heldout_reward_gain": float(gain.mean()),
                       "heldout_reward_gain_ci95": mean_ci95(gain, base_cfg.seed), "heldout_n": len(gain),
                       "gain_per_prompt": [round(float(x), 6) for x in gain],
                       "eval_s": round(time.perf_counter() - t0, 1)}
        write()
        print(json.dumps({k: v for k, v in out["soup"].items() if k != "gain_per_prompt"}), flush=True)
    return out


def variant(params: str | Path, sets: list[str]):
    """params' ppo section with KEY=VALUE overrides (YAML values), validated like params.yaml itself."""
    import yaml

    from rlhf_trust import config

    raw = config.read_params(params)
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item}: expected KEY=VALUE")
        raw.setdefault("ppo", {})[key] = yaml.safe_load(value)
    return config.section("ppo", raw)


def main() -> None:
    import harness

    p = harness.parser(__doc__)
    p.add_argument("--models", type=Path, default=Path("outputs/models"), help="where the run's sft and rm models are")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="ppo params to override")
    a = p.parse_args()

    from rlhf_trust.errors import UserError

    def save(out: dict) -> None:  # atomic: an interrupted write never truncates an earlier result
        harness.write_result("ppo_seeds", a, {k: v for k, v in out.items() if k != "setup"}, setup=out["setup"])

    data_dir = None
    if a.quick:
        layout = harness.tiny_run(harness.scratch("bench-ppo-seeds-"), harness.data_dir(a), ("sft", "rm"))
        a.models, data_dir, a.seeds = layout.models_dir, layout.data_dir, a.seeds[:2]
    try:
        cfg = harness.tiny_cfg("ppo") if a.quick else variant(a.params, a.set)
        out = run_seeds(cfg, a.models, a.seeds, save, data_dir=data_dir)
    except UserError as e:  # bad params or override, missing model or split: one line, the stage's exit code
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    print(json.dumps(out["over_seeds"]))


if __name__ == "__main__":
    main()
