"""One MLflow run per stage: provenance tags, metrics written once, FAILED on error, no secrets."""

from __future__ import annotations

import hashlib
import json

import pytest

from rlhf_trust import runinfo, tracking
from rlhf_trust.config import PrepareConfig
from rlhf_trust.errors import UserError


def t_hash(cfg):
    from rlhf_trust.config import params_hash

    return params_hash(cfg)


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
    # the DVC metrics file holds the comparable numbers only; costs, ids and the rest: unit.run.json
    assert json.loads((tmp_path / "m/unit.json").read_text()) == {"n": 3, "acc": 0.5}
    info = json.loads((tmp_path / "m/unit.run.json").read_text())
    assert info["stage_wall_s"] >= 0 and info["stage_peak_rss_mb"] > 10 and info["mlflow_run_id"]
    assert info["nested"] == {"x": 1.5} and info["label"] == "not a number"
    written = runinfo.read(tmp_path / "m/unit.json")
    assert "stage_wall_s" not in metrics
    assert written["acc"] == 0.5 and written["nested"] == {"x": 1.5} and written["mlflow_run_id"]
    run = _client().get_run(written["mlflow_run_id"])
    # the name tells two runs of one stage apart: stage + the hash of the settings it ran with
    assert run.info.status == "FINISHED" and run.info.run_name == f"unit p{t_hash(cfg)[:6]}"
    t = run.data.tags
    assert t["data.version"] == "0123456789abcdef0123456789abcdef.dir"
    assert t["input.in.jsonl.md5"] == hashlib.md5(b'{"a": 1}\n').hexdigest()
    assert t["params.hash"] and t["git.commit"] and t["git.dirty"] in ("true", "false")
    assert t["version.torch"] and t["version.mlflow"] and t["extra"] == "yes"
    assert run.data.params["seed"] == "7" and run.data.params["label"] == "not a number"
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
    run = _client().get_run(runinfo.read(tmp_path / "m.json")["mlflow_run_id"])
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
    # the parent spans its pipeline: it ends when the last stage does
    parent = c.get_run(parents[0].info.run_id).info
    assert parent.end_time >= max(r.info.end_time for r in children) > parent.start_time


def test_a_smoke_run_has_its_own_experiment_and_registered_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RLHF_TRUST_PROFILE", "smoke")
    seen = {}
    tracking.track_stage("smoke-stage", lambda sr: seen.setdefault("run", sr.run_id) and {"x": 1},
                         metrics_path="a.json")
    c = _client()
    assert tracking.experiment_name() == "rlhf-trust-smoke"
    assert c.get_experiment(c.get_run(seen["run"]).info.experiment_id).name == "rlhf-trust-smoke"
    assert tracking.registered_model_name("sft") == "rlhf-trust-smoke-sft"
    monkeypatch.delenv("RLHF_TRUST_PROFILE")
    assert tracking.registered_model_name("sft") == "rlhf-trust-sft"


def test_settings_and_costs_stay_out_of_the_dvc_metrics():
    rec = {"headline": "leakage_rate", "leakage_rate": 0.3, "leakage_rate_ci95": {"low": 0.1, "high": 0.5},
           "leakage_rate_n": 14, "n_samples": 14, "refusal_rate": 0.1, "seed": 0, "settings": {"limit": 2},
           "wall_s": 3.2, "peak_rss_mb": 900.0, "model_calls": 14, "mlflow_run_id": "abc"}
    dvc_metrics, info = runinfo.split(rec)
    assert dvc_metrics == {"leakage_rate": 0.3, "leakage_rate_ci95": {"low": 0.1, "high": 0.5},
                           "leakage_rate_n": 14, "n_samples": 14}
    assert {"seed", "settings", "wall_s", "peak_rss_mb", "mlflow_run_id", "refusal_rate"} <= set(info)
    assert runinfo.flat_settings(info) == {"headline": "leakage_rate", "seed": "0", "settings.limit": "2",
                                           "mlflow_run_id": "abc"}
    plain, rest = runinfo.split({"train_loss_last": 1.2, "train_s": 4.0, "resumed_from_step": 0, "seed": 1})
    assert plain == {"train_loss_last": 1.2} and set(rest) == {"train_s", "resumed_from_step", "seed"}
    assert runinfo.split({"spearman": 0.5, "n_train": 8, "score_max": 3.0}, ("spearman", "n_train"))[0] == {
        "spearman": 0.5, "n_train": 8}


def test_a_run_whose_logging_failed_still_leaves_no_active_run(tmp_path, monkeypatch):
    """After a logging failure (a dead tracking server) the stage's run is popped off MLflow's
    active-run stack, so the next in-process stage (tests, notebooks) can start its own."""
    import mlflow

    monkeypatch.chdir(tmp_path)

    def body(sr):
        sr.logging_failed = "connection refused"  # what _guard records when the server is gone
        return {"n": 1}

    tracking.track_stage("unit", body, metrics_path="m/unit.json")
    assert mlflow.active_run() is None
    assert tracking.track_stage("unit", lambda sr: {"n": 2}, metrics_path="m/unit.json") == {"n": 2}
