"""A finished pipeline's runs, read back through a real MLflow tracking server on loopback."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
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


PARAMS = """\
prepare: {max_train_pairs: 20, max_heldout_pairs: 5}
validate: {min_hh_pairs: 100}
model: {spec: tiny-gpt-neox}
sft: {max_length: 64, max_prompt_length: 32, batch_size: 4, max_train_pairs: 8, max_heldout_pairs: 4,
      logging_steps: 1, save_steps: 100, threads: 1, device: cpu}
eval:
  batch_size: 8
  threads: 1
  device: cpu
  bootstrap_samples: 100
  verticals: {ethics: {limit: 4, prompts: [benign], max_new_tokens: 4}}
report: {}
"""


@pytest.mark.slow
def test_pipeline_runs_through_the_rest_api(raw_data, fixture_rows, tmp_path, monkeypatch):
    """prepare, validate, base, sft, one eval cell and the report in a git checkout, then read back
    over REST: parent run name/params/headline metrics, datasets (log_input), the registered model
    and its tags, system metrics, settings as params, the source commit tag, run artifacts."""
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.delenv("RLHF_TRUST_PIPELINE_ID", raising=False)
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.1")  # tiny stages last ~1 s
    shutil.copytree(raw_data, tmp_path / "data")
    data_md5 = hashlib.md5(b"rest-test data").hexdigest()
    (tmp_path / "data.dvc").write_text(f"outs:\n- md5: {data_md5}.dir\n  path: data\n")
    (tmp_path / "params.yaml").write_text(PARAMS)
    (tmp_path / ".gitignore").write_text("/data/\n/outputs/\n/metrics/\n/eval/\n/reports/\n/mlflow.db\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "params.yaml", "data.dvc", ".gitignore"], check=True)
    subprocess.run([*git, "commit", "-qm", "test"], check=True)
    sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    for argv in (["prepare"], ["validate"], ["curate"], ["base"], ["sft"], ["eval", "--vertical", "ethics", "--model", "base"],
                 ["report"]):
        assert cli.main(argv) == 0, argv
    assert (tmp_path / "outputs/validated/manifest.json").is_file()
    assert (tmp_path / "reports/data_docs/index.html").is_file()

    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{db}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180   # its start-up (imports, migrations) is slow on a busy machine
        while True:
            try:
                urllib.request.urlopen(base + "/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail(f"mlflow server exited with {server.returncode} before answering /health")
                if time.monotonic() > deadline:
                    pytest.fail("mlflow server did not answer /health within 180 s")
                time.sleep(0.5)
        exps = get(base + "/api/2.0/mlflow/experiments/search", {"max_results": 10})["experiments"]
        exp_id = next(e["experiment_id"] for e in exps if e["name"] == "rlhf-trust")
        runs = get(base + "/api/2.0/mlflow/runs/search", {"experiment_ids": [exp_id], "max_results": 100})["runs"]
        def key(r):  # stage runs are "<stage> p<params hash>": the part before the hash
            kind = {t["key"]: t["value"] for t in r["data"].get("tags", [])}.get("kind")
            return r["info"]["run_name"] if kind == "pipeline" else r["info"]["run_name"].split(" ")[0]

        by_name = {key(r): r for r in runs}
        tags = {n: {t["key"]: t["value"] for t in r["data"].get("tags", [])} for n, r in by_name.items()}
        cell_hash = tags["eval_ethics@base"]["params.hash"][:6]
        assert by_name["eval_ethics@base"]["info"]["run_name"] == f"eval_ethics@base p{cell_hash}"
        metrics = {n: {m["key"]: m["value"] for m in r["data"].get("metrics", [])} for n, r in by_name.items()}
        params = {n: {p["key"]: p["value"] for p in r["data"].get("params", [])} for n, r in by_name.items()}

        # one parent for the whole pipeline, the report included: "<sha7> <data md5 8>"
        parent_name = f"{sha[:7]} {data_md5[:8]}"
        parents = [n for n in by_name if tags[n].get("kind") == "pipeline"]
        assert parents == [parent_name], parents
        parent_id = by_name[parent_name]["info"]["run_id"]
        stages = {"prepare", "validate", "base", "sft@s0", "eval_ethics@base", "report"}
        assert stages <= set(by_name)
        for stage in stages:
            assert by_name[stage]["info"]["status"] == "FINISHED"
            assert tags[stage]["mlflow.parentRunId"] == parent_id
            assert tags[stage]["mlflow.source.git.commit"] == sha == tags[stage]["git.commit"]
            assert tags[stage]["git.dirty"] == "false"  # the pipeline's own outputs do not count
        # the parent carries params.yaml and the report's headline numbers
        assert params[parent_name]["sft.max_train_pairs"] == "8" and params[parent_name]["model.spec"] == "tiny-gpt-neox"
        assert "ethics.base.false_positive_rate" in metrics[parent_name]
        # settings are params, not metrics
        assert params["eval_ethics@base"]["settings.limit"] == "4" and params["eval_ethics@base"]["seed"] == "0"
        assert not {"seed", "settings.limit"} & set(metrics["eval_ethics@base"])
        assert metrics["prepare"]["hh_train"] == 20 and metrics["prepare"]["bias"] == fixture_rows["bias"]

        # datasets: name, digest = content md5, source
        inputs = {n: [d["dataset"] for d in by_name[n].get("inputs", {}).get("dataset_inputs", [])]
                  for n in ("prepare", "sft@s0", "eval_ethics@base")}
        assert [(d["name"], d["digest"]) for d in inputs["prepare"]] == [("data", data_md5)]
        train = next(d for d in inputs["sft@s0"] if d["name"] == "hh_train")
        assert train["digest"] == hashlib.md5((tmp_path / "outputs/prepared/hh_train.jsonl").read_bytes()).hexdigest()
        assert "hh_train.jsonl" in train["source"]
        assert [d["name"] for d in inputs["eval_ethics@base"]] == ["ethics"]

        # system metrics on the training and eval runs. MLflow samples every 0.1 s here (set above) and
        # drops the sample in progress when a run ends, so a run shorter than one interval (the tiny eval
        # cell on a CPU with AMX: ~0.1 s) logs none; a run that lasted 0.5 s or more must have them
        lasted = {s: int(by_name[s]["info"]["end_time"]) - int(by_name[s]["info"]["start_time"])
                  for s in ("sft@s0", "eval_ethics@base")}
        long_runs = [s for s, ms in lasted.items() if ms >= 500]
        assert long_runs, lasted  # at least one run is checked
        for stage in long_runs:
            assert any(k.startswith("system/cpu_utilization") for k in metrics[stage]), (stage, metrics[stage])
        assert not any(k.startswith("system/") for k in metrics["prepare"])

        # the aligned model is registered, its version tagged with data version and commit
        models = get(base + "/api/2.0/mlflow/registered-models/search?max_results=10")["registered_models"]
        assert [m["name"] for m in models] == ["rlhf-trust-sft"]
        versions = get(base + "/api/2.0/mlflow/model-versions/search?filter=" + urllib.parse.quote("name = 'rlhf-trust-sft'"))
        mv = versions["model_versions"][0]
        mv_tags = {t["key"]: t["value"] for t in mv.get("tags", [])}
        assert mv["run_id"] == by_name["sft@s0"]["info"]["run_id"]
        assert mv_tags["git.commit"] == sha and mv_tags["data.version"] == f"{data_md5}.dir"
        arts = get(base + f"/api/2.0/mlflow/artifacts/list?run_id={by_name['sft@s0']['info']['run_id']}&path=model")
        assert any(f["path"].endswith("adapter_model.safetensors") for f in arts.get("files", []))
        arts = get(base + f"/api/2.0/mlflow/artifacts/list?run_id={by_name['validate']['info']['run_id']}")
        assert any(f["path"].startswith("data_docs") for f in arts.get("files", []))
    finally:
        server.terminate()
        server.wait(timeout=20)
