"""Validation catches duplicates, stray files, control characters and
non-finite scores (exit 1), and unreadable inputs get a message that says what is wrong (exit 2)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from rlhf_trust import cli, verticals
from rlhf_trust.config import ValidateConfig
from rlhf_trust.data import records, validate
from rlhf_trust.errors import DataError, ValidationFailed

CFG = ValidateConfig(min_hh_pairs=100)  # the fixtures hold 200 HH pairs
ROOT = Path(__file__).resolve().parents[1]



def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def overwrite_line(path: Path, src: int, dst: int) -> None:
    lines = _lines(path)
    lines[dst] = lines[src]
    path.write_text("".join(lines), encoding="utf-8")


def edit_jsonl_row(path: Path, i: int, fn) -> None:
    lines = _lines(path)
    lines[i] = json.dumps(fn(json.loads(lines[i]))) + "\n"  # json.dumps writes NaN for float('nan')
    path.write_text("".join(lines), encoding="utf-8")


def _tqa_dup(d: Path) -> None:
    p = d / "truthfulqa/truth_mc.json"
    items = json.loads(p.read_text())
    items[1] = items[0]
    p.write_text(json.dumps(items))


def _set(key, value):
    def fn(r):
        r[key]["text" if isinstance(value, str) else "toxicity"] = value
        return r
    return fn


INVALID = {  # corruption -> (dataset, expectation fragment)
    "toxicity_line_overwritten": (lambda d: overwrite_line(d / "toxicity/toxic.jsonl", 0, 1), "toxicity",
                                  "compound_columns_to_be_unique"),
    "ethics_line_overwritten": (lambda d: overwrite_line(d / "ethics/cm_test.csv", 1, 2), "ethics",
                                "values_to_be_unique(column=input"),
    "truthfulqa_item_overwritten": (_tqa_dup, "truthfulness", "values_to_be_unique(column=question"),
    "stray_hh_jsonl": (lambda d: (d / "hh_rlhf/extra.jsonl").write_text('{"chosen": "x", "rejected": "y"}\n'),
                       "hh", "exact file set unexpected file(s) hh_rlhf/extra.jsonl"),
    "nul_in_prompt": (lambda d: edit_jsonl_row(d / "toxicity/nontoxic.jsonl", 3, _set("prompt", "a\x00b")),
                      "toxicity", "not_match_regex(column=prompt"),
    "nan_continuation_toxicity": (lambda d: edit_jsonl_row(d / "toxicity/toxic.jsonl", 4,
                                                           _set("continuation", float("nan"))),
                                  "toxicity", "scores_finite"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_corruption_is_invalid(copy, fixture_rows, case, capsys):
    corrupt, dataset, fragment = INVALID[case]
    corrupt(copy)
    with pytest.raises(ValidationFailed) as e:
        validate.check_dir(copy, CFG)
    lines = str(e.value).splitlines()
    assert any(f"- {dataset}: " in line and fragment in line.lower().replace("expect", "") or fragment in line
               for line in lines[1:]), str(e.value)
    assert lines[0].startswith("validation failed: ") and dataset in lines[0]


def test_stray_hh_file_is_not_merged(copy):
    n = len(records.load_hh_raw(copy))
    (copy / "hh_rlhf/extra.jsonl").write_text('{"chosen": "x", "rejected": "y"}\n')
    assert len(records.load_hh_raw(copy)) == n


def test_bom_csv_is_read(copy, fixture_rows):
    p = copy / "ethics/cm_test.csv"
    p.write_bytes(b"\xef\xbb\xbf" + p.read_bytes())
    assert len(records.load("ethics", copy)) == verticals.get("ethics").expected_rows == fixture_rows["ethics"]


@pytest.mark.parametrize("make, expected", [
    (lambda p: (p.unlink(), p.symlink_to(p.name)), "symlink loop: "),
    (lambda p: (p.unlink(), p.mkdir()), "is a directory, expected a file"),
    (lambda p: (p.unlink(), p.symlink_to("nowhere.csv")), "broken symlink: "),
])
def test_misleading_file_messages(copy, capsys, make, expected):
    make(copy / "ethics/cm_test.csv")
    with pytest.raises(DataError, match=expected):
        records.load("ethics", copy)
    assert cli.main(["validate", "--params", str(ROOT / "params.yaml"), "--data-dir", str(copy)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and expected in err and "missing file" not in err


def _let_others_traverse(paths: list[Path]) -> list[tuple[Path, int]]:
    """Add o+x to the ancestors of `paths` that lack it (e.g. a checkout inside `mktemp -d`, mode
    0700), so `nobody` can reach the interpreter and the package; returns what to restore."""
    import stat

    changed = []
    for p in {a for path in paths for a in path.resolve().parents}:
        mode = stat.S_IMODE(p.stat().st_mode)
        if not mode & stat.S_IXOTH:
            p.chmod(mode | stat.S_IXOTH)
            changed.append((p, mode))
    return changed


@pytest.mark.parametrize("rel", ["ethics/cm_test.csv", "truthfulqa/truth_mc.json"])
def test_permission_denied_is_one_line_exit_2(raw_data, rel):
    """A file the user may not read. root reads anything, so then the CLI runs as `nobody`."""
    d = Path(tempfile.mkdtemp(prefix="perm-"))
    try:
        d.chmod(0o755)
        data = d / "data"
        shutil.copytree(raw_data, data)
        for p in [data, *data.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        (data / rel).chmod(0o000)
        argv = [sys.executable, "-m", "rlhf_trust.cli", "validate", "--params", str(ROOT / "params.yaml"),
                "--data-dir", str(data)]
        opened = []
        if os.geteuid() == 0:
            argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
            opened = _let_others_traverse([ROOT, Path(sys.prefix)])
        env = {**os.environ, "HOME": str(d), "MLFLOW_TRACKING_URI": f"sqlite:///{d}/mlflow.db"}
        try:
            r = subprocess.run(argv, capture_output=True, text=True, cwd=d, env=env, timeout=300, check=False)
        finally:
            for path, mode in opened:
                path.chmod(mode)
        err = [line for line in r.stderr.splitlines() if line.startswith("rlhf-trust")]
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert err == [f"rlhf-trust validate: error: {data / rel}: permission denied"]
    finally:
        shutil.rmtree(d)
