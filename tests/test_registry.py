"""The vertical registry: every registered vertical declares a suite, a headline direction, a
bootstrap unit and an influence test loss; the data path reads it; a dataset without a suite fails."""

from __future__ import annotations

import types

import pytest

from rlhf_trust import evals
from rlhf_trust.config import ValidateConfig
from rlhf_trust.data import records, validate
from rlhf_trust.errors import DataError, UserError


def test_every_vertical_declares_suite_direction_unit_and_test_loss():
    mods = evals.modules()
    assert set(mods) == set(evals.VERTICALS) and "fairness" in mods
    kit = validate.SuiteKit(ValidateConfig())
    suites = validate.suites(ValidateConfig())
    for name, mod in mods.items():
        suite = mod.expectations(kit)
        assert suite and suites[mod.DATASET] and len(suites[mod.DATASET]) == len(suite), name
        assert isinstance(mod.HIGHER_IS_BETTER, bool) and mod.HEADLINE, name
        assert isinstance(mod.TEST_LOSS, str) and mod.TEST_LOSS.strip(), name
        assert isinstance(mod.UNIT, str) and mod.UNIT.strip() and callable(mod.units), name
        assert mod.PROTOCOLS and all(p in ("generation", "loglik") for p in mod.PROTOCOLS), name
        assert records.RAW_FILES[mod.DATASET] == list(mod.RAW_FILES)


def test_data_path_reads_the_registry(shared_data):
    assert set(records.BENCHMARKS) == {m.DATASET for m in evals.modules().values()}
    assert records.EXPECTED_ROWS["fairness"] == 800
    assert len(records.load("fairness", shared_data)) == 800
    assert records.unexpected_files(shared_data) == {}  # fairness/ files are declared, none stray


def test_a_module_missing_a_declaration_is_one_line():
    mod = types.ModuleType("rlhf_trust.evals.broken")
    mod.NAME, mod.HEADLINE = "broken", "x"
    with pytest.raises(UserError, match="does not declare DATASET, RAW_FILES.*HIGHER_IS_BETTER.*TEST_LOSS"):
        evals.check_module(mod, "broken")


def test_a_dataset_without_a_suite_is_an_error():
    import pandas as pd

    with pytest.raises(DataError, match="no Great Expectations suite for dataset.*new_vertical"):
        validate.validate_frames({"new_vertical": pd.DataFrame({"id": ["a"]})}, ValidateConfig())
