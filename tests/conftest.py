"""Test-wide settings: offline, no telemetry, one torch thread, MLflow in a temp sqlite store.

Data: tests read the small committed fixtures in tests/fixtures/data (real rows of every dataset, in the
raw layout). The few tests that need the full data mirror ask for the `mirror` fixture; they run only when
RLHF_TRUST_DATA_MIRROR names the mirror's directory, and otherwise are deselected with a note at the end.
"""

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
FIXTURES = ROOT / "tests" / "fixtures" / "data"
MIRROR_ENV = "RLHF_TRUST_DATA_MIRROR"


def pytest_configure(config):
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Tests that use the `mirror` fixture are `mirror` tests; without RLHF_TRUST_DATA_MIRROR they are
    deselected (and counted in the terminal summary)."""
    for item in items:
        if "mirror" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.mirror)
    if os.environ.get(MIRROR_ENV):
        return
    skipped = [i for i in items if i.get_closest_marker("mirror")]
    if skipped:
        config.hook.pytest_deselected(items=skipped)
        items[:] = [i for i in items if not i.get_closest_marker("mirror")]
    config.stash[_MIRROR_DESELECTED] = len(skipped)


_MIRROR_DESELECTED = pytest.StashKey[int]()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    n = config.stash.get(_MIRROR_DESELECTED, 0)
    if n:
        terminalreporter.write_line(f"{n} test(s) need the full data mirror and did not run: "
                                    f"set {MIRROR_ENV} to its directory to run them")


@pytest.fixture(scope="session")
def raw_data() -> Path:
    """The committed fixtures in the raw layout (read only: use `copy` to change them)."""
    return FIXTURES


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The full data mirror named by RLHF_TRUST_DATA_MIRROR (tests using it are deselected without it)."""
    path = Path(os.environ.get(MIRROR_ENV, "")).expanduser()
    if not os.environ.get(MIRROR_ENV) or not path.is_dir():
        pytest.fail(f"{MIRROR_ENV}={os.environ.get(MIRROR_ENV, '')!r} is not a directory")
    return path.resolve()


def fixture_counts() -> dict[str, int]:
    """Rows per dataset in the fixtures, as the parsers read them (hh: raw pairs)."""
    from rlhf_trust import verticals
    from rlhf_trust.data import records

    return {"hh": len(records.load_hh_raw(FIXTURES)), **{s.dataset: len(s.load(FIXTURES)) for s in verticals.specs()}}


@pytest.fixture
def fixture_rows(monkeypatch) -> dict[str, int]:
    """The validation gate expects the fixtures' row counts instead of the full datasets' (a spec's
    `expected_rows`); returns the counts."""
    import dataclasses
    import importlib

    from rlhf_trust import verticals

    counts = fixture_counts()
    registry = verticals._registry()
    for name, spec in list(registry.items()):
        n = counts[spec.dataset]
        monkeypatch.setitem(registry, name, dataclasses.replace(spec, expected_rows=n))
        module = importlib.import_module(f"{verticals.PACKAGE}.{name}")
        if hasattr(module, "EXPECTED_ROWS"):  # what its suite (`expectations`) reads
            monkeypatch.setattr(module, "EXPECTED_ROWS", n)
    return counts


@pytest.fixture
def copy(raw_data, tmp_path) -> Path:
    """A writable copy of the fixtures (tests that corrupt raw files)."""
    dest = tmp_path / "data"
    shutil.copytree(raw_data, dest)
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
