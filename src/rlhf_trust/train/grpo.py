"""`rlhf-trust grpo`: GRPO from the SFT policy, completions scored by the reward model (TRL GRPOTrainer).

Each completion's advantage is its reward minus its prompt group's mean, over the group's standard
deviation; TRL's `loss_type="grpo"` (the GRPO paper's per-sequence token mean). The stage itself:
train/group_rl.py.
"""

from __future__ import annotations

from rlhf_trust.train import group_rl, inputs

STAGE = "grpo"


def run(cfg, layout: inputs.Layout | None = None, callbacks: list | None = None) -> dict:
    return group_rl.run(STAGE, cfg, layout, callbacks, extra={"loss_type": "grpo"})


def cli(args) -> int:
    return group_rl.cli(STAGE, args, run)
