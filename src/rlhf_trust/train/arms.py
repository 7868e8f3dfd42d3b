"""The alignment arms: what each one trains from, on what data, with which TRL trainer, how its
held-out check is made and which loss attributes it (`ArmSpec`), and which ones a run selects.

An arm is a stage module under train/ (`rlhf-trust <name>`, its `run` and `cli`) plus an entry in
`ARMS` and a params section of the same name (a dataclass in config/train.py). `train.arms` in
params.yaml lists the arms a run trains, evaluates and attributes: the study's `[ppo, dpo]` by default,
`kto`, `orpo`, `simpo`, `grpo`, `rloo` opt-in. Everything the pipeline needs to wire an arm (its command,
parent, other models, data, check, influence loss) is read from here, never typed again.

Plain data: importing this module imports no trainer; the stage modules are found by name.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from rlhf_trust.errors import ConfigError

# What an arm trains on (its data need):
PAIRS = "pairs"          # HH preference pairs (prompt, chosen, rejected)
UNPAIRED = "unpaired"    # one desirable (chosen) and one undesirable (rejected) example per HH pair
PROMPTS = "prompts"      # HH prompts; the policy's own completions scored by the reward model

# Its held-out check, the metric that stands for it in metrics/<arm>.json:
IMPLICIT_ACCURACY = "heldout_accuracy"   # implicit reward of chosen > rejected on held-out pairs
REWARD_GAIN = "heldout_reward_gain"      # reward-model score of its greedy responses minus SFT's


@dataclass(frozen=True)
class ArmSpec:
    """One alignment arm. Strings, not classes: the registry imports no trainer."""

    name: str                          # = the stage, its module train/<name>.py and its params section
    trainer: str                       # TRL trainer, "module:Class"
    trl_config: str                    # its TRL config, "module:Class"
    params: str                        # its typed params section, "rlhf_trust.config.train:Class"
    data: str                          # PAIRS | UNPAIRED | PROMPTS
    parent: str                        # the model it starts from (sft, or base: reference-free ORPO)
    uses: tuple[str, ...]              # other models it reads (the reward model of PPO / GRPO)
    heldout_check: str                 # IMPLICIT_ACCURACY | REWARD_GAIN (the metric key)
    influence_loss: str                # attribution/losses.py kind its training pairs are scored with
    influence_model: str               # whose gradients attribution takes (itself, or its reward model)
    influence_ref: str | None          # the reference model the loss compares with (DPO, KTO: sft)
    summary: str                       # one line for `rlhf-trust --help` and the docs

    @property
    def module(self) -> str:
        return f"rlhf_trust.train.{self.name}"

    @property
    def command(self) -> str:
        return f"rlhf_trust.train.{self.name}:cli"

    def load(self) -> Any:
        """The arm's stage module (its `run(cfg, layout, callbacks)` and `cli(args)`)."""
        return importlib.import_module(self.module)


_CFG = "rlhf_trust.config.train"
ARMS: dict[str, ArmSpec] = {spec.name: spec for spec in (
    ArmSpec("ppo", "trl.experimental.ppo:PPOTrainer", "trl.experimental.ppo:PPOConfig", f"{_CFG}:PPOConfig",
            PROMPTS, parent="sft", uses=("rm",), heldout_check=REWARD_GAIN, influence_loss="bt",
            influence_model="rm", influence_ref=None,
            summary="PPO from the SFT policy with the reward model (TRL 1.12)"),
    ArmSpec("dpo", "trl:DPOTrainer", "trl:DPOConfig", f"{_CFG}:DPOConfig", PAIRS, parent="sft", uses=(),
            heldout_check=IMPLICIT_ACCURACY, influence_loss="dpo", influence_model="dpo", influence_ref="sft",
            summary="DPO from the SFT model, SFT as reference (TRL DPOTrainer)"),
    ArmSpec("kto", "trl:KTOTrainer", "trl:KTOConfig", f"{_CFG}:KTOConfig", UNPAIRED, parent="sft", uses=(),
            heldout_check=IMPLICIT_ACCURACY, influence_loss="kto", influence_model="kto", influence_ref="sft",
            summary="KTO from the SFT model on unpaired desirable/undesirable examples (TRL KTOTrainer)"),
    ArmSpec("orpo", "trl.experimental.orpo:ORPOTrainer", "trl.experimental.orpo:ORPOConfig", f"{_CFG}:ORPOConfig",
            PAIRS, parent="base", uses=(), heldout_check=IMPLICIT_ACCURACY, influence_loss="orpo",
            influence_model="orpo", influence_ref=None,
            summary="ORPO from the base model, reference-free (TRL experimental ORPOTrainer)"),
    ArmSpec("simpo", "trl.experimental.cpo:CPOTrainer", "trl.experimental.cpo:CPOConfig", f"{_CFG}:SimPOConfig",
            PAIRS, parent="sft", uses=(), heldout_check=IMPLICIT_ACCURACY, influence_loss="simpo",
            influence_model="simpo", influence_ref=None,
            summary="SimPO from the SFT model, reference-free (TRL CPOTrainer, loss_type=simpo)"),
    ArmSpec("grpo", "trl:GRPOTrainer", "trl:GRPOConfig", f"{_CFG}:GRPOConfig", PROMPTS, parent="sft",
            uses=("rm",), heldout_check=REWARD_GAIN, influence_loss="bt", influence_model="rm",
            influence_ref=None,
            summary="GRPO from the SFT policy, group-relative rewards from the reward model (TRL GRPOTrainer)"),
    ArmSpec("rloo", "trl:RLOOTrainer", "trl:RLOOConfig", f"{_CFG}:RLOOConfig", PROMPTS, parent="sft",
            uses=("rm",), heldout_check=REWARD_GAIN, influence_loss="bt", influence_model="rm",
            influence_ref=None,
            summary="RLOO from the SFT policy, leave-one-out baselines from the reward model (TRL RLOOTrainer)"),
)}
DEFAULT = ("ppo", "dpo")   # the study's arms
REWARD_MODEL = "rm"        # the stage that trains a reward model (trained when a selected arm uses it)


