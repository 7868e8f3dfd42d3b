"""Test-wide settings: offline, no telemetry, one torch thread, MLflow in a temp sqlite store."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

for _k, _v in {
    "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1", "GX_ANALYTICS_ENABLED": "false", "TOKENIZERS_PARALLELISM": "false",
    "TRL_EXPERIMENTAL_SILENCE": "1", "OMP_NUM_THREADS": "1",
}.items():
    os.environ[_k] = _v

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (ROOT / ".." / "shared" / "data").resolve()


def pytest_configure(config):
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real data mirror not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def copy(shared_data, tmp_path) -> Path:
    """A writable copy of the real data mirror (tests that corrupt raw files)."""
    dest = tmp_path / "data"
    shutil.copytree(shared_data, dest)
    for p in dest.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dest


@pytest.fixture(scope="session", autouse=True)
def _mlflow_store(tmp_path_factory):
    """One throwaway sqlite store for the session (creating one costs ~2 s)."""
    d = tmp_path_factory.mktemp("mlflow")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{d}/mlflow.db"
    os.environ["RLHF_TRUST_ROOT"] = str(d)
    yield d
