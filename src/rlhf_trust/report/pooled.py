"""Two-level statistics: eval units within training seeds.

A trained model's score varies with the items it is evaluated on (units) and with the training run
that produced it (seed). The per-seed paired statistics (paired.py) hold the checkpoints fixed; this
module pools over seeds so that a difference counts only beyond training noise.

Design: the same items are evaluated for every seed, so units and seeds are crossed. With d the
per-unit value (B - A for a paired contrast), a cell is d[seed, unit] = mu + a_seed + b_unit + e and

    Var(pooled delta) = s2_seed / S + s2_unit / U + s2_resid / (S U)

estimated by the method of moments: T1 = spread of the per-seed deltas / S (seed term, S - 1 df),
T2 = spread of the per-unit seed means / U (unit term, U - 1 df), minus T3 = the two-way residual
counted twice (T1 and T2 both contain it). Floored at max(T1, T2), each of which alone is an
underestimate. CI and p use Student's t: with the seed term the larger (or two seeds), S - 1 df, the
t test on the per-seed deltas widened for the shared items; else Satterthwaite's df capped at
(S - 1) x var / T1, which tends to the unit-level test as seed noise vanishes. Chosen by simulation (tests/test_pooled_stats.py,
benchmarks/pooled_stats_sim.py, docs/statistics.md): a t test on the per-seed deltas alone ignores
the shared items and is liberal when unit noise matters; a two-level bootstrap cannot widen for
3 seeds (10 distinct seed resamples) and under-covers.

Two designs: `contrast` pairs seeds (seed k of B against seed k of A, a model evaluated once such
as the base against every seed); `two_sample` compares two runs whose seeds need not match (B's
seeds against A's, unpaired at the seed level, items paired). Fewer than two seeds: the unit-level
test of paired.py, labelled "conditional on these checkpoints".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rlhf_trust.errors import DataError
from rlhf_trust.report import paired

SHARED = None            # the seed key of a model evaluated once for every seed (the base model)
CONDITIONAL = "conditional on these checkpoints"
METHOD = "two_level_crossed_t"

SeedUnits = Mapping[Any, Mapping[str, float]]   # seed (int, or SHARED) -> unit_id -> value


def crossed(groups: list[tuple[Any, float]]) -> dict[str, Any]:
    """Pooled delta, its variance and Satterthwaite df for groups of (values[..., seed, unit], sign).

    One group: a paired contrast's differences. Two groups (+1 for B, -1 for A): two runs whose seeds
    are not paired. Units missing from a seed are NaN. Vectorised over leading batch axes (the
    simulation passes thousands of data sets at once)."""
    import numpy as np

    seed_means = [np.nanmean(y, axis=-1) for y, _ in groups]                 # [..., S_g]
    side = [m.mean(axis=-1) for m in seed_means]                             # [...]
    delta = sum(s * m for (_, s), m in zip(groups, side, strict=True))
    inv = sum(1.0 / y.shape[-2] for y, _ in groups)
    df1 = sum(y.shape[-2] - 1 for y, _ in groups)
    ss1 = sum(((m - c[..., None]) ** 2).sum(axis=-1) for m, c in zip(seed_means, side, strict=True))
    t1 = ss1 / df1 * inv
    unit_means = [np.nanmean(y, axis=-2) for y, _ in groups]                 # [..., U]
    d_unit = sum(s * m for (_, s), m in zip(groups, unit_means, strict=True))
    n_units = np.isfinite(d_unit).sum(axis=-1)
    df2 = n_units - 1
    t2 = np.nanvar(d_unit, axis=-1, ddof=1) / n_units
    ss3, df3 = 0.0, 0
    for (y, _), m, u, c in zip(groups, seed_means, unit_means, side, strict=True):
        r = y - m[..., :, None] - u[..., None, :] + c[..., None, None]
        ss3 = ss3 + np.nansum(r ** 2, axis=(-2, -1))
        df3 = df3 + (y.shape[-2] - 1) * (np.isfinite(u).sum(axis=-1) - 1)
    t3 = ss3 / np.maximum(df3, 1) * inv / n_units
    var = t1 + t2 - t3
    floor = np.maximum(t1, t2)
    with np.errstate(divide="ignore", invalid="ignore"):
        satt = var ** 2 / (t1 ** 2 / df1 + t2 ** 2 / df2 + t3 ** 2 / np.maximum(df3, 1))
    floored = var < floor
    df = np.where(floored, np.where(t1 >= t2, df1, df2), satt)
    var = np.where(floored, floor, var)
    # Satterthwaite is liberal when the seed term, estimated from a few seeds, happens to come out
    # small: keep the seed df while that term dominates (and always with two seeds), else cap the df
    # at df1 * var / t1 (tests/test_pooled_stats.py, benchmarks/pooled_stats_sim.py)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.minimum(df, np.where(t1 > 0, df1 * var / t1, df))
    df = np.where((t1 >= t2) | (df1 < 2), df1, df)
    return {"delta": delta, "var": var, "df": np.where(var > 0, df, np.inf), "seed_means": seed_means,
            "t_seed": t1, "t_unit": t2, "t_resid": t3}


def inference(delta: Any, var: Any, df: Any, alpha: float = paired.ALPHA) -> dict[str, Any]:
    """Two-sided p, (1 - alpha) CI and MDE80 from Student's t with df degrees of freedom."""
    import numpy as np
    from scipy.stats import t as student

    se = np.sqrt(var)
    q = student.ppf(1 - alpha / 2, df)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(se > 0, 2 * student.sf(np.abs(delta) / se, df), np.where(delta == 0, 1.0, 0.0))
    return {"p": np.minimum(p, 1.0), "low": delta - q * se, "high": delta + q * se,
            "mde80": (q + student.ppf(0.8, df)) * se}


