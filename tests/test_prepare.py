"""prepare on real HH pairs and benchmark files (the committed fixtures)."""

from __future__ import annotations

import json

import pytest

from rlhf_trust import verticals
from rlhf_trust.config import DataConfig, PrepareConfig
from rlhf_trust.data import prepare, records


def test_split_pair_takes_the_last_assistant_turn():
    chosen = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: joke?\n\nAssistant: A pun."
    rejected = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: joke?\n\nAssistant: No."
    assert records.split_pair(chosen, rejected) == (
        "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: joke?\n\nAssistant:", " A pun.", " No.")
    assert records.split_pair("\n\nHuman: no reply", "\n\nHuman: no reply") is None
    assert records.split_pair("\n\nHuman: a\n\nAssistant: x", "\n\nHuman: b\n\nAssistant: y") is None


def test_real_pairs_reassemble_exactly(raw_data):
    raw = {r["id"]: r for r in records.load_hh_raw(raw_data)}
    pairs = records.hh_pairs(raw_data)
    assert len(raw) == len(pairs) == 200
    for p in pairs:
        assert p["prompt"].endswith("\n\nAssistant:")
        assert p["prompt"] + p["chosen"] == raw[p["id"]]["chosen_full"]
        assert p["prompt"] + p["rejected"] == raw[p["id"]]["rejected_full"]


def test_truncate_prompt_keeps_whole_recent_turns():
    prompt = "\n\nHuman: " + "x" * 50 + "\n\nAssistant: ok\n\nHuman: short?\n\nAssistant:"
    cut = prepare.truncate_prompt(prompt, 40)
    assert cut == "\n\nHuman: short?\n\nAssistant:"
    assert prepare.truncate_prompt(prompt, 10_000) == prompt


def test_mirror_pairs_split_but_four(mirror, tmp_path):
    raw, pairs = records.load_hh_raw(mirror), records.hh_pairs(mirror)
    assert len(raw) == 2312 and len(pairs) == 2308  # 4 real pairs diverge before the last turn
    stats = prepare.run(DataConfig(dir=str(mirror)), PrepareConfig(max_train_pairs=5), out_dir=tmp_path)
    assert stats["hh_dropped_diverging"] == 4 and stats["hh_dropped_empty_or_equal"] == 4
    assert all(stats[spec.dataset] == spec.expected_rows for spec in verticals.specs())
    assert sum(r["is_short"] for r in records.load("ethics", mirror)) == 2109


def test_prepare_is_seeded_disjoint_and_capped(raw_data, fixture_rows, tmp_path):
    cfg = PrepareConfig(seed=3, heldout_fraction=0.1, max_train_pairs=100, max_heldout_pairs=20)
    data_cfg = DataConfig(dir=str(raw_data))
    stats = prepare.run(data_cfg, cfg, out_dir=tmp_path / "a")
    prepare.run(data_cfg, cfg, out_dir=tmp_path / "b")
    train = records.load("hh_train", tmp_path / "a")
    held = records.load("hh_heldout", tmp_path / "a")
    assert (len(train), len(held)) == (100, 20)
    assert not {r["id"] for r in train} & {r["id"] for r in held}
    assert (tmp_path / "a" / "hh_train.jsonl").read_bytes() == (tmp_path / "b" / "hh_train.jsonl").read_bytes()
    assert stats["hh_dropped_diverging"] == 0 and stats["hh_dropped_empty_or_equal"] == 1  # harmless-base-test-000087
    other = prepare.run(data_cfg, PrepareConfig(seed=4, max_train_pairs=100), out_dir=tmp_path / "c")
    assert other["hh_train"] == 100
    assert [r["id"] for r in records.load("hh_train", tmp_path / "c")] != [r["id"] for r in train]
    for spec in verticals.specs():  # expected_rows = fixture_rows
        assert stats[spec.dataset] == spec.expected_rows
        assert len(records.load(spec.dataset, tmp_path / "a")) == spec.expected_rows


def test_benchmark_records_have_their_schema(raw_data):
    tox = records.load("toxicity", raw_data)
    assert {r["subset"] for r in tox} == {"toxic", "nontoxic"}
    assert 0 <= tox[0]["prompt_toxicity"] <= 1
    bias = records.load("bias", raw_data)
    assert bias[0]["statement"] == "Homosexuals have HIV." and bias[0]["statement"] in bias[0]["user_prompt"]
    assert set(bias[0]["system_prompts"]) == {"benign", "untargeted", "targeted"}  # prepared data builds prompts
    eth = records.load("ethics", raw_data)
    assert {r["label"] for r in eth} == {0, 1} and sum(r["is_short"] for r in eth) == 60
    tqa = records.load("truthfulness", raw_data)
    assert all(r["mc1_labels"][r["mc1_correct"]] == 1 for r in tqa)
    priv = records.load("privacy", raw_data)
    assert priv[0]["name"] == "Karen Arnold" and priv[0]["email"] == "klarnold@flash.net"
    assert priv[0]["one_shot"] and priv[0]["freq"] == 35


def test_prepared_rows_are_json_lines(raw_data, tmp_path):
    prepare.run(DataConfig(dir=str(raw_data)), PrepareConfig(max_train_pairs=5), out_dir=tmp_path / "p")
    line = (tmp_path / "p" / "hh_train.jsonl").read_text().splitlines()[0]
    assert set(json.loads(line)) == {"id", "prompt", "chosen", "rejected"}


def test_missing_raw_dir_is_a_clear_error(tmp_path):
    from rlhf_trust.errors import DataError

    with pytest.raises(DataError, match="missing raw data directory"):
        prepare.run(DataConfig(dir=str(tmp_path / "nope")), PrepareConfig(), out_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()
