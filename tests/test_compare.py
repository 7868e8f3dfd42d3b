"""`rlhf-trust compare A B` on small git repos holding committed per-unit
outcomes: a run against itself, a committed copy with one model's units all worse, bad input."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from rlhf_trust import cli

MODELS = ("base", "sft", "ppo", "dpo")


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()


def write_units(vertical: str, model: str, values: list[float]) -> None:
    d = Path("eval") / vertical / model
    d.mkdir(parents=True, exist_ok=True)
    (d / "units.csv").write_text("unit_id,value\n" + "".join(f"q{i:03d}|s0,{v}\n" for i, v in enumerate(values)))


def commit(msg: str) -> str:
    git("add", "-A")
    git("commit", "-q", "-m", msg)
    return git("rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    git("init", "-q")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    Path("params.yaml").write_text("sft: {learning_rate: 0.0002}\ncurate: {enabled: false}\n")
    Path("data.dvc").write_text("outs:\n- md5: 0123456789abcdef0123456789abcdef.dir\n  path: data\n")
    for m in MODELS:   # truthfulness: binary units (higher is better); bias: shares (lower is better)
        write_units("truthfulness", m, [int((i * 7 + len(m)) % 3 == 0) for i in range(60)])
        write_units("bias", m, [round(((i * 13 + len(m)) % 10) / 10, 1) for i in range(60)])
    return commit("run A")


def worse_copy() -> str:
    """The same run with the DPO model's bias units all worse (agree share + 0.3)."""
    lines = Path("eval/bias/dpo/units.csv").read_text().splitlines()
    rows = [line.split(",") for line in lines[1:]]
    write_units("bias", "dpo", [min(1.0, float(v) + 0.3) for _, v in rows])
    Path("params.yaml").write_text("sft: {learning_rate: 0.0001}\ncurate: {enabled: false}\n")
    return commit("run B")


def test_a_run_compared_with_itself_is_all_zero(repo, capsys):
    assert cli.main(["compare", repo, "HEAD"]) == 0
    assert "are the same commit" in capsys.readouterr().out
    res = json.loads(Path("outputs/compare/compare.json").read_text())
    cells = [r for per in res["rows"].values() for r in per.values()]
    assert len(cells) == 8 and all(r["delta"] == 0 and not r["significant"] for r in cells)
    assert all(r["ci95"] == {"low": 0.0, "high": 0.0} and r["p_value"] == 1.0 for r in cells)
    assert res["params_changed"] == [] and res["regressions"] == []
    assert res["a"]["data.version"] == "0123456789abcdef0123456789abcdef.dir"
    assert "none" in Path("outputs/compare/compare.md").read_text()


def test_one_model_worse_is_a_conditional_regression_that_does_not_fail_the_gate(repo, capsys):
    """One seed per side: the unit-level test finds the change, but it cannot tell it from another
    training seed, so the cell is labelled conditional and the gate passes (seeded gate: test_compare_seeds)."""
    b = worse_copy()
    assert cli.main(["compare", repo, b]) == 0
    assert cli.main(["compare", repo, b, "--fail-on-regression"]) == 0
    assert "one seed per trained model" in capsys.readouterr().out
    res = json.loads(Path("outputs/compare/compare.json").read_text())
    r = res["rows"]["bias"]["dpo"]
    assert r["delta"] > 0.2 and r["significant"] and r["more_trustworthy"] is False
    assert r["level"] == "conditional" and r["conditional"] == "conditional on these checkpoints"
    assert res["regressions"] == [] and res["conditional_regressions"] == ["bias@dpo"]
    assert res["one_seed"] == [repo, b]
    assert not any(x["significant"] for v, per in res["rows"].items() for m, x in per.items() if (v, m) != ("bias", "dpo"))
    assert res["params_changed"] == [{"key": "sft.learning_rate", "a": 0.0002, "b": 0.0001}]
    md = Path("outputs/compare/compare.md").read_text()
    assert "bias@dpo" in md and "| bias | dpo | +0.2" in md and "sft.learning_rate" in md
    assert "bias@dpo" in Path("outputs/compare/compare.html").read_text()
    assert "conditional on these checkpoints" in md
    # the regression gate on the workspace (make check-trust BASELINE=...)
    assert cli.main(["compare", repo, "workspace", "--fail-on-regression"]) == 0
    assert "conditional (not gated): bias@dpo" in capsys.readouterr().out
    assert cli.main(["compare", b, "workspace", "--fail-on-regression"]) == 0
    assert "regressions: none" in capsys.readouterr().out


def test_dvc_experiment_ref_resolves(repo):
    b = worse_copy()
    git("update-ref", "refs/exps/ab/cdef0123/curated-tox", b)
    assert cli.main(["compare", repo, "curated-tox", "--fail-on-regression"]) == 0
    res = json.loads(Path("outputs/compare/compare.json").read_text())
    assert res["b"]["commit"] == b and res["conditional_regressions"] == ["bias@dpo"]


