"""Team mode's files, without servers: <state>/env is sourced by a shell, so every value is quoted; the
state directory holds credentials and data, so it is the user's only."""

from __future__ import annotations

import os
import stat
import subprocess

from rlhf_trust import team


def test_env_values_round_trip_through_source_without_running_anything(tmp_path, monkeypatch):
    nasty = {"AWS_ACCESS_KEY_ID": "key with spaces; echo cut",
             "AWS_SECRET_ACCESS_KEY": "$(touch pwned)`touch pwned2`'q\"",
             "PGPASSWORD": "a;touch pwned3 && b"}
    for k, v in nasty.items():
        monkeypatch.setenv(k, v)
    state = tmp_path / "state"
    assert team._credentials(state) == nasty
    with open(state / "env", "a") as f:
        f.write(team.exports({"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"}))
    script = "source ./env; " + "; ".join(f'printf "%s\\0" "${k}"' for k in nasty)
    env = {k: v for k, v in os.environ.items() if k not in nasty}
    out = subprocess.run(["bash", "-c", script], cwd=state, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split("\0")[:-1] == list(nasty.values())
    assert not list(state.glob("pwned*")) and not list(tmp_path.glob("pwned*"))
    for k in nasty:   # and the file reads back the same on the next `up`
        monkeypatch.delenv(k)
    assert team._credentials(state) == nasty


def test_state_dir_and_env_are_private(tmp_path):
    old = os.umask(0o022)
    try:
        state = tmp_path / "state"
        state.mkdir(mode=0o755)    # an existing, world-readable state dir is tightened too
        team._credentials(state)
        team.Servers(state=state).save()
    finally:
        os.umask(old)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for name in ("env", "state.json"):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600


def test_team_errors_never_show_a_credential(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PGPASSWORD", "pg-planted-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3-planted-secret")

    def fail(self, env):   # e.g. initdb or weed failing with its log tail, which may quote the environment
        raise team.UserError(f"initdb failed: password {env['PGPASSWORD']} for postgresql://u:{env['PGPASSWORD']}@h; "
                             f"key {env['AWS_SECRET_ACCESS_KEY']}")

    monkeypatch.setattr(team.Servers, "start", fail)
    assert team.main(["up", "--state", str(tmp_path / "state")]) == 2
    err = capsys.readouterr().err
    assert "planted-secret" not in err and "postgresql://u:***@h" in err and err.count("\n") == 1
