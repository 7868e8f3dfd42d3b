"""Two-level statistics (report/pooled.py): calibration by simulation at the default 3 seeds, against
today's unit-only CI on the same data sets, and the edge cases (a seed missing, one seed, unequal
unit sets, no difference)."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import bench_support
import numpy as np
import pytest

from rlhf_trust.report import contrasts, paired, pooled

ROOT = Path(__file__).resolve().parents[1]
SETS = 4000       # vectorised: 4000 sets of 3 seeds x 200 units take well under a second
SLOW_SETS = 200   # today's bootstrap CI, one set at a time


def _sim():
    return bench_support.load("pooled_stats_sim")


sim = _sim()


@pytest.mark.parametrize("scenario", list(sim.SCENARIOS))
def test_two_level_ci_covers_and_is_not_significant_at_zero(scenario):
    kind, sd_seed, sd_unit, sd_resid = sim.SCENARIOS[scenario]
    rng = np.random.default_rng(11)
    for mu in (0.0, sim.EFFECTS[kind]):
        d = sim.simulate(rng, kind, SETS, 3, 200, mu, sd_seed, sd_unit, sd_resid)
        r = sim.rates(mu, *sim.crossed_t(d))
        assert r["coverage"] >= 0.93, (scenario, mu, r)
        if mu == 0:
            assert r["significant"] <= 0.06, (scenario, r)
        else:   # and it is not calibrated by never deciding anything
            assert r["significant"] >= 0.15, (scenario, mu, r)


@pytest.mark.parametrize("scenario", ["continuous", "binary"])
def test_unit_only_ci_under_covers_on_the_same_data(scenario):
    """Today's CI on one seed (one training run), and on all seeds' units pooled as if independent,
    miss the effect far more often than 5% once seeds vary: the simulation above is not vacuous."""
    kind, sd_seed, sd_unit, sd_resid = sim.SCENARIOS[scenario]
    rng = np.random.default_rng(11)
    d = sim.simulate(rng, kind, SLOW_SETS, 3, 200, 0.0, sd_seed, sd_unit, sd_resid)
    one, pooled_units = (sim.rates(0.0, *sim.unit_ci(d, pooled=p, n_boot=999)) for p in (False, True))
    two = sim.rates(0.0, *sim.crossed_t(d))
    assert one["coverage"] <= 0.90 and pooled_units["coverage"] <= 0.85, (one, pooled_units)
    assert one["significant"] >= 0.10 and two["significant"] <= 0.06
    assert two["coverage"] - one["coverage"] >= 0.05


def test_three_seeds_known_answer():
    """d = 0.1 + seed shift (-0.05, 0, +0.05) + the same item noise: Δ 0.1, seed SD 0.05, 3/3 agree,
    seed term dominant so the test is Student's t with 2 df."""
    rng = np.random.default_rng(0)
    base = {f"u{i}": float(x) for i, x in enumerate(rng.normal(size=99))}
    b = {k: {u: v + 0.1 + s + 0.01 * ((i % 3) - 1) for i, (u, v) in enumerate(base.items())}
         for k, s in enumerate((-0.05, 0.0, 0.05))}
    r = pooled.contrast({pooled.SHARED: base}, b, "x")
    assert r["level"] == "two_level" and r["method"] == r["test"] == pooled.METHOD and r["n_seeds"] == 3
    assert r["delta"] == pytest.approx(0.1) and r["seed_sd"] == pytest.approx(0.05)
    assert [s["delta"] for s in r["per_seed"]] == pytest.approx([0.05, 0.1, 0.15])
    assert r["sign_agreement"] == {"agree": 3, "of": 3} and r["df"] == 2
    se = 0.05 / math.sqrt(3)
    assert r["ci95"]["low"] == pytest.approx(0.1 - 4.302653 * se, abs=2e-4)
    assert r["p_value"] == pytest.approx(1 - 3.4641 / math.sqrt(3.4641 ** 2 + 2), abs=1e-3)   # t on 2 df
    assert r["mde80"] == pytest.approx((4.302653 + 1.060660) * se, abs=2e-4)


def _seeds(rng, seeds, n=150, shift=0.0):
    return {k: {f"u{i}": float(x) for i, x in enumerate(rng.normal(shift, 1, n))} for k in seeds}


def test_a_seed_missing_pools_over_the_seeds_present_and_says_so():
    rng = np.random.default_rng(1)
    a, b = _seeds(rng, (0, 1, 2)), _seeds(rng, (0, 1))
    r = pooled.contrast(a, b, "x")
    assert r["seeds"] == [0, 1] and r["n_seeds"] == 2 and r["seeds_missing"] == {"b": [2]}
    assert r["level"] == "two_level" and r["df"] == 1   # two seeds: the per-seed t test, 1 df
    assert r["delta"] == pytest.approx(np.mean([s["delta"] for s in r["per_seed"]]))
    assert "B lacks s2" in contrasts.seeds_text(r)


