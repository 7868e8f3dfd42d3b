"""The DVC stage of a training step (`rlhf-trust sft|rm|<arm>`, the arms of train/arms.py): params, the stage's MLflow run,
the work, then its model directory and metrics written once as one unit.

Each stage module (sft, rm and every arm) exposes `run(cfg, layout=None) -> metrics` (the work, also
called by tests and benchmarks) and `cli(args)` (the DVC stage, through `run_cli`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlhf_trust import fileio, paths
from rlhf_trust.train import arms
from rlhf_trust.train.checkpoints import output_unit
from rlhf_trust.train.inputs import Layout
from rlhf_trust.train.runtime import is_main_process

LOG_MODEL_MAX_BYTES = 64 << 20

# Each stage's DVC metrics (and summary line): its held-out numbers and the size of its data.
SUMMARY_KEYS = {
    "sft": ("heldout_chosen_nll_per_token", "train_loss_last", "train_pairs"),
    "rm": ("heldout_accuracy", "heldout_n", "heldout_margin", "train_loss_last", "train_pairs"),
    "ppo": ("heldout_reward_gain", "heldout_n", "kl_mean", "kl_last", "episodes"),
    "dpo": ("heldout_accuracy", "heldout_n", "heldout_margin", "train_loss_last", "train_pairs"),
    "kto": ("heldout_accuracy", "heldout_n", "heldout_margin", "train_loss_last", "train_pairs"),
    "orpo": ("heldout_accuracy", "heldout_n", "heldout_margin", "train_loss_last", "train_pairs"),
    "simpo": ("heldout_accuracy", "heldout_n", "heldout_margin", "train_loss_last", "train_pairs"),
    "grpo": ("heldout_reward_gain", "heldout_n", "reward_mean", "train_loss_last", "train_prompts"),
    "rloo": ("heldout_reward_gain", "heldout_n", "reward_mean", "train_loss_last", "train_prompts"),
}


def seeded(stage: str, args: Any, cfgs: dict[str, Any]) -> tuple[Any, Layout]:
    """The stage's validated config with its seed set, and the seed's layout. `--seed` must be one of
    train.seeds (default: the first), so every result on disk belongs to a declared seed."""
    from dataclasses import replace

    from rlhf_trust.errors import ConfigError

    seeds = cfgs["train"].seeds
    seed = seeds[0] if getattr(args, "seed", None) is None else args.seed
    if seed not in seeds:
        raise ConfigError(f"{stage}: --seed {seed} is not in train.seeds {seeds}")
    return replace(cfgs[stage], seed=seed), Layout(seed=seed)


def run_cli(stage: str, args: Any, run: Callable[..., dict],
            inputs: Callable[[Layout], list[Path]] | list[Path]) -> int:
    """The DVC stage: load params, open the stage's MLflow run, run, write metrics once.
    `inputs(layout)` (or a list): the files the stage reads (their md5s go into the run's provenance)."""
    from rlhf_trust import config
    from rlhf_trust.tracking import track_stage

    sections = config.load_all(args.params)
    arms.selected(sections)  # train.arms: unknown names and unmet data needs are one line before any work
    cfg, layout = seeded(stage, args, sections)
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
        sr.register_model(stage, "model", {"seed": str(cfg.seed), "data.version": tags.get("data.version", ""),
                                           "git.commit": tags.get("git.commit", ""),
                                           "git.dirty": tags.get("git.dirty", ""),
                                           "model.md5": fileio.read_json(model_dir / "stage.json")["md5"]})
        return metrics

    from rlhf_trust.runinfo import run_info_path

    with output_unit(stage, layout.model(stage), [layout.metrics(stage), run_info_path(layout.metrics(stage))]):
        track_stage(stage, body, cfg=cfg, inputs=[p for p in (inputs(layout) if callable(inputs) else inputs) if Path(p).exists()],
                    run_name=f"{stage}@{paths.seed_part(cfg.seed)}", tags={"seed": str(cfg.seed)},
                    metric_keys=SUMMARY_KEYS.get(stage), metrics_path=layout.metrics(stage))
    return 0
