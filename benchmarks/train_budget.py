"""Time the training stages with the current params: wall time, training tokens/s and peak RSS
per stage, each stage in its own process (the real CLI path: MLflow run, metrics JSON, model dir).

    .venv/bin/python benchmarks/train_budget.py [--params params.yaml] [--stages base sft rm ppo dpo]

Prints one row per stage and the ratios against the budget (sft+rm+ppo+dpo <= 20 min, peak RSS
<= 8 GB). The machine is shared: the 1-min load average and the busiest other processes are
recorded during each stage, since other work slows the stages down. Results: --out (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET_S = 20 * 60
BUDGET_RSS_GB = 8.0
TRAIN_STAGES = ("sft", "rm", "ppo", "dpo")


def child(stage: str, params: str, out: str) -> None:
    """Run one stage through its CLI path, timing trainer.train() with a callback."""
    from transformers import TrainerCallback

    from rlhf_trust.tracking import configure_env

    configure_env()
    timer: dict[str, float] = {}

    class Timer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            timer["begin"] = time.perf_counter()

        def on_train_end(self, args, state, control, **kw):
            timer["end"] = time.perf_counter()

    ns = argparse.Namespace(params=params)
    if stage == "base":
        from rlhf_trust.models import stage as base

        base.cli(ns)
        Path(out).write_text(json.dumps({}))
        return
    import importlib

    from rlhf_trust.train import common

    mod = importlib.import_module(f"rlhf_trust.train.{stage}")
    captured = {}

    def run(cfg, layout):
        captured.update(mod.run(cfg, layout, callbacks=[Timer()]))
        return captured

    layout = common.Layout()
    inputs = [layout.split("hh_train"), layout.split("hh_heldout"), layout.model(common.PARENT[stage])]
    common.run_cli(stage, ns, run, inputs)
    Path(out).write_text(json.dumps({"metrics": captured, "train_seconds": timer["end"] - timer["begin"]}))


def busiest(n: int = 4) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "pcpu,rss,args", "--sort=-pcpu"], capture_output=True, text=True, check=False).stdout
    mine = str(os.getpid())
    rows = [line.strip()[:110] for line in ps.splitlines()[1:] if mine not in line]
    return rows[:n]


def measure(stage: str, params: str) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", stage, "--params", params, "--child-out", out])
    loads, snapshot = [], []
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        loads.append(os.getloadavg()[0])
        if len(loads) == 6:  # ~30 s in: who else is using the CPUs
            snapshot = busiest()
        time.sleep(5)
    wall = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        raise SystemExit(f"{stage} failed with exit code {rc}")
    res = json.loads(Path(out).read_text())
    os.unlink(out)
    m = res.get("metrics", {})
    row = {"stage": stage, "wall_s": round(wall, 1), "peak_rss_gb": round(usage.ru_maxrss / 2**20, 2),
           "load_avg_1m_mean": round(sum(loads) / len(loads), 2) if loads else None, "others": snapshot}
    if "train_seconds" in res:
        row.update(train_s=round(res["train_seconds"], 1), train_tokens=m.get("train_tokens"),
                   tokens_per_s=round(m.get("train_tokens", 0) / res["train_seconds"], 1),
                   metrics={k: v for k, v in m.items() if k.startswith(("heldout", "train_loss", "reward", "kl"))})
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--stages", nargs="+", default=["base", *TRAIN_STAGES])
    p.add_argument("--out", default="benchmarks/results/train_budget.json")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a.child, a.params, a.child_out)
        return
    rows = []
    for stage in a.stages:
        rows.append(measure(stage, a.params))
        r = rows[-1]
        print(f"{stage:5s} wall {r['wall_s']:7.1f}s  train {r.get('train_s', 0):7.1f}s  "
              f"{r.get('tokens_per_s', 0):8.1f} tok/s  peak RSS {r['peak_rss_gb']:5.2f} GB  "
              f"load {r['load_avg_1m_mean']}", flush=True)
    train = [r for r in rows if r["stage"] in TRAIN_STAGES]
    total = sum(r["wall_s"] for r in train)
    peak = max((r["peak_rss_gb"] for r in train), default=0.0)
    summary = {"train_stages_wall_s": round(total, 1), "budget_s": BUDGET_S, "wall_ratio": round(total / BUDGET_S, 3),
               "peak_rss_gb": peak, "rss_ratio": round(peak / BUDGET_RSS_GB, 3), "cpus": os.cpu_count()}
    print(f"sft+rm+ppo+dpo: {total:.0f}s = {summary['wall_ratio']:.2f} x budget; "
          f"peak RSS {peak:.2f} GB = {summary['rss_ratio']:.2f} x budget")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"stages": rows, "summary": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
