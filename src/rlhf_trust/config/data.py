"""Params sections of the data folder's stages: `data` (sources), `prepare`, `validate` and
`curate` (rlhf_trust/data/)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rlhf_trust import verticals as verticals_registry
from rlhf_trust.config.schema import require as _require


@dataclass
class DataConfig:
    """Where `rlhf-trust data` fills `data/` from."""

    # auto = the mirror when mirror_dir is a directory, else the Hugging Face hub
    source: Literal["auto", "mirror", "hub"] = "auto"
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
        if self.enabled:  # only registered ones: a name is also a directory under scores_dir (no `../`);
            # checked only when on (off reads no scores), so loading another stage's section imports no vertical
            known = verticals_registry.names()
            unknown = [v for v in self.verticals if v not in known]
            _require(not unknown, "curate.verticals",
                     f"unknown vertical(s) {', '.join(map(repr, unknown))} (known: {', '.join(known)})")
        _require(self.top_k is None or self.top_k >= 1, "curate.top_k", "must be >= 1 or null")
        _require(self.top_fraction is None or 0 < self.top_fraction < 1, "curate.top_fraction", "must be in (0, 1)")
        _require(self.within_first is None or self.within_first >= 1, "curate.within_first", "must be >= 1 or null")
        _require(self.mode != "drop_harmful" or (self.top_k is None) != (self.top_fraction is None),
                 "curate.top_k", "drop_harmful needs exactly one of top_k and top_fraction")
