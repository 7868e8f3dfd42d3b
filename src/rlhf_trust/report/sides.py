"""One side of `rlhf-trust compare`: a git revision, a DVC experiment, an MLflow pipeline run id, or
the workspace; read from git alone (`git show`), so any committed run can be compared.

A side is its per-unit outcomes (eval/<vertical>/<model>/units.csv, or one per training seed k in
eval/<vertical>/<model>/s<k>/units.csv; a cell without a seed level is one seed), its report's provenance and
vertical directions (reports/trust_summary.json), its data versions (data.dvc md5, the curated
HH set's md5 in metrics/curate.run.json), its curate manifest and its params.yaml.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf_trust.errors import DataError, UserError
from rlhf_trust.report import paired, pooled

WORKSPACE = ("workspace", ".")
UNITS = re.compile(r"^eval/([^/]+)/([^/]+)/units\.csv$")
SEED_UNITS = re.compile(r"^eval/([^/]+)/([^/]+)/s(\d+)/units\.csv$")


@dataclass
class Side:
    label: str                 # what the user typed
    ref: str                   # commit sha or "workspace"
    units: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)   # (vertical, model)
    # every seed's units per cell: {seed: units}; a cell without a seed level is {pooled.SHARED: units}.
    # `units` holds the cell's one evaluation, or its lowest seed's (to check both sides' items)
    seeds: dict[tuple[str, str], dict[Any, dict[str, float]]] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    data_version: str | None = None
    train_data_version: str | None = None
    manifest: dict[str, Any] = field(default_factory=dict)

    def higher_is_better(self, vertical: str) -> bool:
        v = (self.summary.get("verticals") or {}).get(vertical)
        if isinstance(v, dict) and isinstance(v.get("higher_is_better"), bool):  # a string "false" is truthy
            return v["higher_is_better"]
        from rlhf_trust import evals

        return evals.get(vertical).higher_is_better


def git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def resolve(label: str) -> str:
    """Commit sha of a git revision, DVC experiment name (refs/exps/.../<name>) or MLflow run id."""
    if label in WORKSPACE:
        return "workspace"
    sha = git("rev-parse", "--verify", "--quiet", f"{label}^{{commit}}")
    if sha:
        return sha.strip()
    refs = git("for-each-ref", "--format=%(refname) %(objectname)", "refs/exps") or ""
    hits = [line.split()[1] for line in refs.splitlines() if line.split()[0].rsplit("/", 1)[-1] == label]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise UserError(f"'{label}' names {len(hits)} DVC experiments; pass a commit instead")
    if re.fullmatch(r"[0-9a-f]{32}", label):
        return _from_mlflow(label)
    raise UserError(f"unknown revision, experiment or MLflow run: '{label}'")


def _from_mlflow(run_id: str) -> str:
    from rlhf_trust import tracking

    tracking.configure_env()
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = tracking.tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        tags = mlflow.get_run(run_id).data.tags
    except MlflowException:
        raise UserError(f"unknown revision, experiment or MLflow run: '{run_id}'") from None
    except tracking.store_errors() as e:  # a corrupt mlflow.db
        raise UserError(f"MLflow tracking store {tracking.redact(uri)} is unusable: "
                        f"{tracking.redact(str(e).strip().splitlines()[0][:200])}") from None
    if tags.get("dvc.exp_name"):
        try:
            return resolve(tags["dvc.exp_name"])
        except UserError:
            pass
    commit = tags.get("git.commit", "")
    if tags.get("profile") == "smoke" or tags.get("mlflow.runName", "").endswith(" smoke"):
        raise UserError(f"MLflow run {run_id} is a smoke run (random tiny model, a throw-away worktree): "
                        "its results are not in git or DVC")
    if tags.get("git.dirty") == "true" or not git("rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"):
        raise UserError(f"MLflow run {run_id} ran on a dirty or unknown commit ({commit[:12] or '?'}); "
                        "its results are not in git: commit them or pass the experiment name")
    committed = set((_json(_read(commit, "reports/trust_summary.json")).get("provenance") or {})
                    .get("mlflow_runs", {}).values())
    if committed and not committed & _run_family(mlflow, run_id):
        raise UserError(f"MLflow run {run_id}'s results are not the ones committed at {commit[:12]} (those come "
                        "from other runs): commit its results or pass the experiment name")
    return commit


def _run_family(mlflow: Any, run_id: str) -> set[str]:
    """The run and, for a pipeline's parent run, its stage runs."""
    client = mlflow.tracking.MlflowClient()
    exp = client.get_run(run_id).info.experiment_id
    children = client.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'", max_results=1000)
    return {run_id, *(r.info.run_id for r in children)}


def _read(ref: str, path: str) -> str | None:
    if ref == "workspace":
        p = Path(path)
        return p.read_text(encoding="utf-8") if p.is_file() else None
    return git("show", f"{ref}:{path}")


def _list_units(ref: str) -> list[str]:
    if ref == "workspace":
        return sorted(p.as_posix() for pat in ("*/*/units.csv", "*/*/s*/units.csv") for p in Path("eval").glob(pat))
    return (git("ls-tree", "-r", "--name-only", ref, "--", "eval") or "").splitlines()


def _json(text: str | None) -> dict:
    try:
        obj = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    return obj if isinstance(obj, dict) else {}


def load(label: str) -> Side:
    import yaml

    ref = resolve(label)
    side = Side(label, ref)
    for path in _list_units(ref):
        m = UNITS.match(path) or SEED_UNITS.match(path)
        if m:
            seed = int(m.group(3)) if m.re is SEED_UNITS else pooled.SHARED
            units = paired.parse_units(_read(ref, path) or "", f"{label}:{path}")
            side.seeds.setdefault((m.group(1), m.group(2)), {})[seed] = units
    for key, per in side.seeds.items():
        if len(per) > 1:   # a seed level wins over a stale file without one
            per.pop(pooled.SHARED, None)
        side.units[key] = per[min(per, key=lambda s: -1 if s is pooled.SHARED else s)]
    if not side.units:
        raise DataError(f"{label}: no results (no eval/<vertical>/<model>/units.csv at {ref[:12]})")
    side.summary = _json(_read(ref, "reports/trust_summary.json"))
    try:
        side.params = yaml.safe_load(_read(ref, "params.yaml") or "") or {}
    except yaml.YAMLError:
        side.params = {}
    dvc = _read(ref, "data.dvc") or ""
    md5 = re.search(r"md5:\s*([0-9a-f]{32}(?:\.dir)?)", dvc)
    side.data_version = md5.group(1) if md5 else None
    run = _json(_read(ref, "metrics/curate.run.json"))
    side.manifest = _json(_read(ref, "metrics/curate_manifest.json"))
    side.train_data_version = run.get("train_data.version") or side.manifest.get("train_data.version")
    return side


def flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def params_diff(a: Side, b: Side) -> list[tuple[str, Any, Any]]:
    fa, fb = flat(a.params), flat(b.params)
    return [(k, fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]
