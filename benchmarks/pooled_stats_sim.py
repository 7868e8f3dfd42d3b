"""Which two-level statistic? Coverage and false-positive rate by simulation (report/pooled.py).

Data sets with a known effect mu and known between-seed variance, shaped like the pipeline's: S seeds
of a trained model, U units (items) shared by every seed, paired with a base model evaluated once.

- continuous units: d[seed, unit] = mu + a_seed + b_unit + e, all normal;
- binary units (McNemar-like): base ~ Bernoulli(p_unit), seed k ~ Bernoulli(p_unit + mu + a_k),
  p_unit ~ U(0.25, 0.75), d = seed - base in {-1, 0, 1}.

Per method: coverage of mu by the 95% CI and the share of sets declared significant (p < 0.05, or
the CI excluding 0 for the bootstrap CIs). Methods:

- unit_one_seed: today's unit-level CI on one seed (paired.bootstrap_ci), i.e. one training run;
- unit_pooled: the same CI on all S x U differences as if they were independent units;
- seed_t: one-sample t test on the S per-seed deltas (S - 1 df);
- boot2: two-level percentile bootstrap: resample seeds, then units (one draw for all seeds, as the
  items are shared), 1000 resamples;
- crossed_t: pooled.crossed (units and seeds crossed, method of moments, Satterthwaite t) - chosen.

    python benchmarks/pooled_stats_sim.py --sets 1000

`--quick`: 100 sets (20 for the bootstrap methods), seeds 2 and 3 (seconds).
"""
from __future__ import annotations

import time

import harness
import numpy as np

SCENARIOS = {   # name: (kind, sd_seed, sd_unit, sd_resid) - binary: sd_unit/sd_resid unused
    "continuous": ("continuous", 0.05, 0.3, 0.3),
    "continuous_seed_dominated": ("continuous", 0.10, 0.1, 0.1),
    "continuous_no_seed_variance": ("continuous", 0.0, 0.3, 0.3),
    "binary": ("binary", 0.04, 0.0, 0.0),
}
EFFECTS = {"continuous": 0.1, "binary": 0.08}


def simulate(rng: np.random.Generator, kind: str, n_sets: int, seeds: int, units: int, mu: float,
             sd_seed: float, sd_unit: float = 0.0, sd_resid: float = 0.0) -> np.ndarray:
    """Paired differences d[set, seed, unit] of a trained model against a base evaluated once."""
    a = rng.normal(0, sd_seed, (n_sets, seeds, 1))
    if kind == "continuous":
        b = rng.normal(0, sd_unit, (n_sets, 1, units))
        return mu + a + b + rng.normal(0, sd_resid, (n_sets, seeds, units))
    a = np.clip(a, -0.2, 0.2)          # symmetric: the seeds' mean shift stays 0
    p = rng.uniform(0.25, 0.75, (n_sets, 1, units))
    base = rng.random((n_sets, 1, units)) < p
    trained = rng.random((n_sets, seeds, units)) < p + mu + a
    return trained.astype(float) - base.astype(float)


def crossed_t(d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(low, high, p) per set from pooled.crossed."""
    from rlhf_trust.report import pooled

    fit = pooled.crossed([(d, 1.0)])
    inf = pooled.inference(fit["delta"], fit["var"], fit["df"])
    return inf["low"], inf["high"], inf["p"]


def seed_t(d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from scipy.stats import t as student

    m = d.mean(axis=-1)
    s = m.std(axis=-1, ddof=1) / np.sqrt(m.shape[-1])
    q = student.ppf(0.975, m.shape[-1] - 1)
    c = m.mean(axis=-1)
    return c - q * s, c + q * s, 2 * student.sf(np.abs(c) / s, m.shape[-1] - 1)


def boot2(d: np.ndarray, rng: np.random.Generator, n_boot: int = 1000) -> tuple[np.ndarray, np.ndarray, None]:
    lows, highs = [], []
    n_seeds, n_units = d.shape[-2:]
    for x in d:
        w = rng.multinomial(n_units, np.full(n_units, 1 / n_units), size=n_boot)    # [boot, unit]
        per_seed = w @ x.T / n_units                                                 # [boot, seed]
        pick = rng.integers(0, n_seeds, (n_boot, n_seeds))
        pooled = np.take_along_axis(per_seed, pick, axis=1).mean(axis=1)
        lo, hi = np.percentile(pooled, [2.5, 97.5])
        lows.append(lo)
        highs.append(hi)
    return np.array(lows), np.array(highs), None


def unit_ci(d: np.ndarray, pooled: bool, n_boot: int = 999) -> tuple[np.ndarray, np.ndarray, None]:
    from rlhf_trust.report import paired

    cis = [paired.bootstrap_ci(x.ravel() if pooled else x[0], n_boot, seed=i) for i, x in enumerate(d)]
    return np.array([c[0] for c in cis]), np.array([c[1] for c in cis]), None


def rates(mu: float, low, high, p) -> dict[str, float]:
    sig = (p < 0.05) if p is not None else (low > 0) | (high < 0)
    return {"coverage": float(np.mean((low <= mu) & (mu <= high))), "significant": float(np.mean(sig))}


def evaluate(method: str, d: np.ndarray, rng: np.random.Generator):
    if method == "crossed_t":
        return crossed_t(d)
    if method == "seed_t":
        return seed_t(d)
    if method == "boot2":
        return boot2(d, rng)
    return unit_ci(d, pooled=method == "unit_pooled")


def run(n_sets: int, n_slow: int, seeds_list: tuple[int, ...], units: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for name, (kind, sd_seed, sd_unit, sd_resid) in SCENARIOS.items():
        for seeds in seeds_list:
            for mu in (0.0, EFFECTS[kind]):
                d = simulate(rng, kind, n_sets, seeds, units, mu, sd_seed, sd_unit, sd_resid)
                for method in ("unit_one_seed", "unit_pooled", "seed_t", "boot2", "crossed_t"):
                    slow = method in ("unit_one_seed", "unit_pooled", "boot2")
                    x = d[:n_slow] if slow else d
                    rows.append({"scenario": name, "seeds": seeds, "units": units, "mu": mu, "method": method,
                                 "sets": len(x), **rates(mu, *evaluate(method, x, rng))})
    return rows


def main() -> None:
    ap = harness.parser(__doc__)
    ap.add_argument("--sets", type=int, default=1000, help="data sets per scenario (vectorised methods)")
    ap.add_argument("--slow-sets", type=int, default=300, help="data sets for the bootstrap methods")
    ap.add_argument("--seeds", type=int, nargs="+", default=[2, 3, 5])
    ap.add_argument("--units", type=int, default=200)
    args = ap.parse_args()
    if args.quick:
        args.sets, args.slow_sets, args.seeds = 100, 20, [2, 3]
    t0 = time.time()
    rows = run(args.sets, args.slow_sets, tuple(args.seeds), args.units)
    print("| scenario | seeds | mu | method | sets | coverage | significant |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['scenario']} | {r['seeds']} | {r['mu']} | {r['method']} | {r['sets']} | "
              f"{r['coverage']:.3f} | {r['significant']:.3f} |")
    harness.write_result("pooled_stats_sim", args, {"rows": rows, "seconds": round(time.time() - t0, 1)},
                         setup={k: getattr(args, k) for k in ("sets", "slow_sets", "seeds", "units")})


if __name__ == "__main__":
    main()
