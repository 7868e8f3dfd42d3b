"""Team mode against real servers: PostgreSQL + SeaweedFS (S3) + `mlflow server`, all on 127.0.0.1.

The smoke pipeline (`make smoke`, params/smoke.yaml) runs with MLFLOW_TRACKING_URI at the server;
every stage's run, params, metrics, datasets and artifacts are read back through the REST API and
the artifacts listed in the bucket with boto3. `dvc push` to an S3 remote from one clone and
`dvc pull` into another reproduce data/. Credentials are planted secrets that must appear in no
store, artifact or log. Then the servers are stopped mid-test: a stage whose server dies finishes
its outputs and says so in one line; a stage whose server is down refuses in one line, exit 2;
`dvc push` to a dead S3 endpoint fails with DVC's one ERROR line. `make test-team` runs this alone.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from rlhf_trust import config, team, tracking

pytestmark = [pytest.mark.team, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# The whole module's hard stop. Measured: 10 min 41 s on 2 cores shared with another `make smoke`
# (smoke 9 min of it); servers ~40 s, DVC ~15 s, failure cases ~30 s.
BUDGET_S = 1500
PIPELINE = "team-test"
_START: list[float] = []  # when the servers fixture began


def left(cap: float) -> float:
    """A subprocess timeout: at most `cap`, and never past the module's budget."""
    remaining = BUDGET_S - (time.monotonic() - (_START[0] if _START else time.monotonic()))
    if remaining <= 5:
        pytest.fail(f"team test exceeded its {BUDGET_S} s budget")
    return min(cap, remaining)


def run(cmd: list[str], env: dict, cwd: Path, cap: float) -> subprocess.CompletedProcess:
    """Like subprocess.run, but a timeout ends the command's whole process group (make -> dvc -> stage)."""
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=left(cap))
    except subprocess.TimeoutExpired:
        team._killpg(p.pid, 5)
        out, err = p.communicate()
        pytest.fail(f"{' '.join(cmd)} ran past {cap:.0f} s (or the module's budget):\n{out[-2000:]}\n{err[-2000:]}")
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def api(base: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(base + path, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"{}")


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """The three servers, with planted secrets as credentials; always stopped at the end."""
    creds = {"AWS_ACCESS_KEY_ID": "AKPLANT" + secrets.token_hex(6).upper(),
             "AWS_SECRET_ACCESS_KEY": "s3-planted-" + secrets.token_hex(12),
             "PGPASSWORD": "pg-planted-" + secrets.token_hex(12)}
    _START.append(time.monotonic())
    s = team.Servers(state=tmp_path_factory.mktemp("team"))
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RLHF_TRUST_ROOT")}
    env.update(creds)
    try:
        s.start(env)
        env.update(s.client_env())
        env["RLHF_TRUST_PIPELINE_ID"] = PIPELINE
        yield s, env, creds
    finally:
        s.stop(remove_pg_outside_state=True, grace=3)


@pytest.fixture(scope="module")
def smoke(servers, mirror, tmp_path_factory):
    """`make smoke` in a throw-away worktree, tracked by the team server, on the full data (data/ filled
    from the mirror and checked against data.dvc first; make's `-o data` keeps it)."""
    _, env, _ = servers
    wt = tmp_path_factory.mktemp("smoke") / "wt"
    params = wt.parent / "mirror.yaml"
    params.write_text(f"data: {{source: mirror, mirror_dir: {mirror}}}\n")
    try:
        filled = run([str(BIN / "rlhf-trust"), "data", "--params", str(params)], env, ROOT, 300)
        assert filled.returncode == 0, filled.stderr
        r = run(["make", "-C", str(ROOT), "-o", "data", "smoke", f"SMOKE_DIR={wt}"], env, ROOT, 1200)
        yield wt, r
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(wt)], capture_output=True,
                       check=False, timeout=60)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], capture_output=True, check=False, timeout=60)


