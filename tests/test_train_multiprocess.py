"""A training stage under `accelerate launch` with two processes (DDP over gloo, on CPU): the path a
study's multi-GPU cell takes (`rlhf-trust study --gpus-per-cell N`). The stage command relaunches
itself when $RLHF_TRUST_PROCESSES > 1; rank 0 alone writes the model, the metrics and the MLflow run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from train_support import make_layout

from rlhf_trust.cli import accelerate_argv

ROOT = Path(__file__).resolve().parents[1]
CPU2 = ROOT / "configs" / "accelerate_cpu2.yaml"


def test_only_training_stages_relaunch_and_only_once():
    env = {"RLHF_TRUST_PROCESSES": "2", "RLHF_TRUST_ACCELERATE_CONFIG": str(CPU2)}
    argv = accelerate_argv(["dpo", "--params", "p.yaml"], env)
    assert argv[1:] == ["-m", "accelerate.commands.launch", "--num_processes", "2", "--config_file", str(CPU2),
                        "-m", "rlhf_trust.cli", "dpo", "--params", "p.yaml"]
    assert accelerate_argv(["eval", "--vertical", "bias"], env) is None          # not a training stage
    assert accelerate_argv(["sft"], {**env, "RANK": "1"}) is None                # already a launched rank
    assert accelerate_argv(["sft"], {"RLHF_TRUST_PROCESSES": "1"}) is None
    assert accelerate_argv(["sft"], {}) is None


@pytest.mark.slow
def test_sft_under_two_processes_writes_the_model_once(tmp_path):
    layout = make_layout(tmp_path / "tmp", n_train=8)
    shutil.copytree(layout.data_dir, tmp_path / "outputs" / "curated")
    shutil.copytree(layout.model("base"), tmp_path / "outputs/models/base")
    (tmp_path / "params.yaml").write_text(
        "sft:\n  max_length: 96\n  max_prompt_length: 48\n  batch_size: 4\n  logging_steps: 1\n  threads: 1\n"
        "  device: cpu\n")
    env = {**os.environ, "RLHF_TRUST_PROCESSES": "2", "RLHF_TRUST_ACCELERATE_CONFIG": str(CPU2),
           "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run([sys.executable, "-m", "rlhf_trust.cli", "sft", "--seed", "0", "--params", "params.yaml"],
                       check=False,
                       cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    import json

    info = json.loads((tmp_path / "metrics/sft/s0.run.json").read_text())
    # 8 pairs, 4 per process: one step of 2 x 4 under DDP (one process alone takes two)
    assert info["train_steps"] == 1, info
    assert info["mlflow_run_id"] and json.loads((tmp_path / "metrics/sft/s0.json").read_text())["train_pairs"] == 8
    assert (tmp_path / "outputs/models/sft/s0/stage.json").is_file()
    # written once, by rank 0: no second copy or temp directory beside it
    assert sorted(p.name for p in (tmp_path / "outputs/models").iterdir()) == ["base", "sft"]
    assert sorted(p.name for p in (tmp_path / "outputs/models/sft").iterdir()) == ["s0"]
