"""Model directories: `stage.json`, saving, and loading a stage by its directory alone.

A model directory always holds a tokenizer and `stage.json`:
  {"stage", "kind": "base"|"adapter"|"full", "task": "causal_lm"|"seq_cls", "spec" (base spec),
   "parent" (stage name or null), "parent_dir" (path, relative to this dir when possible),
   "weights" (base only: "." = in this dir, else a hub id), "revision", "data_md5", "md5"}.
Adapter stages chain: loading `ppo` loads `sft` (itself base + adapter, merged), then applies the
PPO adapter. Weights of a parent stage are merged before a child adapter is applied, exactly as
the child was trained (the trainers start each stage from its merged parent).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rlhf_trust import fileio
from rlhf_trust.errors import UserError

STAGE_FILE = "stage.json"
KINDS = ("base", "adapter", "full")
TASKS = ("causal_lm", "seq_cls")


# ------------------------------------------------------------------------------------------ info
def load_stage_info(model_dir: str | Path) -> dict[str, Any]:
    model_dir = Path(model_dir)
    f = model_dir / STAGE_FILE
    if not f.is_file():
        raise UserError(f"not a model directory (no {STAGE_FILE}): {model_dir}; run its stage first")
    info = fileio.read_json(f)
    if info.get("kind") not in KINDS or info.get("task", "causal_lm") not in TASKS:
        raise UserError(f"{f}: unknown kind/task {info.get('kind')!r}/{info.get('task')!r}")
    info.setdefault("task", "causal_lm")
    return info


def parent_path(model_dir: str | Path, info: dict[str, Any]) -> Path:
    p = Path(info["parent_dir"])
    return p if p.is_absolute() else (Path(model_dir) / p)


def write_stage_info(model_dir: Path, info: dict[str, Any], final_dir: str | Path | None = None) -> dict:
    """Write stage.json into `model_dir` (usually an atomic temp dir that becomes `final_dir`).

    `parent_dir` is stored relative to `final_dir` so a whole outputs/ tree can be moved.
    The content md5 covers every file but stage.json itself.
    """
    info = dict(info)
    final_dir = Path(final_dir or model_dir)
    if info.get("parent_dir"):
        parent = Path(info["parent_dir"]).resolve()
        try:
            info["parent_dir"] = os.path.relpath(parent, final_dir.resolve())
        except ValueError:  # other drive (Windows)
            info["parent_dir"] = str(parent)
    info["md5"] = _md5_without_stage_file(model_dir)
    fileio.write_json(model_dir / STAGE_FILE, info)
    return info


def _md5_without_stage_file(path: Path) -> str:
    import hashlib

    h = hashlib.md5()
    for p in sorted(q for q in Path(path).rglob("*") if q.is_file() and q.name != STAGE_FILE):
        h.update(f"{p.relative_to(path).as_posix()}:{fileio.md5_file(p)}\n".encode())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------ devices
def resolve_device(device: str = "cpu") -> str:
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def cpu_bf16_native() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX512-BF16 or AMX)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


_BF16_WARNED: set[str] = set()


def cpu_bf16_or_warn(stage: str, setting: str) -> bool:
    """`cpu_bf16_native()`; when False, one warning line per setting (training's `precision`,
    `heldout_precision`, eval's `eval.dtype`) saying the stage runs float32 instead. Without
    AVX512-BF16 / AMX torch emulates bf16, ~5x slower than float32 (docs/training.md)."""
    if cpu_bf16_native():
        return True
    if setting not in _BF16_WARNED:
        import sys

        import torch

        _BF16_WARNED.add(setting)
        print(f"rlhf-trust {stage}: warning: {setting}: bfloat16 asked, but this CPU has no native bf16 "
              f"(torch {torch.__version__}, oneDNN bf16 unsupported): running float32", file=sys.stderr, flush=True)
    return False


def _dtype(name: str | None):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name or "float32"]


# ------------------------------------------------------------------------------------------ tokenizer
def load_tokenizer(model_dir: str | Path, padding_side: str = "right"):
    """The stage's own tokenizer, with a pad token (the EOS token when the model has none)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


# ------------------------------------------------------------------------------------------ models
def load_merged_causal_lm(model_dir: str | Path, dtype: str | None = None):
    """The stage's causal LM with every adapter in its chain merged (a plain transformers model),
    its LM head ordered for a few rows at a time on a CPU (models/cpu_head.py)."""
    from rlhf_trust.models.cpu_head import rows_first_head

    return rows_first_head(_load_merged(Path(model_dir), "causal_lm", dtype))


def load_merged_seq_cls(model_dir: str | Path, dtype: str | None = None):
    """A reward-model stage (task seq_cls) with its adapters merged."""
    return _load_merged(Path(model_dir), "seq_cls", dtype)


def _load_merged(model_dir: Path, task: str, dtype: str | None):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    info = load_stage_info(model_dir)
    if info["task"] != task:
        what = {"causal_lm": "a causal LM", "seq_cls": "a reward model (sequence classifier)"}
        raise UserError(f"{model_dir} holds {what[info['task']]}, not {what[task]}")
    dt = _dtype(dtype or info.get("dtype"))
    auto = AutoModelForCausalLM if task == "causal_lm" else AutoModelForSequenceClassification
    if info["kind"] == "base":
        src = str(model_dir) if info.get("weights", ".") == "." else info["weights"]
        return auto.from_pretrained(src, dtype=dt, revision=info.get("revision"))
    if info["kind"] == "full":
        return auto.from_pretrained(str(model_dir), dtype=dt)
    from peft import PeftModel

    parent = _load_merged(parent_path(model_dir, info), "causal_lm", dtype)
    if task == "seq_cls":
        parent = seq_cls_from_causal(parent)
    merged = PeftModel.from_pretrained(parent, str(model_dir)).merge_and_unload()
    return merged.requires_grad_(True)  # like from_pretrained: peft froze the base weights


def seq_cls_from_causal(causal, num_labels: int = 1):
    """A sequence-classification model sharing `causal`'s backbone weights; the score head is new."""
    import copy

    from transformers import AutoModelForSequenceClassification

    cfg = copy.deepcopy(causal.config)
    cfg.num_labels = num_labels
    cfg.problem_type = None
    model = AutoModelForSequenceClassification.from_config(cfg, dtype=next(causal.parameters()).dtype)
    missing, _unexpected = model.load_state_dict(causal.state_dict(), strict=False)
    bad = [k for k in missing if not k.startswith(("score.", "classifier."))]
    if bad:
        raise RuntimeError(f"backbone keys did not match the classifier: {bad[:3]}")
    return model


def load_causal_lm(model_dir: str | Path, device: str = "cpu"):
    """(model, tokenizer) ready for inference: adapters merged, eval mode, pad token set,
    tokenizer padding on the LEFT (what batched generation needs)."""
    model = load_merged_causal_lm(model_dir).to(resolve_device(device)).eval()
    tok = load_tokenizer(model_dir, padding_side="left")
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def load_reward_model(model_dir: str | Path, device: str = "cpu"):
    """(model, tokenizer) of a reward-model stage for scoring: merged, eval mode, right padding."""
    model = load_merged_seq_cls(model_dir).to(resolve_device(device)).eval()
    return model, load_tokenizer(model_dir)


def load_peft_model(model_dir: str | Path, device: str = "cpu", trainable: bool = True):
    """(PeftModel, tokenizer) of an adapter stage: the merged parent plus this stage's LoRA adapter,
    its LoRA parameters trainable (requires_grad) when `trainable`. For influence/gradient work."""
    from peft import PeftModel

    model_dir = Path(model_dir)
    info = load_stage_info(model_dir)
    if info["kind"] != "adapter":
        raise UserError(f"{model_dir} is a {info['kind']} model, not a LoRA adapter stage")
    parent_dir = parent_path(model_dir, info)
    parent = load_merged_causal_lm(parent_dir)
    if info["task"] == "seq_cls":
        parent = seq_cls_from_causal(parent)
    model = PeftModel.from_pretrained(parent, str(model_dir), is_trainable=trainable)
    model = model.to(resolve_device(device))
    model.train(False)
    return model, load_tokenizer(model_dir)
