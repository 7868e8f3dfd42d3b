"""Time the training stages with the current params: wall time, training tokens/s and peak RSS
per stage, each stage in its own process (the real CLI path: MLflow run, metrics JSON, model dir).

    .venv/bin/python benchmarks/train_budget.py [--params params.yaml] [--stages base sft rm ppo dpo]
    .venv/bin/python benchmarks/train_budget.py --compare --stages sft rm dpo   # pairs/s, today vs new
    .venv/bin/python benchmarks/train_budget.py --steps-compare --steps 4 --rounds 2 --stages sft rm dpo
        # whole trainer.train() steps, wave-1 TRL trainers vs the stages' own (the honest ratio)

Prints one row per stage and the ratios against the budget (sft+rm+ppo+dpo <= 20 min, peak RSS
<= 8 GB). The machine is shared: the 1-min load average and the busiest other processes are
recorded during each stage, since other work slows the stages down. Results: --out (JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET_S = 20 * 60
BUDGET_RSS_GB = 8.0
TRAIN_STAGES = ("sft", "rm", "ppo", "dpo")


def child(stage: str, params: str, out: str) -> None:
    """Run one stage through its CLI path, timing trainer.train() with a callback."""
    from transformers import TrainerCallback

    from rlhf_trust.tracking import configure_env

    configure_env()
    timer: dict[str, float] = {}

    class Timer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            timer["begin"] = time.perf_counter()

        def on_train_end(self, args, state, control, **kw):
            timer["end"] = time.perf_counter()

    ns = argparse.Namespace(params=params)
    if stage == "base":
        from rlhf_trust.models import stage as base

        base.cli(ns)
        Path(out).write_text(json.dumps({}))
        return
    import importlib

    from rlhf_trust.train import stage_cli
    from rlhf_trust.train.inputs import PARENT, Layout

    mod = importlib.import_module(f"rlhf_trust.train.{stage}")
    captured = {}

    def run(cfg, layout):
        captured.update(mod.run(cfg, layout, callbacks=[Timer()]))
        return captured

    layout = Layout()
    inputs = [layout.split("hh_train"), layout.split("hh_heldout"), layout.model(PARENT[stage])]
    stage_cli.run_cli(stage, ns, run, inputs)
    Path(out).write_text(json.dumps({"metrics": captured, "train_seconds": timer["end"] - timer["begin"]}))


# --compare: today's set-up vs the new one on the same model, pairs and lengths, in ONE process and
# interleaved step by step (the machine is shared: only side-by-side ratios mean something).
# today = 1 thread, TRL's own losses (DPOTrainer: LM head over every position, policy and reference;
# RewardTrainer: prompt + each response as two sequences); new = `threads: auto` + the completion-only
# chunked head with each prompt run once for DPO (train/fast_dpo.py), each prompt run once for the RM
# (train/fast_rm.py), padding-free SFT with TRL's chunked NLL on the fused head (train/fast_sft.py);
# autocast_bf16 = new + bf16 autocast around the loss with fp32 weights (the previous bf16 set-up:
# autocast recasts every frozen weight per call); new_bf16 = that + the frozen Linear weights held as
# bf16 copies (train/frozen_bf16.py), as `precision: bfloat16` now trains (precision.mixed_precision).
SETUPS = ("today", "new", "autocast_bf16", "new_bf16")


def _trainer(stage: str, cfg, model, tok, rows, out_dir: str, padding_free: bool = False):
    from datasets import Dataset

    from rlhf_trust.models import seq_cls_from_causal
    from rlhf_trust.train import trl_setup

    peft = trl_setup.lora_config(cfg, "SEQ_CLS" if stage == "rm" else "CAUSAL_LM")
    if stage == "sft":
        from trl import SFTConfig, SFTTrainer

        data = Dataset.from_list([{"prompt": r["prompt"], "completion": r["chosen"]} for r in rows])
        args = SFTConfig(output_dir=out_dir, per_device_train_batch_size=cfg.batch_size,
                         max_length=None if padding_free else cfg.max_length, padding_free=padding_free,
                         completion_only_loss=True, report_to=[], use_cpu=True, seed=0)
        if padding_free:  # the stage's trainer (fused-head chunked NLL)
            from rlhf_trust.train.fast_sft import trainer_class as sft_trainer

            return sft_trainer()(model=model, args=args, train_dataset=data, processing_class=tok)
        return SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok, peft_config=peft)
    data = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
    if stage == "rm":
        from trl import RewardConfig

        from rlhf_trust.train.fast_rm import trainer_class as rm_trainer

        model = seq_cls_from_causal(model, num_labels=1)
        model.config.pad_token_id = tok.pad_token_id
        args = RewardConfig(output_dir=out_dir, per_device_train_batch_size=cfg.batch_size,
                            max_length=cfg.max_length, report_to=[], use_cpu=True, seed=0)
        return rm_trainer()(model=model, args=args, train_dataset=data, processing_class=tok, peft_config=peft)
    from trl import DPOConfig

    from rlhf_trust.train.fast_dpo import trainer_class

    args = DPOConfig(output_dir=out_dir, per_device_train_batch_size=cfg.batch_size, max_length=cfg.max_length,
                     beta=cfg.beta, report_to=[], use_cpu=True, seed=0)
    return trainer_class()(model=model, ref_model=None, args=args, train_dataset=data, processing_class=tok,
                           peft_config=peft)


def compare(stages: list[str], params: str, out_path: str, steps: int, threads_new: str = "1") -> None:
    """Per stage: `steps` training steps (forward + backward of one batch) per set-up, alternating."""
    from types import SimpleNamespace

    import torch

    from rlhf_trust import config
    from rlhf_trust.models import load_merged_causal_lm, load_tokenizer
    from rlhf_trust.train import inputs
    from rlhf_trust.train.frozen_bf16 import frozen_bf16
    from rlhf_trust.train.precision import autocast
    from rlhf_trust.train.runtime import auto_threads

    rows_out, ratios = [], {}
    base = Path("outputs/models/base")
    tok = load_tokenizer(base)
    for stage in stages:
        cfg = config.load(stage, params)
        rows = inputs.load_split("hh_train", inputs.Layout(data_dir=Path("outputs/prepared")), None, stage)
        rows = inputs.clip(tok, rows[: cfg.batch_size * steps], cfg.max_prompt_length, cfg.max_length)
        with tempfile.TemporaryDirectory() as tmp:
            trainer = _trainer(stage, cfg, load_merged_causal_lm(base), tok, rows, tmp)
            model = trainer.model
            model.train()
            batches = [trainer._prepare_inputs(b) for b in trainer.get_train_dataloader()][:steps]
            new_batches, new_tr = batches, trainer
            if stage == "sft":  # new: the padding-free collator, same model and pairs
                new_tr = _trainer(stage, cfg, model, tok, rows, tmp, padding_free=True)
                new_batches = [new_tr._prepare_inputs(b) for b in new_tr.get_train_dataloader()][:steps]
            times: dict[str, list[float]] = {s: [] for s in SETUPS}
            losses: dict[str, list[float]] = {s: [] for s in SETUPS}
            threads = {}
            for plain_batch, new_batch in zip(batches, new_batches, strict=True):
                for setup in SETUPS:
                    batch = plain_batch if setup == "today" else new_batch
                    threads[setup] = 1 if setup == "today" else (
                        auto_threads() if threads_new == "auto" else int(threads_new))
                    torch.set_num_threads(threads[setup])
                    precision = "bfloat16" if setup.endswith("bf16") else "float32"
                    # the swap is made once per training run: outside the timed step
                    with frozen_bf16(model) if setup == "new_bf16" else contextlib.nullcontext():
                        t0 = time.perf_counter()
                        with autocast(SimpleNamespace(precision=precision, device="cpu")):
                            loss = _loss(stage, setup, new_tr if setup != "today" else trainer, model, batch)
                        loss.backward()
                        times[setup].append(time.perf_counter() - t0)
                    losses[setup].append(float(loss.detach()))
                    model.zero_grad(set_to_none=True)
        pairs = cfg.batch_size * len(batches)
        for setup in SETUPS:
            rows_out.append({"stage": stage, "setup": setup, "threads": threads[setup], "pairs": pairs,
                             "seconds": round(sum(times[setup]), 2),
                             "pairs_per_s": round(pairs / sum(times[setup]), 4),
                             "losses": [round(v, 5) for v in losses[setup]]})
            print(json.dumps(rows_out[-1]), flush=True)
        ratios[stage] = {s: round(sum(times["today"]) / sum(times[s]), 2) for s in SETUPS[1:]}
        del trainer, model
    print("speed-up new / today:", ratios)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    Path(out_path).write_text(json.dumps({
        "rows": rows_out, "speedup": ratios, "cpus": os.cpu_count(), "load_avg": os.getloadavg(),
        "others": busiest(), "params": params,
        "threads_new": threads_new,
        "note": "one process, today/new/new_bf16 alternating per batch; a step = forward + backward of one "
                "training batch (optimizer step excluded: LoRA, the same in all); today = 1 thread + TRL's own "
                "losses (wave 1), new = completion-only chunked LM head + prompt once for DPO, prompt once for "
                "the RM, padding-free SFT batches on the fused-head chunked NLL (fp32), autocast_bf16 = new "
                "under bf16 autocast with fp32 weights (the previous bf16), new_bf16 = autocast_bf16 + frozen "
                "Linear weights held as bf16 copies (the stages' bf16 now); speedup = today's seconds / the set-up's"}, indent=2) + "\n")


def _loss(stage: str, setup: str, trainer, model, batch):
    """One batch's loss as the set-up computes it (today: TRL's own losses)."""
    if stage == "dpo" and setup == "today":
        from trl import DPOTrainer

        return DPOTrainer._compute_loss(trainer, model, batch, False)
    if stage == "rm" and setup == "today":
        from trl import RewardTrainer

        return RewardTrainer.compute_loss(trainer, model, dict(batch))
    return trainer.compute_loss(model, batch)


# --steps-compare: WHOLE training steps as the stages run them (issue 11, point C of the last session:
# the forward+backward comparison above missed what a stage pays around them). Per stage, two trainers
# on the same model, pairs (the first batch_size * grad_accum * steps of the prepared split, clipped as
# the stage clips them) and lengths, each `trainer.train()` for `steps` optimizer steps:
#   wave1 = TRL's own trainer (SFTTrainer padded to max_length, RewardTrainer, DPOTrainer) in fp32 with
#           the stage's TRL args (logging every step, checkpoints every save_steps, optimizer, scheduler);
#   stage = the stage's own `build()` (fast trainer, `precision` from params, frozen bf16 copies).
# Alternating wave1 / stage for `rounds` rounds in one process; MLflow's callback is removed from both
# (the same per-step cost in each). wave1 runs at 1 thread, as wave 1's params pinned it (`threads: 1`).
# With `--threads-stage 1` the stage does too, and CPU seconds (process time) are the ratio's base: they
# do not count time the process waited for a core held by other sessions. With `--threads-stage auto`
# the stage runs as the default params run it (`threads: auto`: every idle core), and wall seconds are
# the base: meaningful only on an otherwise idle machine (the JSON records the load average).
# SFT also runs `stage_masked`: the stage's trainer with train/packed_attention.py switched off
# (transformers' sdpa on the block-diagonal mask), so packed attention's own gain is measured in the
# same rounds.
WHOLE = ("wave1", "stage")


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


def _wave1_trainer(stage: str, cfg, inp, ckpt_dir: Path):
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


def steps_compare(stages: list[str], params: str, out_path: str, steps: int, rounds: int,
                  profile_steps: int = 0, threads_stage: str = "1") -> None:
    import dataclasses

    import torch
    from transformers.integrations import MLflowCallback

    from rlhf_trust import config
    from rlhf_trust.models import load_tokenizer
    from rlhf_trust.train import inputs
    from rlhf_trust.train.runtime import auto_threads

    torch.set_num_threads(1)
    threads = {"wave1": 1, "stage": auto_threads() if threads_stage == "auto" else int(threads_stage)}
    threads["stage_masked"] = threads["stage"]
    base = Path("outputs/models/base")  # RM and DPO start from it too: same network and costs as from SFT
    tok = load_tokenizer(base)
    rows_out, ratios, profiles = [], {}, {}
    for stage in stages:
        cfg = dataclasses.replace(config.load(stage, params), max_steps=steps, threads=1, resume=False)
        n = cfg.batch_size * cfg.grad_accum * steps
        rows = inputs.load_split("hh_train", inputs.Layout(data_dir=Path("outputs/prepared")), n, stage)
        inp = inputs.Inputs(parent=base, tok=tok, train=inputs.clip(tok, rows, cfg.max_prompt_length, cfg.max_length),
                            heldout=[], data_md5="")
        with tempfile.TemporaryDirectory() as tmp:
            trainers = {"wave1": _wave1_trainer(stage, cfg, inp, Path(tmp) / "wave1"),
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
        ratios[stage] = {"cpu": round(cpu["wave1"] / cpu["stage"], 2), "wall": round(wall["wave1"] / wall["stage"], 2)}
        if "stage_masked" in wall:
            ratios[stage]["packed_attention_wall"] = round(wall["stage_masked"] / wall["stage"], 3)
        print(stage, "stage / wave1 speed-up:", ratios[stage], flush=True)
        _write(out_path, rows_out, ratios, profiles, params, steps, rounds, threads)


def _write(out_path, rows_out, ratios, profiles, params, steps, rounds, threads) -> None:
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    Path(out_path).write_text(json.dumps({
        "rows": rows_out, "speedup_stage_over_wave1": ratios, "profiles": profiles, "params": params,
        "steps_per_train_call": steps, "rounds": rounds, "threads": threads, "cpus": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "others": busiest(),
        "note": "one process, wave1 at 1 thread, the stage at `threads`; per stage `rounds` x (wave1 trainer.train() for `steps` optimizer steps, "
                "then the stage's trainer.train() for as many), same model (outputs/models/base), pairs and "
                "lengths; wave1 = TRL's SFTTrainer (padded to max_length) / RewardTrainer / DPOTrainer in fp32, "
                "stage = the stage's build() with params' precision; both with the stage's TRL args (logging "
                "every logging_steps, checkpoints every save_steps), MLflow callback removed from both; "
                "speed-up = wave1 seconds / stage seconds (cpu: process time; with more than 1 stage "
                "thread the wall ratio is the one that counts); sft's stage_masked = a second stage trainer "
                "with packed attention off (transformers' sdpa on the block-diagonal mask), "
                "packed_attention_wall = its wall seconds / the stage's"}, indent=2) + "\n")


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


def _timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def _rm_scores(model, tok, rows, bs):
    from rlhf_trust.train import scoring

    p = [x["prompt"] for x in rows]
    return [scoring.reward_scores(model, tok, p, [x[k] for x in rows], bs) for k in ("chosen", "rejected")]


def _dpo_plain(model, tok, prompts, responses, bs):
    """Today's held-out DPO scoring of one side: policy, then the adapter-disabled reference."""
    from rlhf_trust.train import scoring

    scoring.sequence_logps(model, tok, prompts, responses, bs)
    with model.disable_adapter():
        scoring.sequence_logps(model, tok, prompts, responses, bs)