def test_one_seed_is_the_unit_level_test_labelled_conditional():
    rng = np.random.default_rng(2)
    base, b = _seeds(rng, (pooled.SHARED,)), _seeds(rng, (0,))
    r = pooled.contrast(base, b, "x")
    today = paired.compare(base[pooled.SHARED], b[0], "x")
    assert {k: r[k] for k in today} == today
    assert r["level"] == "conditional" and r["conditional"] == pooled.CONDITIONAL
    assert r["seed_sd"] is None and "conditional on these checkpoints" in r["method"]
    assert contrasts.seeds_text(r) == "1: conditional on these checkpoints"


def test_unequal_unit_sets_across_seeds():
    rng = np.random.default_rng(3)
    base = _seeds(rng, (pooled.SHARED,), n=200)
    b = _seeds(rng, (0, 1, 2), n=200, shift=0.5)
    b[2] = {u: v for u, v in b[2].items() if int(u[1:]) < 120}   # seed 2 evaluated fewer units
    r = pooled.contrast(base, b, "x")
    assert [s["n_pairs"] for s in r["per_seed"]] == [200, 200, 120] and r["n_pairs"] == 200
    s2 = np.mean([b[2][u] - base[pooled.SHARED][u] for u in b[2]])
    assert r["per_seed"][2]["delta"] == pytest.approx(s2)
    assert math.isfinite(r["p_value"]) and r["ci95"]["low"] < r["delta"] < r["ci95"]["high"]


def test_no_difference_and_a_constant_shift():
    rng = np.random.default_rng(4)
    a = _seeds(rng, (0, 1, 2))
    r = pooled.contrast(a, a, "x")
    assert r["delta"] == 0 and r["p_value"] == 1.0 and r["ci95"] == {"low": 0.0, "high": 0.0}
    r = pooled.contrast(a, {k: {u: v + 0.25 for u, v in x.items()} for k, x in a.items()}, "x")
    assert r["delta"] == pytest.approx(0.25) and r["p_value"] < 1e-6


def test_two_sample_needs_two_seeds_a_side():
    rng = np.random.default_rng(5)
    a, b = _seeds(rng, (0, 1, 2)), _seeds(rng, (3, 4, 5), shift=0.0)
    r = pooled.two_sample(a, b, "x")
    assert r["level"] == "two_level" and r["n_seeds"] == {"a": 3, "b": 3} and r["df"] > 0
    assert {p["side"] for p in r["per_seed"]} == {"a", "b"} and r["seed_sd"] > 0
    assert contrasts.seeds_text(r).startswith("3+3: SD ")
    r1 = pooled.two_sample(a, {3: b[3]}, "x")
    assert r1["level"] == "conditional" and contrasts.seeds_text(r1) == "3+1: conditional on these checkpoints"


def _units_csv(path: Path, units: dict[str, float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("unit_id,value\n" + "".join(f"{u},{v}\n" for u, v in units.items()))


def test_report_contrasts_gain_seed_fields_and_stay_compatible(tmp_path):
    rng = np.random.default_rng(6)
    ev = tmp_path / "eval"
    base = (rng.random(200) < 0.5).astype(float)
    _units_csv(ev / "truthfulness" / "base" / "units.csv", {f"q{i}": v for i, v in enumerate(base)})
    for m, shift in (("sft", 0.0), ("ppo", 0.2), ("dpo", 0.0)):
        for k in (0, 1, 2):
            if (m, k) == ("dpo", 2):
                continue   # a seed's results missing
            p = np.clip(0.5 + shift + rng.normal(0, 0.03), 0, 1)
            _units_csv(ev / "truthfulness" / m / f"s{k}" / "units.csv",
                       {f"q{i}": float(x) for i, x in enumerate(rng.random(200) < p)})
    out, notes = contrasts.compute([SimpleNamespace(name="truthfulness", higher_is_better=True)], ev)
    assert notes == [] and set(out["truthfulness"]) == set(contrasts.NAMES)
    old_keys = {"delta", "ci95", "p_value", "p_holm", "significant", "n_pairs", "mde80", "test", "more_trustworthy"}
    for r in out["truthfulness"].values():
        assert old_keys <= set(r) and r["level"] == "two_level"
        assert {"per_seed", "seed_sd", "sign_agreement", "method"} <= set(r)
    assert out["truthfulness"]["ppo-base"]["delta"] > 0.1 and len(out["truthfulness"]["ppo-base"]["per_seed"]) == 3
    assert out["truthfulness"]["dpo-sft"]["seeds_missing"] == {"b": [2]}
    rows = contrasts.rows(out, ["truthfulness"])
    assert len(rows[0]) == len(contrasts.HEADER) and "3: SD" in rows[0][-1]
    assert any("B lacks s2" in r[-1] for r in rows)
