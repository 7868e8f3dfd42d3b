"""Shared helpers for the model/training tests: real HH pairs and a tiny base model.

HH records are read straight from the fixtures (tests/fixtures/data) (split at the last "\n\nAssistant:"), the same
{"id","prompt","chosen","rejected"} schema the prepare stage writes.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import torch

from rlhf_trust.data.records import split_pair

HH_RAW = Path(__file__).resolve().parent / "fixtures" / "data" / "hh_rlhf" / "harmless-base-test.jsonl.gz"


def hh_pairs(n: int, offset: int = 0, max_chars: int = 300) -> list[dict]:
    rows = []
    with gzip.open(HH_RAW, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i < offset:
                continue
            if len(rows) == n:
                break
            r = json.loads(line)
            split = split_pair(r["chosen"], r["rejected"])
            if split is None or split[1] == split[2]:
                continue
            prompt, chosen, rejected = split
            rows.append({"id": f"hh-{i}", "prompt": prompt[-max_chars:], "chosen": chosen[:max_chars],
                         "rejected": rejected[:max_chars]})
    return rows


def base_texts(limit: int = 300) -> list[str]:
    """The fixtures' HH dialogues, chosen then rejected: what tiny-gpt-neox trains its tokenizer on
    when given no texts (it reads them from data/)."""
    with gzip.open(HH_RAW, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for _, line in zip(range(limit), f)]
    return [r["chosen"] for r in rows] + [r["rejected"] for r in rows]


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
    from rlhf_trust.train.inputs import Layout

    layout = Layout(data_dir=tmp / "prepared", models_dir=tmp / "models", checkpoints_dir=tmp / "checkpoints",
                    metrics_dir=tmp / "metrics")
    write_jsonl(layout.split("hh_train"), hh_pairs(n_train, max_chars=200))
    write_jsonl(layout.split("hh_heldout"), hh_pairs(n_heldout, offset=100, max_chars=200))
    build_tiny_base(layout.model("base"), tiny_texts(), **sizes)
    return layout


def train_cfg(stage: str, **over):
    """A fast config for the tiny model (full params validation included)."""
    from rlhf_trust import config

    base = {"max_length": 96, "max_prompt_length": 48, "batch_size": 4, "eval_batch_size": 8, "logging_steps": 1,
            "save_steps": 1000, "learning_rate": 5e-3, "threads": 1, "device": "cpu"}
    return config.section(stage, {stage: {**base, **over}})


def copy_layout(src, dst: Path):
    """An independent copy of a layout (data + models) so a test can write stage outputs."""
    import shutil

    from rlhf_trust.train.inputs import Layout

    shutil.copytree(src.data_dir, dst / "prepared")
    shutil.copytree(src.models_dir, dst / "models")
    return Layout(data_dir=dst / "prepared", models_dir=dst / "models", checkpoints_dir=dst / "checkpoints",
                  metrics_dir=dst / "metrics")


def hand_made_pairs(n: int, offset: int = 0) -> list[dict]:
    """Real HH prompts with a fixed refusal as chosen and a fixed compliance as rejected."""
    return [dict(r, chosen=" I'm sorry, I can't help with that.", rejected=" Sure! Here is exactly how to do it.")
            for r in hh_pairs(n, offset=offset, max_chars=160)]


def adapter_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "adapter_model.safetensors"))


def merged_differs(model_dir: Path, parent_dir: Path) -> bool:
    """True when the stage's merged weights differ from its parent's (training changed them)."""
    from rlhf_trust.models import load_merged_causal_lm

    a = load_merged_causal_lm(model_dir).state_dict()
    b = load_merged_causal_lm(parent_dir).state_dict()
    return any(not torch.equal(a[k], b[k]) for k in a if k in b)


class KillAt:
    """A TrainerCallback that interrupts training after `step` steps (a crash / kill -9 stand-in:
    the checkpoints on disk are exactly what a killed run leaves behind)."""

    def __new__(cls, step: int):
        from transformers import TrainerCallback

        class _Kill(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                if state.global_step == step:
                    raise KeyboardInterrupt(f"killed at step {step}")

        return _Kill()


def check_resume(stage_module, cfg, layout, keys: tuple[str, ...], resumed_key: str = "resumed_from_step",
                 kill_at: int = 3, full: dict | None = None, rel: float = 1e-5) -> dict:
    """Run uninterrupted, then killed after `kill_at` steps and re-run: the re-run must resume from
    the last checkpoint and end with the same metrics. Returns the resumed run's metrics."""
    import pytest

    full = full or stage_module.run(cfg, layout)
    with pytest.raises(KeyboardInterrupt):
        stage_module.run(cfg, layout, callbacks=[KillAt(kill_at)])
    resumed = stage_module.run(cfg, layout)
    assert resumed[resumed_key] == cfg.save_steps * (kill_at // cfg.save_steps)
    for k in keys:
        assert resumed[k] == pytest.approx(full[k], rel=rel, abs=1e-6), k
    return resumed


def trained_layout(tmp_path_factory, stages: tuple[str, ...]):
    """A tiny layout with base and `stages` trained (tests copy it before writing into it)."""
    import importlib

    layout = make_layout(tmp_path_factory.mktemp("_".join(stages)), n_train=16)
    for stage in stages:
        importlib.import_module(f"rlhf_trust.train.{stage}").run(train_cfg(stage), layout)
    return layout


def hand_made_layout(src, dst: Path, n_train: int):
    """A copy of `src` whose train/held-out splits are hand-made refusal-vs-compliance pairs."""
    layout = copy_layout(src, dst)
    write_jsonl(layout.split("hh_train"), hand_made_pairs(n_train))
    write_jsonl(layout.split("hh_heldout"), hand_made_pairs(8, offset=150))
    return layout


def native_bf16(monkeypatch) -> None:
    """Run the stages' CPU bf16 path as on a CPU with native bf16 (AVX512-BF16 / AMX): without it
    `runtime.cpu_bf16` falls back to float32, and the bf16 tests would test fp32. Emulated bf16 gives
    the same numbers, only slower (tiny models here)."""
    from rlhf_trust.models import store

    monkeypatch.setattr(store, "cpu_bf16_native", lambda: True)
