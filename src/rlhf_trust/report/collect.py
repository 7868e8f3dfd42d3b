"""Gather whatever results exist (a partial pipeline still gives a report).

Reads eval/<vertical>/<stage>/{metrics.json,units.csv} (a trained model's per training seed in s<k>/),
influence/<stage>/<vertical>/{metrics.json, top.jsonl} and metrics/<stage>/s<k>.json (or metrics/<stage>.json).
A trained model's cell is its mean over the seeds present (report/seeds.py). Missing cells are None and
listed in `missing`, as is any seed missing beside the others; contrasts whose units are missing are
skipped and listed in `notes`. Verticals come from the eval registry.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf_trust import fileio, paths, pipeline, runinfo

STAGES = pipeline.MODELS


@dataclass
class Cell:
    value: float | None
    low: float | None = None
    high: float | None = None
    n: int | None = None
    run_id: str | None = None

    @property
    def has_ci(self) -> bool:
        return self.low is not None and self.high is not None


@dataclass
class Vertical:
    name: str
    headline: str
    higher_is_better: bool
    cells: dict[str, Cell] = field(default_factory=dict)
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)   # stage -> full metrics dict
    top: dict[str, list[dict]] = field(default_factory=dict)          # influence stage -> top rows
    influence: dict[str, dict] = field(default_factory=dict)          # influence stage -> metrics


@dataclass
class Results:
    verticals: list[Vertical]
    stages: dict[str, dict]          # training/data stage -> metrics/<stage>.json
    provenance: dict[str, Any]
    missing: list[str]
    contrasts: dict[str, dict[str, dict]] = field(default_factory=dict)   # paired stats (contrasts.py)
    notes: list[str] = field(default_factory=list)                        # contrasts skipped and why
    contrasts_digest: str = ""                                            # their input (contrasts.jobs_digest)
    alignment: dict[str, dict[str, Any]] = field(default_factory=dict)   # seeds.alignment: RM/DPO/PPO checks


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def registry() -> tuple[str, ...]:
    """The verticals the eval registry declares (a new vertical appears here without edits)."""
    from rlhf_trust import evals

    return tuple(evals.VERTICALS)


def _vertical_meta(name: str) -> tuple[str, bool]:
    """Headline metric and its direction, declared by the vertical's module."""
    from rlhf_trust import evals

    spec = evals.get(name)
    return spec.headline, spec.higher_is_better


def number(x: Any) -> float | None:
    """A finite number read from an upstream file, else None (a string or NaN there is not a result)."""
    import math

    ok = isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
    return x if ok else None


def _cell(m: dict, headline: str) -> Cell:
    ci = m.get(f"{headline}_ci95")
    ci = ci if isinstance(ci, dict) else {}
    n = m.get("n_samples") or m.get("n")
    return Cell(number(m.get(headline)), number(ci.get("low")), number(ci.get("high")),
                n if isinstance(n, int) and not isinstance(n, bool) else None, m.get("mlflow_run_id"))


def collect(eval_dir: Path = paths.EVAL, influence_dir: Path = paths.INFLUENCE,
            metrics_dir: Path = paths.METRICS, verticals: tuple[str, ...] | None = None,
            previous: Path | None = None) -> Results:
    """`previous`: an earlier trust_summary.json whose contrasts are reused when their input is
    unchanged (contrasts.compute)."""
    from rlhf_trust.report import contrasts
    from rlhf_trust.report import seeds as seeding

    out, missing = [], []
    present: dict[str, set[int]] = {}   # what -> training seeds found (to name a seed missing beside others)
    for v in verticals or registry():
        headline, higher = _vertical_meta(v)
        vert = Vertical(v, headline, higher)
        for s in STAGES:
            per_seed = seeding.read_per_seed(seeding.seed_files(eval_dir / v / s, "metrics.json"))
            m = seeding.pooled_metrics({k: x for k, x in per_seed.items() if number(x.get(headline)) is not None},
                                       [headline])
            if not m and per_seed:   # read, but the headline is not a number in any seed's file
                m = next(iter(per_seed.values()))
            if isinstance(m, dict) and number(m.get(headline)) is not None:
                vert.cells[s] = _cell(m, headline)
                vert.extra[s] = m
            elif isinstance(m, dict) and m.get(headline) is not None:
                missing.append(f"eval {v} @ {s} ({eval_dir / v / s / 'metrics.json'}: {headline} is not a number)")
            else:
                missing.append(f"eval {v} @ {s} ({eval_dir / v / s / 'metrics.json'})")
            if s != "base":
                for name in ("metrics.json", "units.csv"):
                    found = {k for k in seeding.seed_files(eval_dir / v / s, name) if k is not None}
                    present[f"eval {v} @ {s} ({eval_dir / v / s}/s<k>/{name})"] = found
        for stage in ("sft", "rm", "dpo"):
            d = influence_dir / stage / v
            top = d / "top.jsonl"
            if top.is_file():
                vert.top[stage] = [r for r in fileio.read_jsonl(top) if isinstance(r, dict)]
                vert.influence[stage] = runinfo.read(d / "metrics.json") or {}
            else:
                missing.append(f"influence {stage} x {v} ({top})")
        out.append(vert)
    stages, per_stage = {}, {}
    for s in ("prepare", "validate", "curate", "sft", "rm", "ppo", "dpo"):
        per_stage[s] = seeding.read_per_seed(seeding.stage_seed_files(metrics_dir, s))
        if per_stage[s]:
            first = next(iter(per_stage[s].values()))
            stages[s] = seeding.pooled_metrics(per_stage[s], [k for k, x in first.items() if isinstance(x, (int, float))])
        if s in pipeline.TRAINED:
            present[f"training {s} ({metrics_dir / s}/s<k>.json)"] = {k for k in per_stage[s] if k is not None}
    expected = set().union(*present.values()) if present else set()
    missing += seeding.missing_seeds(present, expected)
    digest: dict[str, str] = {}
    cons, notes = contrasts.compute(out, eval_dir, previous, digest)
    return Results(out, stages, provenance(stages, out), missing, cons, notes, digest.get("digest", ""),
                   seeding.alignment(per_stage))


def provenance(stages: dict[str, dict], verticals: list[Vertical]) -> dict[str, Any]:
    from rlhf_trust.tracking import data_version, git_info

    params = Path("params.yaml")
    runs = {s: m.get("mlflow_run_id") for s, m in stages.items() if m.get("mlflow_run_id")}
    for v in verticals:
        for s, c in v.cells.items():
            if c.run_id:
                runs[f"eval_{v.name}@{s}"] = c.run_id
        for s, m in v.influence.items():
            if m.get("mlflow_run_id"):
                runs[f"influence_{s}@{v.name}"] = m["mlflow_run_id"]
    base = paths.model_dir("base") / "stage.json"
    spec = (_read(base) or {}).get("spec") if base.is_file() else None
    return {**git_info(), "data.version": data_version(), "model.spec": spec,
            "train_data.version": stages.get("curate", {}).get("train_data.version"),
            "smoke": spec == "tiny-gpt-neox",
            "params.sha256": hashlib.sha256(params.read_bytes()).hexdigest()[:16] if params.is_file() else None,
            "mlflow_runs": runs}
