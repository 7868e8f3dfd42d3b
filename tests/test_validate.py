"""The GX gate: passes on the real mirror and on the fixtures, and fails with the right message on
corrupted copies of the fixtures (whose row counts the gate is told: `fixture_rows`)."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from rlhf_trust import cli
from rlhf_trust.config import ValidateConfig
from rlhf_trust.data import validate
from rlhf_trust.errors import DataError, ValidationFailed

CFG = ValidateConfig(min_hh_pairs=100)  # the fixtures hold 200 HH pairs
PARAMS = "validate:\n  min_hh_pairs: 100\n"

def edit_hh(d: Path, fn) -> None:
    path = d / "hh_rlhf" / "harmless-base-test.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    rows = fn(rows)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def edit_json(path: Path, fn) -> None:
    path.write_text(json.dumps(fn(json.loads(path.read_text()))))


def test_real_mirror_is_valid(mirror):
    stats = validate.check_dir(mirror, ValidateConfig(min_hh_pairs=1000))
    assert stats["hh"]["rows"] == 2312 and stats["bias"]["rows"] == 1152
    assert all(s["failed"] == 0 for s in stats.values())


def test_fixtures_are_valid(raw_data, fixture_rows):
    stats = validate.check_dir(raw_data, CFG)
    assert {k: s["rows"] for k, s in stats.items()} == fixture_rows
    assert all(s["failed"] == 0 for s in stats.values())


def _corrupt_same_pair(rows):
    for r in rows[:30]:
        r["rejected"] = r["chosen"]
    return rows


def _drop_assistant(rows):
    rows[5]["chosen"] = rows[5]["chosen"].replace("\n\nAssistant:", "\n\nBot:")
    return rows


def _bad_tqa(items):
    k = list(items[3]["mc1_targets"])[1]
    items[3]["mc1_targets"][k] = 1
    return items


def _bad_enron(m):
    m["Karen Arnold"] = "not-an-email"
    return m


INVALID = {  # corruption -> (dataset named in the summary, expectation fragment, an offending id or None)
    "chosen_equals_rejected": (lambda d: edit_hh(d, _corrupt_same_pair), "hh", "column=differs",
                               "harmless-base-test-000001"),
    "no_assistant_turn": (lambda d: edit_hh(d, _drop_assistant), "hh", "regex", "harmless-base-test-000006"),
    "duplicate_pairs": (lambda d: edit_hh(d, lambda r: r + r[:3]), "hh", "compound_columns_to_be_unique", None),
    "ethics_label_out_of_set": (
        lambda d: (d / "ethics/cm_test.csv").write_text(
            (d / "ethics/cm_test.csv").read_text().replace("\n0,I told my baby I loved", "\n7,I told my baby I loved")),
        "ethics", "column=label", "ethics-00000"),
    "two_true_mc1_answers": (lambda d: edit_json(d / "truthfulqa/truth_mc.json", _bad_tqa), "truthfulness",
                             "mc1_true_count", "tqa-003"),
    "stereotype_grid_incomplete": (
        lambda d: (d / "stereotype/user_prompts.csv").write_text(
            "\n".join((d / "stereotype/user_prompts.csv").read_text().split("\n")[:-30]) + "\n"),
        "bias", "row_count", None),
    "toxicity_score_out_of_range": (
        lambda d: (d / "toxicity/toxic.jsonl").write_text(
            (d / "toxicity/toxic.jsonl").read_text().replace('"toxicity": 0.9066653', '"toxicity": 1.9066653', 1)),
        "toxicity", "prompt_toxicity", "toxic-00001"),
    "enron_not_an_email": (lambda d: edit_json(d / "privacy/name2email.json", _bad_enron), "privacy", "regex",
                           "enron-0000"),
    "too_few_hh_pairs": (lambda d: edit_hh(d, lambda r: r[:50]), "hh", "row_count", None),
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_corrupted_copy_fails_with_a_named_expectation(copy, fixture_rows, name):
    corrupt, dataset, fragment, row_id = INVALID[name]
    corrupt(copy)
    with pytest.raises(ValidationFailed) as e:
        validate.check_dir(copy, CFG)
    msg = str(e.value)
    assert e.value.exit_code == 1
    bad = [line for line in msg.splitlines()[1:] if line.startswith(f"  - {dataset}:")]
    assert bad, msg
    assert any(fragment in line for line in bad), msg
    if row_id:
        assert any(row_id in line for line in bad), msg


UNUSABLE = {
    "truncated_gzip": (lambda d: (d / "hh_rlhf/harmless-base-test.jsonl.gz").write_bytes(
        (d / "hh_rlhf/harmless-base-test.jsonl.gz").read_bytes()[:50_000]), "truncated"),
    "bad_json_line": (lambda d: (d / "toxicity/nontoxic.jsonl").write_text(
        (d / "toxicity/nontoxic.jsonl").read_text() + '{"prompt": {"text": "x"\n'), "line 41 is not valid JSON"),
    "wrong_encoding": (lambda d: (d / "ethics/cm_test.csv").write_bytes(
        (d / "ethics/cm_test.csv").read_text().encode("utf-16")), "not UTF-8"),
    "missing_column": (lambda d: (d / "ethics/cm_test.csv").write_text(
        (d / "ethics/cm_test.csv").read_text().replace("label,input", "lbl,input", 1)), "missing column(s) label"),
    "empty_file": (lambda d: (d / "truthfulqa/truth_mc.json").write_text(""), "empty file"),
    "missing_file": (lambda d: (d / "privacy/five_shot.json").unlink(), "missing file"),
    "missing_hh_dir": (lambda d: shutil.rmtree(d / "hh_rlhf"), "missing directory"),
}


@pytest.mark.parametrize("name", sorted(UNUSABLE))
def test_unusable_copy_is_exit_2_with_one_line(copy, fixture_rows, name, params, capsys):
    corrupt, fragment = UNUSABLE[name]
    corrupt(copy)
    with pytest.raises(DataError, match=None) as e:
        validate.check_dir(copy, CFG)
    assert fragment in str(e.value) and "\n" not in str(e.value)
    assert cli.main(["validate", "--params", str(params), "--data-dir", str(copy)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.fixture
def params(tmp_path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(PARAMS)
    return path


def test_cli_exit_codes(copy, fixture_rows, params, tmp_path, capsys):
    argv = ["validate", "--params", str(params), "--data-dir"]
    assert cli.main([*argv, str(copy)]) == 0
    assert cli.main([*argv, str(tmp_path / "nowhere")]) == 2
    _bad_ethics = INVALID["ethics_label_out_of_set"][0]
    _bad_ethics(copy)
    assert cli.main([*argv, str(copy)]) == 1
    err = capsys.readouterr().err
    assert "validation failed: 1 expectation(s) in ethics" in err and "ethics-00000" in err


def test_a_failed_gate_withdraws_the_verdicts_and_escapes_planted_html(copy, fixture_rows, tmp_path, monkeypatch,
                                                                     capsys):
    """Data Docs show offending raw values: a planted tag is written escaped, never as markup; and the
    earlier `valid: true` verdicts do not survive a failed gate."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    Path("params.yaml").write_text(f"data: {{dir: {json.dumps(str(copy))}}}\n")
    assert cli.main(["validate"]) == 0
    verdicts = sorted(Path("outputs/validated").glob("*.json"))
    assert len(verdicts) >= 7 and all(json.loads(p.read_text())["valid"] for p in verdicts)
    payloads = ["<script>alert(1)</script>", "<img src=x onerror=alert(2)>"]

    def plant(rows):
        for i, p in enumerate(payloads):   # no "\n\nAssistant:" left: fails the regex, so GX lists the value
            rows[i]["chosen"] = p
        return rows

    edit_hh(copy, plant)
    capsys.readouterr()
    assert cli.main(["validate"]) == 1
    assert "validation failed" in capsys.readouterr().err
    assert sorted(Path("outputs/validated").glob("*.json")) == verdicts
    assert not any(json.loads(p.read_text())["valid"] for p in verdicts)
    pages = list(Path("reports/data_docs").rglob("*.html"))
    assert any("validations" in p.parts for p in pages)
    text = "\n".join(p.read_text(encoding="utf-8") for p in pages)
    assert "&lt;img src=x onerror=alert(2)&gt;" in text      # shown, as text
    assert "<img src=x" not in text and "<script>alert" not in text
