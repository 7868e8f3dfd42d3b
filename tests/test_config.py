"""Params validation: unknown keys, wrong types and out-of-range values give one line, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlhf_trust import cli, config
from rlhf_trust.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(text)
    return p


def test_default_params_file_is_valid():
    cfgs = config.load_all(ROOT / "params.yaml")
    assert set(cfgs) == set(config.SECTIONS)
    assert cfgs["model"].spec == "gemma-3-270m"
    assert cfgs["dpo"].beta == pytest.approx(0.1)


def test_paper_params_file_is_valid():
    cfgs = config.load_all(ROOT / "params" / "paper.yaml")
    assert "pythia" in cfgs["model"].spec.lower()


@pytest.mark.parametrize("text, expected", [
    ("sft:\n  learning_rat: 0.1\n", "unknown key 'sft.learning_rat'"),
    ("sft:\n  batch_size: four\n", "sft.batch_size: must be an integer"),
    ("sft:\n  batch_size: 0\n", "sft.batch_size: must be >= 1"),
    ("dpo:\n  beta: -1\n", "dpo.beta: must be > 0"),
    ("prepare:\n  heldout_fraction: 1.5\n", "prepare.heldout_fraction: must be in (0, 1)"),
    ("data:\n  source: ftp\n", "data.source: must be one of ['auto', 'mirror', 'hub']"),
    ("sft:\n  lora: {r: 0}\n", "lora.r: must be >= 1"),
    ("sft:\n  lora: {enabled: yes please}\n", "sft.lora.enabled: must be true or false"),
    ("trian:\n  x: 1\n", "unknown section 'trian'"),
    ("sft: [1, 2]\n", "sft: must be a mapping"),
    ("sft:\n  learning_rate: [\n", "not valid YAML"),
])
def test_bad_params_name_the_key(tmp_path, text, expected):
    with pytest.raises(ConfigError) as e:
        config.load_all(write(tmp_path, text))
    assert expected in str(e.value)
    assert "\n" not in str(e.value)


def test_scientific_notation_without_dot_is_a_number(tmp_path):
    cfg = config.load("sft", write(tmp_path, "sft:\n  learning_rate: 1e-4\n"))
    assert cfg.learning_rate == pytest.approx(1e-4)


def test_cli_exits_2_with_one_line(tmp_path, capsys):
    p = write(tmp_path, "prepare:\n  seed: zero\n")
    assert cli.main(["prepare", "--params", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "rlhf-trust prepare: error: params: prepare.seed: must be an integer, got 'zero'"


def test_missing_params_file(tmp_path, capsys):
    assert cli.main(["prepare", "--params", str(tmp_path / "nope.yaml")]) == 2
    assert "params file not found" in capsys.readouterr().err


def test_params_hash_is_stable_and_sensitive():
    a, b = config.SFTConfig(), config.SFTConfig()
    assert config.params_hash(a) == config.params_hash(b)
    b.learning_rate = 0.5
    assert config.params_hash(a) != config.params_hash(b)
