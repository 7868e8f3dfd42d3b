"""`rlhf-trust <stage>`: one subcommand per DVC stage.

Only argparse is imported at start-up; each command imports its module (and torch, mlflow, GX...)
when it runs, so `rlhf-trust --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module:function, help). Each function takes the parsed argparse.Namespace.
COMMANDS: dict[str, tuple[str, str]] = {
    "params": ("rlhf_trust.config:cli", "check every section of the params file (one line per problem, exit 2)"),
    "data": ("rlhf_trust.data.sources:cli", "fill data/ from the mirror dir or the HF hub and check it against data.dvc"),
    "prepare": ("rlhf_trust.data.prepare:cli", "normalise raw data into typed JSONL records (outputs/prepared/)"),
    "validate": ("rlhf_trust.data.validate:cli", "Great Expectations gate: exit 0 valid, 1 invalid, 2 unusable"),
    "curate": ("rlhf_trust.data.curate:cli", "the HH training set: prepared pass-through, or pairs dropped by influence"),
    "base": ("rlhf_trust.models.stage:cli", "resolve and materialise the base model (outputs/models/base)"),
    "sft": ("rlhf_trust.train.sft:cli", "supervised fine-tuning on prompt + chosen (TRL SFTTrainer)"),
    "rm": ("rlhf_trust.train.rm:cli", "reward model on preference pairs (TRL RewardTrainer)"),
    "ppo": ("rlhf_trust.train.ppo:cli", "PPO from the SFT policy with the reward model (TRL 1.12)"),
    "dpo": ("rlhf_trust.train.dpo:cli", "DPO from the SFT model, SFT as reference (TRL DPOTrainer)"),
    # opt-in alignment arms (train.arms in params.yaml; the registry: rlhf_trust/train/arms.py)
    "kto": ("rlhf_trust.train.kto:cli", "KTO from the SFT model on unpaired desirable/undesirable examples"),
    "orpo": ("rlhf_trust.train.orpo:cli", "ORPO from the base model, reference-free (TRL experimental)"),
    "simpo": ("rlhf_trust.train.simpo:cli", "SimPO from the SFT model, reference-free (TRL CPOTrainer)"),
    "grpo": ("rlhf_trust.train.grpo:cli", "GRPO from the SFT policy with the reward model (TRL GRPOTrainer)"),
    "rloo": ("rlhf_trust.train.rloo:cli", "RLOO from the SFT policy with the reward model (TRL RLOOTrainer)"),
    "eval": ("rlhf_trust.evals.stage:cli", "evaluate one model on one trust vertical"),
    "influence": ("rlhf_trust.attribution.stage:cli", ("attribute trust changes to HH pairs with influence.method "
                  "(exact, DataInf, ...; the report names the one used)")),
    "samples": ("rlhf_trust.report.samples:cli", ("one vertical's units side by side: prompt, each model's answer, "
                "score and paired difference (HTML page + table)")),
    "report": ("rlhf_trust.report.summary:cli", ("the report (findings, forest plot, tables, samples pages): "
               "outputs/report/, or reports/ with --write")),
    "compare": ("rlhf_trust.report.compare:cli", "B - A per vertical and model with paired stats (git rev, DVC exp or MLflow run)"),
    "study": ("rlhf_trust.study.command:cli",
              "a grid of params overrides, one pipeline run per cell on submitit/Ray, pooled into one report"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rlhf-trust",
        description="Measure what RLHF does to an LM's trustworthiness; trace each change to its data.",
    )
    p.add_argument("--version", action="version", version="%(prog)s 0.1.0")
    sub = p.add_subparsers(dest="command", metavar="<command>")
    for name, (_, help_) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
        _extra_args(name, sp)
    return p


def _extra_args(name: str, sp: argparse.ArgumentParser) -> None:
    if name == "data":
        sp.add_argument("--no-check", action="store_true", help="skip the comparison with data.dvc")
    elif name == "validate":
        sp.add_argument("--data-dir", help="validate any directory in the raw layout instead of the prepared outputs")
    elif COMMANDS[name][0].startswith("rlhf_trust.train."):   # every training stage: sft, rm and the arms
        sp.add_argument("--seed", type=int, default=None,
                        help="a seed of train.seeds: outputs/models/<stage>/s<seed> (default: the first)")
    elif name == "eval":
        sp.add_argument("--vertical", required=True, help="a registered vertical (a key of eval.verticals)")
        sp.add_argument("--model", default=None, help="base | sft | ppo | dpo (default: every model in eval.models)")
        sp.add_argument("--limit", type=int, default=None, help="override the vertical's item limit")
    elif name == "compare":
        sp.add_argument("a", help="baseline: git revision, DVC experiment name, MLflow pipeline run id, or workspace")
        sp.add_argument("b", help="the run to check, same forms")
        sp.add_argument("--fail-on-regression", action="store_true",
                        help="exit 1 when any vertical is significantly (Holm) less trustworthy in B")
        sp.add_argument("--out-dir", default=None,
                        help="where compare.{md,html,json} go (default: outputs/compare/, untracked)")
        sp.add_argument("--write", action="store_true", help="write them to reports/ (committed results)")
    elif name == "report":
        sp.add_argument("--write", action="store_true",
                        help="write to report.out_dir (reports/: committed results; the DVC stage passes it)")
    elif name == "samples":
        sp.add_argument("vertical", help="a registered vertical")
        sp.add_argument("--models", default="base,dpo", help="comma-separated models, first = baseline (default: base,dpo)")
        sp.add_argument("--changed", action="store_true", help="only units whose score or answer differs between the models")
        sp.add_argument("--seed", type=int, default=None, help="the training seed of seeded cells (default: the lowest)")
        sp.add_argument("--out", default=None, help="the page (default: outputs/samples/<vertical>.html, untracked)")
    elif name == "study":
        _study_args(sp)
    elif name == "influence":
        sp.add_argument("--stage", default=None, help="only this RLHF stage (sft, rm, dpo)")
        sp.add_argument("--vertical", default=None, help="only this vertical")


def _study_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--grid", nargs="+", required=True, metavar="KEY=V1,V2",
                    help="params key (dotted, or an alias: seeds, arms) and its values; one cell per combination")
    sp.add_argument("--executor", default="local", help="local (submitit processes), slurm (submitit), ray")
    sp.add_argument("--name", default=None, help="the study's name: studies/<name>/ (default: from the grid)")
    sp.add_argument("--seed-key", default=None,
                    help="the grid key whose cells are training seeds of one group (default: train.seeds if a grid key)")
    sp.add_argument("--target", nargs="*", default=[], help="dvc repro targets per cell (default: the whole DAG)")
    sp.add_argument("--parallel", type=int, default=0, help="cells at once with submitit (default 0: all)")
    sp.add_argument("--cpus-per-cell", type=int, default=1)
    sp.add_argument("--gpus-per-cell", type=int, default=0,
                    help="N > 1: each training stage runs under `accelerate launch` with N processes")
    sp.add_argument("--accelerate-config", default=None,
                    help="accelerate config for N-GPU cells (default: configs/accelerate_gpu8.yaml)")
    sp.add_argument("--timeout-min", type=int, default=24 * 60, help="per cell")
    sp.add_argument("--slurm-partition", default=None)
    sp.add_argument("--ray-address", default=None,
                    help="a running Ray cluster (ray://host:10001 or auto); default: a local one, stopped afterwards")
    sp.add_argument("--ray-num-cpus", type=int, default=2, help="CPUs of the local Ray cluster")


TRAINING = ("sft", "rm", "ppo", "dpo")


def accelerate_argv(argv: list[str], environ: dict[str, str] | os._Environ = os.environ) -> list[str] | None:
    """A training stage's command line under `accelerate launch` when $RLHF_TRUST_PROCESSES > 1 (a
    study's multi-GPU cell sets it, with $RLHF_TRUST_ACCELERATE_CONFIG: one of configs/accelerate_*.yaml);
    None when the stage runs as it is (one process, another command, or already a launched rank)."""
    try:
        n = int(environ.get("RLHF_TRUST_PROCESSES") or 1)
    except ValueError:
        n = 1
    if n < 2 or "RANK" in environ or not argv or argv[0] not in TRAINING:
        return None
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(n)]
    config = environ.get("RLHF_TRUST_ACCELERATE_CONFIG")
    return launch + (["--config_file", config] if config else []) + ["-m", "rlhf_trust.cli", *argv]


def main(argv: list[str] | None = None) -> int:
    launch = accelerate_argv(sys.argv[1:]) if argv is None else None
    if launch:   # the stage's processes under accelerate; their exit status is the stage's
        import subprocess

        return subprocess.call(launch)
    if argv is None and os.environ.get("RLHF_TRUST_PRELOAD"):  # under `python -m rlhf_trust.preload`
        from rlhf_trust.preload_client import run_via_server

        pid = os.environ.get("RLHF_TRUST_PRELOAD_PID", "")
        rc = run_via_server(os.environ["RLHF_TRUST_PRELOAD"], sys.argv, int(pid) if pid.isdigit() else None)
        if rc is not None:
            return rc
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    target, _ = COMMANDS[args.command]
    module_name, func_name = target.split(":")
    from rlhf_trust.errors import UserError, mask_secrets
    from rlhf_trust.tracking import configure_env

    configure_env()
    from rlhf_trust import quiet

    quiet.install()
    try:
        func = getattr(importlib.import_module(module_name), func_name)
        rc = func(args)
    except UserError as e:
        print(f"rlhf-trust {args.command}: error: {mask_secrets(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"rlhf-trust {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        from rlhf_trust.fileio import is_disk_full

        if not is_disk_full(e):
            raise  # a bug: the traceback is what a maintainer needs
        where = f" while writing {e.filename}" if getattr(e, "filename", None) else ""
        print(f"rlhf-trust {args.command}: error: no space left on device{where}; free space and re-run "
              "(earlier results are unchanged)", file=sys.stderr)
        return 2
    finally:
        if argv is None:  # this process's own command line, not a test calling main()
            _spare_exit_gc()
    return int(rc or 0)


def _spare_exit_gc() -> None:
    """The command is done: spare the interpreter's exit its garbage collections over every object
    torch, transformers and MLflow made (measured 2.2 s for an eval and 6.9 s for sft on the shared
    2-core machine, more than some stages' own work; 0.1 and 0.8 s frozen). `gc.freeze` only takes
    them out of the collector's reach: exit still joins threads, runs atexit handlers and frees
    objects by reference count."""
    import gc

    gc.freeze()


if __name__ == "__main__":
    sys.exit(main())
