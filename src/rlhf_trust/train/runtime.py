"""Process set-up shared by the training stages: threads, seeds, ranks under `accelerate launch`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def setup_runtime(cfg: Any) -> None:
    """Threads, seeds and environment for a reproducible run."""
    import torch
    from transformers import set_seed

    os.environ.setdefault("MLFLOW_MAX_LOG_PARAMS", "0")  # the stage logs its own params; TRL's would clash
    threads = auto_threads() if cfg.threads == "auto" else cfg.threads
    if threads:
        torch.set_num_threads(threads)
    set_seed(cfg.seed)


def auto_threads(samples: int = 5) -> int:
    """`threads: auto`: the cores this process may use that are not running something else right
    now (/proc/loadavg's runnable count, this process excluded; the least of a few readings 20 ms
    apart, so a passing background thread does not count), at least 1. Torch threads on a core
    another process holds wait on each other (measured 5-10x slower on this shared machine)."""
    import time

    cores = len(os.sched_getaffinity(0))
    running = []
    for i in range(samples):
        try:
            running.append(int(Path("/proc/loadavg").read_text().split()[3].split("/")[0]))
        except (OSError, ValueError, IndexError):
            return cores
        if i + 1 < samples:
            time.sleep(0.02)
    return max(1, min(cores, cores - (min(running) - 1)))


def is_main_process() -> bool:
    """Rank 0 under `accelerate launch`/torchrun (RANK is set by both), else True."""
    return int(os.environ.get("RANK", "0")) == 0


def barrier() -> None:
    """Wait for every process (no-op when not distributed). Call after the TRL config exists:
    reading `args.device` there initialises torch.distributed under `accelerate launch`."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def use_cpu(cfg: Any) -> bool:
    from rlhf_trust.models.store import resolve_device

    return resolve_device(cfg.device) == "cpu"


def cpu_bf16(cfg: Any, field: str = "precision") -> bool:
    """`<stage>.<field>` is bfloat16 on the CPU AND this CPU runs bf16 matmuls natively
    (AVX512-BF16 / AMX through oneDNN). Without them torch emulates bf16: measured on this
    2-core AMD EPYC (AVX2 only) a 256 x 640 x 2048 matmul took 86 ms in bf16 vs 16 ms in fp32
    (1 thread) and one SFT step of gemma-3-270m over 8 minutes, so the stage then runs float32
    (one warning line) instead of losing its time budget."""
    if getattr(cfg, field) != "bfloat16" or not use_cpu(cfg):
        return False
    from rlhf_trust.models import store

    return store.cpu_bf16_or_warn(getattr(cfg, "stage", "train"), field)


def warn(stage: str, message: str) -> None:
    """One warning line on stderr (the pipeline carries on)."""
    import sys

    print(f"rlhf-trust {stage}: warning: {message}", file=sys.stderr, flush=True)
