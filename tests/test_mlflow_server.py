"""A finished pipeline's runs, read back through a real MLflow tracking server on loopback."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from rlhf_trust import cli


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"{}")


@pytest.mark.slow
def test_pipeline_runs_through_the_rest_api(shared_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.setenv("RLHF_TRUST_PIPELINE_ID", "rest-test")
    shutil.copytree(shared_data, tmp_path / "data")
    (tmp_path / "params.yaml").write_text("prepare: {max_train_pairs: 20, max_heldout_pairs: 5}\n"
                                          "validate: {min_hh_pairs: 1000}\n")
    assert cli.main(["prepare"]) == 0
    assert cli.main(["validate"]) == 0
    assert (tmp_path / "outputs/validated/manifest.json").is_file()
    assert (tmp_path / "reports/data_docs/index.html").is_file()

    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{db}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(base + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not answer /health within 60 s")
        exps = get(base + "/api/2.0/mlflow/experiments/search", {"max_results": 10})["experiments"]
        exp_id = next(e["experiment_id"] for e in exps if e["name"] == "rlhf-trust")
        runs = get(base + "/api/2.0/mlflow/runs/search", {
            "experiment_ids": [exp_id], "filter": "tags.`pipeline.id` = 'rest-test'"})["runs"]
        by_name = {r["info"]["run_name"]: r for r in runs}
        assert {"prepare", "validate", "pipeline rest-test"} <= set(by_name)
        for stage in ("prepare", "validate"):
            run = by_name[stage]
            assert run["info"]["status"] == "FINISHED"
            tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
            assert tags["mlflow.parentRunId"] == by_name["pipeline rest-test"]["info"]["run_id"]
            assert tags["git.commit"] and "data.version" in tags
        metrics = {m["key"]: m["value"] for m in by_name["prepare"]["data"]["metrics"]}
        assert metrics["hh_train"] == 20 and metrics["bias"] == 1152
        arts = get(base + f"/api/2.0/mlflow/artifacts/list?run_id={by_name['validate']['info']['run_id']}")
        assert any(f["path"].startswith("data_docs") for f in arts.get("files", []))
    finally:
        server.terminate()
        server.wait(timeout=20)
