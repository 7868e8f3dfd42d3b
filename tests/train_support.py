"""Shared helpers for the model/training tests: real HH pairs and a tiny base model.

HH records are read straight from the raw mirror (split at the last "\n\nAssistant:"), the same
{"id","prompt","chosen","rejected"} schema the prepare stage writes.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import torch

from rlhf_trust.models.chat import split_dialogue

HH_RAW = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "hh_rlhf" / "harmless-base-test.jsonl.gz"


def hh_pairs(n: int, offset: int = 0, max_chars: int = 300) -> list[dict]:
    rows = []
    with gzip.open(HH_RAW, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i < offset:
                continue
            if len(rows) == n:
                break
            r = json.loads(line)
            prompt, chosen = split_dialogue(r["chosen"])
            p2, rejected = split_dialogue(r["rejected"])
            if p2 != prompt or chosen == rejected:
                continue
            rows.append({"id": f"hh-{i}", "prompt": prompt[-max_chars:], "chosen": chosen[:max_chars],
                         "rejected": rejected[:max_chars]})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def tiny_texts() -> list[str]:
    return [r["prompt"] + r["chosen"] for r in hh_pairs(120)] + [r["rejected"] for r in hh_pairs(120)]


def state_snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
