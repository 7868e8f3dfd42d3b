"""`rlhf-trust data`: fill data/ from the mirror and check it against data.dvc by content."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf_trust.config import DataConfig
from rlhf_trust.data import sources
from rlhf_trust.errors import DataError, UserError


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    subprocess.run(["git", "init", "-q"], check=True)
    subprocess.run([str(Path(sys.executable).parent / "dvc"), "init", "-q"], check=True)
    return tmp_path


def test_mirror_fill_then_check_matches_on_a_fresh_cache(repo, raw_data, tmp_path):
    mirror = tmp_path / "mirror"
    shutil.copytree(raw_data, mirror)
    cfg = DataConfig(mirror_dir=str(mirror))
    assert "created data.dvc" in sources.run(cfg)
    recorded = Path("data.dvc").read_text()
    shutil.rmtree(".dvc/cache", ignore_errors=True)  # a fresh clone has no cache yet
    shutil.rmtree("data")
    assert "data/ matches data.dvc" in sources.run(cfg)
    assert Path("data.dvc").read_text() == recorded
    assert sorted(p.name for p in Path("data/ethics").iterdir()) == ["cm_test.csv"]


def test_changed_source_fails_and_keeps_the_committed_pointer(repo, raw_data, tmp_path):
    mirror = tmp_path / "mirror"
    shutil.copytree(raw_data, mirror)
    cfg = DataConfig(mirror_dir=str(mirror))
    sources.run(cfg)
    recorded = Path("data.dvc").read_text()
    (mirror / "README.md").chmod(0o644)
    (mirror / "README.md").write_text("changed\n")
    with pytest.raises(UserError, match="does not match data.dvc") as e:
        sources.run(cfg)
    assert e.value.exit_code == 1
    assert Path("data.dvc").read_text() == recorded


def test_missing_mirror_is_one_line(repo, tmp_path):
    with pytest.raises(DataError, match="mirror directory not found"):
        sources.run(DataConfig(mirror_dir=str(tmp_path / "nope")))


def test_outside_a_dvc_repository_is_one_line(tmp_path, monkeypatch, raw_data):
    monkeypatch.chdir(tmp_path)
    mirror = tmp_path / "mirror"
    (mirror / "ethics").mkdir(parents=True)
    shutil.copyfile(raw_data / "ethics" / "cm_test.csv", mirror / "ethics" / "cm_test.csv")
    with pytest.raises(DataError, match="is not a DVC repository") as e:
        sources.run(DataConfig(mirror_dir=str(mirror)))
    assert e.value.exit_code == 2
    assert (tmp_path / "data" / "ethics" / "cm_test.csv").is_file()  # the copy itself is kept