def _status(method: str, port: int, path: str, body: bytes | None = None) -> int:
    req = urllib.request.Request(f"http://{team.HOST}:{port}{path}", data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_storage_is_closed_to_anyone_without_the_credentials(servers):
    """Any local user reaches 127.0.0.1: SeaweedFS's filer and volume HTTP ports answer only JWT-signed
    requests, its gRPC ports only clients with the start's certificate, S3 only signed requests; the
    state and volume files are the user's only."""
    import socket
    import ssl
    import stat

    s, env, _ = servers
    assert stat.S_IMODE(s.state.stat().st_mode) == 0o700
    loose = [p for p in s.state.rglob("*") if p.is_file() and p.stat().st_mode & 0o077]
    assert not loose, loose
    bucket = f"/buckets/{team.BUCKET}/"
    for port in (s.weed_ports["filer.port"], s.weed_ports["volume.port"]):
        assert _status("GET", port, bucket) in (401, 403)                       # no listing
        assert _status("PUT", port, bucket + "planted.txt", b"planted") in (400, 401, 403)  # no upload
        assert _status("POST", port, bucket + "planted2.txt", b"planted") in (400, 401, 403)
    assert _status("GET", s.s3_port, f"/{team.BUCKET}") == 403                  # unsigned S3
    keys = [o["Key"] for o in s.s3_client(env).list_objects_v2(Bucket=team.BUCKET).get("Contents", [])]
    assert not any("planted" in k for k in keys)
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    for name, port in s.weed_ports.items():
        if not name.endswith(".grpc"):
            continue
        # gRPC without a client certificate
        with socket.create_connection((team.HOST, port), timeout=5) as raw, \
                pytest.raises((ssl.SSLError, ConnectionError)), ctx.wrap_socket(raw) as tls:
            tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            if not tls.recv(64):
                raise ConnectionError("closed")


def _stage_runs(base: str) -> list[dict]:
    exps = api(base, "/api/2.0/mlflow/experiments/search", {"max_results": 100})["experiments"]
    exp = next(e for e in exps if e["name"] == f"{tracking.EXPERIMENT}-smoke")   # `make smoke`'s own experiment
    runs = api(base, "/api/2.0/mlflow/runs/search", {
        "experiment_ids": [exp["experiment_id"]], "max_results": 1000,
        "filter": f"tags.`pipeline.id` = '{PIPELINE}'"})["runs"]
    return runs


def _section(stage: str) -> str:
    return "model" if stage == "base" else "eval" if stage.startswith("eval_") else stage


def test_smoke_pipeline_is_tracked_on_the_team_server(servers, smoke):
    s, env, creds = servers
    wt, r = smoke
    assert r.returncode == 0, f"make smoke failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    import yaml

    # the stages dvc.yaml defines now (dvc.lock also keeps entries of stages since renamed)
    dvc_stages = subprocess.run([str(Path(sys.executable).parent / "dvc"), "stage", "list", "--name-only"],
                                cwd=wt, capture_output=True, text=True, check=True).stdout.split()
    smoke = yaml.safe_load((wt / "params.yaml").read_text())
    # one MLflow run per cell: a training stage `<stage>@<k>` runs as `<stage>@s<k>`; eval@<v> runs one per
    # model and training seed (`eval_<v>@base`, `eval_<v>@<model>/s<k>`); influence@<s>-<v> one
    seeds = smoke["train"]["seeds"]
    cells = []
    for st in dvc_stages:
        name, _, item = st.partition("@")
        if name == "eval":
            cells += [f"eval_{item}@{m}" if m == "base" else f"eval_{item}@{m}/s{k}"
                      for m in smoke["eval"]["models"] for k in ([None] if m == "base" else seeds)]
        elif item.isdigit():
            cells.append(f"{name}@s{item}")
        else:
            cells.append(st)
    runs = _stage_runs(s.tracking_uri)
    parent = [x for x in runs if x["data"].get("tags") and
              {t["key"]: t["value"] for t in x["data"]["tags"]}.get("kind") == "pipeline"]
    stage_runs = [x for x in runs if x not in parent]
    assert len(parent) == 1
    # one finished run per DVC stage that ran, each a child of the pipeline's parent run
    names = sorted(x["info"]["run_name"].rsplit(" p", 1)[0] for x in stage_runs)  # "<cell> p<params hash>"
    assert names == sorted(cells), (names, dvc_stages)
    s3 = s.s3_client(env)
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=team.BUCKET, Prefix="mlflow/")
            for o in page.get("Contents", [])]
    by_run: dict[str, set[str]] = {}
    for k in keys:  # mlflow/<experiment>/<run>/artifacts/<path>
        parts = k.split("/")
        by_run.setdefault(parts[2], set()).add(parts[4])
    smoke_params = wt / "params.yaml"
    with_artifacts, with_datasets = set(), set()
    for rec in stage_runs:
        info, data = rec["info"], rec["data"]
        tags = {t["key"]: t["value"] for t in data["tags"]}
        stage = tags["stage"]
        assert info["status"] == "FINISHED", info
        assert tags["mlflow.parentRunId"] == parent[0]["info"]["run_id"]
        assert tags["git.commit"] and tags["data.version"] and tags["params.hash"]
        # params: exactly what the stage's params section (params/smoke.yaml) says
        expected = tracking.safe_params(config.load(_section(stage), smoke_params))
        if stage in ("sft", "rm", "ppo", "dpo") and tags.get("seed", "").isdigit():   # its cell's seed (sft@s<k>)
            expected["seed"] = tags["seed"]
        got = {p["key"]: p["value"] for p in data.get("params", [])}
        assert expected and {k: got.get(k) for k in expected} == expected, \
            (stage, {k: (v, got.get(k)) for k, v in expected.items() if got.get(k) != v})
        metrics = {m["key"] for m in data.get("metrics", [])}
        assert {"stage_wall_s", "stage_peak_rss_mb"} <= metrics, stage
        # datasets: every input a stage reads, with its content digest
        for d in rec.get("inputs", {}).get("dataset_inputs", []):
            assert d["dataset"]["digest"] and d["dataset"]["name"], (stage, d)
            with_datasets.add(stage)
        # artifacts: what the REST API lists is what the bucket holds
        listed = api(s.tracking_uri, f"/api/2.0/mlflow/artifacts/list?run_id={info['run_id']}").get("files", [])
        assert {f["path"] for f in listed} == by_run.get(info["run_id"], set()), stage
        assert info["artifact_uri"].startswith("mlflow-artifacts:/")
        if listed:
            with_artifacts.add(stage)
    # each stage's record beside its DVC metrics (<stem>.run.json) names its run on the server
    records = [*wt.glob("metrics/*.run.json"), *wt.glob("metrics/*/*.run.json"), *wt.glob("eval/*/*/*.run.json"),
               *wt.glob("eval/*/*/*/*.run.json"), *wt.glob("influence/*/*/*.run.json"), *wt.glob("reports/*.run.json")]
    # only the records this smoke run wrote: the worktree also holds the committed run's (other run ids)
    written_now = set(subprocess.run(["git", "ls-files", "-m", "-o"], cwd=wt, capture_output=True, text=True,
                                     check=True).stdout.split())
    records = [mj for mj in records if str(mj.relative_to(wt)) in written_now]
    assert len(records) >= len(cells) - 1  # every cell but `base` (no metrics) writes one
    for mj in records:
        written = json.loads(mj.read_text())
        got = api(s.tracking_uri, f"/api/2.0/mlflow/runs/get?run_id={written['mlflow_run_id']}")["run"]
        server_metrics = {m["key"]: m["value"] for m in got["data"].get("metrics", [])}
        assert server_metrics["stage_wall_s"] == pytest.approx(written["stage_wall_s"]), mj
    assert {"validate", "sft", "rm", "ppo", "dpo"} <= with_artifacts
    assert any(st.startswith("eval_") for st in with_artifacts) and "influence" in with_artifacts
    assert {"prepare", "validate", "sft", "rm", "dpo"} <= with_datasets
    # credentials only ever lived in the environment: not in the store, the artifacts or any log
    dump = run([team.pg_bin("pg_dump"), "-h", team.HOST, "-p", str(s.pg_port), "-U", team.PG_USER, team.PG_DB],
               env, ROOT, 60)
    assert dump.returncode == 0 and "stage_wall_s" in dump.stdout
    blobs = [s3.get_object(Bucket=team.BUCKET, Key=k)["Body"].read() for k in keys]
    logs = [r.stdout, r.stderr, (s.state / "mlflow.log").read_text(errors="replace")]
    for secret in creds.values():
        assert secret not in dump.stdout
        assert not any(secret.encode() in b for b in blobs)
        assert not any(secret in text for text in logs)
        assert not any(secret.encode() in f.read_bytes() for f in wt.rglob("*") if f.is_file()
                       and ".git" not in f.parts and f.stat().st_size < 50_000_000)


