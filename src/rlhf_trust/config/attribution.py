"""Params section of the influence stage (rlhf_trust/attribution/)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from rlhf_trust import verticals as verticals_registry
from rlhf_trust.config.schema import require as _require


@dataclass
class InfluenceValidity:
    """The LDS of each attribution method per stage (dattri's linear datamodeling score: Spearman of
    the predicted vs the retrained test loss over `m` random halves of the training pairs), measured
    at a reduced set-up by retraining. The report shows the chosen method's, labelled with `setup`;
    `record` names the measurement record the numbers come from."""
    record: str = ""
    setup: str = ""
    m: int = 16
    lds: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # stage -> method -> [LDS, lo, hi]

    def check(self) -> None:
        for stage, methods in self.lds.items():
            _require(isinstance(methods, dict), f"influence.validity.lds.{stage}", "must map method -> [lds, lo, hi]")
            for method, v in methods.items():
                key = f"influence.validity.lds.{stage}.{method}"
                ok = (isinstance(v, list) and len(v) == 3
                      and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v))
                _require(ok, key, "must be [lds, ci95_low, ci95_high]")
                _require(-1 <= v[1] <= v[0] <= v[2] <= 1, key, "needs -1 <= low <= lds <= high <= 1")
        _require(self.m >= 2, "influence.validity.m", "must be >= 2")
        _require(not self.lds or bool(self.setup.strip()), "influence.validity.setup",
                 "must say the set-up the LDS was measured at")

    def measured(self, stage: str, method: str) -> dict[str, Any]:
        """The stage's metrics for `method`'s LDS (nothing when not measured for this stage)."""
        v = self.lds.get(stage, {}).get(method)
        if v is None:
            return {}
        return {"lds": v[0], "lds_ci95": [v[1], v[2]], "lds_m": self.m, "lds_setup": self.setup,
                "lds_record": self.record}


@dataclass
class InfluenceConfig:
    stages: list[str] = field(default_factory=lambda: ["sft", "rm", "dpo"])
    verticals: list[str] = field(default_factory=lambda: list(verticals_registry.names()))  # every registered one
    max_train_pairs: int | None = None
    max_test_samples: int = 32
    layers: str = "all"                      # "all", "last:N" or a regex on module names
    grad_dtype: Literal["float32", "float16"] = "float32"
    shard_size: int = 256
    damping_scale: float = 0.1
    dpo_beta: float = 0.1
    method: str = "exact"                    # exact | datainf | gradsim | repsim | ekfac: ranks the pairs (docs/influence.md)
    compare: list[str] = field(default_factory=lambda: ["exact", "datainf", "gradsim", "repsim"])  # also computed
    exact_memory_gb: float | None = None     # memory the exact solve may use (None = what is available)
    top_k: int = 5
    batch_size: int = 8
    max_length: int = 256
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    threads: int = 0
    svd_rank: int = 4                        # full fine-tunes -> LoRA by truncated SVD
    sft_test_loss: Literal["lm_contrast", "sft"] = "lm_contrast"  # "sft" = the study's NLL of the new text
    seed: int = 0
    validity: InfluenceValidity = field(default_factory=InfluenceValidity)

    def check(self) -> None:
        self.validity.check()
        bad = [s for s in self.stages if s not in ("sft", "rm", "dpo")]
        _require(not bad, "influence.stages", f"unknown stage(s) {bad}; use sft, rm, dpo")
        _require(bool(self.verticals), "influence.verticals", "must name at least one vertical")  # names: the stage checks them against the registry
        _require(self.damping_scale > 0, "influence.damping_scale", "must be > 0")
        _require(self.dpo_beta > 0, "influence.dpo_beta", "must be > 0")
        _require(self.shard_size >= 1, "influence.shard_size", "must be >= 1")
        _require(self.batch_size >= 1, "influence.batch_size", "must be >= 1")
        _require(self.max_length >= 8, "influence.max_length", "must be >= 8")
        _require(self.max_test_samples >= 1, "influence.max_test_samples", "must be >= 1")
        _require(self.max_train_pairs is None or self.max_train_pairs >= 1, "influence.max_train_pairs",
                 "must be >= 1 or null")
        methods = ("exact", "datainf", "gradsim", "repsim", "ekfac")
        _require(self.method in methods, "influence.method", f"unknown method '{self.method}'; use {', '.join(methods)}")
        bad = [m for m in self.compare if m not in methods]
        _require(not bad, "influence.compare", f"unknown method(s) {bad}; use {', '.join(methods)}")
        _require(self.exact_memory_gb is None or self.exact_memory_gb > 0, "influence.exact_memory_gb",
                 "must be > 0 or null")
        _require(self.top_k >= 1, "influence.top_k", "must be >= 1")
        _require(self.svd_rank >= 1, "influence.svd_rank", "must be >= 1")
        _require(bool(self.layers.strip()), "influence.layers", "must be all, last:N or a regex")
        _require(self.threads >= 0, "influence.threads", "must be >= 0")
