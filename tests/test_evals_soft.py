"""The log-likelihood protocols' graded scores on real data samples: the normalised probability of
the untrustworthy verdict (bias P(agree), ethics P(not wrong) on wrong items, fairness P(yes) and
its soft parity gap) is computed from the whole verdicts' summed log-probs, and it still moves when
every binary verdict (the headline's unit) is the same. Uncalibrated here (`calibration: none`):
a scorer that ignores the item gives content-free inputs the same prior, which calibration removes
(tests/test_evals_calibration.py)."""

from __future__ import annotations

import math

import pytest

from rlhf_trust.evals import run
from rlhf_trust.evals.backends import CallableBackend

LN3 = math.log(3)


def backend(scores):
    """A model whose log-prob of a continuation is scores(context, continuation)."""
    return CallableBackend(lambda p, i: "", loglik=scores)


def test_bias_agree_probability(raw_data):
    be = backend(lambda ctx, cont: -1.0 if cont == " I agree" else -1.0 - LN3)  # P(agree) = 3/4
    m = run("bias", be, data_dir=raw_data, limit=10, n_boot=100,
            settings_entry={"protocol": "loglik", "calibration": "none", "system_prompts": ["none", "targeted"]}).metrics
    assert m["agreeability_index"] == 1.0  # every verdict "agree": the headline is constant
    assert m["constant"] is True and m["graded"] == "agree_probability"
    assert m["agree_probability"] == pytest.approx(0.75) and m["agree_probability_n"] == 20
    assert m["calibration"] == {"method": "none", "verdicts": [" I agree", " I disagree"]}


def test_ethics_false_positive_probability(raw_data):
    be = backend(lambda ctx, cont: 0.0 if cont == " wrong" else -LN3)  # P(" not") = 1/4
    res = run("ethics", be, data_dir=raw_data, limit=30, n_boot=100,
              settings_entry={"protocol": "loglik", "calibration": "none"})
    m = res.metrics
    assert m["false_positive_rate"] == 0.0 and m["false_positive_probability"] == pytest.approx(0.25)
    assert m["false_positive_probability_n"] == m["false_positive_rate_n"] == len(res.units)
    assert all(r["p_not_wrong"] == pytest.approx(0.25) for r in res.rows)
    assert [u for u, _ in res.graded_units] == [u for u, _ in res.units]  # paired like the headline
    assert [v for _, v in res.graded_units] == pytest.approx([0.25] * len(res.units))


def test_fairness_soft_parity_gap(raw_data):
    def scores(ctx, cont):  # men: P(yes) = 3/4; women: P(yes) = 3/5 -> both always "yes"
        male = "sex Male," in ctx[ctx.rfind("description:"):]
        gap = LN3 if male else math.log(1.5)
        return 0.0 if cont == " yes" else -gap
    res = run("fairness", backend(scores), data_dir=raw_data, n_boot=100,
            settings_entry={"protocol": "loglik", "calibration": "none", "limit": 20,
                            "conditions": ["zero_shot_br0.5"]})
    m = res.metrics
    assert m["demographic_parity_difference"] == 0.0  # hard verdicts: no gap at all
    assert m["demographic_parity_soft_signed"] == pytest.approx(0.75 - 0.6)
    assert m["demographic_parity_difference_soft"] == pytest.approx(0.15)
    # every man and every woman has the same P(yes): each resample has the same gap
    assert list(m["demographic_parity_difference_soft_ci95"].values()) == pytest.approx([0.15, 0.15])
    # the graded units are the headline's signed parity terms with P(yes) for the 0/1 verdict
    assert [u for u, _ in res.graded_units] == [u for u, _ in res.units]
    assert sum(v for _, v in res.graded_units) / len(res.graded_units) == pytest.approx(0.75 - 0.6)
