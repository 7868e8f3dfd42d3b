"""Learning curve: held-out accuracy (bootstrap CI over pairs) vs training pairs seen, one run.

    .venv/bin/python benchmarks/train_learning_curve.py --stage rm --points 64 128 256 512
    .venv/bin/python benchmarks/train_learning_curve.py --stage dpo --points 64 128 256

Trains the stage with its params section (the default recipe; `--precision` overrides
`<stage>.precision`, bf16 by default) on the first max(points) prepared pairs, from the stage's
parent in outputs/models, and evaluates the stage's own held-out statistic (RM: r(chosen) >
r(rejected); DPO: implicit reward) on `<stage>.max_heldout_pairs` held-out pairs each time
`points` pairs have been seen. The learning-rate schedule is the one of the whole run (a 64-pair
point is not a 64-pair run). Resumable: every point is appended to `--out` as it is measured and
a Trainer checkpoint is saved there, so a re-run after a crash continues from the last point
(same seed, same result). `--plot` draws the PNG next to the JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def evaluate(stage: str, trainer, inp, cfg) -> dict:
    from rlhf_trust.train import dpo, precision, rm

    model = trainer.model
    was_training = model.training
    model.eval()
    with precision.heldout_autocast(cfg):
        if stage == "rm":
            out = rm.heldout_metrics(model, inp.tok, inp.heldout, cfg.eval_batch_size)
        else:
            out = dpo.heldout_metrics(model, None, inp.tok, inp.heldout, cfg.beta, cfg.eval_batch_size)
    model.train(was_training)
    return {k: out[k] for k in ("heldout_accuracy", "heldout_accuracy_ci95", "heldout_n", "heldout_margin")}


def run(stage: str, params: str, points: list[int], precision: str, lr: float | None, out: Path,
        workdir: Path) -> dict:
    import dataclasses

    from transformers import TrainerCallback

    from rlhf_trust import config, fileio
    from rlhf_trust.train import checkpoints, dpo, inputs, rm

    cfg = config.load(stage, params)
    cfg = dataclasses.replace(cfg, max_train_pairs=max(points), precision=precision,
                              learning_rate=lr or cfg.learning_rate, save_steps=10**9)
    inp = inputs.stage_inputs(stage, cfg, inputs.Layout(), parent=getattr(cfg, "init_from", None))
    per_step = cfg.batch_size * cfg.grad_accum
    setup = {"stage": stage, "params": params, "precision": precision, "learning_rate": cfg.learning_rate,
             "batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum, "max_length": cfg.max_length,
             "max_prompt_length": cfg.max_prompt_length, "train_pairs": len(inp.train),
             "lr_scheduler": cfg.lr_scheduler, "seed": cfg.seed, "lora": dataclasses.asdict(cfg.lora)}
    done = fileio.read_json(out) if out.is_file() else {}
    if done.get("setup") != setup:
        done = {"setup": setup, "points": []}
    seen = {p["pairs_seen"] for p in done["points"]}
    ckpt_dir = workdir / f"{stage}_{precision}"
    fp = checkpoints.fingerprint(cfg, {"data": inp.data_md5, "parent": checkpoints.model_md5(inp.parent)})
    resume = checkpoints.checkpoint_to_resume(ckpt_dir, fp, True)
    steps = {p // per_step: p for p in points}
    t0 = [time.perf_counter()]

    class Curve(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            pairs = steps.get(state.global_step)
            if pairs is None:
                return
            if pairs not in seen:
                train_s = time.perf_counter() - t0[0]
                e0 = time.perf_counter()
                point = {"pairs_seen": pairs, "step": state.global_step, **evaluate(stage, trainer, inp, cfg),
                         "train_s_since_last": round(train_s, 1), "eval_s": round(time.perf_counter() - e0, 1)}
                done["points"].append(point)
                seen.add(pairs)
                fileio.write_json(out, done)
                print(json.dumps(point), flush=True)
            control.should_save = True  # a crash after this point resumes here
            t0[0] = time.perf_counter()

    if stage == "rm":
        trainer = rm.build(cfg, inp, ckpt_dir, [Curve()])
    else:
        trainer, _ = dpo.build(cfg, inp, ckpt_dir, [Curve()])
    checkpoints.train(trainer, resume)
    return done


def plot(results: list[dict], png: Path) -> None:
    """One line per run (the first is --out, then --also), 95% CI bars, chance at 0.5."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ticks: set[int] = set()
    n = "?"
    for i, result in enumerate(results):
        pts = sorted(result["points"], key=lambda p: p["pairs_seen"])
        x = [p["pairs_seen"] * (1.03 ** i) for p in pts]  # side by side, not on top of each other
        y = [p["heldout_accuracy"] for p in pts]
        lo = [p["heldout_accuracy"] - p["heldout_accuracy_ci95"]["low"] for p in pts]
        hi = [p["heldout_accuracy_ci95"]["high"] - p["heldout_accuracy"] for p in pts]
        s = result["setup"]
        ax.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=4,
                    label=f"{s['stage']} ({s['precision']}, lr {s['learning_rate']:g}, {s['train_pairs']}-pair run)")
        ticks |= {p["pairs_seen"] for p in pts}
        n = pts[0]["heldout_n"] if pts else n
    ax.axhline(0.5, color="grey", ls="--", lw=1, label="chance")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(ticks), [str(v) for v in sorted(ticks)])
    ax.set_xlabel("training pairs seen")
    ax.set_ylabel(f"held-out accuracy (n {n}, 95% bootstrap CI)")
    ax.set_title("gemma-3-270m, one run evaluated at checkpoints")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", choices=("rm", "dpo"), default="rm")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--points", type=int, nargs="+", default=[64, 128, 256, 512])
    p.add_argument("--precision", choices=("bfloat16", "float32"), default="bfloat16")
    p.add_argument("--lr", type=float, default=None, help="override <stage>.learning_rate")
    p.add_argument("--workdir", default="outputs/learning_curve", help="checkpoints (resume)")
    p.add_argument("--out", default=None, help="JSON (default benchmarks/results/train_learning_curve_<stage>.json)")
    p.add_argument("--plot", action="store_true", help="only draw the PNG from --out")
    p.add_argument("--also", nargs="*", default=[], help="more result JSONs drawn beside --out's")
    a = p.parse_args()
    out = Path(a.out or HERE / "results" / f"train_learning_curve_{a.stage}.json")
    if not a.plot:
        from rlhf_trust.tracking import configure_env

        configure_env()
        run(a.stage, a.params, sorted(a.points), a.precision, a.lr, out, Path(a.workdir))
    from rlhf_trust import fileio

    plot([fileio.read_json(out)] + [fileio.read_json(f) for f in a.also], out.with_suffix(".png"))


if __name__ == "__main__":
    main()
