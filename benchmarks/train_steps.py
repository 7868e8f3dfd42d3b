"""Training step speed: whole `trainer.train()` steps of TRL's own trainers vs the stages' own, on
the same model, pairs and lengths, alternating in one process.

Per stage (sft, rm, dpo), two trainers on the same model, pairs (the first batch_size * grad_accum *
steps of the prepared split, clipped as the stage clips them) and lengths, each `trainer.train()` for
`steps` optimizer steps:
  trl   = TRL's own trainer (SFTTrainer padded to max_length, RewardTrainer, DPOTrainer) in fp32 with
          the stage's TRL args (logging every step, checkpoints every save_steps, optimizer, scheduler);
  stage = the stage's own `build()` (fast trainer, `precision` from params, frozen bf16 copies).
They alternate for `rounds` rounds; MLflow's callback is removed from both (the same per-step cost in
each). trl runs at 1 thread. With `--threads-stage 1` the stage does too, and CPU seconds (process
time) are the ratio's base: they do not count time the process waited for a core held by other
processes. With `--threads-stage auto` the stage runs as the default params run it (every idle core),
and wall seconds are the base: meaningful only on an otherwise idle machine.
SFT also runs `stage_masked`: the stage's trainer with train/packed_attention.py switched off
(transformers' sdpa on the block-diagonal mask), so packed attention's own gain is measured in the
same rounds.

    python benchmarks/train_steps.py [--stages sft rm dpo] [--steps 4] [--rounds 2] [--threads-stage auto]

Reads a run's base model and prepared pairs (--models, --prepared). `--quick`: tiny-gpt-neox and 32
real HH pairs in a temporary directory, 1 step, 1 round (about a minute).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from pathlib import Path

import harness

WHOLE = ("trl", "stage")

def _setups(stage: str) -> tuple[str, ...]:
    return (*WHOLE, "stage_masked") if stage == "sft" else WHOLE


@contextlib.contextmanager
def _masked_attention(setup: str):
    """For `stage_masked`: the SFT trainer's packed attention replaced by a no-op while inside."""
    from rlhf_trust.train import packed_attention

    real = packed_attention.packed_attention
    if setup == "stage_masked":
        packed_attention.packed_attention = lambda model: contextlib.nullcontext()
    try:
        yield
    finally:
        packed_attention.packed_attention = real


def _trl_trainer(stage: str, cfg, inp, ckpt_dir: Path):
    import dataclasses

    from datasets import Dataset

    from rlhf_trust.models import load_merged_causal_lm, seq_cls_from_causal
    from rlhf_trust.train import trl_setup

    c = dataclasses.replace(cfg, precision="float32")
    model = load_merged_causal_lm(inp.parent)
    if stage == "sft":
        from trl import SFTConfig, SFTTrainer

        data = Dataset.from_list([{"prompt": r["prompt"], "completion": r["chosen"]} for r in inp.train])
        args = trl_setup.trl_args(SFTConfig, c, ckpt_dir, stage, max_length=cfg.max_length, completion_only_loss=True,
                               packing=False, dataset_num_proc=None)
        return SFTTrainer(model=model, args=args, train_dataset=data, processing_class=inp.tok,
                          peft_config=trl_setup.lora_config(c, "CAUSAL_LM"))
    data = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in inp.train])
    if stage == "rm":
        from trl import RewardConfig, RewardTrainer

        model = seq_cls_from_causal(model, num_labels=1)
        model.config.pad_token_id = inp.tok.pad_token_id
        args = trl_setup.trl_args(RewardConfig, c, ckpt_dir, stage, max_length=cfg.max_length)
        return RewardTrainer(model=model, args=args, train_dataset=data, processing_class=inp.tok,
                             peft_config=trl_setup.lora_config(c, "SEQ_CLS"))
    from trl import DPOConfig, DPOTrainer

    args = trl_setup.trl_args(DPOConfig, c, ckpt_dir, stage, max_length=cfg.max_length, beta=cfg.beta,
                           loss_type=[cfg.loss_type])
    return DPOTrainer(model=model, ref_model=None, args=args, train_dataset=data, processing_class=inp.tok,
                      peft_config=trl_setup.lora_config(c, "CAUSAL_LM"))


def _stage_trainer(stage: str, cfg, inp, ckpt_dir: Path):
    import importlib

    built = importlib.import_module(f"rlhf_trust.train.{stage}").build(cfg, inp, ckpt_dir)
    return built[0] if isinstance(built, tuple) else built  # dpo.build also returns its reference


