"""Broken stores and checkouts get one line and exit 2, not a traceback: a corrupt or random-bytes
mlflow.db (SQLAlchemy's DatabaseError), and a copy of the project without .git (DVC's chained errors)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf_trust import cli

ROOT = Path(__file__).resolve().parents[1]


def _stage(cmd: list[str], cwd: Path, db: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{db}", "RLHF_TRUST_ROOT": str(cwd)}
    return subprocess.run([sys.executable, "-m", "rlhf_trust.cli", *cmd], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


@pytest.mark.parametrize("content", [os.urandom(20000), b"SQLite format 3\0" + os.urandom(8000)],
                         ids=["random-bytes", "bad-pages"])
def test_a_corrupt_mlflow_db_is_one_line_exit_2(raw_data, tmp_path, content):
    (tmp_path / "params.yaml").write_text("prepare: {max_train_pairs: 4, max_heldout_pairs: 2}\n")
    (tmp_path / "data").symlink_to(raw_data)
    db = tmp_path / "mlflow.db"
    db.write_bytes(content)
    r = _stage(["prepare"], tmp_path, db)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-2000:]
    assert lines[0].startswith(f"rlhf-trust prepare: error: MLflow tracking store sqlite:///{db} is unusable")
    assert db.read_bytes() == content and not (tmp_path / "outputs").exists()
    # compare resolving an MLflow run id reads the same store
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    r = _stage(["compare", "0" * 32, "workspace"], tmp_path, db)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "is unusable" in lines[0], r.stderr[-2000:]


def test_data_in_a_copy_without_git_is_one_line_exit_2(raw_data, tmp_path, monkeypatch, capsys):
    shutil.copytree(ROOT / ".dvc", tmp_path / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp", "config.local"))
    shutil.copy(ROOT / "data.dvc", tmp_path / "data.dvc")
    (tmp_path / "params.yaml").write_text(f"data: {{mirror_dir: {json.dumps(str(raw_data))}}}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))   # no enclosing repository either
    assert cli.main(["data"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a git repository" in err[0] and "pass --no-check" in err[0], err
