"""params/smoke.yaml (`make smoke`) stays in step with params.yaml: same sections and keys, valid."""

from __future__ import annotations

from pathlib import Path

from rlhf_trust import config
from rlhf_trust.config.schema import flatten

ROOT = Path(__file__).resolve().parents[1]


def keys(path: Path) -> set[str]:
    return set(flatten(config.read_params(path), ""))


def test_smoke_params_have_the_default_keys():
    # A key added to params.yaml but not to smoke.yaml makes the smoke run silently use the
    # dataclass default (often the full-size one) or, for a removed key, fail at start.
    default, smoke = keys(ROOT / "params.yaml"), keys(ROOT / "params" / "smoke.yaml")
    assert sorted(default - smoke) == [], "add these keys to params/smoke.yaml"
    # smoke.yaml may pin a few more (threads: 1 on a shared machine); load_all rejects unknown ones


def test_smoke_params_are_valid_and_tiny():
    cfgs = config.load_all(ROOT / "params" / "smoke.yaml")
    assert set(cfgs) == set(config.SECTIONS)
    assert cfgs["model"].spec == "tiny-gpt-neox"
    default = config.load_all(ROOT / "params.yaml")
    for stage in ("sft", "rm", "ppo", "dpo"):
        assert cfgs[stage].max_train_pairs <= default[stage].max_train_pairs
    assert cfgs["prepare"].max_train_pairs <= default["prepare"].max_train_pairs
