"""Results per training seed, pooled for the report: a trained model's cell (eval/<V>/<M>/s<k>/metrics.json)
and a training stage's held-out checks (metrics/<stage>/s<k>.json) become the mean over the seeds
present with a seed-level 95% t-interval (Student's t over the per-seed values: training variance).
A layout without a seed level (eval/<V>/<M>/metrics.json, metrics/<stage>.json) is one seed.

Alignment checks (the targets the trained models must meet before their trust changes mean anything):
RM and DPO held-out accuracy, the mean's CI low above 0.5; PPO's held-out reward gain over SFT, above 0.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from rlhf_trust import runinfo

SEED_DIR = re.compile(r"^s(\d+)$")

# stage -> (held-out metric, target for the seed-level CI's low end)
ALIGNMENT = {"rm": ("heldout_accuracy", 0.5), "dpo": ("heldout_accuracy", 0.5), "ppo": ("heldout_reward_gain", 0.0)}


def seed_files(d: Path, name: str) -> dict[int | None, Path]:
    """seed -> <d>/s<k>/<name> for each seed folder holding it; else {None: <d>/<name>} if that exists."""
    found = {}
    if d.is_dir():
        for sub in d.iterdir():
            m = SEED_DIR.match(sub.name)
            if m and (sub / name).is_file():
                found[int(m.group(1))] = sub / name
    if not found and (d / name).is_file():
        found[None] = d / name
    return dict(sorted(found.items(), key=lambda kv: -1 if kv[0] is None else kv[0]))


def stage_seed_files(metrics_dir: Path, stage: str) -> dict[int | None, Path]:
    """seed -> metrics/<stage>/s<k>.json; else {None: metrics/<stage>.json} if that exists."""
    d = metrics_dir / stage
    found = {int(m.group(1)): p for p in (d.glob("s*.json") if d.is_dir() else [])
             if (m := re.match(r"^s(\d+)\.json$", p.name))}
    if not found and (metrics_dir / f"{stage}.json").is_file():
        found[None] = metrics_dir / f"{stage}.json"
    return dict(sorted(found.items(), key=lambda kv: -1 if kv[0] is None else kv[0]))


def t_interval(values: list[float]) -> dict[str, Any]:
    """Mean, SD and the 95% Student-t interval over per-seed values (no interval for one seed)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "sd": None, "ci95": None, "n_seeds": n}
    from scipy.stats import t as student

    sd = math.sqrt(sum((x - mean) ** 2 for x in values) / (n - 1))
    half = float(student.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "ci95": {"low": mean - half, "high": mean + half}, "n_seeds": n}


def read_per_seed(files: dict[int | None, Path]) -> dict[int | None, dict]:
    out = {}
    for seed, p in files.items():
        m = runinfo.read(p)
        if isinstance(m, dict):
            out[seed] = m
    return out


def pooled_metrics(per_seed: dict[int | None, dict], keys: list[str]) -> dict[str, Any]:
    """The lowest seed's metrics with each of `keys` replaced by its mean over the seeds that report it,
    its `<key>_ci95` by the seed-level interval (two or more seeds), plus `seeds` and `per_seed`."""
    if not per_seed:
        return {}
    first = next(iter(per_seed.values()))
    if list(per_seed) == [None]:
        return dict(first)
    out = {**first, "seeds": [s for s in per_seed], "per_seed": {}}
    for k in keys:
        vals = {s: m[k] for s, m in per_seed.items() if isinstance(m.get(k), (int, float))}
        if not vals:
            continue
        t = t_interval(list(vals.values()))
        out[k] = t["mean"]
        out["per_seed"][k] = {str(s): v for s, v in vals.items()}
        if t["ci95"] is not None:
            out[f"{k}_ci95"] = t["ci95"]
            out[f"{k}_seed_sd"] = t["sd"]
    return out


def alignment(stages: dict[str, dict[int | None, dict]]) -> dict[str, dict[str, Any]]:
    """Per alignment stage: its held-out metric per seed, the mean, the seed-level CI and the target's
    verdict (met = CI low above the target; with one seed the stage's own CI over pairs/prompts stands in,
    conditional on that checkpoint)."""
    out = {}
    for stage, (key, target) in ALIGNMENT.items():
        per = {s: m[key] for s, m in stages.get(stage, {}).items() if isinstance(m.get(key), (int, float))}
        if not per:
            continue
        t = t_interval(list(per.values()))
        if t["ci95"] is not None:
            low, level = t["ci95"]["low"], "seeds"
        else:
            ci = (next(iter(stages[stage].values())).get(f"{key}_ci95") or {})
            low, level = ci.get("low"), "one seed: conditional on this checkpoint"
            t["ci95"] = ci or None
        out[stage] = {"metric": key, "per_seed": {str(s): v for s, v in per.items()}, **t, "target": target,
                      "ci_level": level, "met": None if low is None else bool(low > target)}
    return out


def missing_seeds(found: dict[str, set[int]], expected: set[int]) -> list[str]:
    """'<what>: seed(s) k missing' for each entry of `found` (name -> seeds present) lacking some of `expected`."""
    out = []
    for name, have in found.items():
        lack = sorted(expected - have)
        if lack and have:
            out.append(f"{name}: seed {', '.join(map(str, lack))} missing; pooled over "
                       f"seed{'s' if len(have) > 1 else ''} {', '.join(map(str, sorted(have)))}")
    return out
