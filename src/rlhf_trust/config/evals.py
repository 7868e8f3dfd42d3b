"""Params section of the eval stage (rlhf_trust/evals/); each vertical's own entry under
`eval.verticals` is checked by that vertical."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from rlhf_trust.config.schema import require as _require


@dataclass
class EvalConfig:
    """Shared generation settings; each vertical's own entry lives under `verticals.<name>`
    (keys = that vertical's `Settings` dataclass in rlhf_trust/evals/<name>.py)."""

    models: list[str] = field(default_factory=lambda: ["base", "sft", "ppo", "dpo"])
    data_dir: str = "outputs/prepared"       # prepared JSONL dir (or any raw-layout dir)
    out_dir: str = "eval"                    # eval/<vertical>/<model>/{metrics.json,samples.jsonl.gz,units.csv}
    batch_size: int = 8
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    # the dtype every eval model computes in (part of the cache key); auto = the stage's own (float32)
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    threads: int | Literal["auto"] = "auto"  # auto = every core this process may use; 0 = torch default
    seed: int = 0
    cache: str = "outputs/cache/generations.sqlite"   # "" = no cache
    bootstrap_samples: int = 1000
    verticals: dict[str, dict[str, Any]] = field(default_factory=dict)

    def check(self) -> None:
        _require(self.batch_size >= 1, "eval.batch_size", "must be >= 1")
        _require(self.threads == "auto" or self.threads >= 0, "eval.threads", "must be >= 0 or auto")
        _require(self.bootstrap_samples >= 100, "eval.bootstrap_samples", "must be >= 100")
        bad = [m for m in self.models if m not in ("base", "sft", "ppo", "dpo")]
        _require(not bad, "eval.models", f"unknown model stage(s) {bad}; use base, sft, ppo, dpo")
        for name, entry in self.verticals.items():  # the vertical checks its own keys (evals.check_entries)
            _require(entry is None or isinstance(entry, dict), f"eval.verticals.{name}", "must be a mapping")
