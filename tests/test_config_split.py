"""The config package: the schema engine (config/schema.py) and the sections import nothing above
them, each vertical validates its own eval.verticals entry, and a broken vertical leaves the
training stages' config loading alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rlhf_trust import cli, config, evals
from rlhf_trust.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("params", ["params.yaml", "params/paper.yaml", "params/smoke.yaml"])
def test_every_shipped_eval_entry_is_valid_for_its_vertical(params):
    evals.check_entries(config.load("eval", ROOT / params).verticals)


@pytest.mark.parametrize("entry, expected", [
    ({"fairnes": {}}, "eval.verticals.fairnes: unknown vertical"),
    ({"fairness": {"protocol": "sampling"}}, "eval.verticals.fairness.protocol: must be one of"),
    ({"ethics": {"limt": 3}}, "unknown key 'eval.verticals.ethics.limt'"),
])
def test_a_bad_entry_is_one_line_from_its_vertical(entry, expected):
    with pytest.raises(ConfigError) as e:
        evals.check_entries(entry)
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_eval_cli_refuses_a_bad_entry_with_exit_2(tmp_path, capsys):
    p = tmp_path / "params.yaml"
    p.write_text("eval:\n  verticals:\n    fairness: {limit: 0}\n")
    assert cli.main(["eval", "--vertical", "fairness", "--params", str(p)]) == 2
    assert "eval.verticals.fairness.limit: must be >= 1" in capsys.readouterr().err


def test_loading_a_training_section_imports_no_vertical():
    code = ("import sys; from rlhf_trust import config; config.load('sft', 'params.yaml'); "
            "bad = sorted(m for m in sys.modules if m.startswith('rlhf_trust.evals') or m == 'rlhf_trust.data');"
            "print(bad); assert not bad")
    r = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_schema_and_sections_import_nothing_above_them():
    import re

    upward = re.compile(r"^\s*(?:from rlhf_trust\.(?:evals|data|train|attribution|report|models)\b"
                        r"|from rlhf_trust import .*\b(?:evals|data|train|attribution|report|models)\b)", re.MULTILINE)
    pkg = ROOT / "src" / "rlhf_trust"
    files = sorted((pkg / "config").glob("*.py")) + [pkg / "pipeline.py", pkg / "paths.py"]
    assert len(files) > 3
    for path in files:
        text = path.read_text()
        assert not upward.findall(text), (path.name, upward.findall(text))
