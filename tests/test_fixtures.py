"""The committed fixtures (tests/fixtures/data): small, parsed to the counts the tests rely on, and,
when the full mirror is at hand, every row a real row of it."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from conftest import FIXTURES, fixture_counts

from rlhf_trust import verticals
from rlhf_trust.data import records

DATA_SUFFIXES = (".jsonl", ".jsonl.gz", ".csv", ".json", ".npy")


def data_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and p.name.endswith(DATA_SUFFIXES))


def lines(path: Path) -> list[bytes]:
    raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    return raw.splitlines()  # the mirror's last line may lack its newline


def test_fixtures_stay_small():
    size = sum(p.stat().st_size for p in FIXTURES.rglob("*") if p.is_file())
    assert size < 600_000, size


def test_every_dataset_has_a_few_rows_and_fewer_than_the_full_data():
    counts = fixture_counts()
    assert set(counts) == {"hh"} | {spec.dataset for spec in verticals.specs()}
    assert counts["hh"] == len(records.hh_pairs(FIXTURES)) == 200
    for spec in verticals.specs():
        assert 3 <= counts[spec.dataset] < spec.expected_rows, spec.name


def test_the_readme_names_every_data_file():
    readme = (FIXTURES / "README.md").read_text(encoding="utf-8")
    missing = [f for f in data_files(FIXTURES) if Path(f).name not in readme]
    assert not missing


def test_every_fixture_row_is_a_row_of_the_mirror(mirror):
    import numpy as np

    files = data_files(FIXTURES)
    assert set(files) <= set(data_files(mirror))
    for rel in files:
        mine, full = FIXTURES / rel, mirror / rel
        if rel.endswith(".npy"):  # the mirror's entries at the rows its JSONL partner kept
            partner = rel.replace("sensitive_attr_", "").replace(".npy", ".jsonl")
            theirs = lines(mirror / partner)
            rows = [theirs.index(line) for line in lines(FIXTURES / partner)]
            a, b = np.load(mine, allow_pickle=False), np.load(full, allow_pickle=False)
            assert a.dtype == b.dtype and len(a) == len(rows) > 0 and (a == b[rows]).all(), rel
        elif rel.endswith(".json"):  # items of a list, or key -> value entries of a mapping
            a, b = json.loads(mine.read_bytes()), json.loads(full.read_bytes())
            assert type(a) is type(b) and len(a) > 0, rel
            if isinstance(a, list):
                assert all(item in b for item in a), rel
            else:
                assert all(k in b and b[k] == v for k, v in a.items()), rel
        else:  # line-based (CSV with its header, JSONL): byte-identical lines
            theirs = set(lines(full))
            assert lines(mine) and all(line in theirs for line in lines(mine)), rel


@pytest.mark.parametrize("rel", ["LICENSE-DecodingTrust", "hh_rlhf/LICENSE"])
def test_licences_are_the_mirror_s(mirror, rel):
    assert (FIXTURES / rel).read_bytes() == (mirror / rel).read_bytes()
