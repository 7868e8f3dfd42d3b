"""The study's pooled report, studies/<name>/report.{md,json}, from the finished cells' per-unit
eval outcomes (studies/<name>/cells/<cell>/eval/<vertical>/<model>[/s<k>]/units.csv).

Groups: cells that differ only in the seed key are training seeds of one group (an arm, a data
version, a hyperparameter setting); the other grid keys define the groups. Per group, the report's
contrasts (sft-base, ..., dpo-sft) are pooled over its seeds (report/pooled.py: a difference counts
only beyond training noise; one seed is labelled conditional). Between groups, each trained model
of every group is compared with the first group's (two-sample over seeds, items paired). Holm over
each table. Failed and missing cells are listed; the rest are reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rlhf_trust.fileio import write_json, write_text
from rlhf_trust.report import contrasts, pooled

MODELS = ("base", "sft", "ppo", "dpo")


def group_of(overrides: Mapping[str, Any], seed_key: str | None) -> str:
    rest = [f"{k}={_text(v)}" for k, v in overrides.items() if k != seed_key]
    return ", ".join(rest) or "all cells"


def seed_of(overrides: Mapping[str, Any], seed_key: str | None) -> Any:
    v = overrides.get(seed_key) if seed_key else None
    if isinstance(v, list):
        return v[0] if len(v) == 1 else ",".join(map(str, v))
    return v


def _text(v: Any) -> str:
    return ",".join(map(str, v)) if isinstance(v, list) else str(v)


def group_units(state: Mapping[str, Any], cells_dir: Path, notes: list[str]) -> dict[str, dict]:
    """group -> vertical -> model -> {seed: units}. A cell's own s<k>/ seeds keep their numbers; a
    cell without them is the seed its grid value names. The base model (not trained) is one shared
    evaluation per group."""
    seed_key = state.get("seed_key")
    out: dict[str, dict] = {}
    for cid, rec in state["cells"].items():
        if rec.get("status") != "done":
            continue
        group = out.setdefault(group_of(rec["overrides"], seed_key), {})
        eval_dir = cells_dir / cid / "eval"
        for vdir in sorted(p for p in eval_dir.glob("*") if p.is_dir()):
            units = contrasts.load_units(eval_dir, vdir.name, MODELS, notes)
            for model, per_seed in units.items():
                slot = group.setdefault(vdir.name, {}).setdefault(model, {})
                for seed, u in per_seed.items():
                    if model == "base":
                        slot.setdefault(pooled.SHARED, u)
                    else:
                        key = seed_of(rec["overrides"], seed_key) if seed is pooled.SHARED else seed
                        slot[pooled.SHARED if key is None else key] = u
    return out


def _higher(vertical: str) -> bool:
    from rlhf_trust import verticals

    return verticals.get(vertical).higher_is_better if vertical in verticals.names() else True


def within(groups: Mapping[str, dict], notes: list[str]) -> dict[tuple, dict]:
    jobs = {}
    for g, verticals in groups.items():
        for v, units in verticals.items():
            for (b, a), name in zip(contrasts.CONTRASTS, contrasts.NAMES, strict=True):
                if a in units and b in units:
                    ua, ub = units[a], units[b]
                    if contrasts.abs_mean_headline(v):
                        ua, ub = contrasts.orient(ua, ub)
                    jobs[(g, v, name)] = (ua, ub, _higher(v))
    return contrasts.run_family(jobs, notes, label=lambda k: f"{k[0]}: {k[1]} {k[2]}")


def between(groups: Mapping[str, dict], notes: list[str]) -> dict[tuple, dict]:
    names = list(groups)
    if len(names) < 2:
        return {}
    ref, jobs = names[0], {}
    for g in names[1:]:
        for v, units in groups[g].items():
            for m in MODELS[1:]:
                a, b = groups[ref].get(v, {}).get(m), units.get(m)
                if a and b:
                    jobs[(g, v, m)] = (a, b, _higher(v))
    return contrasts.run_family(jobs, notes, label=lambda k: f"{k[0]} vs {ref}: {k[1]} @ {k[2]}",
                                stat=lambda k, a, b, label: pooled.two_sample(a, b, label))


def build(state: Mapping[str, Any], study: Path) -> dict[str, Any]:
    """Write report.{json,md} under `study` and return the JSON's content."""
    notes: list[str] = []
    groups = group_units(state, study / "cells", notes)
    cells = state["cells"]
    report = {
        "study": state["name"], "grid": state["grid"], "seed_key": state.get("seed_key"),
        "cells": {cid: {"status": r.get("status"), "overrides": r["overrides"], "error": r.get("error"),
                        "mlflow_runs": r.get("mlflow_runs", {}), "commit": r.get("commit")}
                  for cid, r in cells.items()},
        "done": sorted(c for c, r in cells.items() if r.get("status") == "done"),
        "not_done": sorted(c for c, r in cells.items() if r.get("status") != "done"),
        "groups": {g: sorted({s for v in vs.values() for m, per in v.items() if m != "base" for s in per}, key=str)
                   for g, vs in groups.items()},
        "within": [{"group": g, "vertical": v, "contrast": n, **r} for (g, v, n), r in within(groups, notes).items()],
        "between": [{"group": g, "reference": next(iter(groups)), "vertical": v, "model": m, **r}
                    for (g, v, m), r in between(groups, notes).items()],
    }
    report["notes"] = notes
    write_json(study / "report.json", report)
    write_text(study / "report.md", markdown(report))
    return report


def markdown(r: Mapping[str, Any]) -> str:
    n, done = len(r["cells"]), len(r["done"])
    out = [f"# Study {r['study']}: {done} of {n} cells done", "",
           "Grid: " + "; ".join(f"`{k}` = {', '.join(map(_text, v))}" for k, v in r["grid"].items())
           + (f" (seeds: `{r['seed_key']}`)" if r.get("seed_key") else " (no seed key: one cell per group)"), ""]
    if r["not_done"]:
        out += ["## Cells not reported", "", "| cell | status | error |", "|---|---|---|"]
        out += [f"| {c} | {r['cells'][c]['status']} | {r['cells'][c].get('error') or ''} |" for c in r["not_done"]]
        out.append("")
    out += ["## Within each group: the alignment contrasts, pooled over its seeds", "",
            "| group | vertical | contrast | Δ [95% CI] | p (Holm) | seeds |", "|---|---|---|---|---|---|"]
    out += [f"| {w['group']} | {w['vertical']} | {w['contrast']} | {contrasts.text(w)} | "
            f"{contrasts.p_text(w.get('p_holm'))} | {contrasts.seeds_text(w)} |" for w in r["within"]]
    if r["between"]:
        out += ["", f"## Between groups: each model against {r['between'][0]['reference']}", "",
                "| group | vertical | model | Δ [95% CI] | p (Holm) | seeds |", "|---|---|---|---|---|---|"]
        out += [f"| {b['group']} | {b['vertical']} | {b['model']} | {contrasts.text(b)} | "
                f"{contrasts.p_text(b.get('p_holm'))} | {contrasts.seeds_text(b)} |" for b in r["between"]]
    if r["notes"]:
        out += ["", "## Notes", ""] + [f"- {x}" for x in r["notes"]]
    out += ["", "Cells, MLflow run ids and commits: report.json and study.json beside this file."]
    return "\n".join(out) + "\n"