def _train_timed(trainer) -> dict:
    """One `trainer.train()` (max_steps from its args): wall and CPU seconds, step count, loss."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = trainer.train()
    return {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
            "steps": trainer.state.global_step, "loss": round(float(out.training_loss), 5)}


def steps_compare(stages: list[str], params: Path, models: Path, prepared: Path, steps: int, rounds: int,
                  profile_steps: int = 0, threads_stage: str = "1", sections: dict | None = None) -> dict:
    import dataclasses

    import torch
    from transformers.integrations import MLflowCallback

    from rlhf_trust import config
    from rlhf_trust.models import load_tokenizer
    from rlhf_trust.train import inputs
    from rlhf_trust.train.runtime import auto_threads

    torch.set_num_threads(1)
    threads = {"trl": 1, "stage": auto_threads() if threads_stage == "auto" else int(threads_stage)}
    threads["stage_masked"] = threads["stage"]
    base = models / "base"  # RM and DPO start from it too: same network and costs as from SFT
    tok = load_tokenizer(base)
    rows_out, ratios, profiles = [], {}, {}
    for stage in stages:
        stage_cfg = sections[stage] if sections else config.load(stage, params)
        cfg = dataclasses.replace(stage_cfg, max_steps=steps, threads=1, resume=False)
        n = cfg.batch_size * cfg.grad_accum * steps
        rows = inputs.load_split("hh_train", inputs.Layout(data_dir=prepared), n, stage)
        inp = inputs.Inputs(parent=base, tok=tok, train=inputs.clip(tok, rows, cfg.max_prompt_length, cfg.max_length),
                            heldout=[], data_md5="")
        with tempfile.TemporaryDirectory() as tmp:
            trainers = {"trl": _trl_trainer(stage, cfg, inp, Path(tmp) / "trl"),
                        "stage": _stage_trainer(stage, cfg, inp, Path(tmp) / "stage")}
            if "stage_masked" in _setups(stage):
                trainers["stage_masked"] = _stage_trainer(stage, cfg, inp, Path(tmp) / "stage_masked")
            for t in trainers.values():
                t.remove_callback(MLflowCallback)
                t.args.disable_tqdm = True
            runs: dict[str, list[dict]] = {s: [] for s in _setups(stage)}
            for _ in range(rounds):
                for setup in _setups(stage):
                    torch.set_num_threads(threads[setup])
                    with _masked_attention(setup):
                        runs[setup].append(_train_timed(trainers[setup]))
                    torch.set_num_threads(1)
                    print(stage, setup, json.dumps(runs[setup][-1]), flush=True)
            if profile_steps:
                profiles[stage] = _profile(trainers["stage"], profile_steps)
            del trainers
        pairs = n * rounds
        for setup in _setups(stage):
            cpu, wall = sum(r["cpu_s"] for r in runs[setup]), sum(r["wall_s"] for r in runs[setup])
            rows_out.append({"stage": stage, "setup": setup, "threads": threads[setup], "pairs": pairs, "optimizer_steps": steps * rounds,
                             "cpu_s": round(cpu, 1), "wall_s": round(wall, 1),
                             "pairs_per_cpu_s": round(pairs / cpu, 4), "pairs_per_wall_s": round(pairs / wall, 4),
                             "runs": runs[setup]})
        cpu = {r["setup"]: r["cpu_s"] for r in rows_out if r["stage"] == stage}
        wall = {r["setup"]: r["wall_s"] for r in rows_out if r["stage"] == stage}
        ratios[stage] = {"cpu": round(cpu["trl"] / cpu["stage"], 2),
                         "wall": round(wall["trl"] / wall["stage"], 2)}
        if "stage_masked" in wall:
            ratios[stage]["packed_attention_wall"] = round(wall["stage_masked"] / wall["stage"], 3)
        print(stage, "stage / trl speed-up:", ratios[stage], flush=True)
    return {"speedup_stage_over_trl": ratios, "rows": rows_out, "profiles": profiles, "threads": threads}


def _profile(trainer, steps: int) -> list[dict]:
    """torch.profiler around `trainer.train()` for `steps` optimizer steps: the top ops by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    trainer.args.max_steps = steps
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer.train()
    ev = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ev) or 1
    return [{"op": e.key, "self_cpu_s": round(e.self_cpu_time_total / 1e6, 3), "calls": e.count,
             "share": round(e.self_cpu_time_total / total, 4)} for e in ev[:25]]


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--stages", nargs="+", default=["sft", "rm", "dpo"], choices=["sft", "rm", "dpo"])
    p.add_argument("--models", type=Path, default=Path("outputs/models"), help="holds the run's base model")
    p.add_argument("--prepared", type=Path, default=Path("outputs/prepared"), help="the run's prepared splits")
    p.add_argument("--steps", type=int, default=4, help="optimizer steps per trainer.train() call")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds per set-up")
    p.add_argument("--profile", type=int, default=0, help="profile the stage trainer N steps")
    p.add_argument("--threads-stage", default="1", help="the stage trainer's threads (1, or auto as the default params)")
    a = p.parse_args()
    sections = None
    if a.quick:
        layout = harness.tiny_layout(harness.scratch("bench-train-steps-"), harness.data_dir(a))
        a.models, a.prepared, a.steps, a.rounds = layout.models_dir, layout.data_dir, 1, 1
        sections = {s: harness.tiny_cfg(s) for s in a.stages}
    res = steps_compare(a.stages, a.params, a.models, a.prepared, a.steps, a.rounds, a.profile, a.threads_stage,
                        sections)
    harness.write_result("train_steps", a, res, setup={
        "model": "tiny-gpt-neox" if a.quick else str(a.models / "base"), "stages": a.stages,
        "steps_per_train_call": a.steps, "rounds": a.rounds,
        "speedup": "trl seconds / stage seconds (cpu: process time; with more than 1 stage thread the wall "
                   "ratio is the one that counts); packed_attention_wall = stage_masked wall / stage wall"})


if __name__ == "__main__":
    main()
