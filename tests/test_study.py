"""`rlhf-trust study`: the grid, the state file, the pooled report (fast, on small fixtures), and
end to end on the tiny model: a 2-cell study on the submitit local executor (a killed cell is
re-submitted and completes) and on a local Ray cluster (slow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from rlhf_trust.cli import main
from rlhf_trust.errors import ConfigError, UserError
from rlhf_trust.study import gather, grid, state

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "params" / "smoke.yaml"
PARAMS = {"prepare": {"seed": 0}, "dpo": {"beta": 0.1}, "sft": {"learning_rate": 5e-3},
          "train": {"seeds": [0, 1, 2], "arms": ["ppo", "dpo"]}}


# --- the grid --------------------------------------------------------------------------------------

def test_grid_reads_dotted_keys_and_aliases():
    g = grid.parse_grid(["seeds=0,1", "dpo.beta=0.1,0.5", "arms=[ppo,dpo],dpo"], PARAMS)
    assert g == {"train.seeds": [0, 1], "dpo.beta": [0.1, 0.5], "train.arms": [["ppo", "dpo"], "dpo"]}
    assert grid.seed_key(g) == "train.seeds"


def test_grid_keys_of_the_params_file_on_main():
    raw = yaml.safe_load(SMOKE.read_text())
    g = grid.parse_grid(["dpo.beta=0.1,0.2", "sft.learning_rate=1e-3", "prepare.seed=0,1"], raw)
    cells = grid.cells(g)
    assert len(cells) == 4
    assert next(iter(cells)) == "dpo.beta-0.1_sft.learning_rate-0.001_prepare.seed-0"
    assert cells["dpo.beta-0.2_sft.learning_rate-0.001_prepare.seed-1"] == {
        "dpo.beta": 0.2, "sft.learning_rate": 1e-3, "prepare.seed": 1}
    assert grid.seed_key(g) is None and grid.seed_key(g, "prepare.seed") == "prepare.seed"
    arms = grid.parse_grid(["arms=[ppo],[dpo]"], raw)   # the alias names the params file's train.arms
    assert arms == {"train.arms": [["ppo"], ["dpo"]]}
    assert grid.apply(raw, {"train.arms": ["dpo"]})["train"]["arms"] == ["dpo"]


@pytest.mark.parametrize("args, problem", [
    (["nope=1"], "grid key 'nope' is not a key"),
    (["dpo.nope=1"], "grid key 'dpo.nope' is not a key"),
    (["seeds=0"], "alias of train.seeds"),   # not in this params file
    (["dpo.beta"], "is not key=v1,v2"),
    (["dpo.beta=1", "dpo.beta=2"], "given twice"),
])
def test_grid_refuses_keys_the_params_file_lacks(args, problem):
    raw = {"dpo": {"beta": 0.1}}
    with pytest.raises(UserError, match=problem) as e:
        grid.parse_grid(args, raw)
    assert e.value.exit_code == 2


def test_apply_sets_a_copy_and_wraps_a_scalar_for_a_list_key():
    out = grid.apply(PARAMS, {"train.seeds": 1, "dpo.beta": 0.3})
    assert out["train"]["seeds"] == [1] and out["dpo"]["beta"] == 0.3
    assert PARAMS["train"]["seeds"] == [0, 1, 2] and PARAMS["dpo"]["beta"] == 0.1
    with pytest.raises(ConfigError):
        grid.apply(PARAMS, {"dpo.gamma": 1})


def test_split_values_keeps_yaml_lists_whole():
    assert grid.split_values("[a, b],c, 0.1") == ["[a, b]", "c", "0.1"]


@pytest.mark.parametrize("argv, message", [
    (["--grid", "nope=1,2"], "grid key 'nope' is not a key of the params file"),
    (["--grid", "dpo.beta=0.1", "--executor", "pbs"], "unknown executor 'pbs' (known: local, slurm, ray)"),
    (["--grid", "dpo.beta=-1"], "params: dpo.beta: must be > 0"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert main(["study", "--params", str(SMOKE), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"rlhf-trust study: error: {message}"


# --- the state file ---------------------------------------------------------------------------------

def test_state_keeps_done_cells_and_resubmits_the_rest(tmp_path):
    cells = grid.cells({"dpo.beta": [0.1, 0.2, 0.3]})
    settings = {"name": "s", "params_file": "p.yaml", "targets": []}
    st = state.merge(None, {"dpo.beta": [0.1, 0.2, 0.3]}, cells, settings)
    assert state.to_submit(st, cells) == list(cells)
    a, b, c = cells
    state.mark(st, a, status=state.DONE)
    state.mark(st, b, status=state.FAILED, error="killed by signal 9")
    state.mark(st, c, status=state.RUNNING)   # its driver is gone
    state.save(tmp_path / "study.json", st)
    again = state.merge(state.load(tmp_path / "study.json"), {"dpo.beta": [0.1, 0.2, 0.3]}, cells, settings)
    assert state.to_submit(again, cells) == [b, c]
    assert again["cells"][b]["error"] == "killed by signal 9"
    with pytest.raises(UserError, match="choose another --name"):
        state.merge(again, {}, {}, {**settings, "targets": ["eval"]})


def test_a_cell_pushes_to_the_repository_s_local_remote(tmp_path):
    """A relative local remote (`../dvc-remote`) names the directory beside the repository, for a
    cell's worktree too (relative to the worktree it would point inside the study)."""
    from rlhf_trust.study.cell import _anchor_remotes, dvc

    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([dvc(), "init", "-q"], cwd=repo, check=True)
    subprocess.run([dvc(), "remote", "add", "-d", "local", "../dvc-remote"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "init"], cwd=repo, check=True)
    ws = tmp_path / "repo" / "studies" / "s" / "work" / "c"
    subprocess.run(["git", "worktree", "add", "-q", "--detach", str(ws)], cwd=repo, check=True)
    _anchor_remotes(repo, ws)
    listed = subprocess.run([dvc(), "remote", "list"], cwd=ws, check=True, capture_output=True, text=True).stdout
    assert listed.split()[:2] == ["local", str(tmp_path / "dvc-remote")]


