"""Provenance of a run: the git commit, data version, input digests, library versions, params and
process that produced it, and the pipeline it belongs to."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from rlhf_trust import fileio
from rlhf_trust.config import as_flat_dict
from rlhf_trust.errors import UserError

LIBRARIES = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "mlflow", "dvc",
             "great-expectations")
RESULT_PATHS = ("dvc.lock", "metrics", "eval", "influence", "reports")  # what `dvc repro` writes into git
_SECRET = re.compile(r"(api[_-]?key|token|secret|password)", re.IGNORECASE)


def git_info() -> dict[str, str]:
    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=False)
            return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "HEAD") or "unknown"
    # Dirty = code, params or config differ from the commit. The results a repro itself rewrites
    # (dvc.lock, metrics, eval, influence, reports) do not count, or every stage after the first
    # of a clean run would call the tree dirty.
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                *(f":(exclude){p}" for p in RESULT_PATHS))
    return {"git.commit": commit, "git.dirty": str(bool(dirty)).lower()}


def data_version() -> str:
    """The md5 that data.dvc records for data/ (the data version every run is tied to)."""
    dvc_file = Path("data.dvc")
    if not dvc_file.is_file():
        return "untracked"
    m = re.search(r"md5:\s*([0-9a-f]{32}(?:\.dir)?)", dvc_file.read_text())
    return m.group(1) if m else "unknown"


def library_versions() -> dict[str, str]:
    out = {}
    for lib in LIBRARIES:
        try:
            out[f"version.{lib}"] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            pass
    return out


def input_tags(inputs: list[str | Path]) -> dict[str, str]:
    tags = {}
    for p in map(Path, inputs):
        if p.is_file():
            tags[f"input.{p.as_posix()}.md5"] = fileio.md5_file(p)
        elif p.is_dir():
            sj = p / "stage.json"
            tags[f"input.{p.as_posix()}.md5"] = fileio.read_json(sj).get("md5", "") if sj.is_file() else "dir"
    return tags


DATASET_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".gz")


def datasets(inputs: list[str | Path]) -> list[tuple[str, str, str]]:
    """(name, content md5, source) of each dataset a stage reads: data files among its inputs and
    `data.dvc` (the raw data/ directory, whose digest is DVC's md5 of its content)."""
    out = []
    for p in map(Path, inputs):
        if p.name == "data.dvc" and p.is_file():
            out.append(("data", data_version().removesuffix(".dir"), str(p.resolve().parent / "data")))
        elif p.is_file() and p.name.endswith(DATASET_SUFFIXES) and p.name != "stage.json":
            out.append((p.name.split(".")[0], fileio.md5_file(p), str(p.resolve())))
    return out


def safe_params(cfg: Any) -> dict[str, str]:
    if cfg is None or not dataclasses.is_dataclass(cfg):
        return {}
    flat = as_flat_dict(cfg)
    return {k: str(v)[:500] for k, v in flat.items() if not _SECRET.search(k)}


def pipeline_id(tags: dict[str, str]) -> str:
    """Groups the runs of one pipeline: $RLHF_TRUST_PIPELINE_ID, else the DVC experiment name,
    else commit + params.yaml + data version (re-running the same configuration joins its group)."""
    explicit = os.environ.get("RLHF_TRUST_PIPELINE_ID") or tags.get("dvc.exp_name")
    if explicit:
        return explicit
    params = Path("params.yaml")
    p_sha = hashlib.sha256(params.read_bytes()).hexdigest()[:8] if params.is_file() else "noparams"
    dirty = "-dirty" if tags.get("git.dirty") == "true" else ""
    return f"{tags.get('git.commit', 'unknown')[:8]}{dirty}-p{p_sha}-d{tags.get('data.version', '')[:8]}"


def pipeline_name(pipeline: str, tags: dict[str, str]) -> str:
    """What the parent run is called in the UI: the DVC experiment name (or an explicit
    $RLHF_TRUST_PIPELINE_ID), else `<git short sha>[-dirty] <data version short>`, plus `smoke` for
    `make smoke` runs."""
    if os.environ.get("RLHF_TRUST_PIPELINE_ID") or tags.get("dvc.exp_name"):
        name = pipeline
    else:
        dirty = "-dirty" if tags.get("git.dirty") == "true" else ""
        name = f"{tags.get('git.commit', 'unknown')[:7]}{dirty} {tags.get('data.version', '')[:8]}"
    return f"{name} smoke" if os.environ.get("RLHF_TRUST_PROFILE") == "smoke" else name


def pipeline_params() -> dict[str, str]:
    """params.yaml, flattened (`eval.verticals.privacy.limit`), as the parent run's params."""
    from rlhf_trust.config import read_params
    from rlhf_trust.config.schema import flatten

    try:
        flat = flatten(read_params(Path("params.yaml")), "")
    except (UserError, OSError):
        return {}
    return {k: str(v)[:500] for k, v in flat.items() if not _SECRET.search(k)}


def process_tags() -> dict[str, str]:
    """Which process runs a stage: lets a later start tell a crashed run from a live one."""
    import socket

    return {"process.pid": str(os.getpid()), "process.host": socket.gethostname()}
