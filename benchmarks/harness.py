"""The benchmarks' shared harness: one command-line convention, one tiny set-up for `--quick`, and
one result schema (benchmarks/README.md).

Every benchmark builds its parser with `parser()` (adds --quick, --out, --params, --data), measures,
and hands its numbers to `write_result()`, which wraps them with the facts needed to judge them:

    {"schema": 1, "benchmark": <name>, "quick": bool,
     "meta": {"commit", "tree_clean", "date", "command", "params_hash",
              "cpu": {"model", "cores", "flags": {"amx", "avx512_bf16", "avx2"}},
              "threads", "python", "libraries": {name: version}},
     "setup": {...what was measured on...}, "results": {...the measured values...}}

A run with --quick writes under benchmarks/results/quick/ (not kept in git), so it never replaces a
full-size result. Scripts import this module by name: `python benchmarks/<script>.py` puts this
directory on sys.path itself.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

SCHEMA = 1
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
LIBRARIES = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "numpy", "scipy",
             "scikit-learn", "kronfluence", "mlflow")
FLAGS = {"amx": "amx_bf16", "avx512_bf16": "avx512_bf16", "avx2": "avx2"}


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An ArgumentParser with the options every benchmark takes."""
    ap = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="a minute or two on the tiny model or a small slice (checks the benchmark runs)")
    ap.add_argument("--out", type=Path, default=None,
                    help="result JSON (default: benchmarks/results[/quick]/<benchmark>.json)")
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--data", type=Path, default=None,
                    help="raw data layout (default: $RLHF_TRUST_DATA, else params data.dir, else data.mirror_dir)")
    return ap


def data_dir(args: argparse.Namespace) -> Path:
    """The raw data layout to read: --data, $RLHF_TRUST_DATA, params' data.dir if filled, else data.mirror_dir."""
    if args.data:
        return Path(args.data)
    if os.environ.get("RLHF_TRUST_DATA"):
        return Path(os.environ["RLHF_TRUST_DATA"])
    from rlhf_trust import config

    cfg = config.load("data", args.params)
    for d in (Path(cfg.dir), Path(cfg.mirror_dir)):
        d = d if d.is_absolute() else ROOT / d
        if d.is_dir() and any(d.iterdir()):
            return d
    raise SystemExit(f"error: no data found at {cfg.dir} or {cfg.mirror_dir}; run `make data` or pass --data")


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10,
                              check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def last_commit(path: str | os.PathLike) -> str:
    """The last commit that changed `path` (the run a committed result file belongs to), or ""."""
    return _git("log", "-1", "--format=%H", "--", str(path))


def cpu() -> dict[str, Any]:
    """CPU model, logical cores and the flags that decide bf16 speed (from /proc/cpuinfo on Linux)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "cores": os.cpu_count(),
            "flags": {name: flag in flags for name, flag in FLAGS.items()}}


def libraries() -> dict[str, str]:
    out = {}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            pass
    return out


def params_hash(path: str | os.PathLike) -> str:
    """sha256 (16 hex digits) of the params file's bytes, or "" when there is none."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError:
        return ""


def threads() -> int:
    try:
        import torch
    except ImportError:
        return 1
    return torch.get_num_threads()


def portable(value: Any) -> Any:
    """`value` with this checkout's path made relative and the home directory written `~`, so a result
    names no particular machine's directories."""
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v) for v in value]
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str):
        return value.replace(str(ROOT) + os.sep, "").replace(str(ROOT), ".").replace(str(Path.home()), "~")
    return value