def spec(name: str) -> ArmSpec:
    """The arm called `name`, or one line listing the known arms (exit 2)."""
    try:
        return ARMS[name]
    except KeyError:
        raise ConfigError(f"params: train.arms: unknown arm '{name}'; known arms: {', '.join(ARMS)}") from None


def parent(name: str) -> str:
    """The model arm `name` starts from."""
    return spec(name).parent


def uses(name: str) -> tuple[str, ...]:
    """The other models arm `name` reads (besides its parent)."""
    return spec(name).uses


def selected(cfg: Any) -> list[ArmSpec]:
    """The arms `train.arms` selects, in its order, each one's data need checked.

    `cfg`: the `train` section (`TrainArmsConfig`) or the dict of every section (`config.load_all`),
    whose arm sections are then checked against the models they read."""
    sections = cfg if isinstance(cfg, dict) else {"train": cfg}
    arms = [spec(name) for name in sections["train"].arms]
    for arm in arms:
        section = sections.get(arm.name)
        reward = getattr(section, "reward_model", REWARD_MODEL) if section is not None else REWARD_MODEL
        if REWARD_MODEL in arm.uses and reward != REWARD_MODEL:
            raise ConfigError(f"params: {arm.name}.reward_model: '{reward}' is not a reward-model stage; "
                              f"{arm.name} needs its completions scored by '{REWARD_MODEL}'")
    return arms


def names(cfg: Any) -> list[str]:
    return [arm.name for arm in selected(cfg)]


def trained_stages(cfg: Any) -> list[str]:
    """Every training stage a run needs, in order: sft, rm (only when a selected arm uses it), the arms.
    SFT always trains: it is the parent of most arms and the evaluated model every arm is compared with."""
    arms = selected(cfg)
    needs_rm = any(REWARD_MODEL in arm.uses for arm in arms)
    return ["sft"] + ([REWARD_MODEL] if needs_rm else []) + [arm.name for arm in arms]


def loss_settings(name: str, sections: dict[str, Any]) -> dict[str, float]:
    """The keyword arguments of arm `name`'s influence loss (`attribution.losses.per_example_losses`)
    from its params section, so that attribution scores pairs with the loss the arm trained with:
    beta for dpo, kto, orpo and simpo, and SimPO's margin gamma; none for the reward model's `bt`."""
    arm, section = spec(name), sections[name]
    if arm.influence_loss == "bt":
        return {}
    return {"beta": section.beta, **({"gamma": section.gamma} if arm.influence_loss == "simpo" else {})}


def models_read(name: str) -> tuple[str, ...]:
    """Every model directory arm `name`'s stage reads: its parent, the models it uses and, for an arm
    whose reference is not its parent, that reference (its DVC deps)."""
    arm = spec(name)
    ref = (arm.influence_ref,) if arm.influence_ref and arm.influence_ref != arm.parent else ()
    return (arm.parent, *arm.uses, *ref)
