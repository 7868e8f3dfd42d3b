"""Stable output locations. Everything is relative to the project root (the cwd of `dvc repro`)."""

from __future__ import annotations

import os
import subprocess
from functools import lru_cache
from pathlib import Path

OUTPUTS = Path("outputs")
PREPARED = OUTPUTS / "prepared"
VALIDATED = OUTPUTS / "validated"
MANIFEST = VALIDATED / "manifest.json"
CURATED = OUTPUTS / "curated"  # `rlhf-trust curate`: the HH training set the training stages read
MODELS = OUTPUTS / "models"
METRICS = Path("metrics")  # one small JSON per training/data stage, declared as DVC metrics
EVAL = Path("eval")
INFLUENCE = Path("influence")
REPORTS = Path("reports")


def prepared(name: str) -> Path:
    return PREPARED / f"{name}.jsonl"


def validated(dataset: str) -> Path:
    """The validation gate's per-dataset verdict (what a stage reading that dataset depends on)."""
    return VALIDATED / f"{dataset}.json"


def seed_part(seed: int) -> str:
    """The folder (or file stem) of one training seed's results: s0, s1, ..."""
    return f"s{seed}"


def model_dir(stage: str, seed: int | None = None) -> Path:
    """outputs/models/<stage>/s<seed> for a trained model; outputs/models/base (no seed) for the base."""
    return MODELS / stage if seed is None or stage == "base" else MODELS / stage / seed_part(seed)


def stage_metrics(stage: str, seed: int | None = None) -> Path:
    return METRICS / (f"{stage}.json" if seed is None else f"{stage}/{seed_part(seed)}.json")


@lru_cache(maxsize=1)
def repo_root() -> Path:
    """The git top level (the main checkout even inside `dvc exp run --temp`), else the cwd."""
    env = os.environ.get("RLHF_TRUST_ROOT")
    if env:
        return Path(env).resolve()
    cwd = Path.cwd().resolve()
    # `dvc exp run --temp/--queue` runs in <root>/.dvc/tmp/exps/<tmp>: anchor at the real root,
    # or MLflow runs would land in the temp copy and vanish with it.
    parts = cwd.parts
    for i in range(len(parts) - 3):
        if parts[i:i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    try:
        common = subprocess.run(
            ["git", "rev-parse", "--path-format=absolute", "--git-common-dir"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
        root = Path(common).parent
        if (root / "dvc.yaml").exists():
            return root
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                             check=True, timeout=10).stdout.strip()
        return Path(top)
    except (OSError, subprocess.SubprocessError):
        return Path.cwd().resolve()
