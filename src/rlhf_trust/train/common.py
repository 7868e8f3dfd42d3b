"""What the four training stages share: locations, data, clipping, TRL arguments, LoRA, checkpoints
and resume, the NaN guard, atomic model directories and the tracked CLI entry point.

Each stage module (sft, rm, ppo, dpo) exposes `run(cfg, layout=None) -> metrics` (the work, also
called by tests and benchmarks) and `cli(args)` (the DVC stage: params + MLflow run + metrics JSON).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf_trust import fileio, paths, pipeline
from rlhf_trust.errors import ConfigError, DataError, UserError

# The stage each one starts from (its model directory is the parent of the new one).
PARENT = pipeline.PARENT
CHECKPOINTS = paths.OUTPUTS / "checkpoints"
LOG_MODEL_MAX_BYTES = 64 << 20


# ------------------------------------------------------------------------------------------ layout
@dataclass
class Layout:
    """Where a stage reads and writes. Defaults = the DVC layout; tests pass temp dirs."""

    data_dir: Path = paths.CURATED   # `rlhf-trust curate`: the prepared set unless curate.enabled
    models_dir: Path = paths.MODELS
    checkpoints_dir: Path = CHECKPOINTS
    metrics_dir: Path = paths.METRICS

    def model(self, stage: str) -> Path:
        return Path(self.models_dir) / stage

    def checkpoints(self, stage: str) -> Path:
        return Path(self.checkpoints_dir) / stage

    def metrics(self, stage: str) -> Path:
        return Path(self.metrics_dir) / f"{stage}.json"

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


# ------------------------------------------------------------------------------------------ runtime
# (train/runtime.py and train/checkpoints.py; re-exported: stages and tests call them as common.X)
from rlhf_trust.train.checkpoints import (  # noqa: F401
    _UNIT,
    checkpoint_step,
    checkpoint_to_resume,
    discard_checkpoints,
    fingerprint,
    model_md5,
    output_unit,
    quiet_progress,
    save_model_dir,
    train,
    verify_checkpoint,
)
from rlhf_trust.train.runtime import (  # noqa: F401
    auto_threads,
    barrier,
    cpu_bf16,
    is_main_process,
    setup_runtime,
    use_cpu,
    warn,
)


# ------------------------------------------------------------------------------------------ data
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


# ------------------------------------------------------------------------------------------ TRL
def lora_config(cfg: Any, task: str):
    """peft LoraConfig on all linear layers (None = full fine-tuning)."""
    if not cfg.lora.enabled:
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=cfg.lora.target_modules, task_type=task, bias="none")


def trl_args(config_cls: type, cfg: Any, out_dir: Path, stage: str, **extra: Any):
    """TRL config with the settings every stage shares (seeded, MLflow logging, checkpoints)."""
    try:
        args = _trl_config(config_cls, cfg, out_dir, stage, extra)
    except ValueError as e:  # e.g. an unknown optimizer or scheduler name
        raise ConfigError(f"params: {stage}: {str(e).splitlines()[0]}") from None
    _ = args.device  # sets up torch.distributed now under `accelerate launch` (see barrier())
    return args


def _trl_config(config_cls: type, cfg: Any, out_dir: Path, stage: str, extra: dict):
    return config_cls(**{
        "output_dir": str(out_dir), "run_name": stage, "seed": cfg.seed, "data_seed": cfg.seed,
        "learning_rate": cfg.learning_rate, "num_train_epochs": cfg.epochs, "max_steps": cfg.max_steps,
        "per_device_train_batch_size": cfg.batch_size, "per_device_eval_batch_size": cfg.eval_batch_size,
        "gradient_accumulation_steps": cfg.grad_accum, "logging_steps": cfg.logging_steps,
        "logging_first_step": True, "save_strategy": "steps", "save_steps": cfg.save_steps, "save_total_limit": 1,
        "report_to": ["mlflow"], "use_cpu": use_cpu(cfg),
        # CPU bf16 is `mixed_precision`'s autocast around compute_loss: TRL's bf16=True would also make
        # accelerate wrap model.forward in autocast for good, held-out passes included
        "bf16": cfg.precision == "bfloat16" and not use_cpu(cfg),
        "fp16": cfg.precision == "float16", "activation_checkpointing": cfg.gradient_checkpointing,
        "dataloader_num_workers": 0, "disable_tqdm": False, "optim": cfg.optimizer,
        "lr_scheduler_type": cfg.lr_scheduler, "warmup_steps": cfg.warmup_steps, "weight_decay": cfg.weight_decay,
        "adam_beta2": cfg.adam_beta2, "max_grad_norm": cfg.max_grad_norm, **extra,
    })


def autocast(cfg: Any, enabled: bool = True):
    """bf16 autocast on the CPU when `<stage>.precision` is bfloat16 (else a no-op context).

    This Xeon runs bf16 matmuls through AMX (oneDNN): ~6x fp32's GFLOP/s, gemma passes ~2x. The
    weights (and LoRA's trainable ones, the optimiser state) stay fp32: only the matmuls inside the
    context run in bf16. On a GPU, TRL's own `bf16=True` (accelerate's autocast) does this."""
    import contextlib

    import torch

    if not (enabled and cpu_bf16(cfg)):
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16)


@contextlib.contextmanager
def heldout_autocast(cfg: Any, *models: Any):
    """The held-out passes' precision (`<stage>.heldout_precision`), whatever the stage trained in
    (DPO and PPO train fp32 but score their held-out sets in bf16 by default: benchmarks/heldout_precision.py).

    In bf16 the frozen Linear weights of `models` are held as bf16 copies for the pass (train/frozen_bf16.py,
    the helper training uses): each cast once per pass instead of on every forward and decoded token."""
    import torch

    if cpu_bf16(cfg, "heldout_precision"):
        from rlhf_trust.train.frozen_bf16 import frozen_bf16

        with torch.autocast("cpu", dtype=torch.bfloat16), frozen_bf16(*models):
            yield
    else:
        yield


def frozen_weights(cfg: Any, *models: Any):
    """`frozen_bf16(*models)` (train/frozen_bf16.py) where `autocast(cfg)` is bf16, else a no-op."""
    import contextlib

    from rlhf_trust.train.frozen_bf16 import frozen_bf16

    if cpu_bf16(cfg):
        return frozen_bf16(*models)
    return contextlib.nullcontext()


def mixed_precision(trainer: Any, cfg: Any) -> Any:
    """Run the trainer's whole `compute_loss` under `autocast(cfg)` on the CPU.

    TRL's `bf16=True` (not passed on the CPU: `_trl_config`) makes accelerate wrap only
    `model.forward` in autocast, for good; the losses that run the LM
    head themselves (TRL's chunked SFT NLL, fast_dpo's chunked head, fast_rm's prefix + KV-cache
    continuations) call the network's parts outside that wrapper and would stay fp32. Trainer
    enters `autocast_smart_context_manager()` around every `compute_loss` (training and TRL's
    reference log-probs); backward and the optimiser step stay outside it, as torch recommends.
    While `train()` runs, the frozen Linear weights are held as bf16 copies (train/frozen_bf16.py:
    the same products without autocast's per-call recast); the fp32 weights are back afterwards."""
    if cpu_bf16(cfg):
        from rlhf_trust.train.frozen_bf16 import train_with_frozen_bf16

        trainer.autocast_smart_context_manager = lambda cache_enabled=True: autocast(cfg)
        train_with_frozen_bf16(trainer)
    return trainer


def nan_guard(stage: str):
    """A TrainerCallback that stops the run with one line when the loss stops being finite."""
    from transformers import TrainerCallback

    class NaNGuard(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            for k in ("loss", "train_loss", "grad_norm", "loss/policy_avg", "loss/value_avg"):
                v = (logs or {}).get(k)
                if isinstance(v, float) and not math.isfinite(v):
                    raise UserError(f"{stage}: {k} became {v} at step {state.global_step}; "
                                    f"lower {stage}.learning_rate or check the data")

    return NaNGuard()


def train_metrics(trainer: Any) -> dict[str, float]:
    """Final training loss (last logged), mean of the logged losses and steps, from the log history.

    The history survives a resume (it is in the checkpoint); Trainer's own `train_loss` would
    average only the steps after the resume."""
    losses = [float(h["loss"]) for h in trainer.state.log_history if "loss" in h]
    out: dict[str, float] = {"train_steps": int(trainer.state.global_step)}
    if losses:
        out["train_loss_last"] = losses[-1]
        out["train_loss_mean"] = sum(losses) / len(losses)
    for k, v in out.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise UserError(f"{trainer.args.run_name}: {k} is {v}; lower the learning rate or check the data")
    return out


def train_tokens(tok: Any, rows: list[dict], sides: tuple[str, ...], cfg: Any) -> int:
    """Tokens the trainer feeds per epoch (prompt + each response side) times the epochs run."""
    per_epoch = sum(len(tok(r["prompt"] + r[s])["input_ids"]) for r in rows for s in sides)
    epochs = cfg.epochs if cfg.max_steps <= 0 else cfg.max_steps * cfg.batch_size * cfg.grad_accum / len(rows)
    return int(per_epoch * epochs)


def count_params(model: Any) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"params_total": total, "params_trainable": trainable}


# ------------------------------------------------------------------------------------------ CLI
# Each stage's DVC metrics (and summary line): its held-out numbers and the size of its data.
SUMMARY_KEYS = {
    "sft": ("heldout_chosen_nll_per_token", "train_loss_last", "train_pairs"),
    "rm": ("heldout_accuracy", "heldout_n", "heldout_margin", "train_loss_last", "train_pairs"),
    "ppo": ("heldout_reward_gain", "heldout_n", "kl_mean", "kl_last", "episodes"),
    "dpo": ("heldout_accuracy", "heldout_n", "heldout_margin", "train_loss_last", "train_pairs"),
}
def run_cli(stage: str, args: Any, run: Callable[..., dict], inputs: list[Path]) -> int:
    """The DVC stage: load params, open the stage's MLflow run, run, write metrics once."""
    from rlhf_trust import config
    from rlhf_trust.tracking import track_stage

    cfg = config.load(stage, args.params)
    layout = Layout()
    if not is_main_process():  # under `accelerate launch` only rank 0 tracks and writes metrics
        run(cfg, layout)
        return 0

    def body(sr):
        metrics = run(cfg, layout)
        model_dir = layout.model(stage)
        sr.set_tags({"model.dir": str(model_dir), "model.md5": fileio.read_json(model_dir / "stage.json")["md5"]})
        size = sum(f.stat().st_size for f in model_dir.rglob("*") if f.is_file())
        # adapters are small: log the directory; full weights: path + md5 (tags) and stage.json only
        sr.log_artifact(model_dir if size <= LOG_MODEL_MAX_BYTES else model_dir / "stage.json",
                        artifact_path="model")
        tags = sr.run.data.tags
        sr.register_model(stage, "model", {"data.version": tags.get("data.version", ""),
                                           "git.commit": tags.get("git.commit", ""),
                                           "git.dirty": tags.get("git.dirty", ""),
                                           "model.md5": fileio.read_json(model_dir / "stage.json")["md5"]})
        return metrics

    from rlhf_trust.runinfo import run_info_path

    with output_unit(stage, layout.model(stage), [layout.metrics(stage), run_info_path(layout.metrics(stage))]):
        track_stage(stage, body, cfg=cfg, inputs=[p for p in inputs if Path(p).exists()],
                    metric_keys=SUMMARY_KEYS.get(stage), metrics_path=layout.metrics(stage))
    return 0
