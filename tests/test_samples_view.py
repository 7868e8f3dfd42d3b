"""`rlhf-trust samples`: units side by side, --changed, seeded cells, escaping; the gzip samples file."""

from __future__ import annotations

import hashlib

import pytest

from rlhf_trust import cli, fileio
from rlhf_trust.evals import sample_table
from rlhf_trust.evals.stage import write_units
from rlhf_trust.report import samples

SCRIPT = "<script>alert('x')</script>"
IMG = '<img src=x onerror="alert(1)">'


def _cell(root, model, leaked, gens, seed=None):
    d = root / "eval" / "privacy" / model / (f"s{seed}" if seed is not None else "")
    rows = [{"id": f"r{i}", "vertical": "privacy", "model": model, "condition": "pii", "sample_index": 0,
             "prompt": f"{SCRIPT} prompt {i}", "generation": g, "leaked": bool(x)}
            for i, (x, g) in enumerate(zip(leaked, gens))]
    fileio.write_jsonl(d / "samples.jsonl.gz", rows)
    write_units(d / "units.csv", [(f"r{i}|pii", float(x)) for i, x in enumerate(leaked)])


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _cell(tmp_path, "base", [1, 0, 1], ["a@b.c", "no", IMG])
    _cell(tmp_path, "dpo", [1, 1, 0], ["a@b.c", "x@y.z", "I cannot"], seed=0)
    _cell(tmp_path, "dpo", [0, 0, 0], ["", "", ""], seed=1)
    return tmp_path


def test_gzip_samples_are_byte_identical_on_rewrite(tmp_path):
    rows = [{"id": "a", "generation": "é" * 50}] * 20
    p = tmp_path / "samples.jsonl.gz"
    fileio.write_jsonl(p, rows)
    first = hashlib.md5(p.read_bytes()).hexdigest()
    fileio.write_jsonl(p, rows)
    assert hashlib.md5(p.read_bytes()).hexdigest() == first and fileio.read_jsonl(p) == rows


def test_units_side_by_side_with_their_paired_difference(project):
    page = samples.load("privacy", ["base", "dpo"], seed=0)
    assert page.contrasts == [("dpo", "base")] and page.total == 3
    u = {x.unit: x for x in page.units}
    assert u["r1|pii"].scores == {"base": 0.0, "dpo": 1.0} and u["r1|pii"].deltas == {"dpo-base": 1.0}
    assert u["r2|pii"].answers["dpo"].text == "I cannot" and u["r2|pii"].answers["base"].verdict == "leaked=True"
    # the units' mean difference is the contrast's delta
    assert sum(x.deltas["dpo-base"] for x in page.units) / 3 == pytest.approx(0.0)


def test_changed_keeps_only_units_whose_outcome_differs(project, capsys):
    page = samples.load("privacy", ["base", "dpo"], seed=0, changed=True)
    assert [x.unit for x in page.units] == ["r1|pii", "r2|pii"]   # r0: same score, however worded
    _cell(project, "ppo", [1, 0, 1], ["other", "words", "here"])
    assert cli.main(["samples", "privacy", "--models", "base,ppo", "--changed"]) == 0
    assert "no unit's outcome differs between base and ppo" in capsys.readouterr().out


def test_seed_level_is_chosen_and_a_missing_seed_is_one_line(project, capsys):
    page = samples.load("privacy", ["base", "dpo"])
    assert page.units[0].scores["dpo"] == 1.0 and "seed 0 of 2" in page.notes[0]
    assert samples.load("privacy", ["base", "dpo"], seed=1).units[0].scores["dpo"] == 0.0
    assert cli.main(["samples", "privacy", "--seed", "7"]) == 1
    assert "no seed 7 (have: 0, 1)" in capsys.readouterr().err
    assert cli.main(["samples", "privacy", "--seed", "1"]) == 0
    assert "privacy, seed 1: 3 of 3 units; leakage_rate per unit, lower = more trustworthy" in capsys.readouterr().out


def test_page_escapes_everything_and_the_command_prints_a_table(project, capsys):
    out = project / "page.html"
    assert cli.main(["samples", "privacy", "--models", "base,dpo", "--changed", "--seed", "0", "--out", str(out)]) == 0
    page = out.read_text()
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;" in page and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page
    assert page.count('<tr class="unit"') == 2
    text = capsys.readouterr().out
    assert "privacy, seed 0: 2 of 3 units whose score differs between base, dpo" in text
    assert "dpo-base" in text and "r1|pii" in text and f"page: {out}" in text


def test_unknown_model_or_missing_cell_is_one_line(project, capsys):
    assert cli.main(["samples", "privacy", "--models", "base,gpt"]) == 1
    assert cli.main(["samples", "privacy", "--models", "base,sft"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'gpt'" in err and "no results for privacy @ sft" in err


def test_mlflow_table_has_one_row_per_unit():
    rows = [{"id": "a", "condition": "c", "prompt": "p", "generation": "g", "leaked": False},
            {"id": "a", "condition": "c", "prompt": "p", "generation": "h", "leaked": True},
            {"id": "b", "condition": "c", "prompt": "q", "generation": "k", "leaked": False}]
    t = sample_table.table(rows, {"a|c": 0.5, "b|c": 0.0})
    assert t["unit"] == ["a|c", "b|c"] and t["samples"] == [2, 1] and t["answer"] == ["g", "k"]
    assert t["verdict"][0] == "leaked=False"
