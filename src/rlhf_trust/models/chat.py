"""The one chat format used for every model: Anthropic HH's plain-text dialogue.

"\n\nHuman: {user}\n\nAssistant:" -- the format the HH pairs are written in, so SFT, the reward
model, PPO, DPO and every evaluation prompt share it. No model-specific chat templates.
"""

from __future__ import annotations

HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"


def hh_prompt(user: str, system: str | None = None) -> str:
    """One user turn as an HH prompt ending with "\n\nAssistant:"; a system prompt, if any,
    is put in front of the first Human turn (HH has no system role)."""
    head = f"{system.strip()}\n" if system else ""
    return f"{head}{HUMAN} {user.strip()}{ASSISTANT}"


def split_dialogue(text: str) -> tuple[str, str]:
    """Split an HH dialogue at its last "\n\nAssistant:" -> (prompt ending with it, response)."""
    i = text.rfind(ASSISTANT)
    if i < 0:
        raise ValueError("not an HH dialogue: no '\\n\\nAssistant:' turn")
    return text[: i + len(ASSISTANT)], text[i + len(ASSISTANT):]
