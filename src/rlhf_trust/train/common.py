"""What the four training stages share: locations, data, clipping, TRL arguments, LoRA, checkpoints
and resume, the NaN guard, atomic model directories and the tracked CLI entry point.

Each stage module (sft, rm, ppo, dpo) exposes `run(cfg, layout=None) -> metrics` (the work, also
called by tests and benchmarks) and `cli(args)` (the DVC stage: params + MLflow run + metrics JSON).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import math
import os
import pickle
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rlhf_trust import io, paths, pipeline
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
    io.recover(d)  # a kill between atomic_path's two renames left the earlier directory aside
    if not (d / STAGE_FILE).is_file():
        raise UserError(f"{stage}: upstream model '{name}' not found at {d}; run `rlhf-trust {name}` first")
    return d


# ------------------------------------------------------------------------------------------ runtime
def setup_runtime(cfg: Any) -> None:
    """Threads, seeds and environment for a reproducible run."""
    import torch
    from transformers import set_seed

    os.environ.setdefault("MLFLOW_MAX_LOG_PARAMS", "0")  # the stage logs its own params; TRL's would clash
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)


def is_main_process() -> bool:
    """Rank 0 under `accelerate launch`/torchrun (RANK is set by both), else True."""
    return int(os.environ.get("RANK", "0")) == 0


def barrier() -> None:
    """Wait for every process (no-op when not distributed). Call after the TRL config exists:
    reading `args.device` there initialises torch.distributed under `accelerate launch`."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def use_cpu(cfg: Any) -> bool:
    from rlhf_trust.models.store import resolve_device

    return resolve_device(cfg.device) == "cpu"


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
    train = load_split("hh_train", layout, cfg.max_train_pairs, stage)
    held = load_split("hh_heldout", layout, cfg.max_heldout_pairs, stage) if heldout else []
    tok = load_tokenizer(parent_path)
    return Inputs(parent=parent_path, tok=tok,
                  train=clip(tok, train, cfg.max_prompt_length, cfg.max_length),
                  heldout=clip(tok, held, cfg.max_prompt_length, cfg.max_length),
                  data_md5=data_md5([layout.split(s) for s in splits]))


def data_md5(files: list[Path]) -> str:
    h = hashlib.md5()
    for f in files:
        h.update(io.md5_file(f).encode())
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
        "report_to": ["mlflow"], "use_cpu": use_cpu(cfg), "bf16": cfg.precision == "bfloat16",
        "fp16": cfg.precision == "float16", "activation_checkpointing": cfg.gradient_checkpointing,
        "dataloader_num_workers": 0, "disable_tqdm": False, "optim": cfg.optimizer,
        "lr_scheduler_type": cfg.lr_scheduler, "warmup_steps": cfg.warmup_steps, "weight_decay": cfg.weight_decay,
        "adam_beta2": cfg.adam_beta2, "max_grad_norm": cfg.max_grad_norm, **extra,
    })


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


