"""What a training stage reads and where it writes: the `Layout`, its upstream model, the
prepared HH splits and their token-level clipping."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf_trust import fileio, paths, pipeline
from rlhf_trust.errors import DataError, UserError
from rlhf_trust.train.runtime import setup_runtime

# The stage each one starts from (its model directory is the parent of the new one).
PARENT = pipeline.PARENT
CHECKPOINTS = paths.OUTPUTS / "checkpoints"


@dataclass
class Layout:
    """Where a stage reads and writes. Defaults = the DVC layout; tests pass temp dirs.

    With a `seed`, every trained model, checkpoint and metrics file is that seed's:
    <models_dir>/<stage>/s<seed>, <metrics_dir>/<stage>/s<seed>.json (the base model has no seed)."""

    data_dir: Path = paths.CURATED   # `rlhf-trust curate`: the prepared set unless curate.enabled
    models_dir: Path = paths.MODELS
    checkpoints_dir: Path = CHECKPOINTS
    metrics_dir: Path = paths.METRICS
    seed: int | None = None

    def _seeded(self, stage: str) -> str:
        if self.seed is None or stage == "base":
            return stage
        return f"{stage}/{paths.seed_part(self.seed)}"

    def model(self, stage: str) -> Path:
        return Path(self.models_dir) / self._seeded(stage)

    def checkpoints(self, stage: str) -> Path:
        return Path(self.checkpoints_dir) / self._seeded(stage)

    def metrics(self, stage: str) -> Path:
        return Path(self.metrics_dir) / f"{self._seeded(stage)}.json"

    def split(self, name: str) -> Path:
        return Path(self.data_dir) / f"{name}.jsonl"


def parent_dir(stage: str, layout: Layout, name: str | None = None) -> Path:
    """The upstream model directory, or one clear line when that stage has not run."""
    from rlhf_trust.models.store import STAGE_FILE

    name = name or PARENT[stage]
    d = layout.model(name)
    fileio.recover(d)  # a kill between atomic_path's two renames left the earlier directory aside
    if not (d / STAGE_FILE).is_file():
        raise UserError(f"{stage}: upstream model '{name}' not found at {d}; run `rlhf-trust {name}` first")
    return d


def load_split(name: str, layout: Layout, cap: int | None, stage: str) -> list[dict]:
    """HH records of one prepared split, first `cap` of them (prepare already shuffled them)."""
    from rlhf_trust.data import records

    path = layout.split(name)
    if not path.is_file():
        raise DataError(f"{stage}: missing {path}; run `rlhf-trust prepare` first")
    rows = records.load(name, layout.data_dir)
    rows = rows[:cap] if cap else rows
    if not rows:
        raise DataError(f"{stage}: the {name} split is empty ({path})")
    for r in rows[:1]:
        missing = {"prompt", "chosen", "rejected"} - set(r)
        if missing:
            raise DataError(f"{stage}: {path} records lack {sorted(missing)}")
    return rows


@dataclass
class Inputs:
    """A stage's upstream model dir, its tokenizer, clipped train/held-out records and data md5."""

    parent: Path
    tok: Any
    train: list[dict]
    heldout: list[dict]
    data_md5: str


def stage_inputs(stage: str, cfg: Any, layout: Layout, parent: str | None = None,
                 heldout: bool = True) -> Inputs:
    """Everything a stage reads, validated: one clear line if the model or a split is missing."""
    from rlhf_trust.models import load_tokenizer

    setup_runtime(cfg)
    parent_path = parent_dir(stage, layout, parent)
    splits = ["hh_train"] + (["hh_heldout"] if heldout else [])
    rows = load_split("hh_train", layout, cfg.max_train_pairs, stage)
    held = load_split("hh_heldout", layout, cfg.max_heldout_pairs, stage) if heldout else []
    tok = load_tokenizer(parent_path)
    return Inputs(parent=parent_path, tok=tok,
                  train=clip(tok, rows, cfg.max_prompt_length, cfg.max_length),
                  heldout=clip(tok, held, cfg.max_prompt_length, cfg.max_length),
                  data_md5=data_md5([layout.split(s) for s in splits]))


def data_md5(files: list[Path]) -> str:
    h = hashlib.md5()
    for f in files:
        h.update(fileio.md5_file(f).encode())
    return h.hexdigest()


def clip(tok: Any, rows: list[dict], max_prompt: int, max_length: int) -> list[dict]:
    """Token-level clipping shared by every stage, done on the text so TRL sees whole records.

    The prompt keeps its LAST `max_prompt` tokens (the latest turns; HH prompts end with
    "\\n\\nAssistant:"); each response keeps its first tokens so prompt + response + BOS/EOS fit in
    `max_length`. TRL 1.12's DPO/RM only truncate the end of the whole sequence, which would cut
    the responses away on long prompts.
    """
    out = []
    for r in rows:
        prompt = _keep_last_tokens(tok, r["prompt"], max_prompt)
        n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
        room = max(1, max_length - n_prompt - 3)
        row = dict(r, prompt=prompt)
        for k in ("chosen", "rejected"):
            if k in r:
                row[k] = _keep_first_tokens(tok, r[k], room)
        out.append(row)
    return out


def _keep_last_tokens(tok: Any, text: str, n: int) -> str:
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    if len(enc["input_ids"]) <= n:
        return text
    return text[enc["offset_mapping"][-n][0]:]


def _keep_first_tokens(tok: Any, text: str, n: int) -> str:
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    if len(enc["input_ids"]) <= n:
        return text
    return text[: enc["offset_mapping"][n - 1][1]]
