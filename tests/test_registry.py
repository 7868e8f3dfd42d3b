"""The vertical registry: every registered vertical's SPEC declares a suite, a headline direction, a
bootstrap unit, an influence test loss and a hub source; the data path reads it; a malformed SPEC or
a dataset without a suite fails in one line."""

from __future__ import annotations

import dataclasses

import pytest

from rlhf_trust import evals, verticals
from rlhf_trust.config import ValidateConfig
from rlhf_trust.data import records, validate
from rlhf_trust.errors import DataError, UserError


def test_every_vertical_declares_suite_direction_unit_and_test_loss():
    specs = {s.name: s for s in verticals.specs()}
    assert set(specs) == set(evals.VERTICALS) and "fairness" in specs
    kit = validate.SuiteKit(ValidateConfig())
    suites = validate.suites(ValidateConfig())
    for name, spec in specs.items():
        assert spec is evals.get(name) and spec.name == name
        suite = spec.expectations(kit)
        assert suite and suites[spec.dataset] and len(suites[spec.dataset]) == len(suite), name
        assert isinstance(spec.higher_is_better, bool) and spec.headline, name
        assert spec.test_loss.strip() and spec.unit.strip() and callable(spec.units), name
        assert spec.protocols and all(p in ("generation", "loglik") for p in spec.protocols), name
        assert records.raw_files()[spec.dataset] == list(spec.raw_files)
        hub_dests = {f.dest for f in spec.hub}  # the hub source fills exactly the vertical's files
        assert hub_dests >= set(spec.raw_files) and hub_dests <= set(spec.raw_files) | set(spec.other_files), name
        assert dataclasses.is_dataclass(spec.settings), name


def test_data_path_reads_the_registry(raw_data):
    assert set(records.raw_files()) == {"hh"} | {s.dataset for s in verticals.specs()}
    assert verticals.get("fairness").expected_rows == 800
    assert len(records.load("fairness", raw_data)) == 40  # the fixtures: 10 of each file's 200
    assert records.unexpected_files(raw_data) == {}  # fairness/ files are declared, none stray


def test_a_malformed_spec_is_one_line():
    good = verticals.get("ethics")
    with pytest.raises(UserError, match="vertical 'broken': higher_is_better must be a bool"):
        dataclasses.replace(good, name="broken", higher_is_better="no")
    with pytest.raises(UserError, match="vertical 'broken': protocols must be among"):
        dataclasses.replace(good, name="broken", protocols=("multiple_choice",))
    with pytest.raises(UserError, match="vertical 'broken': declare its raw_files and hub source"):
        dataclasses.replace(good, name="broken", hub=())
    with pytest.raises(UserError, match="unknown vertical 'nope' .known: bias, "):
        evals.get("nope")


def test_a_dataset_without_a_suite_is_an_error():
    import pandas as pd

    with pytest.raises(DataError, match="no Great Expectations suite for dataset.*new_vertical"):
        validate.validate_frames({"new_vertical": pd.DataFrame({"id": ["a"]})}, ValidateConfig())


def test_a_spec_under_another_name_is_one_line(monkeypatch):
    import sys
    import types

    mod = types.ModuleType("rlhf_trust.evals.broken")
    mod.SPEC = dataclasses.replace(verticals.get("ethics"), name="other")
    monkeypatch.setitem(sys.modules, "rlhf_trust.evals.broken", mod)
    with pytest.raises(UserError, match="rlhf_trust.evals.broken: SPEC must be a VerticalSpec named 'broken'"):
        verticals._add({}, "broken")
    assert "broken" not in verticals.names() and "stage" not in verticals.names()  # engine modules are not verticals