def _matrix(per_seed: list[Mapping[str, float]]) -> Any:
    """Seeds x sorted union of unit ids, NaN where a seed lacks a unit."""
    import numpy as np

    ids = sorted(set().union(*per_seed))
    col = {u: j for j, u in enumerate(ids)}
    y = np.full((len(per_seed), len(ids)), np.nan)
    for i, units in enumerate(per_seed):
        for u, v in units.items():
            y[i, col[u]] = v
    return y


def _result(fit: dict[str, Any], seeds: list[Any], per_seed: list[dict[str, Any]], n_units: int,
            missing: dict[str, list]) -> dict[str, Any]:
    import numpy as np

    inf = inference(fit["delta"], fit["var"], fit["df"])
    delta = float(fit["delta"])
    signs = [float(np.sign(s["delta"])) for s in per_seed]
    sd = float(np.std([s["delta"] for s in per_seed], ddof=1)) if len(per_seed) > 1 else None
    out = {"delta": delta, "ci95": {"low": float(inf["low"]), "high": float(inf["high"])},
           "p_value": float(inf["p"]), "n_pairs": n_units, "mde80": float(inf["mde80"]),
           "test": METHOD, "method": METHOD, "level": "two_level", "n_seeds": len(seeds), "seeds": seeds,
           "per_seed": per_seed, "seed_sd": sd,
           "sign_agreement": {"agree": int(sum(s == np.sign(delta) != 0 for s in signs)), "of": len(signs)},
           "df": float(fit["df"]), "var_seed": float(fit["t_seed"]), "var_unit": float(fit["t_unit"])}
    if missing:
        out["seeds_missing"] = missing
    return out


def _conditional(a: Mapping[str, float], b: Mapping[str, float], label: str, seeds: list[Any],
                 per_seed: list[dict[str, Any]], missing: dict[str, list]) -> dict[str, Any]:
    r = paired.compare(a, b, label)
    r.update({"method": f"{r['test']} ({CONDITIONAL})", "level": "conditional", "conditional": CONDITIONAL,
              "n_seeds": len(seeds), "seeds": seeds, "per_seed": per_seed, "seed_sd": None,
              "sign_agreement": None})
    if missing:
        r["seeds_missing"] = missing
    return r


def _restrict(shared: Mapping[str, float], to: Mapping[str, float]) -> Mapping[str, float]:
    """A shared evaluation restricted to one seed's units (a seed may have fewer units)."""
    return {u: shared[u] for u in to} if set(to) <= set(shared) else shared


