"""One MLflow run per stage: provenance tags, metrics written once, FAILED on error, no secrets."""

from __future__ import annotations

import hashlib
import json

import pytest

from rlhf_trust import tracking
from rlhf_trust.config import PrepareConfig
from rlhf_trust.errors import UserError


def _client():
    import mlflow

    return mlflow.tracking.MlflowClient(tracking.tracking_uri())


def test_finished_run_has_tags_params_and_metrics(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.dvc").write_text("outs:\n- md5: 0123456789abcdef0123456789abcdef.dir\n  path: data\n")
    (tmp_path / "in.jsonl").write_text('{"a": 1}\n')
    cfg = PrepareConfig(seed=7)

    def body(sr):
        sr.set_tags({"extra": "yes"})
        return {"n": 3, "acc": 0.5, "nested": {"x": 1.5}, "label": "not a number"}

    metrics = tracking.track_stage("unit", body, cfg=cfg, inputs=["in.jsonl"], metrics_path="m/unit.json")
    written = json.loads((tmp_path / "m/unit.json").read_text())
    assert written["stage_wall_s"] >= 0 and written["stage_peak_rss_mb"] > 10
    assert "stage_wall_s" not in metrics
    assert written["acc"] == 0.5 and written["nested"] == {"x": 1.5} and written["mlflow_run_id"]
    run = _client().get_run(written["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "unit"
    t = run.data.tags
    assert t["data.version"] == "0123456789abcdef0123456789abcdef.dir"
    assert t["input.in.jsonl.md5"] == hashlib.md5(b'{"a": 1}\n').hexdigest()
    assert t["params.hash"] and t["git.commit"] and t["git.dirty"] in ("true", "false")
    assert t["version.torch"] and t["version.mlflow"] and t["extra"] == "yes"
    assert run.data.params["seed"] == "7"
    assert {k: v for k, v in run.data.metrics.items() if not k.startswith("stage_")} == {
        "n": 3.0, "acc": 0.5, "nested.x": 1.5}
    assert run.data.metrics["stage_wall_s"] >= 0 and run.data.metrics["stage_peak_rss_mb"] > 10
    assert metrics["label"] == "not a number"


def test_failed_run_is_marked_failed_and_writes_no_metrics(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def body(sr):
        raise UserError("boom")

    with pytest.raises(UserError):
        tracking.track_stage("failing-stage", body, metrics_path="m/f.json")
    assert not (tmp_path / "m/f.json").exists()
    runs = _client().search_runs(
        [_client().get_experiment_by_name(tracking.EXPERIMENT).experiment_id],
        filter_string="attributes.run_name = 'failing-stage'")
    assert runs and runs[0].info.status == "FAILED"


def test_secrets_are_never_logged(tmp_path, monkeypatch):
    from dataclasses import dataclass

    monkeypatch.chdir(tmp_path)

    @dataclass
    class WithKey:
        api_key: str = "sk-secret"
        threshold: float = 0.5

    m = tracking.track_stage("secret-stage", lambda sr: {"ok": 1}, cfg=WithKey(), metrics_path="m.json")
    run = _client().get_run(json.loads((tmp_path / "m.json").read_text())["mlflow_run_id"])
    assert "api_key" not in run.data.params and run.data.params["threshold"] == "0.5"
    assert m == {"ok": 1}


def test_tracking_uri_is_anchored_at_the_repo_root(monkeypatch, tmp_path):
    from rlhf_trust import paths

    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.delenv("RLHF_TRUST_ROOT")
    paths.repo_root.cache_clear()
    exp = tmp_path / "proj" / ".dvc" / "tmp" / "exps" / "tmpabc"
    exp.mkdir(parents=True)
    monkeypatch.chdir(exp)
    try:
        assert tracking.tracking_uri() == f"sqlite:///{tmp_path / 'proj' / 'mlflow.db'}"
    finally:
        paths.repo_root.cache_clear()


def test_stage_runs_of_one_pipeline_nest_under_one_parent(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RLHF_TRUST_PIPELINE_ID", "unit-pipeline-42")
    a = tracking.track_stage("stage-a", lambda sr: {"x": 1}, metrics_path="a.json")
    b = tracking.track_stage("stage-b", lambda sr: {"x": 2}, metrics_path="b.json")
    del a, b
    c = _client()
    exp = c.get_experiment_by_name(tracking.EXPERIMENT).experiment_id
    parents = c.search_runs([exp], filter_string="tags.`pipeline.id` = 'unit-pipeline-42' and tags.kind = 'pipeline'")
    assert len(parents) == 1
    children = c.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'")
    assert sorted(r.info.run_name for r in children) == ["stage-a", "stage-b"]