# --- the pooled report -------------------------------------------------------------------------------

def _units(path: Path, values: list[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("unit_id,value\n" + "".join(f"u{i},{v}\n" for i, v in enumerate(values)))


def test_report_pools_seeds_within_groups_and_compares_groups(tmp_path):
    g = {"dpo.beta": [0.1, 0.5], "prepare.seed": [0, 1]}
    cells = grid.cells(g)
    st = state.merge(None, g, cells, {"name": "t", "params_file": "p", "targets": [], "seed_key": "prepare.seed"})
    base = [0.2, 0.4, 0.1, 0.3, 0.5, 0.2, 0.4, 0.3]
    for cid, ov in cells.items():
        if cid == "dpo.beta-0.5_prepare.seed-1":
            state.mark(st, cid, status=state.FAILED, error="rlhf-trust dpo: error: MLflow tracking server is unreachable")
            continue
        state.mark(st, cid, status=state.DONE)
        shift = 0.3 if ov["dpo.beta"] == 0.5 else 0.0
        _units(tmp_path / "cells" / cid / "eval/truthfulness/base/units.csv", base)
        for model, lift in (("sft", 0.1), ("dpo", 0.2 + shift)):
            _units(tmp_path / "cells" / cid / f"eval/truthfulness/{model}/units.csv",
                   [x + lift + 0.01 * ov["prepare.seed"] * (i % 3) for i, x in enumerate(base)])
    r = gather.build(st, tmp_path)
    assert r["not_done"] == ["dpo.beta-0.5_prepare.seed-1"]
    assert r["groups"] == {"dpo.beta=0.1": [0, 1], "dpo.beta=0.5": [0]}
    w = {(x["group"], x["contrast"]): x for x in r["within"]}
    assert w[("dpo.beta=0.1", "dpo-base")]["level"] == "two_level"      # 2 seeds: training variance pooled
    assert w[("dpo.beta=0.5", "dpo-base")]["level"] == "conditional"    # 1 seed left
    assert w[("dpo.beta=0.1", "sft-base")]["delta"] == pytest.approx(0.1 + 0.01 * 0.5 * 7 / 8, abs=1e-9)
    b = {(x["group"], x["model"]): x for x in r["between"]}
    assert b[("dpo.beta=0.5", "dpo")]["delta"] == pytest.approx(0.3, abs=0.01)
    assert b[("dpo.beta=0.5", "dpo")]["reference"] == "dpo.beta=0.1"
    md = (tmp_path / "report.md").read_text()
    assert md.startswith("# Study t: 3 of 4 cells done")
    assert "| dpo.beta-0.5_prepare.seed-1 | failed | rlhf-trust dpo: error: MLflow" in md
    assert json.loads((tmp_path / "report.json").read_text())["done"] == sorted(set(cells) - {"dpo.beta-0.5_prepare.seed-1"})


# --- end to end (tiny model) -------------------------------------------------------------------------

def tiny_params(path: Path, mirror: Path) -> None:
    """The smoke params cut further: one vertical, a handful of pairs and PPO episodes, the PPO and DPO arms."""
    p = yaml.safe_load(SMOKE.read_text())
    p["data"].update(source="mirror", mirror_dir=str(mirror))
    p["eval"]["verticals"] = {"truthfulness": p["eval"]["verticals"]["truthfulness"]}
    p["influence"]["verticals"] = ["truthfulness"]
    for s in ("sft", "rm", "dpo"):
        p[s]["max_train_pairs"] = 8
    p["ppo"].update(total_episodes=4, max_train_pairs=4)
    p["train"]["arms"] = ["ppo", "dpo"]
    path.write_text(yaml.safe_dump(p, sort_keys=False))


@pytest.fixture
def study_repo(tmp_path, mirror):
    """A clone of this repository (its committed code) with the raw data from the full mirror (the
    gate wants real dataset sizes) and a local MLflow store."""
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    tiny_params(repo / "params" / "study-test.yaml", mirror)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "RLHF_TRUST_ARTIFACT_ROOT": (tmp_path / "mlruns").as_uri(),
           "PYTHONPATH": str(repo / "src"), "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run([sys.executable, "-m", "rlhf_trust.cli", "data", "--params", "params/study-test.yaml"], cwd=repo,
                   env=env, check=True, capture_output=True)
    return repo, env


def study(repo: Path, env: dict, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "rlhf_trust.cli", "study", "--params", "params/study-test.yaml",
           "--grid", "prepare.seed=0,1", "--seed-key", "prepare.seed", "--target", "eval", *args]
    return subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_local_executor_runs_cells_in_parallel_and_resubmits_a_killed_one(study_repo):
    repo, env = study_repo
    proc = study(repo, env, "--name", "local")
    work = repo / "studies" / "local" / "work"
    pid_file = work / "prepare.seed-1.pid"
    t0 = time.time()
    while not ((work / "prepare.seed-0.pid").is_file() and pid_file.is_file()):   # both cells running at once
        assert proc.poll() is None and time.time() - t0 < 300, proc.stdout.read() if proc.poll() is not None else ""
        time.sleep(0.5)
    time.sleep(5)
    os.killpg(int(pid_file.read_text()), signal.SIGKILL)   # the cell's pipeline and its stages
    out, _ = proc.communicate(timeout=1200)
    assert proc.returncode == 1, out
    st = json.loads((repo / "studies/local/study.json").read_text())
    assert st["cells"]["prepare.seed-0"]["status"] == "done", out
    assert st["cells"]["prepare.seed-1"] == {**st["cells"]["prepare.seed-1"], "status": "failed",
                                             "error": "killed by signal 9"}
    assert "| prepare.seed-1 | failed | killed by signal 9 |" in (repo / "studies/local/report.md").read_text()

    again = study(repo, env, "--name", "local")
    out, _ = again.communicate(timeout=1200)
    assert again.returncode == 0, out
    assert "2 cells, 1 done, submitting 1 to local" in out
    st = json.loads((repo / "studies/local/study.json").read_text())
    assert st["cells"]["prepare.seed-1"]["attempts"] == 2 and st["cells"]["prepare.seed-0"]["attempts"] == 1
    assert all(c["status"] == "done" and "metrics/sft/s0.run.json" in c["mlflow_runs"] for c in st["cells"].values())
    report = json.loads((repo / "studies/local/report.json").read_text())
    assert report["groups"] == {"all cells": [0, 1]}
    assert {w["contrast"] for w in report["within"]} == {"sft-base", "ppo-base", "dpo-base", "ppo-sft", "dpo-sft"}
    assert all(w["level"] == "two_level" and w["n_seeds"] == 2 for w in report["within"])
    assert {w["vertical"] for w in report["within"]} == {"truthfulness"}   # the cells' own, not the checkout's


@pytest.mark.slow
def test_a_cell_whose_tracking_server_is_unreachable_fails_with_the_stage_s_line(study_repo):
    repo, env = study_repo
    env = {**env, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "RLHF_TRUST_TRACKING_TIMEOUT": "2"}
    cmd = [sys.executable, "-m", "rlhf_trust.cli", "study", "--params", "params/study-test.yaml",
           "--grid", "prepare.seed=3", "--target", "prepare", "--name", "down"]
    r = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    cell = json.loads((repo / "studies/down/study.json").read_text())["cells"]["prepare.seed-3"]
    assert cell["status"] == "failed"
    assert cell["error"] == ("rlhf-trust prepare: error: MLflow tracking server http://127.0.0.1:9 is unreachable "
                             "([Errno 111] Connection refused); start it, or unset MLFLOW_TRACKING_URI for the local store")
    assert "| prepare.seed-3 | failed | rlhf-trust prepare: error: MLflow tracking server" in \
        (repo / "studies/down/report.md").read_text()


@pytest.mark.slow
def test_ray_local_cluster_runs_a_two_cell_study(study_repo):
    repo, env = study_repo
    proc = study(repo, env, "--name", "ray", "--executor", "ray", "--ray-num-cpus", "2")
    t0 = time.time()
    while not ray_servers(proc.pid) and proc.poll() is None and time.time() - t0 < 300:
        time.sleep(1)
    time.sleep(5)
    # the local cluster's servers listen on the loopback address only
    sockets = subprocess.run(["ss", "-ltnpH"], check=True, capture_output=True, text=True).stdout.splitlines()
    theirs = [ln for ln in sockets if any(f"pid={p}," in ln for p in ray_servers(proc.pid))]
    assert theirs and all("127.0.0.1" in ln.split()[3] for ln in theirs), theirs
    out, _ = proc.communicate(timeout=1800)
    assert proc.returncode == 0, out
    st = json.loads((repo / "studies/ray/study.json").read_text())
    assert [c["status"] for c in st["cells"].values()] == ["done", "done"]
    # each cell's MLflow runs: its own stages up to eval of the one vertical, nothing of the checkout's
    assert all(set(c["mlflow_runs"]) >= {"metrics/prepare.run.json", "metrics/dpo/s0.run.json",
                                         "eval/truthfulness/dpo/s0/metrics.run.json"}
               and not any(k.startswith(("eval/bias", "influence/")) for k in c["mlflow_runs"])
               for c in st["cells"].values()), st["cells"]
    report = (repo / "studies/ray/report.md").read_text()
    assert report.startswith("# Study ray: 2 of 2 cells done")
    assert "| all cells | truthfulness | dpo-base |" in report and "| bias |" not in report
    assert not ray_servers(proc.pid)   # the local cluster's raylet and GCS server are stopped


def ray_servers(driver: int) -> set[str]:
    """The raylet and GCS server of the local cluster that process `driver` started (Ray names the
    session after its driver's pid)."""
    found = subprocess.run(["pgrep", "-f", rf"(raylet|gcs_server).*session_[0-9_-]+_{driver}\b"], check=False,
                           capture_output=True, text=True)
    return set(found.stdout.split())
