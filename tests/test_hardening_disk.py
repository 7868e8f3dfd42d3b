"""A full disk while writing eval outputs, the generation cache or a model
directory is one line and exit 2, and loses nothing written before."""

from __future__ import annotations

import json
import sqlite3

import pytest
from disk_support import full_disk
from train_support import base_texts, hh_pairs, write_jsonl

from rlhf_trust import cli

PARAMS = """
model:
  spec: tiny-gpt-neox
eval:
  data_dir: {data}
  out_dir: eval
  batch_size: 4
  cache: cache/gen.sqlite
  bootstrap_samples: 200
  verticals:
    ethics: {{limit: 3, max_new_tokens: 4}}
"""


@pytest.fixture
def project(tmp_path, raw_data, monkeypatch):
    from rlhf_trust.models import build_tiny_base

    build_tiny_base(tmp_path / "outputs" / "models" / "base", base_texts())
    (tmp_path / "params.yaml").write_text(PARAMS.format(data=raw_data))
    write_jsonl(tmp_path / "outputs" / "prepared" / "hh_train.jsonl", hh_pairs(40))  # `base`: tokenizer texts
    monkeypatch.chdir(tmp_path)
    return tmp_path


def one_line(capsys, argv) -> tuple[int, str]:
    rc = cli.main(argv)
    out = capsys.readouterr().err
    lines = [line for line in out.splitlines() if line.startswith("rlhf-trust")]
    assert len(lines) == 1 and "Traceback" not in out, out
    return rc, lines[0]


EVAL = ["eval", "--vertical", "ethics", "--model", "base"]


def test_full_disk_on_eval_outputs(project, capsys, monkeypatch):
    assert cli.main(EVAL) == 0
    out = project / "eval" / "ethics" / "base"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (project / "params.yaml").write_text((project / "params.yaml").read_text().replace("limit: 3", "limit: 4"))
    with full_disk(project / "eval", monkeypatch):
        rc, line = one_line(capsys, EVAL)
    assert rc == 2 and line.startswith("rlhf-trust eval: error: no space left on device while writing eval/ethics/base/")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_full_disk_on_the_generation_cache(project, capsys, monkeypatch):
    with full_disk(project / "cache", monkeypatch):
        rc, line = one_line(capsys, EVAL)
    assert rc == 2 and "no space left on device while writing the generation cache cache/gen.sqlite" in line
    assert not (project / "eval" / "ethics" / "base" / "metrics.json").exists()
    assert cli.main(EVAL) == 0  # with space again


def test_corrupt_generation_cache_is_one_line(project, capsys):
    (project / "cache").mkdir()
    (project / "cache" / "gen.sqlite").write_bytes(b"not a database" * 100)
    rc, line = one_line(capsys, EVAL)
    assert rc == 2 and "generation cache cache/gen.sqlite: cannot" in line and "delete it" in line
    with pytest.raises(sqlite3.DatabaseError):  # the file was left as it was
        sqlite3.connect(project / "cache" / "gen.sqlite").execute("SELECT * FROM cache").fetchall()


def test_full_disk_on_a_model_directory(project, capsys, monkeypatch):
    base = project / "outputs" / "models" / "base"
    info = json.loads((base / "stage.json").read_text())
    (project / "params.yaml").write_text((project / "params.yaml").read_text().replace(
        "spec: tiny-gpt-neox", "spec: tiny-gpt-neox\n  tiny_hidden_size: 128"))
    with full_disk(project / "outputs" / "models", monkeypatch):
        rc, line = one_line(capsys, ["base"])
    assert rc == 2 and line.startswith("rlhf-trust base: error: no space left on device while writing outputs/models/base")
    assert json.loads((base / "stage.json").read_text()) == info  # the earlier model is untouched
    assert sorted(p.name for p in (project / "outputs" / "models").iterdir()) == ["base"]
