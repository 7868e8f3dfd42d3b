"""`rlhf-trust rloo`: RLOO from the SFT policy, completions scored by the reward model (TRL RLOOTrainer).

REINFORCE with a leave-one-out baseline: each completion's advantage is its reward minus the mean
reward of the other completions of its prompt. The stage itself: train/group_rl.py.
"""

from __future__ import annotations

from rlhf_trust.train import group_rl, inputs

STAGE = "rloo"


def run(cfg, layout: inputs.Layout | None = None, callbacks: list | None = None) -> dict:
    return group_rl.run(STAGE, cfg, layout, callbacks)


def cli(args) -> int:
    return group_rl.cli(STAGE, args, run)
