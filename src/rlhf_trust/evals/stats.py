"""Percentile-bootstrap 95% confidence intervals for means of per-unit values.

Every headline metric here is a mean over independent units (a prompt's max toxicity, a
statement's agree share, a question's correctness, a query's leak), so resampling units with
replacement is the right bootstrap; samples of one prompt stay together (cluster bootstrap).
scipy.stats.bootstrap does the same but is far slower for thousands of small calls; this is
three numpy lines.
"""

from __future__ import annotations

from collections.abc import Sequence


def bootstrap_ci(values: Sequence[float], *, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float] | None:
    import numpy as np

    x = np.asarray([v for v in values if v is not None], dtype=float)
    if x.size == 0:
        return None
    if x.size == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    a = (1 - level) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return float(lo), float(hi)


def mean(values: Sequence[float]) -> float | None:
    xs = [float(v) for v in values if v is not None]
    return sum(xs) / len(xs) if xs else None


def summarise(name: str, values: Sequence[float], *, n_boot: int, seed: int) -> dict:
    """{name: mean, name_ci95: {low, high}, name_n: units} (None when there are no units)."""
    ci = bootstrap_ci(values, n_boot=n_boot, seed=seed)
    return {
        name: mean(values),
        f"{name}_ci95": {"low": ci[0], "high": ci[1]} if ci else None,
        f"{name}_n": sum(v is not None for v in values),
    }
