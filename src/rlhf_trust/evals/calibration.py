"""Contextual calibration of log-likelihood verdicts (Zhao et al. 2021, "Calibrate Before Use").

A small LM's verdict after a fixed frame often comes from the answer words' prior, not from the
item: with a content-free input ("N/A") in the item's place, P(" I agree") is about what the real
statements get. Calibration divides the item's verdict distribution by the distribution the same
frame gives on content-free inputs (the average over several), and renormalises:

    q(v | x) = p(v | x) / p(v | cf)  /  sum_w p(w | x) / p(w | cf)

so a verdict the frame always favours no longer wins by default (Zhao's W = diag(p_cf)^-1, b = 0).
The calibrated verdict is argmax_v q(v | x). The content-free distribution is measured per model,
vertical and condition (system prompt, jailbreak prefix, base-rate setting): each changes the
frame, so each has its own prior.

Params per log-likelihood vertical entry: `calibration: contextual | none` and `content_free`
(a list of at least MIN_CONTENT_FREE inputs; null = the vertical's CONTENT_FREE).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rlhf_trust.config.schema import require

METHODS = ("contextual", "none")
# Zhao et al.'s three content-free inputs; a vertical may declare its own equivalents
CONTENT_FREE = ("N/A", "", "[MASK]")
MIN_CONTENT_FREE = 3


def check(method: str, content_free: Sequence[str] | None, key: str) -> None:
    """One line (ConfigError, exit 2) for an unknown method or an unusable content-free list."""
    require(method in METHODS, f"{key}.calibration", f"must be one of {list(METHODS)}, got {method!r}")
    if method == "none":
        return
    require(content_free is not None, f"{key}.content_free",
            "is missing: list the content-free inputs (e.g. ['N/A', '', '[MASK]']) or use calibration: none")
    distinct = list(dict.fromkeys(content_free))
    require(len(distinct) >= MIN_CONTENT_FREE, f"{key}.content_free",
            f"needs at least {MIN_CONTENT_FREE} distinct content-free inputs, got {list(content_free)!r}")


def softmax(logliks: Sequence[float]) -> list[float]:
    top = max(logliks)
    e = [math.exp(x - top) for x in logliks]
    total = sum(e)
    return [x / total for x in e]


def prior(distributions: Sequence[Sequence[float]]) -> list[float]:
    """The content-free distribution: the mean of the content-free inputs' verdict distributions."""
    n = len(distributions)
    return [sum(d[j] for d in distributions) / n for j in range(len(distributions[0]))]


def apply(p: Sequence[float], cf: Sequence[float] | None) -> list[float]:
    """p / cf renormalised over the verdicts (p itself when cf is None)."""
    if cf is None:
        return list(p)
    r = [x / max(c, 1e-300) for x, c in zip(p, cf)]
    total = sum(r)
    return [x / total for x in r]


def factors(cf: Sequence[float]) -> list[float]:
    """Zhao's diagonal W = 1 / p(v | cf), scaled so that the factors sum to the number of verdicts
    (equal factors = a content-free prior that favours no verdict)."""
    inv = [1.0 / max(c, 1e-300) for c in cf]
    return [x * len(inv) / sum(inv) for x in inv]
