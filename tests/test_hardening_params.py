"""Params files a careless user writes get one line and exit 2."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rlhf_trust import cli, config
from rlhf_trust.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, data: bytes | str) -> Path:
    p = tmp_path / "params.yaml"
    p.write_bytes(data.encode() if isinstance(data, str) else data)
    return p


def one_line(capsys, argv: list[str]) -> tuple[int, str]:
    rc = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and "\n" not in err, err
    return rc, err


@pytest.mark.parametrize("text, expected", [
    ("model:\n  tiny_heads: 0\n", "model.tiny_heads: must be >= 1"),
    ("model:\n  tiny_vocab_size: -5\n", "model.tiny_vocab_size: must be >= 256"),
    ("model:\n  tiny_layers: 0\n", "model.tiny_layers: must be >= 1"),
    ("model:\n  tiny_hidden_size: 0\n", "model.tiny_hidden_size: must be >= 1"),
    ("sft:\n  epochs: .inf\n", "sft.epochs: must be a finite number"),
    ("sft:\n  learning_rate: .nan\n", "sft.learning_rate: must be a finite number"),
    ("dpo:\n  beta: inf\n", "dpo.beta: must be a finite number"),
    ("", "is empty"),
    ("# only a comment\n\n# and another\n", "is empty"),
    ("sft:\n  epochs: 1\nsft:\n  epochs: 2\n", "duplicate key 'sft'"),
    ("sft:\n  epochs: 1\n  epochs: 2\n", "duplicate key 'epochs'"),
])
def test_bad_params_one_line_exit_2(tmp_path, capsys, text, expected):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError, match=re.escape(expected)):
        config.load_all(p)
    rc, err = one_line(capsys, ["prepare", "--params", str(p)])
    assert rc == 2 and expected in err


def test_non_utf8_params_file(tmp_path, capsys):
    text = (ROOT / "params.yaml").read_text(encoding="utf-8").replace("# Default run", "# D\xe9fault run", 1)
    p = write(tmp_path, text.encode("latin-1"))
    rc, err = one_line(capsys, ["prepare", "--params", str(p)])
    assert rc == 2 and "is not UTF-8 text" in err


def test_params_path_that_is_a_directory(tmp_path, capsys):
    rc, err = one_line(capsys, ["prepare", "--params", str(tmp_path)])
    assert rc == 2 and "is a directory, not a params file" in err
    assert "not found" not in err


def test_the_shipped_params_files_have_no_duplicate_keys():
    for p in (ROOT / "params.yaml", *sorted((ROOT / "params").glob("*.yaml"))):
        config.read_params(p)