def contrast(a: SeedUnits, b: SeedUnits, label: str = "") -> dict[str, Any]:
    """B - A pooled over paired seeds. `a`/`b`: seed -> units; a side keyed by SHARED alone (the base
    model) pairs with every seed of the other. Seeds present on one side only are left out and listed
    under `seeds_missing` ({"a": seeds A lacks, "b": seeds B lacks}). Returns paired.compare's fields
    (delta, ci95, p_value, n_pairs, mde80, test) plus method, level ("two_level" or "conditional"),
    n_seeds, seeds, per_seed [{seed, delta, n_pairs}], seed_sd, sign_agreement {agree, of} and, when
    two-level, df and the variance terms."""
    import numpy as np

    if not a or not b:
        raise DataError(f"{label}: no seeds on one side")
    shared_a, shared_b = set(a) == {SHARED}, set(b) == {SHARED}
    if shared_a or shared_b:
        seeds = sorted(b if shared_a else a, key=str)
        missing: dict[str, list] = {}
    else:
        seeds = sorted(set(a) & set(b), key=str)
        missing = {k: sorted(set(y) - set(x), key=str) for k, x, y in (("a", a, b), ("b", b, a))}  # k lacks
        missing = {k: v for k, v in missing.items() if v}
        if not seeds:
            raise DataError(f"{label}: no seed on both sides (A: {sorted(a, key=str)}, B: {sorted(b, key=str)})")
    pairs = []
    for s in seeds:
        ua = a[SHARED] if shared_a else a[s]
        ub = b[SHARED] if shared_b else b[s]
        ua, ub = (_restrict(ua, ub), ub) if shared_a else (ua, _restrict(ub, ua) if shared_b else ub)
        ids, xa, xb = paired.pair(ua, ub, f"{label} seed {s}" if s is not SHARED else label)
        pairs.append((s, dict(zip(ids, xb - xa, strict=True)), ua, ub))
    per_seed = [{"seed": s, "delta": float(np.mean(list(d.values()))), "n_pairs": len(d)} for s, d, _, _ in pairs]
    if len(pairs) < 2:
        _, _, ua, ub = pairs[0]
        return _conditional(ua, ub, label, seeds, per_seed, missing)
    y = _matrix([d for _, d, _, _ in pairs])
    return _result(crossed([(y, 1.0)]), seeds, per_seed, y.shape[1], missing)


def _mean_units(per_seed: SeedUnits) -> dict[str, float]:
    """Per unit, the mean over the seeds that have it."""
    acc: dict[str, list[float]] = {}
    for units in per_seed.values():
        for u, v in units.items():
            acc.setdefault(u, []).append(v)
    return {u: sum(v) / len(v) for u, v in acc.items()}


def two_sample(a: SeedUnits, b: SeedUnits, label: str = "") -> dict[str, Any]:
    """B - A for two runs of one model: the mean over B's seeds minus the mean over A's, items paired,
    seeds not (two runs' seeds are independent trainings even when their numbers match). Training
    variance is pooled over both sides. A side with one seed: the unit-level test of the
    (seed-averaged) units, labelled conditional. Same fields as `contrast`; per_seed holds each side's
    per-seed means ({side, seed, mean, n_units})."""
    import numpy as np

    if not a or not b:
        raise DataError(f"{label}: no seeds on one side")
    per_seed = [{"side": k, "seed": s, "mean": float(np.mean(list(u.values()))), "n_units": len(u)}
                for k, side in (("a", a), ("b", b)) for s, u in sorted(side.items(), key=lambda kv: str(kv[0]))]
    seeds = {"a": sorted(a, key=str), "b": sorted(b, key=str)}
    if len(a) < 2 or len(b) < 2:
        r = _conditional(_mean_units(a), _mean_units(b), label, [], per_seed, {})
        r["seeds"], r["n_seeds"] = seeds, {"a": len(a), "b": len(b)}
        return r
    ids = sorted(set().union(*a.values(), *b.values()))
    ya, yb = (_matrix([{**dict.fromkeys(ids, math.nan), **side[s]} for s in sorted(side, key=str)]) for side in (a, b))
    fit = crossed([(yb, 1.0), (ya, -1.0)])
    r = _result(fit, [], [], len(ids), {})
    mean_a = float(np.mean(fit["seed_means"][1]))
    agree = sum(np.sign(m - mean_a) == np.sign(r["delta"]) != 0 for m in fit["seed_means"][0])
    r.update({"seeds": seeds, "n_seeds": {"a": len(a), "b": len(b)}, "per_seed": per_seed,
              "seed_sd": float(math.sqrt(fit["t_seed"] / (1 / len(a) + 1 / len(b)))),
              "sign_agreement": {"agree": int(agree), "of": len(b)}})
    return r