def metadata_block(args: argparse.Namespace, argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv if argv is None else argv
    return {"commit": _git("rev-parse", "HEAD") or "unknown",
            "tree_clean": _git("status", "--porcelain", "--untracked-files=no") == "",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": portable(shlex.join(["python", *argv])),
            "params_hash": params_hash(getattr(args, "params", "") or ""),
            "cpu": cpu(), "threads": threads(), "python": platform.python_version(), "libraries": libraries()}


def out_path(name: str, args: argparse.Namespace) -> Path:
    if getattr(args, "out", None):
        return Path(args.out)
    return (RESULTS / "quick" if getattr(args, "quick", False) else RESULTS) / f"{name}.json"


def write_result(name: str, args: argparse.Namespace, results: dict[str, Any],
                 setup: dict[str, Any] | None = None) -> Path:
    """Write one result in the schema (atomically; a result written earlier stays until this one exists)."""
    from rlhf_trust import fileio

    path = out_path(name, args)
    path.parent.mkdir(parents=True, exist_ok=True)
    fileio.write_json(path, {"schema": SCHEMA, "benchmark": name, "quick": bool(getattr(args, "quick", False)),
                             "meta": metadata_block(args), "setup": portable(setup or {}), "results": results})
    print(f"{name}: wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}", flush=True)
    return path


# --- the tiny set-up of --quick: real HH pairs and a tiny-gpt-neox base, trained by the stages' code

TINY_TRAIN = {"max_length": 96, "max_prompt_length": 48, "batch_size": 4, "eval_batch_size": 8,
              "logging_steps": 1, "save_steps": 1000, "learning_rate": 5e-3, "threads": 1, "device": "cpu"}
TINY_PPO = {"total_episodes": 8, "response_length": 16, "heldout_prompts": 8, "max_train_pairs": 16}


def tiny_section(stage: str) -> dict[str, Any]:
    return {**TINY_TRAIN, **(TINY_PPO if stage == "ppo" else {})}


def tiny_cfg(stage: str, **over: Any) -> Any:
    """The stage's config sized for the tiny model (validated like params.yaml)."""
    from rlhf_trust import config

    return config.section(stage, {stage: {**tiny_section(stage), **over}})


def tiny_params(stages: tuple[str, ...]) -> str:
    """A params.yaml text holding the tiny sizes of `stages` (for code that loads params from a file)."""
    import yaml

    return yaml.safe_dump({s: tiny_section(s) for s in stages}, sort_keys=False)


def scratch(prefix: str) -> Path:
    """A temporary directory removed when the process exits."""
    import atexit
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, True)
    return path


def hh_pairs(data: Path, n_train: int, n_heldout: int) -> tuple[list[dict], list[dict]]:
    """The first HH pairs the prepare stage makes from `data`, cut to the tiny model's lengths."""
    from rlhf_trust.config import PrepareConfig
    from rlhf_trust.data.prepare import prepare_hh

    train, heldout, _ = prepare_hh(data, PrepareConfig(seed=0, heldout_fraction=0.1, max_prompt_chars=200,
                                                       max_response_chars=200))
    return train[:n_train], heldout[:n_heldout]


def tiny_layout(root: Path, data: Path, n_train: int = 32, n_heldout: int = 16):
    """A throw-away project layout under `root`: prepared HH splits + a tiny-gpt-neox base model."""
    from rlhf_trust import fileio
    from rlhf_trust.models import build_tiny_base
    from rlhf_trust.train.inputs import Layout

    layout = Layout(data_dir=root / "prepared", models_dir=root / "models", checkpoints_dir=root / "checkpoints",
                    metrics_dir=root / "metrics")
    train, heldout = hh_pairs(data, n_train, n_heldout)
    fileio.write_jsonl(layout.split("hh_train"), train)
    fileio.write_jsonl(layout.split("hh_heldout"), heldout)
    build_tiny_base(layout.model("base"), [r["prompt"] + r["chosen"] + r["rejected"] for r in train])
    return layout


def tiny_run(root: Path, data: Path, stages: tuple[str, ...] = ("sft", "rm", "ppo", "dpo")):
    """`tiny_layout` plus the training stages' own `run()` on it, in order; returns the layout."""
    import importlib

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"  # TRL's logging: a throw-away store
    layout = tiny_layout(root, data)
    for stage in stages:
        importlib.import_module(f"rlhf_trust.train.{stage}").run(tiny_cfg(stage), layout)
    return layout
