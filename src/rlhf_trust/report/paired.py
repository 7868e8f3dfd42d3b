"""Paired statistics of two models on the same bootstrap units.

Both models answer the same items, so each unit (item x condition x sample index) gives one paired
difference B - A. Per contrast: the mean paired difference; a 95% CI from a bootstrap over units
(the unit is the cluster: resampling units keeps each unit's samples together); a two-sided p from
exact McNemar when every unit is binary (binomial test on the discordant pairs), else a paired
sign-flip permutation test (exact enumeration up to 2^16 sign patterns, seeded Monte Carlo above);
Holm's step-down adjustment over the whole family; n_pairs; and mde80 = (z_0.975 + z_0.80) x SE,
the smallest true difference this many pairs detects with 80% power at alpha = 0.05.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rlhf_trust.errors import DataError

ALPHA = 0.05
N_BOOT = 2000
N_PERM = 9999           # Monte Carlo sign flips when n > EXACT_MAX_N (p resolution 1e-4: Holm over 30 still < 0.05)
EXACT_MAX_N = 16        # 2^16 = 65536 sign patterns: exact enumeration stays fast up to here
Z_MDE80 = 1.959963984540054 + 0.8416212335729143   # z_0.975 + z_0.80


def read_units(path: str | Path) -> dict[str, float]:
    """unit_id -> value from a units.csv (`unit_id,value`). Missing, empty or malformed -> DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"units file not found: {path}")
    return parse_units(path.read_text(encoding="utf-8"), str(path))


def parse_units(text: str, where: str) -> dict[str, float]:
    rows = list(csv.reader(text.splitlines()))
    if not rows or [c.strip() for c in rows[0]] != ["unit_id", "value"]:
        raise DataError(f"{where}: expected a header 'unit_id,value'")
    out: dict[str, float] = {}
    for i, r in enumerate(rows[1:], start=2):
        if not r:
            continue
        if len(r) != 2:
            raise DataError(f"{where}: line {i}: expected 2 columns, got {len(r)}")
        try:
            v = float(r[1])
        except ValueError:
            raise DataError(f"{where}: line {i}: value {r[1]!r} is not a number") from None
        if not math.isfinite(v):
            raise DataError(f"{where}: line {i}: value {r[1]!r} is not finite")
        if r[0] in out:
            raise DataError(f"{where}: line {i}: duplicate unit_id {r[0]!r}")
        out[r[0]] = v
    if not out:
        raise DataError(f"{where}: no units (empty file)")
    return out


def pair(a: Mapping[str, float], b: Mapping[str, float], label: str = "") -> tuple[list[str], Any, Any]:
    """Sorted common unit ids and the two value arrays; the id sets must match exactly."""
    import numpy as np

    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        what = f"{label}: " if label else ""
        raise DataError(f"{what}unit ids do not match ({len(only_a)} only in A e.g. {only_a[:2]}, "
                        f"{len(only_b)} only in B e.g. {only_b[:2]})")
    ids = sorted(a)
    return ids, np.array([a[i] for i in ids], float), np.array([b[i] for i in ids], float)


def is_binary(*arrays: Any) -> bool:
    import numpy as np

    return all(bool(np.isin(x, (0.0, 1.0)).all()) for x in arrays)


def mcnemar_p(a: Any, b: Any) -> float:
    """Exact McNemar: under H0 the discordant pairs split 50/50 (binomial test on them)."""
    from scipy.stats import binomtest

    up = int(((a == 0) & (b == 1)).sum())
    down = int(((a == 1) & (b == 0)).sum())
    return 1.0 if up + down == 0 else float(binomtest(up, up + down, 0.5).pvalue)


def sign_flip_p(d: Any, n_perm: int = N_PERM, seed: int = 0) -> float:
    """Two-sided paired permutation test: flip the sign of each difference at random (scipy
    enumerates all 2^n patterns when that is <= n_resamples)."""
    import numpy as np
    from scipy.stats import permutation_test

    d = np.asarray(d, float)
    if not np.any(d):
        return 1.0
    n_res = 2 ** len(d) if len(d) <= EXACT_MAX_N else n_perm
    res = permutation_test((d,), np.mean, permutation_type="samples", vectorized=True, axis=-1,
                           n_resamples=n_res, alternative="two-sided", rng=np.random.default_rng(seed))
    return float(min(1.0, res.pvalue))


def bootstrap_ci(d: Any, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float]:
    """95% CI of the mean paired difference, resampling units (BCa; percentile if BCa degenerates)."""
    import warnings

    import numpy as np
    from scipy.stats import bootstrap

    d = np.asarray(d, float)
    if len(d) < 2 or np.ptp(d) == 0:
        return float(d.mean()), float(d.mean())
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ci = bootstrap((d,), np.mean, n_resamples=n_boot, vectorized=True, axis=-1, method=method,
                           rng=np.random.default_rng(seed)).confidence_interval
        if math.isfinite(ci.low) and math.isfinite(ci.high):
            break
    return float(ci.low), float(ci.high)


def compare(a: Mapping[str, float], b: Mapping[str, float], label: str = "", *, n_boot: int = N_BOOT,
            seed: int = 0) -> dict[str, Any]:
    """B - A on paired units: {delta, ci95, p_value, n_pairs, mde80, test} (p_holm comes from `holm`)."""
    import numpy as np

    _, xa, xb = pair(a, b, label)
    d = xb - xa
    n = len(d)
    se = float(np.std(d, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    binary = is_binary(xa, xb)
    p = mcnemar_p(xa, xb) if binary else sign_flip_p(d, seed=seed)
    low, high = bootstrap_ci(d, n_boot, seed)
    return {"delta": float(d.mean()), "ci95": {"low": low, "high": high}, "p_value": p,
            "n_pairs": n, "mde80": Z_MDE80 * se if math.isfinite(se) else None,
            "test": "mcnemar_exact" if binary else "sign_flip_permutation"}


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (hand-written: scipy has only BH/BY, and statsmodels is
    not a dependency). Sorted ascending, p_(i) * (m - i) with a running max, capped at 1."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def adjust(family: dict[Any, dict[str, Any]], alpha: float = ALPHA) -> dict[Any, dict[str, Any]]:
    """Add p_holm and significant (p_holm < alpha) to every result of the family, in place."""
    keys = list(family)
    for k, ph in zip(keys, holm([family[k]["p_value"] for k in keys]), strict=True):
        family[k]["p_holm"] = ph
        family[k]["significant"] = bool(ph < alpha)
    return family
