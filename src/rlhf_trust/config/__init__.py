"""One typed config, loaded from params.yaml and validated at start.

Where a section lives: each params section is a dataclass in the module named after the pipeline
folder whose stage reads it, so `config/<folder>.py` mirrors `rlhf_trust/<folder>/`:
data.py (data, prepare, validate, curate), models.py (model), train.py (sft, rm, the alignment arms
ppo, dpo, kto, orpo, simpo, grpo, rloo, and `train`: which arms run and the training seeds), evals.py (eval),
attribution.py (influence), report.py (report). schema.py is the engine they are built with
(reading, typed building, coercion, one-line errors). This module joins them: `load(section)`
returns one section, validated (the whole file is validated too). Errors name the key and the
problem in one line (ConfigError -> exit 2). Each vertical validates its own eval.verticals entry
(rlhf_trust.evals.check_entries, run by the eval stage), so the config package imports nothing
above it and a broken vertical cannot break `rlhf-trust sft`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlhf_trust.config import schema
from rlhf_trust.config.attribution import InfluenceConfig
from rlhf_trust.config.data import CurateConfig, DataConfig, PrepareConfig, ValidateConfig
from rlhf_trust.config.evals import EvalConfig
from rlhf_trust.config.models import ModelConfig
from rlhf_trust.config.report import ReportConfig
from rlhf_trust.config.schema import DEFAULT_PARAMS, as_flat_dict, build, params_hash
from rlhf_trust.config.train import (
    DPOConfig,
    GRPOConfig,
    KTOConfig,
    LoraConfig,
    ORPOConfig,
    PPOConfig,
    RLOOConfig,
    RMConfig,
    SFTConfig,
    SimPOConfig,
    TrainArmsConfig,
    TrainCommon,
)

__all__ = [
    "DEFAULT_PARAMS",
    "SECTIONS",
    "CurateConfig",
    "DPOConfig",
    "DataConfig",
    "EvalConfig",
    "GRPOConfig",
    "InfluenceConfig",
    "KTOConfig",
    "LoraConfig",
    "ModelConfig",
    "ORPOConfig",
    "PPOConfig",
    "PrepareConfig",
    "RLOOConfig",
    "RMConfig",
    "ReportConfig",
    "SFTConfig",
    "SimPOConfig",
    "TrainArmsConfig",
    "TrainCommon",
    "ValidateConfig",
    "as_flat_dict",
    "build",
    "cli",
    "load",
    "load_all",
    "params_hash",
    "read_params",
    "section",
]

SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "prepare": PrepareConfig,
    "validate": ValidateConfig,
    "model": ModelConfig,
    "sft": SFTConfig,
    "rm": RMConfig,
    "ppo": PPOConfig,
    "dpo": DPOConfig,
    "train": TrainArmsConfig,
    "kto": KTOConfig,
    "orpo": ORPOConfig,
    "simpo": SimPOConfig,
    "grpo": GRPOConfig,
    "rloo": RLOOConfig,
    "eval": EvalConfig,
    "influence": InfluenceConfig,
    "curate": CurateConfig,
    "report": ReportConfig,
}


def read_params(path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    return schema.read_params(path, SECTIONS)


def section(name: str, raw: dict[str, Any]) -> Any:
    cfg = build(SECTIONS[name], raw.get(name), name)
    cfg.check()
    return cfg


def load_all(path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    """Validate every section (cheap) so a typo anywhere is caught before any work starts."""
    raw = read_params(path)
    return {name: section(name, raw) for name in SECTIONS}


def load(name: str, path: str | Path = DEFAULT_PARAMS) -> Any:
    """The validated config of one stage's section (the whole file is validated too)."""
    return load_all(path)[name]


def cli(args) -> int:
    """`rlhf-trust params`: validate the whole params file before anything runs (`make repro` does)."""
    cfgs = load_all(args.params)
    print(f"params: {args.params} is valid; training seeds {cfgs['train'].seeds}")
    return 0