def _dpo_pairs(model, tok, prompts, chosen, rejected, bs):
    from rlhf_trust.train import scoring

    scoring.pair_logps(model, tok, prompts, chosen, rejected, bs)
    with model.disable_adapter():
        scoring.pair_logps(model, tok, prompts, chosen, rejected, bs)


def compare_heldout(params: str, out_path: str, pairs: int) -> None:
    """Held-out scoring, today's vs the new path, alternating batch by batch on the same pairs:
    DPO implicit rewards (policy + adapter-disabled reference; today: each side a full sequence in
    input order; new: the prompt once per pair on its KV cache, length-sorted batches) and RM scores
    (today: input order; new: length-sorted batches)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from rlhf_trust import config
    from rlhf_trust.models import load_merged_causal_lm, load_tokenizer, seq_cls_from_causal
    from rlhf_trust.train import inputs

    torch.set_num_threads(1)
    base = Path("outputs/models/base")
    tok = load_tokenizer(base)
    rows_out, ratios = [], {}
    for stage in ("dpo", "rm"):
        cfg = config.load(stage, params)
        rows = inputs.load_split("hh_heldout", inputs.Layout(data_dir=Path("outputs/prepared")), pairs, stage)
        rows = inputs.clip(tok, rows, cfg.max_prompt_length, cfg.max_length)
        model = load_merged_causal_lm(base)
        if stage == "rm":
            model = seq_cls_from_causal(model, num_labels=1)
            model.config.pad_token_id = tok.pad_token_id
        else:
            model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear",
                                                     task_type="CAUSAL_LM"))
        bs = cfg.eval_batch_size
        times = {s: 0.0 for s in SETUPS}
        if stage == "rm":  # today: batches in input order (one call per batch); new: the split length-sorted
            times["today"] = sum(_timed(_rm_scores, model, tok, rows[i:i + bs], bs) for i in range(0, len(rows), bs))
            times["new"] = _timed(_rm_scores, model, tok, rows, bs)
        for i in range(0, len(rows), bs) if stage == "dpo" else ():
            p, c, r = ([x[k] for x in rows[i:i + bs]] for k in ("prompt", "chosen", "rejected"))
            times["today"] += _timed(_dpo_plain, model, tok, p, c, bs) + _timed(_dpo_plain, model, tok, p, r, bs)
            times["new"] += _timed(_dpo_pairs, model, tok, p, c, r, bs)
        for setup in SETUPS:
            rows_out.append({"stage": f"{stage}_heldout", "setup": setup, "threads": 1, "pairs": len(rows),
                             "seconds": round(times[setup], 2), "s_per_pair": round(times[setup] / len(rows), 3)})
            print(json.dumps(rows_out[-1]), flush=True)
        ratios[f"{stage}_heldout"] = round(times["today"] / times["new"], 2)
    print("speed-up new / today:", ratios)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    Path(out_path).write_text(json.dumps({
        "rows": rows_out, "speedup": ratios, "cpus": os.cpu_count(), "load_avg": os.getloadavg(),
        "others": busiest(), "params": params}, indent=2) + "\n")


def busiest(n: int = 4) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "pcpu,rss,args", "--sort=-pcpu"], capture_output=True, text=True, check=False).stdout
    mine = str(os.getpid())
    rows = [line.strip()[:110] for line in ps.splitlines()[1:] if mine not in line]
    return rows[:n]


def measure(stage: str, params: str) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", stage, "--params", params, "--child-out", out])
    loads, snapshot = [], []
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        loads.append(os.getloadavg()[0])
        if len(loads) == 6:  # ~30 s in: who else is using the CPUs
            snapshot = busiest()
        time.sleep(5)
    wall = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        raise SystemExit(f"{stage} failed with exit code {rc}")
    res = json.loads(Path(out).read_text())
    os.unlink(out)
    m = res.get("metrics", {})
    row = {"stage": stage, "wall_s": round(wall, 1), "peak_rss_gb": round(usage.ru_maxrss / 2**20, 2),
           "load_avg_1m_mean": round(sum(loads) / len(loads), 2) if loads else None, "others": snapshot}
    if "train_seconds" in res:
        row.update(train_s=round(res["train_seconds"], 1), train_tokens=m.get("train_tokens"),
                   tokens_per_s=round(m.get("train_tokens", 0) / res["train_seconds"], 1),
                   metrics={k: v for k, v in m.items() if k.startswith(("heldout", "train_loss", "reward", "kl"))})
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--stages", nargs="+", default=["base", *TRAIN_STAGES])
    p.add_argument("--out", default="benchmarks/results/train_budget.json")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    p.add_argument("--compare", action="store_true", help="today's set-up vs the new one, pairs/s per stage")
    p.add_argument("--steps", type=int, default=3, help="--compare: batches per stage and set-up")
    p.add_argument("--threads-new", default="1", help="--compare: threads of the new set-ups (1 or auto)")
    p.add_argument("--heldout", type=int, default=0, help="compare held-out scoring on this many pairs")
    p.add_argument("--steps-compare", action="store_true",
                   help="whole trainer.train() steps: wave-1 TRL trainers vs the stages' own, pairs/s")
    p.add_argument("--rounds", type=int, default=2, help="--steps-compare: alternating rounds per set-up")
    p.add_argument("--profile", type=int, default=0, help="--steps-compare: profile the stage trainer N steps")
    p.add_argument("--threads-stage", default="1",
                   help="--steps-compare: the stage trainer's threads (1, or auto as the default params)")
    a = p.parse_args()
    if a.heldout:
        compare_heldout(a.params, "benchmarks/results/heldout_speedup.json" if a.out == p.get_default("out")
                        else a.out, a.heldout)
        return
    if a.steps_compare:
        stages = [s for s in a.stages if s in TRAIN_STAGES and s != "ppo"]
        steps_compare(stages, a.params, a.out if a.out != p.get_default("out")
                      else "benchmarks/results/train_steps_speedup.json", a.steps, a.rounds, a.profile,
                      a.threads_stage)
        return
    if a.compare:
        stages = [s for s in a.stages if s in TRAIN_STAGES and s != "ppo"]
        compare(stages, a.params, a.out if a.out != p.get_default("out") else "benchmarks/results/train_speedup.json",
                a.steps, a.threads_new)
        return
    if a.child:
        child(a.child, a.params, a.child_out)
        return
    rows = []
    for stage in a.stages:
        rows.append(measure(stage, a.params))
        r = rows[-1]
        print(f"{stage:5s} wall {r['wall_s']:7.1f}s  train {r.get('train_s', 0):7.1f}s  "
              f"{r.get('tokens_per_s', 0):8.1f} tok/s  peak RSS {r['peak_rss_gb']:5.2f} GB  "
              f"load {r['load_avg_1m_mean']}", flush=True)
    train = [r for r in rows if r["stage"] in TRAIN_STAGES]
    total = sum(r["wall_s"] for r in train)
    peak = max((r["peak_rss_gb"] for r in train), default=0.0)
    summary = {"train_stages_wall_s": round(total, 1), "budget_s": BUDGET_S, "wall_ratio": round(total / BUDGET_S, 3),
               "peak_rss_gb": peak, "rss_ratio": round(peak / BUDGET_RSS_GB, 3), "cpus": os.cpu_count()}
    print(f"sft+rm+ppo+dpo: {total:.0f}s = {summary['wall_ratio']:.2f} x budget; "
          f"peak RSS {peak:.2f} GB = {summary['rss_ratio']:.2f} x budget")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"stages": rows, "summary": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
