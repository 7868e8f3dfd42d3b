"""Params sections of the data, model, eval, curate and report stages (the training and influence
sections are in config.py). Each is a dataclass with a `check()`; rlhf_trust.schema builds them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from rlhf_trust.schema import require as _require


@dataclass
class DataConfig:
    """Where `rlhf-trust data` fills `data/` from."""

    source: Literal["mirror", "hub"] = "mirror"
    mirror_dir: str = "../shared/data"   # a local copy in the raw layout (see data/README)
    dir: str = "data"                    # the DVC-tracked raw directory
    hh_subsets: list[str] = field(default_factory=lambda: ["harmless-base"])  # hub: which HH subsets
    hh_split: str = "test"               # hub: split written to hh_rlhf/<subset>-<split>.jsonl.gz

    def check(self) -> None:
        _require(bool(self.hh_subsets), "data.hh_subsets", "must name at least one subset")


@dataclass
class PrepareConfig:
    seed: int = 0
    heldout_fraction: float = 0.1
    max_train_pairs: int | None = None    # None = all
    max_heldout_pairs: int | None = None
    max_prompt_chars: int = 2000             # HH prompts are cut (from the left) to keep recent turns
    max_response_chars: int = 1000

    def check(self) -> None:
        _require(0 < self.heldout_fraction < 1, "prepare.heldout_fraction", "must be in (0, 1)")
        for k in ("max_train_pairs", "max_heldout_pairs"):
            v = getattr(self, k)
            _require(v is None or v > 0, f"prepare.{k}", "must be positive or null")
        _require(self.max_prompt_chars > 0 and self.max_response_chars > 0,
                 "prepare.max_*_chars", "must be positive")


@dataclass
class ValidateConfig:
    min_hh_pairs: int = 100                  # fewer raw HH pairs than this fails the gate
    max_text_chars: int = 50000              # any single text field longer than this fails
    docs_dir: str = "reports/data_docs"

    def check(self) -> None:
        _require(self.min_hh_pairs >= 1, "validate.min_hh_pairs", "must be >= 1")
        _require(self.max_text_chars >= 100, "validate.max_text_chars", "must be >= 100")


@dataclass
class ModelConfig:
    """The base model: a hub id, a local path, `gemma-3-270m` (offline wheel) or `tiny-gpt-neox`."""

    spec: str = "gemma-3-270m"
    revision: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    cache_dir: str = "~/.cache/rlhf-trust"   # materialised safetensors of GGUF models
    # tiny-gpt-neox only (tests, quick runs)
    tiny_hidden_size: int = 64
    tiny_layers: int = 2
    tiny_heads: int = 4
    tiny_vocab_size: int = 512
    tiny_max_positions: int = 512
    seed: int = 0

    def check(self) -> None:
        _require(bool(self.spec.strip()), "model.spec", "must not be empty")
        for k in ("tiny_hidden_size", "tiny_layers", "tiny_heads", "tiny_max_positions"):
            _require(getattr(self, k) >= 1, f"model.{k}", "must be >= 1")
        _require(self.tiny_vocab_size >= 256, "model.tiny_vocab_size", "must be >= 256 (the byte-level alphabet)")
        _require(self.tiny_hidden_size % self.tiny_heads == 0, "model.tiny_hidden_size",
                 "must be divisible by model.tiny_heads")


@dataclass
class EvalConfig:
    """Shared generation settings; each vertical's own entry lives under `verticals.<name>`
    (keys = that vertical's `Settings` dataclass in rlhf_trust/evals/<name>.py)."""

    models: list[str] = field(default_factory=lambda: ["base", "sft", "ppo", "dpo"])
    data_dir: str = "outputs/prepared"       # prepared JSONL dir (or any raw-layout dir)
    out_dir: str = "eval"                    # eval/<vertical>/<model>/{metrics.json,samples.jsonl}
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


@dataclass
class CurateConfig:
    """`rlhf-trust curate` (data/curate.py): the HH training set the training stages read. Off =
    the prepared set passed through byte for byte; on = pairs dropped by their influence scores."""

    enabled: bool = False
    mode: Literal["drop_harmful", "keep_helpful"] = "drop_harmful"
    stages: list[str] = field(default_factory=lambda: ["dpo"])          # influence stages whose scores count
    verticals: list[str] = field(default_factory=lambda: ["toxicity"])
    harmful: Literal["auto", "toward_change", "against_change"] = "auto"  # which score sign hurts trust
    top_k: int | None = 8                      # drop_harmful: how many (or top_fraction of the set)
    top_fraction: float | None = None
    within_first: int | None = None            # only the first N pairs are candidates (= what a stage trains on)
    scores_dir: str = "influence"              # the earlier run's influence/<stage>/<vertical>/scores.parquet
    summary: str = "reports/trust_summary.json"   # harmful: auto reads each stage's contrast here

    def check(self) -> None:
        bad = [s for s in self.stages if s not in ("sft", "rm", "dpo")]
        _require(not bad and bool(self.stages), "curate.stages", f"unknown or no stage(s) {bad}; use sft, rm, dpo")
        _require(bool(self.verticals), "curate.verticals", "must name at least one vertical")
        _require(self.top_k is None or self.top_k >= 1, "curate.top_k", "must be >= 1 or null")
        _require(self.top_fraction is None or 0 < self.top_fraction < 1, "curate.top_fraction", "must be in (0, 1)")
        _require(self.within_first is None or self.within_first >= 1, "curate.within_first", "must be >= 1 or null")
        _require(self.mode != "drop_harmful" or (self.top_k is None) != (self.top_fraction is None),
                 "curate.top_k", "drop_harmful needs exactly one of top_k and top_fraction")


@dataclass
class ReportConfig:
    out_dir: str = "reports"
    top_k: int = 3

    def check(self) -> None:
        _require(self.top_k >= 0, "report.top_k", "must be >= 0")
