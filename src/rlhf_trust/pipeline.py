"""What the code needs to know about the pipeline: the evaluated models, each training stage's parent,
and which change of behaviour each influence stage explains. The stages themselves, their inputs
and outputs are declared once, in dvc.yaml (tests/test_pipeline_dag.py checks it against these).
Plain data: importing this module imports nothing else of the project.
"""

from __future__ import annotations

from dataclasses import dataclass

MODELS = ("base", "sft", "ppo", "dpo")          # the evaluated models, in pipeline order
TRAINED = ("sft", "rm", "ppo", "dpo")           # training stages
PARENT = {"sft": "base", "rm": "sft", "ppo": "sft", "dpo": "sft"}   # model each training stage starts from
USES = {"ppo": ("rm",)}                          # other models a training stage reads (PPO's reward model)


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
