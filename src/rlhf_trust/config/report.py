"""Params section of the report stage (rlhf_trust/report/)."""

from __future__ import annotations

from dataclasses import dataclass

from rlhf_trust.config.schema import require as _require


@dataclass
class ReportConfig:
    out_dir: str = "reports"
    top_k: int = 3

    def check(self) -> None:
        _require(self.top_k >= 0, "report.top_k", "must be >= 0")
