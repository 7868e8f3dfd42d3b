"""The one chat format used for every model: Anthropic HH's plain-text dialogue.

"\n\nHuman: {user}\n\nAssistant:" -- the format the HH pairs are written in, so SFT, the reward
model, PPO, DPO and every evaluation prompt share it. No model-specific chat templates.
"""

from __future__ import annotations

from rlhf_trust.data.records import ASSISTANT, HUMAN  # one definition; records.split_pair splits a pair


def hh_prompt(user: str, system: str | None = None) -> str:
    """One user turn as an HH prompt ending with "\n\nAssistant:"; a system prompt, if any,
    is put in front of the first Human turn (HH has no system role)."""
    head = f"{system.strip()}\n" if system else ""
    return f"{head}{HUMAN} {user.strip()}{ASSISTANT}"

