"""The pipeline table: every stage's parent, inputs and outputs, and which influence stage explains
which model, declared once. dvc.yaml is the executable copy; tests/test_pipeline_table.py checks
that the two agree (every table stage has a dvc.yaml stage producing its outputs from at least its
inputs, and every dvc.yaml stage is in the table). Stage code imports the names below instead of
repeating them. Plain data: importing this module imports nothing else of the project but paths.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlhf_trust import paths

MODELS = ("base", "sft", "ppo", "dpo")          # the evaluated models, in pipeline order
TRAINED = ("sft", "rm", "ppo", "dpo")           # training stages
PARENT = {"sft": "base", "rm": "sft", "ppo": "sft", "dpo": "sft"}   # model each training stage starts from
USES = {"ppo": ("rm",)}                          # other models a training stage reads (PPO's reward model)
HELDOUT = ("rm", "ppo", "dpo")                   # training stages that also read the held-out split


@dataclass(frozen=True)
class Influence:
    """One influence stage: whose LoRA gradients, and which change of behaviour it explains."""

    model: str                 # the model whose gradients are taken
    new: str                   # eval samples of the stage's result ...
    old: str                   # ... against those of the model before it
    train_loss: str
    ref: str | None = None     # DPO's reference model


INFLUENCE = {
    "sft": Influence("sft", new="sft", old="base", train_loss="sft"),
    "rm": Influence("rm", new="ppo", old="sft", train_loss="bt"),  # PPO is explained through its reward model
    "dpo": Influence("dpo", new="dpo", old="sft", train_loss="dpo", ref="sft"),
}
EXPLAINED_BY = {spec.new: stage for stage, spec in INFLUENCE.items()}   # model -> influence stage


@dataclass(frozen=True)
class Stage:
    name: str
    deps: tuple[str, ...]      # paths (a dvc.yaml dep on a parent directory covers a file below it)
    outs: tuple[str, ...]
    parent: str | None = None  # the model this stage's model starts from


def _p(*parts) -> str:
    return "/".join(str(p) for p in parts)


def eval_outs(vertical: str, model: str) -> tuple[str, ...]:
    d = paths.EVAL / vertical / model
    return _p(d, "metrics.json"), _p(d, "samples.jsonl"), _p(d, "units.csv")


def influence_outs(stage: str, vertical: str) -> tuple[str, ...]:
    d = paths.INFLUENCE / stage / vertical
    return _p(d, "scores.parquet"), _p(d, "top.jsonl"), _p(d, "metrics.json")


def stages(eval_verticals: list[str], eval_models: list[str], influence_stages: list[str],
           influence_verticals: list[str], datasets: dict[str, str] | None = None) -> list[Stage]:
    """The table, expanded over the params' verticals and models (`datasets`: vertical -> its
    prepared file stem; the vertical's name when not given)."""
    datasets = datasets or {}
    hh = [_p(paths.CURATED, "hh_train.jsonl")]
    out = [
        # the vertical modules (src/rlhf_trust/evals) declare the benchmark parsers and GX suites
        Stage("prepare", ("data", "src/rlhf_trust/evals"), (str(paths.PREPARED),)),
        Stage("validate", ("data", str(paths.PREPARED), "src/rlhf_trust/evals"),
              (str(paths.MANIFEST), *(str(paths.validated(d)) for d in ("hh", *datasets.values())))),
        Stage("curate", (_p(paths.PREPARED, "hh_train.jsonl"),), (str(paths.CURATED),)),
        Stage("base", (_p(paths.PREPARED, "hh_train.jsonl"),), (str(paths.model_dir("base")),)),
    ]
    for s in TRAINED:
        deps = [str(paths.validated("hh")), *hh, str(paths.model_dir(PARENT[s])),
                *(str(paths.model_dir(u)) for u in USES.get(s, ()))]
        if s in HELDOUT:
            deps.append(_p(paths.CURATED, "hh_heldout.jsonl"))
        out.append(Stage(s, tuple(deps), (str(paths.model_dir(s)), str(paths.stage_metrics(s))), parent=PARENT[s]))
    for v in eval_verticals:
        deps = (str(paths.validated(datasets.get(v, v))), str(paths.prepared(datasets.get(v, v))),
                *(str(paths.model_dir(m)) for m in eval_models))
        out.append(Stage(f"eval {v}", deps, tuple(o for m in eval_models for o in eval_outs(v, m))))
    for s in influence_stages:
        spec = INFLUENCE[s]
        models = [spec.model, *([spec.ref] if spec.ref else [])]
        for v in influence_verticals:
            deps = (*hh, *(str(paths.model_dir(m)) for m in models),
                    _p(paths.EVAL, v, spec.new, "samples.jsonl"), _p(paths.EVAL, v, spec.old, "samples.jsonl"))
            out.append(Stage(f"influence {s} {v}", deps, influence_outs(s, v), parent=spec.model))
    out.append(Stage("report", (str(paths.EVAL), str(paths.INFLUENCE), str(paths.METRICS)),
                     (_p(paths.REPORTS, "trust_summary.json"),)))
    return out
