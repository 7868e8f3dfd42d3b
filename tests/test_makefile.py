"""Makefile variables a user passes reach the commands as single arguments: a `;` or backticks in a
revision name (valid in git) never run as shell commands. The recipes run against a stand-in
virtualenv whose `rlhf-trust`, `dvc` and `python` record their argv."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECORD = """#!/bin/sh
exec "{python}" -c 'import json, sys; open(sys.argv[1], "a").write(json.dumps(sys.argv[2:]) + "\\n")' "{log}" "$0" "$@"
"""


@pytest.fixture
def venv(tmp_path):
    import sys

    if not shutil.which("make"):
        pytest.fail("make is needed to test the Makefile")
    bin_ = tmp_path / "venv" / "bin"
    bin_.mkdir(parents=True)
    log = tmp_path / "argv.jsonl"
    for name in ("rlhf-trust", "dvc", "python", "mlflow"):
        (bin_ / name).write_text(RECORD.format(python=sys.executable, log=log))
        (bin_ / name).chmod(0o755)
    (bin_.parent / ".installed").touch()
    newest = max(os.stat(ROOT / f).st_mtime for f in ("requirements.txt", "requirements-nodeps.txt", "pyproject.toml"))
    os.utime(bin_.parent / ".installed", (newest + 10, newest + 10))   # `setup` is up to date
    return bin_.parent, log, tmp_path


def _make(venv_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "-C", str(ROOT), f"VENV={venv_dir}", *args], capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.mark.parametrize("target,args,expected", [
    ("compare", ["A=HEAD;touch {p}", "B=`touch {p}`"], ["compare", "--", "HEAD;touch {p}", "`touch {p}`"]),
    ("compare", ["A=two words"], ["compare", "--", "two words", "workspace"]),
    ("check-trust", ["BASELINE=x';touch {p};'"], ["compare", "--fail-on-regression", "--", "x';touch {p};'",
                                                  "workspace"]),
])
def test_values_are_single_arguments_and_never_run(venv, target, args, expected):
    venv_dir, log, tmp = venv
    pwned = tmp / "pwned"
    r = _make(venv_dir, target, *(a.format(p=pwned) for a in args))
    assert r.returncode == 0, r.stderr
    assert not pwned.exists()
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls[-1][1:] == [e.format(p=pwned) for e in expected]


def test_curate_demo_values_stay_inside_their_option(venv):
    venv_dir, log, tmp = venv
    pwned = tmp / "pwned"
    r = _make(venv_dir, "curate-demo", f"CURATE_VERTICAL=privacy`touch {pwned}`", f"CURATE_K=3;touch {pwned}")
    assert r.returncode == 0, r.stderr
    assert not pwned.exists()
    dvc = next(c for c in map(json.loads, log.read_text().splitlines()) if c[0].endswith("dvc"))
    assert f"curate.verticals=[privacy`touch {pwned}`]" in dvc and f"curate.top_k=3;touch {pwned}" in dvc
