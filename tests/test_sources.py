"""`rlhf-trust data`: choose the source (auto: the mirror when present, else the hub), fill data/ and
check it against data.dvc by content."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf_trust.config import DataConfig
from rlhf_trust.data import sources
from rlhf_trust.errors import DataError, UserError

ROOT = Path(__file__).resolve().parents[1]


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
        sources.run(DataConfig(source="mirror", mirror_dir=str(tmp_path / "nope")))


def test_auto_uses_the_mirror_when_present_and_says_so(repo, raw_data, tmp_path, capsys):
    mirror = tmp_path / "mirror"
    shutil.copytree(raw_data, mirror)
    msg = sources.run(DataConfig(source="auto", mirror_dir=str(mirror)), check=False)
    assert capsys.readouterr().out == f"data: using the local mirror {mirror}\n"
    assert msg.endswith("from mirror")
    assert (Path("data") / "ethics" / "cm_test.csv").read_bytes() == (raw_data / "ethics" / "cm_test.csv").read_bytes()


def test_auto_without_a_mirror_downloads_from_the_hub_and_says_so(repo, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    fetched = []

    def hub(cfg, dest):  # stands in for the download
        (dest / "hh_rlhf").mkdir(parents=True)
        (dest / "hh_rlhf" / "LICENSE").write_text("MIT\n")
        fetched.append(cfg.hh_subsets)
        return 1

    monkeypatch.setattr(sources, "from_hub", hub)
    absent = tmp_path / "no-mirror"
    assert sources.run(DataConfig(mirror_dir=str(absent)), check=False) == "wrote 1 files to data/ from hub"
    assert capsys.readouterr().out == f"data: no local mirror at {absent}; downloading from the Hugging Face hub\n"
    assert fetched == [["harmless-base"]] and Path("data/hh_rlhf/LICENSE").is_file()
    sources.run(DataConfig(source="hub", mirror_dir=str(tmp_path)), check=False)  # explicit: the hub anyway
    assert capsys.readouterr().out == "data: downloading from the Hugging Face hub\n" and len(fetched) == 2


def test_auto_without_a_mirror_while_offline_is_one_line(repo, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError) as e:
        sources.run(DataConfig(mirror_dir=str(tmp_path / "nope")))
    msg = str(e.value)
    assert "\n" not in msg and e.value.exit_code == 2
    assert f"no local mirror at {tmp_path / 'nope'}" in msg and "HF_HUB_OFFLINE=0" in msg
    assert not Path("data").exists()


def test_the_mirror_matches_the_committed_data_dvc(repo, mirror):
    shutil.copyfile(ROOT / "data.dvc", "data.dvc")
    assert "data/ matches data.dvc" in sources.run(DataConfig(source="mirror", mirror_dir=str(mirror)))
    assert Path("data.dvc").read_bytes() == (ROOT / "data.dvc").read_bytes()


def test_outside_a_dvc_repository_is_one_line(tmp_path, monkeypatch, raw_data):
    monkeypatch.chdir(tmp_path)
    mirror = tmp_path / "mirror"
    (mirror / "ethics").mkdir(parents=True)
    shutil.copyfile(raw_data / "ethics" / "cm_test.csv", mirror / "ethics" / "cm_test.csv")
    with pytest.raises(DataError, match="is not a DVC repository") as e:
        sources.run(DataConfig(mirror_dir=str(mirror)))
    assert e.value.exit_code == 2
    assert (tmp_path / "data" / "ethics" / "cm_test.csv").is_file()  # the copy itself is kept
