"""A fresh clone's `make report` and `make check-trust BASELINE=HEAD` (their CLI calls, without
`make setup`) leave every tracked file as committed: only asked-for writes touch reports/."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from rlhf_trust import cli


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True, cwd=cwd).stdout


@pytest.mark.slow
def test_report_and_check_trust_leave_a_fresh_clone_clean(tmp_path, monkeypatch, capsys):
    root = Path(git("rev-parse", "--show-toplevel", cwd=Path(__file__).parent).strip())
    clone = tmp_path / "clone"
    git("clone", "-q", "--no-hardlinks", str(root), str(clone))
    monkeypatch.chdir(clone)
    assert git("status", "--porcelain") == ""
    assert cli.main(["report"]) == 0                                             # make report
    assert cli.main(["compare", "--fail-on-regression", "--", "HEAD", "workspace"]) == 0   # make check-trust
    assert git("status", "--porcelain") == ""
    out = capsys.readouterr().out
    assert "written to outputs/report/ (untracked)" in out and "outputs/compare/compare.md" in out
    assert (clone / "outputs" / "report" / "trust_summary.html").is_file()
