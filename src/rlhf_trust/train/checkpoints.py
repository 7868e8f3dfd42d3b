"""Checkpoints, resume and the stage's output unit (model directory + metrics change together).

A stage keeps Trainer checkpoints in outputs/checkpoints/<stage>, resumes from the newest usable
one when its fingerprint (params + input md5s) matches, and writes its model directory atomically.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import pickle
import shutil
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rlhf_trust import fileio
from rlhf_trust.errors import DataError
from rlhf_trust.train.runtime import barrier, is_main_process, warn


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
        same = fp_file.is_file() and fileio.read_json(fp_file) == json.loads(json.dumps(fingerprint, default=str))
    except DataError:  # a corrupt fingerprint: the checkpoints cannot be trusted to match
        same = False
    barrier()  # every process has compared before the main one rewrites the fingerprint
    if is_main_process():
        if not (resume and same):
            shutil.rmtree(ckpt_dir, ignore_errors=True)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        fileio.write_json(fp_file, fingerprint)
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
        st = fileio.read_json(state_file)
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
    checkpoints for an exact resume and loses nothing. A kill is undone by `fileio.recover` at the next
    start of the stage. Hand-written: DVC commits outputs only after a stage succeeds, but cannot
    restore the ones a failed stage already replaced.
    """
    paths = [Path(model_dir), *map(Path, files)]
    for p in paths:
        fileio.recover(p)
    existed = {p: p.exists() for p in files}
    for p in files:
        fileio.keep_file(p)
    unit: dict = {"checkpoints": None}
    token = _UNIT.set(unit)
    try:
        yield
    except BaseException:
        for p in paths:
            fileio.rollback(p)
        for p in files:
            if not existed[p]:
                Path(p).unlink(missing_ok=True)
        raise
    finally:
        _UNIT.reset(token)
    for p in paths:
        fileio.commit(p)
    if unit["checkpoints"] is not None:
        shutil.rmtree(unit["checkpoints"], ignore_errors=True)


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
        "data_md5": data_md5, "params_hash": params_hash(cfg), "seed": cfg.seed, **(extra or {}),
    }
    with fileio.atomic_path(out_dir, keep_old=_UNIT.get() is not None) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        info = write_stage_info(tmp, info, final_dir=out_dir)
    barrier()
    return info
