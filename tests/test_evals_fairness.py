"""Fairness (DecodingTrust, UCI Adult) on real rows with known-answer scripted models:
always "yes", always the right answer, "yes" iff the person is a man; both protocols."""

from __future__ import annotations

import pytest

from rlhf_trust.data import records
from rlhf_trust.evals import fairness, run
from rlhf_trust.evals.backends import CallableBackend


def answers(data_dir) -> dict:
    return {r["input"].strip(): r["label"] for r in records.load("fairness", data_dir)}


@pytest.fixture(scope="module")
def truth(raw_data):
    return answers(raw_data)


def person(prompt: str) -> str:
    return prompt[prompt.rfind("description:"):]  # the test person (demonstrations come before)


def scripted(kind, truth):
    def fn(prompt, i):
        p = person(prompt)
        yes = {"yes": True, "right": bool(truth.get(p.strip(), 0)), "sex": "sex Male," in p}[kind]
        return " yes" if yes else " no"
    return CallableBackend(fn, name=kind)


def evaluate(backend, data_dir, protocol, **entry):
    """Uncalibrated: these scripted answers test the metrics; a content-free person would get the
    same answer as some real people, and calibration would turn those into ties."""
    cal = {"calibration": "none"} if protocol == "loglik" else {}
    return run("fairness", backend, data_dir=data_dir, n_boot=200,
               settings_entry={"protocol": protocol, **cal, **entry})


@pytest.mark.parametrize("protocol", ["loglik", "generation"])
def test_known_answers_on_the_fixtures(raw_data, truth, protocol):
    m = evaluate(scripted("yes", truth), raw_data, protocol).metrics
    assert m["n_items"] == 40 and m["demographic_parity_difference"] == 0.0
    assert m["equalized_odds_difference"] == 0.0 and m["positive_rate"] == {"Male": 1.0, "Female": 1.0}
    labels = [r["label"] for r in records.load("fairness", raw_data)]
    assert m["accuracy"] == pytest.approx(sum(labels) / len(labels))  # the share of "yes" people
    m = evaluate(scripted("right", truth), raw_data, protocol).metrics
    assert m["accuracy"] == 1.0 and m["equalized_odds_difference"] == 0.0
    m = evaluate(scripted("sex", truth), raw_data, protocol).metrics
    assert m["demographic_parity_difference"] == 1.0 and m["demographic_parity_signed"] == 1.0
    assert m["parse_failure_rate"] == 0.0


@pytest.mark.parametrize("protocol", ["loglik", "generation"])
def test_known_answers_all_800_people(mirror, protocol):
    raw_data, truth = mirror, answers(mirror)
    m = evaluate(scripted("yes", truth), raw_data, protocol).metrics
    assert m["n_items"] == 800 and m["headline"] == "demographic_parity_difference"
    assert m["demographic_parity_difference"] == 0.0 and m["equalized_odds_difference"] == 0.0
    assert m["accuracy"] == 0.5 and m["positive_rate"] == {"Male": 1.0, "Female": 1.0}
    assert m["demographic_parity_difference_ci95"] == {"low": 0.0, "high": 0.0}

    m = evaluate(scripted("right", truth), raw_data, protocol).metrics
    # a perfect classifier inherits the data's base-rate gap (0.75 vs 0.25 pooled) but equal odds
    assert m["accuracy"] == 1.0 and m["equalized_odds_difference"] == 0.0
    assert m["demographic_parity_difference"] == pytest.approx(0.5)
    by = m["by_condition"]
    assert [by[c]["demographic_parity_difference"] for c in fairness.CONDITIONS] == pytest.approx([0, .5, 1, .5])
    assert by["zero_shot_br1.0"]["equalized_odds_difference"] is None  # no (Male, no) / (Female, yes) people
    lo, hi = m["demographic_parity_difference_ci95"].values()
    assert lo < 0.5 < hi

    m = evaluate(scripted("sex", truth), raw_data, protocol).metrics
    assert m["demographic_parity_difference"] == 1.0 and m["equalized_odds_difference"] == 1.0
    assert m["demographic_parity_signed"] == 1.0 and m["accuracy"] == 0.75
    assert m["parse_failure_rate"] == 0.0


@pytest.mark.parametrize("protocol", ["loglik", "generation"])
def test_dp_and_eo_per_base_rate_setting(mirror, protocol):
    """DecodingTrust reports each base-rate setting: known DP and EO per setting and pooled, for a
    model that always says yes, one that is always right and one that says yes iff the person is a man."""
    raw_data, truth = mirror, answers(mirror)
    zero = ["zero_shot_br0.0", "zero_shot_br0.5", "zero_shot_br1.0"]

    def per_setting(kind):
        m = evaluate(scripted(kind, truth), raw_data, protocol, conditions=zero).metrics
        by = m["by_condition"]
        return ([by[c]["demographic_parity_difference"] for c in zero], [by[c]["equalized_odds_difference"] for c in zero],
                m["demographic_parity_difference"], m["equalized_odds_difference"])

    # br1.0: every man earns > $50k and no woman does, so no label has both sexes: EO undefined there
    assert per_setting("yes") == ([0.0, 0.0, 0.0], [0.0, 0.0, None], 0.0, 0.0)
    dp, eo, dp_all, eo_all = per_setting("right")  # a perfect classifier: the data's base-rate gaps, equal odds
    assert dp == pytest.approx([0.0, 0.5, 1.0]) and eo == [0.0, 0.0, None]
    assert dp_all == pytest.approx(0.5) and eo_all == 0.0  # pooled: men 225/300 earn > $50k, women 75/300
    assert per_setting("sex") == ([1.0, 1.0, 1.0], [1.0, 1.0, None], 1.0, 1.0)


def test_units_mean_is_the_signed_parity_gap(raw_data, truth):
    res = evaluate(scripted("right", truth), raw_data, "loglik", limit=10, conditions=["zero_shot_br0.5"])
    units = fairness.units(res.rows)
    assert len(units) == 10 and len({u for u, _ in units}) == 10
    mean = sum(v for _, v in units) / len(units)
    assert mean == pytest.approx(res.metrics["demographic_parity_signed"])
    assert abs(mean) == pytest.approx(res.metrics["demographic_parity_difference"])


def test_prompt_holds_16_demonstrations_then_the_person(raw_data, truth):
    res = evaluate(scripted("yes", truth), raw_data, "generation", limit=2, conditions=["few_shot16_br0.5"])
    p = res.rows[0]["prompt"]
    assert p.startswith(fairness.TASK) and p.count("description:") == 17
    assert p.endswith("greater than $50k:")


def test_parse():
    assert [fairness.parse(t) for t in (" yes", " No.", "  Yes, it is", " maybe", "\nyes", " noted")] == [1, 0, 1, -1, 1, -1]


def test_bad_settings_are_one_line(raw_data):
    from rlhf_trust.errors import ConfigError

    with pytest.raises(ConfigError, match="protocol"):
        evaluate(scripted("yes", {}), raw_data, "sampling")
    with pytest.raises(ConfigError, match="conditions"):
        evaluate(scripted("yes", {}), raw_data, "loglik", conditions=["zero_shot_br2.0"])
