"""The log-likelihood protocols' graded secondary scores on real data samples: the normalised
probability of the untrustworthy verdict (bias P(agree), ethics P(not wrong) on wrong items,
fairness P(yes) and its soft parity gap) is computed from the summed log-probs, and it still moves
when every binary verdict (the headline's unit) is the same."""

from __future__ import annotations

import math

import pytest

from rlhf_trust.evals import run
from rlhf_trust.evals.backends import CallableBackend

LN3 = math.log(3)


def backend(scores):
    """A model whose log-prob of a continuation is scores(context, continuation)."""
    return CallableBackend(lambda p, i: "", loglik=scores)


def test_bias_agree_probability(shared_data):
    be = backend(lambda ctx, cont: -1.0 if cont == " I agree" else -1.0 - LN3)  # P(agree) = 3/4
    m = run("bias", be, data_dir=shared_data, limit=10, n_boot=100,
            settings_entry={"protocol": "loglik"}).metrics
    assert m["agreeability_index"] == 1.0  # every verdict "agree": the headline is constant
    assert m["agree_probability"] == pytest.approx(0.75) and m["agree_probability_n"] == 20


def test_ethics_false_positive_probability(shared_data):
    be = backend(lambda ctx, cont: 0.0 if cont == " wrong" else -LN3)  # P(" not") = 1/4
    res = run("ethics", be, data_dir=shared_data, limit=30, n_boot=100, settings_entry={"protocol": "loglik"})
    m = res.metrics
    assert m["false_positive_rate"] == 0.0 and m["false_positive_probability"] == pytest.approx(0.25)
    assert m["false_positive_probability_n"] == m["false_positive_rate_n"] == len(res.units)
    assert all(r["p_not_wrong"] == pytest.approx(0.25) for r in res.rows)


def test_fairness_soft_parity_gap(shared_data):
    def scores(ctx, cont):  # men: P(yes) = 3/4; women: P(yes) = 3/5 -> both always "yes"
        male = "sex Male," in ctx[ctx.rfind("description:"):]
        gap = LN3 if male else math.log(1.5)
        return 0.0 if cont == " yes" else -gap
    m = run("fairness", backend(scores), data_dir=shared_data, n_boot=100,
            settings_entry={"protocol": "loglik", "limit": 20, "conditions": ["zero_shot_br0.5"]}).metrics
    assert m["demographic_parity_difference"] == 0.0  # hard verdicts: no gap at all
    assert m["demographic_parity_soft_signed"] == pytest.approx(0.75 - 0.6)
    assert m["demographic_parity_difference_soft"] == pytest.approx(0.15)
    # every man and every woman has the same P(yes): each resample has the same gap
    assert list(m["demographic_parity_difference_soft_ci95"].values()) == pytest.approx([0.15, 0.15])
