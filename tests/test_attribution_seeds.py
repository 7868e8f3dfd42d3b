"""Influence across training seeds: the ensemble is the mean of the seeds' scores (as TRAK ensembles
models), each seed keeps its column, and the seeds' agreement is their Spearman correlation."""

from __future__ import annotations

import numpy as np
import pytest

from rlhf_trust.attribution.stage import ensemble


def one(scores, other):
    s = np.asarray(scores, dtype=float)
    return {"scores": s, "columns": {"exact": s, "gradsim": np.asarray(other, dtype=float)},
            "metrics": {"method": "exact"}}


def test_the_ensemble_is_the_mean_over_seeds_with_their_agreement():
    per_seed = {0: one([1, 2, 3, 4], [0, 0, 1, 1]), 1: one([2, 1, 4, 3], [1, 0, 1, 0]), 2: one([4, 3, 2, 1], [0, 1, 0, 1])}
    res = ensemble(per_seed, "exact")
    np.testing.assert_allclose(res["scores"], [7 / 3, 2, 3, 8 / 3])
    np.testing.assert_allclose(res["columns"]["exact"], res["scores"])
    np.testing.assert_allclose(res["columns"]["gradsim"], [1 / 3, 1 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(res["columns"]["s1"], [2, 1, 4, 3])
    m = res["metrics"]
    assert m["n_seeds"] == 3 and m["seeds"] == "0,1,2" and m["method"] == "exact"
    assert m["seed_spearman_s0_s1"] == pytest.approx(0.6) and m["seed_spearman_s0_s2"] == pytest.approx(-1.0)
    assert m["seed_spearman_min"] == pytest.approx(-1.0)
    assert m["seed_spearman_s1_s2"] == pytest.approx(-0.6) and m["seed_spearman_mean"] == pytest.approx(-1 / 3)


def test_one_seed_is_its_own_scores():
    only = one([3, 1, 2], [1, 1, 0])
    assert ensemble({0: only}, "exact") is only