# ------------------------------------------------------------------------------------------ resume
def checkpoint_to_resume(ckpt_dir: Path, fingerprint: dict, resume: bool) -> str | None:
    """The last checkpoint of an interrupted run with the same params/inputs, else None.

    A fingerprint (params + input md5s) is kept beside the checkpoints; a mismatch (params
    changed, new data) or resume=false discards the old checkpoints, never a finished result.
    Each checkpoint is verified first (`verify_checkpoint`); unusable ones are removed with one
    warning line and the newest usable one is returned (None: start over).
    """
    ckpt_dir = Path(ckpt_dir)
    fp_file = ckpt_dir / "fingerprint.json"
    try:
        same = fp_file.is_file() and io.read_json(fp_file) == json.loads(json.dumps(fingerprint, default=str))
    except DataError:  # a corrupt fingerprint: the checkpoints cannot be trusted to match
        same = False
    barrier()  # every process has compared before the main one rewrites the fingerprint
    if is_main_process():
        if not (resume and same):
            shutil.rmtree(ckpt_dir, ignore_errors=True)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        io.write_json(fp_file, fingerprint)
    barrier()
    if not (resume and same):
        return None
    bad: list[str] = []
    found = None
    for ckpt in sorted((p for p in ckpt_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                       key=lambda p: -int(p.name.split("-")[-1])):
        problem = verify_checkpoint(ckpt)
        if problem is None:
            found = ckpt
            break
        bad.append(f"{ckpt.name} ({problem})")
    barrier()  # every process has verified before the main one removes the unusable ones
    if bad:
        if is_main_process():
            for name in bad:
                shutil.rmtree(ckpt_dir / name.split(" ")[0], ignore_errors=True)
        then = f"resuming from {found.name}" if found else "starting over"
        warn(ckpt_dir.name, f"unusable checkpoint {'; '.join(bad)}: removed, {then}")
    barrier()
    return str(found) if found else None


def warn(stage: str, message: str) -> None:
    """One warning line on stderr (the pipeline carries on)."""
    import sys

    print(f"rlhf-trust {stage}: warning: {message}", file=sys.stderr, flush=True)


def verify_checkpoint(ckpt: Path) -> str | None:
    """None if every file of checkpoint directory `ckpt` reads back, else what is wrong (one phrase).

    A kill while a checkpoint is written, a truncated or replaced file, or a pickle that is more
    than tensors and plain types (refused by `weights_only=True`) makes it unusable; the caller
    falls back to an older one. Trainer writes trainer_state.json last; PPO writes its rng file last.
    """
    import torch
    from safetensors import safe_open
    from transformers.trainer_pt_utils import safe_globals

    files = {p.name: p for p in ckpt.rglob("*") if p.is_file()}
    needed = (["ppo_state.pt", f"rng-{os.environ.get('RANK', '0')}.pt"] if "ppo_state.pt" in files
              else ["trainer_state.json"])
    for name in needed:
        if name not in files:
            return f"no {name}"
    for path in sorted(files.values()):
        rel = path.relative_to(ckpt).as_posix()
        try:
            if path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
            elif path.suffix == ".safetensors":
                with safe_open(str(path), framework="pt") as f:
                    for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                        f.get_slice(key)
            elif path.suffix in (".pt", ".pth", ".bin") and path.name != "training_args.bin":
                # (training_args.bin is a pickled TrainingArguments that resuming never loads)
                with safe_globals():  # numpy RNG states in Trainer's rng_state.pth, nothing else
                    torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
        except Exception as e:  # noqa: BLE001 (any failure to read it back means: do not resume from it)
            msg = (str(e).splitlines() or [""])[0][:120]
            if isinstance(e, pickle.UnpicklingError):  # torch's message is a paragraph of advice
                msg = "holds more than tensors and plain types; refused, never unpickled"
            return f"{rel}: {type(e).__name__}" + (f": {msg}" if msg else "")
    return None


def quiet_progress(trainer: Any) -> None:
    """Progress bar without the per-step metric dicts transformers prints under it (they go to
    MLflow through report_to=mlflow)."""
    from transformers.trainer_callback import ProgressCallback

    class BarOnly(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            pass

    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(BarOnly)


def train(trainer: Any, resume: str | None) -> None:
    """`trainer.train(resume_from_checkpoint=resume)`, except when `resume` is the checkpoint of a
    finished training (the kill came while the model directory was written): Trainer would run
    one step past max_steps, so the finished state is loaded instead and nothing is trained."""
    if resume:
        state_file = Path(resume) / "trainer_state.json"
        st = io.read_json(state_file)
        if st.get("max_steps") and st.get("global_step", 0) >= st["max_steps"]:
            from transformers import TrainerState

            trainer._load_from_checkpoint(resume)  # weights (LoRA adapter or full) as Trainer loads them
            trainer.state = TrainerState.load_from_json(str(state_file))
            return
    quiet_progress(trainer)
    trainer.train(resume_from_checkpoint=resume)


def fingerprint(cfg: Any, inputs: dict[str, str]) -> dict:
    return {"params": asdict(cfg), "inputs": inputs}


def model_md5(model_dir: Path) -> str:
    from rlhf_trust.models import load_stage_info

    return load_stage_info(model_dir)["md5"]


def checkpoint_step(ckpt: str | None) -> int:
    """The global step a Trainer checkpoint directory (checkpoint-<step>) was saved at (0: none)."""
    return int(Path(ckpt).name.split("-")[-1]) if ckpt else 0


def discard_checkpoints(ckpt_dir: Path) -> None:
    """After the model directory exists the checkpoints are no longer needed (inside `output_unit`:
    once the stage's metrics are written too)."""
    unit = _UNIT.get()
    if unit is not None:  # only rank 0 opens a unit; it removes them once the unit is committed
        unit["checkpoints"] = Path(ckpt_dir)
    elif is_main_process():
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    barrier()


# A stage's model directory, metrics JSON and checkpoints change together (both or neither).
_UNIT: contextvars.ContextVar[dict | None] = contextvars.ContextVar("rlhf_trust_output_unit", default=None)


@contextlib.contextmanager
def output_unit(stage: str, model_dir: Path, files: list[Path]):
    """The model directory and the metrics files a stage writes inside this block form one unit.

    The earlier model directory and files are kept (`.<name>.old`, hard links) until the block
    ends; a failure (a full disk on metrics/, an MLflow error, a kill) puts them back, keeps the
    checkpoints for an exact resume and loses nothing. A kill is undone by `io.recover` at the next
    start of the stage. Hand-written: DVC commits outputs only after a stage succeeds, but cannot
    restore the ones a failed stage already replaced.
    """
    paths = [Path(model_dir), *map(Path, files)]
    for p in paths:
        io.recover(p)
    existed = {p: p.exists() for p in files}
    for p in files:
        io.keep_file(p)
    unit: dict = {"checkpoints": None}
    token = _UNIT.set(unit)
    try:
        yield
    except BaseException:
        for p in paths:
            io.rollback(p)
        for p in files:
            if not existed[p]:
                Path(p).unlink(missing_ok=True)
        raise
    finally:
        _UNIT.reset(token)
    for p in paths:
        io.commit(p)
    if unit["checkpoints"] is not None:
        shutil.rmtree(unit["checkpoints"], ignore_errors=True)


# ------------------------------------------------------------------------------------------ output
def save_model_dir(model: Any, tok: Any, out_dir: Path, *, stage: str, task: str, parent: Path,
                   data_md5: str, cfg: Any, extra: dict | None = None) -> dict:
    """Write the stage's model directory atomically: adapter (LoRA) or full weights, tokenizer,
    stage.json. A failure leaves any earlier directory untouched and no partial one behind."""
    from rlhf_trust.config import params_hash
    from rlhf_trust.models.store import load_stage_info, write_stage_info

    if not is_main_process():  # one writer; the others wait until the directory exists
        barrier()
        return load_stage_info(out_dir)
    parent_info = load_stage_info(parent)
    is_adapter = hasattr(model, "peft_config")
    info = {
        "stage": stage, "kind": "adapter" if is_adapter else "full", "task": task,
        "spec": parent_info.get("spec"), "dtype": parent_info.get("dtype", "float32"),
        "parent": parent_info.get("stage"), "parent_dir": str(parent.resolve()),
        "data_md5": data_md5, "params_hash": params_hash(cfg), **(extra or {}),
    }
    with io.atomic_path(out_dir, keep_old=_UNIT.get() is not None) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        info = write_stage_info(tmp, info, final_dir=out_dir)
    barrier()
    return info


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
    "rm": ("heldout_accuracy", "heldout_margin", "heldout_pairs", "train_loss_last", "train_pairs"),
    "ppo": ("heldout_reward_gain", "heldout_reward_policy", "heldout_reward_sft", "heldout_prompts", "reward_mean"),
    "dpo": ("heldout_accuracy", "heldout_margin", "heldout_pairs", "train_loss_last", "train_pairs"),
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
        sr.set_tags({"model.dir": str(model_dir), "model.md5": io.read_json(model_dir / "stage.json")["md5"]})
        size = sum(f.stat().st_size for f in model_dir.rglob("*") if f.is_file())
        # adapters are small: log the directory; full weights: path + md5 (tags) and stage.json only
        sr.log_artifact(model_dir if size <= LOG_MODEL_MAX_BYTES else model_dir / "stage.json",
                        artifact_path="model")
        tags = sr.run.data.tags
        sr.register_model(stage, "model", {"data.version": tags.get("data.version", ""),
                                           "git.commit": tags.get("git.commit", ""),
                                           "git.dirty": tags.get("git.dirty", ""),
                                           "model.md5": io.read_json(model_dir / "stage.json")["md5"]})
        return metrics

    from rlhf_trust.runinfo import run_info_path

    with output_unit(stage, layout.model(stage), [layout.metrics(stage), run_info_path(layout.metrics(stage))]):
        track_stage(stage, body, cfg=cfg, inputs=[p for p in inputs if Path(p).exists()],
                    metric_keys=SUMMARY_KEYS.get(stage), metrics_path=layout.metrics(stage))
    return 0
