"""`rlhf-trust prepare`: raw layout -> typed JSONL records with stable paths (outputs/prepared/).

HH pairs are split at the last "\\n\\nAssistant:" (records.split_pair); pairs whose dialogues
diverge before that turn or whose final response is empty are dropped and counted. Prompts are
cut from the left at a "\\n\\nHuman:" turn boundary to `max_prompt_chars` (recent turns matter
most), responses from the right to `max_response_chars`. A seeded shuffle gives train/held-out.
Each benchmark becomes <dataset>.jsonl through its vertical's parser: everything an eval reads.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from rlhf_trust import fileio, paths, verticals
from rlhf_trust.config import DataConfig, PrepareConfig
from rlhf_trust.data import records
from rlhf_trust.errors import DataError


def truncate_prompt(prompt: str, max_chars: int) -> str:
    """Keep the most recent turns: cut at the first Human-turn boundary that fits."""
    if len(prompt) <= max_chars:
        return prompt
    tail = prompt[-max_chars:]
    i = tail.find(records.HUMAN)
    if i >= 0 and tail[i:].endswith(records.ASSISTANT):
        return tail[i:]
    return tail  # a single very long turn: keep its end (still ends with the Assistant marker)


def prepare_hh(raw_dir: Path, cfg: PrepareConfig) -> tuple[list[dict], list[dict], dict[str, int]]:
    raw = records.load_hh_raw(raw_dir)
    pairs = records.hh_pairs(raw_dir)
    kept = []
    dropped_empty = 0
    for p in pairs:
        if not p["chosen"].strip() or not p["rejected"].strip() or p["chosen"] == p["rejected"]:
            dropped_empty += 1
            continue
        kept.append({
            "id": p["id"],
            "prompt": truncate_prompt(p["prompt"], cfg.max_prompt_chars),
            "chosen": p["chosen"][: cfg.max_response_chars],
            "rejected": p["rejected"][: cfg.max_response_chars],
        })
    if not kept:
        raise DataError(f"no usable HH pairs in {raw_dir / 'hh_rlhf'}")
    rng = random.Random(cfg.seed)
    order = sorted(kept, key=lambda r: r["id"])
    rng.shuffle(order)
    n_held = max(1, round(len(order) * cfg.heldout_fraction))
    heldout, train = order[:n_held], order[n_held:]
    if cfg.max_train_pairs:
        train = train[: cfg.max_train_pairs]
    if cfg.max_heldout_pairs:
        heldout = heldout[: cfg.max_heldout_pairs]
    stats = {"hh_raw_pairs": len(raw), "hh_dropped_diverging": len(raw) - len(pairs),
             "hh_dropped_empty_or_equal": dropped_empty, "hh_usable_pairs": len(kept),
             "hh_train": len(train), "hh_heldout": len(heldout)}
    return train, heldout, stats


def run(data_cfg: DataConfig, cfg: PrepareConfig, out_dir: Path = paths.PREPARED) -> dict[str, Any]:
    raw_dir = Path(data_cfg.dir)
    if not raw_dir.is_dir():
        raise DataError(f"missing raw data directory: {raw_dir} (run `make data` first)")
    train, heldout, stats = prepare_hh(raw_dir, cfg)
    tables = {"hh_train": train, "hh_heldout": heldout}
    for spec in verticals.specs():  # each benchmark parsed by its vertical
        tables[spec.dataset] = spec.load(raw_dir)
        stats[spec.dataset] = len(tables[spec.dataset])
    with fileio.atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for name, rows in tables.items():
            fileio.write_jsonl(tmp / f"{name}.jsonl", rows)
    return stats


def cli(args) -> int:
    from rlhf_trust import config, tracking

    raw = config.read_params(args.params)
    data_cfg, cfg = config.section("data", raw), config.section("prepare", raw)
    config.load_all(args.params)  # a typo anywhere in params fails before any work
    tracking.track_stage(  # ends with the summary line: the prepared counts
        "prepare", lambda sr: run(data_cfg, cfg), cfg=cfg, inputs=["data.dvc"],
        metrics_path=paths.stage_metrics("prepare"),
    )
    return 0