def test_dvc_push_to_s3_then_pull_into_a_fresh_clone(servers, mirror, tmp_path):
    s, env, creds = servers
    env = {**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}
    one, two = tmp_path / "one", tmp_path / "two"
    assert run(["git", "clone", "-q", str(ROOT), str(one)], env, tmp_path, 60).returncode == 0
    (tmp_path / "mirror.yaml").write_text(f"data: {{mirror_dir: {mirror}}}\n")
    r = run([str(BIN / "rlhf-trust"), "data", "--params", str(tmp_path / "mirror.yaml")], env, one, 120)
    assert r.returncode == 0, r.stderr
    # what a team commits: the remote's URL; endpoint and credentials come from the environment
    for cmd in (["dvc", "remote", "add", "-d", "team", f"s3://{team.BUCKET}/dvc"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qam", "team remote"]):
        assert run(cmd, env, one, 60).returncode == 0
    push = run(["dvc", "push", "data.dvc"], env, one, 120)
    assert push.returncode == 0, push.stderr
    s3 = s.s3_client(env)
    pushed = [o["Key"] for o in s3.list_objects_v2(Bucket=team.BUCKET, Prefix="dvc/").get("Contents", [])]
    n_files = sum(1 for f in (one / "data").rglob("*") if f.is_file())
    assert len(pushed) == n_files + 1  # every file plus the directory listing (.dir)
    assert run(["git", "clone", "-q", str(one), str(two)], env, tmp_path, 60).returncode == 0
    pull = run(["dvc", "pull", "data.dvc"], env, two, 120)
    assert pull.returncode == 0, pull.stderr
    assert run(["diff", "-r", str(one / "data"), str(two / "data")], env, tmp_path, 60).returncode == 0
    status = run(["dvc", "status", "data.dvc"], env, two, 60)
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout
    cloud = run(["dvc", "status", "--cloud", "data.dvc"], env, two, 60)
    assert cloud.returncode == 0 and "in sync" in cloud.stdout, cloud.stdout
    for secret in creds.values():
        assert secret not in (one / ".dvc" / "config").read_text() + push.stdout + push.stderr + pull.stderr


def test_server_dying_mid_stage_keeps_the_outputs(servers, smoke, tmp_path, monkeypatch, capsys):
    """A real TRL stage (SFT) whose tracking server is stopped after its first step."""
    from transformers import TrainerCallback

    from rlhf_trust.train import sft, stage_cli

    s, env, _ = servers
    wt, _ = smoke
    for rel in ("outputs/prepared", "outputs/curated", "outputs/validated", "outputs/models/base", "params.yaml",
                "data.dvc"):
        src = wt / rel
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, tmp_path / rel)
    monkeypatch.chdir(tmp_path)
    session_uri = os.environ["MLFLOW_TRACKING_URI"]  # conftest's sqlite store, for the tests after this one
    for k in ("MLFLOW_TRACKING_URI", "RLHF_TRUST_PIPELINE_ID"):
        monkeypatch.setenv(k, env[k])

    class StopServerAfterFirstStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 1:
                s.stop_one("mlflow", 5)

    t0 = time.monotonic()
    try:
        rc = stage_cli.run_cli("sft", argparse.Namespace(params="params.yaml"),
                            lambda cfg, layout: sft.run(cfg, layout, callbacks=[StopServerAfterFirstStep()]),
                            lambda layout: [])
    finally:
        import mlflow

        mlflow.set_tracking_uri(session_uri)  # the process-wide URI the stage set points at a dead server
    assert rc == 0 and "mlflow" not in s.pgids
    assert time.monotonic() - t0 < 120  # no minutes of MLflow retries
    assert (tmp_path / "outputs/models/sft/s0/stage.json").is_file()
    assert (tmp_path / "outputs/models/sft/s0/adapter_model.safetensors").is_file()
    assert "heldout_chosen_nll_per_token" in json.loads((tmp_path / "metrics/sft/s0.json").read_text())
    assert json.loads((tmp_path / "metrics/sft/s0.run.json").read_text())["mlflow_run_id"]
    err = capsys.readouterr().err.splitlines()
    said = [line for line in err if re.search(r"fail|error|refused|unreachable|retry", line, re.IGNORECASE)]
    assert len(said) == 1, said  # the stage's one line; none from MLflow's background loggers
    assert said[0].startswith("rlhf-trust sft: warning: MLflow logging to " + s.tracking_uri + " failed")
    assert "outputs are written" in said[0]


def test_stage_refuses_when_the_server_is_down(servers, smoke, tmp_path):
    s, env, _ = servers
    s.stop_one("mlflow", 5)  # (already stopped by the mid-stage test when it ran first)
    wt, _ = smoke
    shutil.copytree(wt / "data", tmp_path / "data")
    shutil.copy2(wt / "params.yaml", tmp_path / "params.yaml")
    t0 = time.monotonic()
    r = run([str(BIN / "rlhf-trust"), "prepare"], env, tmp_path, 60)
    assert r.returncode == 2
    assert time.monotonic() - t0 < 30
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"rlhf-trust prepare: error: MLflow tracking server {s.tracking_uri} is unreachable")
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "metrics").exists()  # no work started


def test_dvc_push_to_a_dead_s3_endpoint_fails_in_one_line(servers, tmp_path):
    s, env, _ = servers
    env = {**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    (repo / "data" / "x.txt").write_text("x\n")
    for cmd in (["dvc", "init", "-q", "--no-scm"], ["dvc", "add", "-q", "data"],
                ["dvc", "remote", "add", "-d", "team", f"s3://{team.BUCKET}/dead"]):
        assert run(cmd, env, repo, 60).returncode == 0, cmd
    s.stop_one("s3", 3)
    t0 = time.monotonic()
    r = run(["dvc", "push", "data.dvc"], env, repo, 120)
    assert r.returncode != 0
    assert time.monotonic() - t0 < 90
    errors = [line for line in (r.stdout + r.stderr).splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and s.s3_endpoint in errors[0], r.stderr
