"""PPO training seconds, float32 vs bfloat16 (autocast + the frozen weights as bf16 copies,
train/frozen_bf16.py), on the last full run's SFT and reward models, 1 thread, in one process,
the precisions in the order given (run each twice, interleaved: the machine is shared).
A `+full_head` suffix runs that entry with the LM head over every position, as TRL computes it
(without train/response_logits.py):

    .venv/bin/python benchmarks/ppo_precision.py --models /work/final/outputs/models \\
        --data /work/final/outputs/prepared --order float32,bfloat16,float32
    .venv/bin/python benchmarks/ppo_precision.py ... --threads 2 \\
        --order float32+full_head,float32,float32+full_head,float32 --out benchmarks/results/ppo_response_logits.json

Writes nothing under --models: the stage's outputs go to a temporary directory (the SFT and RM
directories are linked in). Result: --out (JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", required=True, help="a models dir with sft/ and rm/")
    p.add_argument("--data", required=True, help="the prepared HH splits")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--order", default="float32,bfloat16,float32")
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results/ppo_precision.json")
    a = p.parse_args()

    import torch
    from transformers import TrainerCallback

    from rlhf_trust import config
    from rlhf_trust.train import inputs, ppo

    t: dict[str, float] = {}
    tail = ppo.response_logits_only

    class Timer(TrainerCallback):
        def on_train_begin(self, *args, **kw):
            t["begin"] = time.perf_counter()

        def on_train_end(self, *args, **kw):
            t["end"] = time.perf_counter()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        models.mkdir()
        for stage in ("sft", "rm"):
            (models / stage).symlink_to(Path(a.models).resolve() / stage)
        for i, entry in enumerate(a.order.split(",")):
            prec, _, variant = entry.partition("+")
            ppo.response_logits_only = (lambda *_: contextlib.nullcontext()) if variant == "full_head" else tail
            cfg = copy.deepcopy(config.load("ppo", a.params))
            for k, v in {"precision": prec, "total_episodes": a.episodes, "heldout_prompts": 2, "threads": a.threads,
                         "heldout_precision": "bfloat16"}.items():
                object.__setattr__(cfg, k, v)
            layout = inputs.Layout(data_dir=Path(a.data), models_dir=models, checkpoints_dir=Path(tmp) / f"ckpt{i}",
                                   metrics_dir=Path(tmp) / "metrics")
            torch.set_num_threads(a.threads)
            m = ppo.run(cfg, layout, callbacks=[Timer()])
            rows.append({"precision": prec, "lm_head": variant or "response_positions", "train_s": round(t["end"] - t["begin"], 1), "episodes": m["episodes"],
                         "kl_mean": m.get("kl_mean"), "reward_mean": m.get("reward_mean")})
            print(json.dumps(rows[-1]), flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"rows": rows, "threads": a.threads, "note": "train() seconds only (no held-out pass), "
                                       "gemma-3-270m, shared machine: compare neighbouring rows"}, indent=2) + "\n")


if __name__ == "__main__":
    main()
