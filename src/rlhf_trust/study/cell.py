"""What a worker runs for one cell: a git worktree of the study's commit (plus the driver's
uncommitted changes), the cell's params.yaml, `dvc repro` under the fork server, `dvc push` when
a DVC remote is configured; back come the status, the error line, MLflow run ids and the per-unit
eval outcomes (small CSVs), so gathering needs no shared filesystem for results.

Why a worktree per cell and `dvc repro` rather than `dvc exp run --temp` or `dvc queue`: the queue
runs on one machine and has open race bugs with several workers (treeverse/dvc#10673), and
temp experiments share the repository's exp refs and .dvc/tmp. A worktree is an ordinary checkout
(what `make smoke` runs in); the cells share the repository's DVC cache (`dvc cache dir`), so
stages whose inputs match an earlier cell's are restored from the run cache instead of re-run.

Runs in a worker process started by submitit or Ray: no project state is shared with the driver
but this function's argument. Never raises for a failing pipeline; a crash of the worker itself
(killed, out of memory) is the executor's to report.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ERROR_LINE = re.compile(r"(rlhf-trust [\w-]+: error: .*|ERROR: .*)")
TAIL = 4000


def run_cell(spec: dict[str, Any]) -> dict[str, Any]:
    """spec: repo, commit, workspace, params_text, targets, env, dirty_tar (or None), processes,
    accelerate_config, pid_file. Returns {status, rc, error, wall_s, commit, mlflow_runs, units, pushed}."""
    t0 = time.time()
    ws = Path(spec["workspace"])
    log = ws.parent / f"{ws.name}.log"
    try:
        _workspace(spec, ws)
        ran_from = time.time()
        env = {**os.environ, **spec.get("env", {})}
        # the cell's stages run the cell's own code (its commit and the driver's changes)
        env["PYTHONPATH"] = os.pathsep.join([str(ws / "src"), *filter(None, [env.get("PYTHONPATH")])])
        if spec.get("processes", 1) > 1:
            env["RLHF_TRUST_PROCESSES"] = str(spec["processes"])
            env["RLHF_TRUST_ACCELERATE_CONFIG"] = str(spec.get("accelerate_config") or "")
        cmd = [sys.executable, "-m", "rlhf_trust.preload", "--", dvc(), "repro", *spec.get("targets", [])]
        rc = _run(cmd, ws, env, log, spec.get("pid_file"))
    except (OSError, subprocess.CalledProcessError) as e:
        return {"status": "failed", "rc": None, "error": f"workspace: {e}", "wall_s": time.time() - t0}
    out: dict[str, Any] = {"rc": rc, "wall_s": round(time.time() - t0, 1), "log": str(log),
                           "commit": spec["commit"], "mlflow_runs": _run_ids(ws, ran_from)}
    if rc != 0:
        reason = f"killed by signal {-rc}" if rc < 0 else f"dvc repro exited {rc}"
        return {**out, "status": "failed", "error": _error_line(log) or reason}
    out["units"] = _units(ws, ran_from)
    out["pushed"] = _push(ws, env, log)
    return {**out, "status": "done", "error": None}


def dvc() -> str:
    """The dvc beside this interpreter (the worker's environment), else the one on PATH."""
    here = Path(sys.executable).parent / "dvc"
    return str(here) if here.is_file() else "dvc"


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def _workspace(spec: dict[str, Any], ws: Path) -> None:
    """A fresh worktree at the study's commit with the driver's changes, the cell's params and data."""
    repo = Path(spec["repo"])
    if ws.exists():   # a failed or killed attempt: its scratch checkout is replaced
        subprocess.run(["git", "worktree", "remove", "--force", str(ws)], cwd=repo, capture_output=True, check=False)
        shutil.rmtree(ws, ignore_errors=True)
    ws.parent.mkdir(parents=True, exist_ok=True)
    _git("worktree", "add", "-f", "-q", "--detach", str(ws), spec["commit"], cwd=repo)
    if spec.get("dirty_tar"):
        subprocess.run(["tar", "-xf", spec["dirty_tar"], "-C", str(ws)], check=True, capture_output=True)
    (ws / "params.yaml").write_text(spec["params_text"], encoding="utf-8")
    _git("update-index", "--skip-worktree", "params.yaml", cwd=ws)
    if (repo / ".dvc" / "config.local").is_file():   # the team's remote and its settings
        shutil.copy2(repo / ".dvc" / "config.local", ws / ".dvc" / "config.local")
    if (repo / ".dvc").is_dir():
        subprocess.run([dvc(), "cache", "dir", "--local", str(repo / ".dvc" / "cache")], cwd=ws, check=True,
                       capture_output=True)
    _anchor_remotes(repo, ws)
    if (repo / "data").is_dir():   # hard links: no copy of the raw data per cell
        subprocess.run(["cp", "-al", str(repo / "data"), str(ws / "data")], check=True, capture_output=True)


def _anchor_remotes(repo: Path, ws: Path) -> None:
    """A local remote's relative URL names a directory beside the repository: the same one for the cell
    (relative to the worktree's .dvc/ it would point inside the study)."""
    # the repository's settings as written (a relative URL is relative to .dvc/, where they live);
    # `dvc remote list` would do, but it wraps long lines
    for level in ("--project", "--local"):
        listed = subprocess.run([dvc(), "config", "--list", level], cwd=repo, capture_output=True, text=True,
                                check=False)
        for line in listed.stdout.splitlines():
            key, _, url = line.partition("=")
            parts = key.strip().split(".")
            if len(parts) == 3 and parts[0] == "remote" and parts[2] == "url" and url and "://" not in url:
                subprocess.run([dvc(), "remote", "modify", "--local", parts[1], "url",
                                str((repo / ".dvc" / url.strip()).resolve())], cwd=ws, check=True, capture_output=True)


def _run(cmd: list[str], ws: Path, env: dict[str, str], log: Path, pid_file: str | None) -> int:
    """The pipeline in its own process group (a kill of the cell takes its stages too)."""
    with open(log, "ab") as f:
        f.write(f"$ {' '.join(cmd)}\n".encode())
        f.flush()
        proc = subprocess.Popen(cmd, cwd=ws, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        if pid_file:
            Path(pid_file).write_text(str(proc.pid), encoding="utf-8")
        try:
            return proc.wait()
        except BaseException:
            os.killpg(proc.pid, signal.SIGTERM)
            raise
        finally:
            if pid_file:
                Path(pid_file).unlink(missing_ok=True)


def _error_line(log: Path) -> str | None:
    """The last one-line error a stage (or DVC) printed."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace")[-20 * TAIL:]
    except OSError:
        return None
    found = ERROR_LINE.findall(text)
    stage = [e for e in found if e.startswith("rlhf-trust ")]   # DVC's own ERROR line names the stage too
    picked = stage or found
    return picked[-1].strip() if picked else None


def _run_ids(ws: Path, since: float) -> dict[str, str]:
    """run-info file (relative path) -> its MLflow run id, for the stages this run ran."""
    import json

    out = {}
    for p in sorted(ws.glob("**/*.run.json")):
        if ".dvc" in p.parts or p.stat().st_mtime < since:
            continue
        try:
            rid = json.loads(p.read_text(encoding="utf-8")).get("mlflow_run_id")
        except (OSError, ValueError, AttributeError):
            continue
        if rid:
            out[str(p.relative_to(ws))] = rid
    return out


def _units(ws: Path, since: float) -> dict[str, str]:
    """eval/<vertical>/<model>[/s<k>]/units.csv (relative path) -> its text, for the files this run
    wrote (the checkout's committed ones are another run's, e.g. of verticals this cell does not evaluate)."""
    return {str(p.relative_to(ws)): p.read_text(encoding="utf-8") for p in sorted((ws / "eval").glob("**/units.csv"))
            if p.stat().st_mtime >= since}


def _push(ws: Path, env: dict[str, str], log: Path) -> bool:
    """`dvc push` when the workspace has a DVC remote (team mode); False when none is configured."""
    remotes = subprocess.run([dvc(), "remote", "list"], check=False, cwd=ws, env=env, capture_output=True, text=True)
    if remotes.returncode != 0 or not remotes.stdout.strip():
        return False
    with open(log, "ab") as f:
        return subprocess.run([dvc(), "push"], check=False, cwd=ws, env=env, stdout=f, stderr=subprocess.STDOUT).returncode == 0