@pytest.mark.parametrize("case", ["unknown", "no_results", "verticals", "items", "model_missing", "empty"])
def test_bad_input_one_line_exit_2_nothing_written(repo, case, capsys):
    b = "HEAD"
    if case == "unknown":
        b = "no-such-rev"
    elif case == "no_results":
        git("rm", "-q", "-r", "eval")
        b = commit("no results")
    elif case == "verticals":
        write_units("ethics", "base", [0, 1])
        b = commit("extra vertical")
    elif case == "items":
        write_units("bias", "sft", [0.5] * 59)
        b = commit("fewer items")
    elif case == "model_missing":
        git("rm", "-q", "eval/bias/ppo/units.csv")
        b = commit("ppo missing")
    elif case == "empty":
        Path("eval/bias/ppo/units.csv").write_text("")
        b = commit("empty units")
    assert cli.main(["compare", repo, b, "--fail-on-regression"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rlhf-trust compare: error: ")
    assert not Path("outputs/compare").exists() and not Path("reports").exists()


def test_curated_side_shows_predicted_beside_measured_and_data_versions(repo):
    b = worse_copy()
    Path("metrics").mkdir()
    Path("metrics/curate.run.json").write_text(json.dumps({"train_data.version": "c" * 32}))
    Path("metrics/curate_manifest.json").write_text(json.dumps({
        "enabled": True, "mode": "drop_harmful", "n_in": 100, "n_out": 98, "train_data.version": "c" * 32,
        "sources": [{"stage": "dpo", "vertical": "bias", "harmful": "toward_change", "n_scored": 100}],
        "dropped": [{"id": "p1", "harm": 0.5, "scores": {"dpo/bias": -0.5}},
                    {"id": "p2", "harm": 0.3, "scores": {"dpo/bias": -0.3}}]}))
    b = commit("curated run")
    assert cli.main(["compare", repo, b]) == 0
    res = json.loads(Path("outputs/compare/compare.json").read_text())
    p = res["predicted"][0]
    # Koh and Liang: removing pair i changes the test loss by about -score_i / n
    assert p["predicted_test_loss_change"] == pytest.approx(0.8 / 100) and p["n_dropped"] == 2
    assert p["measured"]["delta"] == res["rows"]["bias"]["dpo"]["delta"]
    assert res["b"]["train_data.version"] == "c" * 32 and res["a"]["train_data.version"] is None
    md = Path("outputs/compare/compare.md").read_text()
    assert "Predicted (influence of the dropped pairs) vs measured" in md and "+0.008" in md and "c" * 32 in md


def test_mlflow_pipeline_run_id_resolves_to_its_commit(repo, capsys):
    import mlflow

    from rlhf_trust import tracking

    # the store compare reads, and an experiment of its own: earlier tests leave MLflow's global
    # tracking URI and active experiment pointing at their own (since deleted) stores
    mlflow.set_tracking_uri(tracking.tracking_uri())
    mlflow.set_experiment("compare-test")
    with mlflow.start_run(tags={"git.commit": repo, "git.dirty": "false"}) as clean:
        pass
    with mlflow.start_run(tags={"git.commit": repo, "git.dirty": "true"}) as dirty:
        pass
    assert cli.main(["compare", clean.info.run_id, "HEAD"]) == 0
    assert json.loads(Path("outputs/compare/compare.json").read_text())["a"]["commit"] == repo
    assert cli.main(["compare", dirty.info.run_id, "HEAD"]) == 2
    assert "dirty" in capsys.readouterr().err


def test_an_mlflow_run_whose_results_are_not_committed_is_refused(repo, capsys):
    """A smoke run, or a run whose commit holds other runs' results, is one line, never HEAD vs HEAD."""
    import mlflow

    from rlhf_trust import tracking

    mlflow.set_tracking_uri(tracking.tracking_uri())
    mlflow.set_experiment("compare-test-refuse")
    with mlflow.start_run(run_name="abc1234 0123abcd smoke",
                          tags={"git.commit": repo, "git.dirty": "false", "profile": "smoke"}) as smoke:
        pass
    with mlflow.start_run(tags={"git.commit": repo, "git.dirty": "false"}) as ours, \
            mlflow.start_run(nested=True) as child:
        pass
    Path("reports").mkdir()
    Path("reports/trust_summary.json").write_text(json.dumps({"provenance": {"mlflow_runs": {"eval": "f" * 32}}}))
    other = commit("results of another run")
    with mlflow.start_run(tags={"git.commit": other, "git.dirty": "false"}) as stale:
        pass
    assert cli.main(["compare", "HEAD", smoke.info.run_id]) == 2
    assert cli.main(["compare", "HEAD", stale.info.run_id]) == 2
    err = capsys.readouterr().err
    assert "is a smoke run" in err and "not the ones committed" in err
    assert not Path("outputs/compare/compare.json").exists()
    # the run whose stage run is named in the committed summary is accepted
    Path("reports/trust_summary.json").write_text(json.dumps({"provenance": {"mlflow_runs": {"eval": child.info.run_id}}}))
    mine = commit("results of our run")
    mlflow.tracking.MlflowClient().set_tag(ours.info.run_id, "git.commit", mine)
    assert cli.main(["compare", ours.info.run_id, "HEAD~1"]) == 0
