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


def make_layout(tmp: Path, n_train: int = 24, n_heldout: int = 8, **sizes):
    """A temp project layout: prepared HH splits from real data + a tiny-gpt-neox base model."""
    from rlhf_trust.models import build_tiny_base
    from rlhf_trust.train.common import Layout

    layout = Layout(data_dir=tmp / "prepared", models_dir=tmp / "models", checkpoints_dir=tmp / "checkpoints",
                    metrics_dir=tmp / "metrics")
    write_jsonl(layout.split("hh_train"), hh_pairs(n_train, max_chars=200))
    write_jsonl(layout.split("hh_heldout"), hh_pairs(n_heldout, offset=500, max_chars=200))
    build_tiny_base(layout.model("base"), tiny_texts(), **sizes)
    return layout


def train_cfg(stage: str, **over):
    """A fast config for the tiny model (full params validation included)."""
    from rlhf_trust import config

    base = dict(max_length=96, max_prompt_length=48, batch_size=4, eval_batch_size=8, logging_steps=1,
                save_steps=1000, learning_rate=5e-3, threads=1, device="cpu")
    base.update(over)
    return config.section(stage, {stage: base})
