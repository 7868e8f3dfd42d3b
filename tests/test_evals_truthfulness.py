"""TruthfulQA MC1's two protocols (`protocol: generation | loglik`): the headline, the unit ids,
the rows the influence stage reads, and the params checks."""

from __future__ import annotations

import math
import re

import pytest

from rlhf_trust import fileio
from rlhf_trust.data import records
from rlhf_trust.errors import ConfigError
from rlhf_trust.evals import run, settings, truthfulness
from rlhf_trust.evals.backends import CallableBackend


@pytest.fixture(scope="module")
def qa(raw_data):
    return {r["question"]: r for r in records.load("truthfulness", raw_data)}


def scorer(qa, pick):
    """A log-likelihood that ranks option `pick(rec)` of each question first (others by index)."""
    def loglik(ctx, cont):
        rec = qa[re.findall(r"Q: (.*)\nA:", ctx)[-1]]
        j = rec["mc1_choices"].index(cont[1:])
        return 0.0 if j == pick(rec) else -1.0 - j
    return loglik


def test_loglik_headline_units_and_rows(qa, raw_data):
    # the true option for questions of even length, else the last option (always a false one)
    def pick(rec):
        return rec["mc1_correct"] if len(rec["question"]) % 2 == 0 else len(rec["mc1_choices"]) - 1

    backend = CallableBackend(lambda p, i: "never called", loglik=scorer(qa, pick))
    res = run("truthfulness", backend, data_dir=raw_data, limit=40, n_boot=50, settings_entry={"protocol": "loglik"})
    expected = [float(len(qa_question(r)) % 2 == 0) for r in res.rows]
    assert 0 < sum(expected) < len(expected)
    assert res.metrics["mc1_accuracy"] == pytest.approx(sum(expected) / len(expected))
    assert res.metrics["mc1_accuracy_n"] == res.metrics["n_questions"] == len(res.rows) == 40
    assert res.units == [(f"{r['id']}|mc1_loglik", e) for r, e in zip(res.rows, expected)]
    assert backend.calls == sum(len(r["options"]) for r in res.rows)  # one score per option, no generation
    for r in res.rows:  # the row's text is the chosen option, as scored after the lm-eval context
        assert r["condition"] == "mc1_loglik" and r["prompt"] == truthfulness.loglik_context(qa_question(r))
        assert r["generation"] == " " + r["options"][r["chosen_index"]]
        assert r["correct"] == (r["chosen_index"] == r["true_index"]) and len(r["loglik_choices"]) == len(r["options"])
    # the graded metric: 1 - P(true option), softmax over the options' scores, paired like the headline
    p_false = [1 - math.exp(r["loglik_choices"][r["true_index"]]) / sum(map(math.exp, r["loglik_choices"]))
               for r in res.rows]
    assert res.graded_units == [(u, pytest.approx(p)) for (u, _), p in zip(res.units, p_false)]
    assert res.metrics["graded"] == "mc1_false_probability"
    assert res.metrics["mc1_false_probability"] == pytest.approx(sum(p_false) / len(p_false))
    gen = run("truthfulness", CallableBackend(lambda p, i: " (0)"), data_dir=raw_data, limit=40, n_boot=50,
              settings_entry={"protocol": "generation"})
    assert [u.split("|")[0] for u, _ in gen.units] == [u.split("|")[0] for u, _ in res.units]  # same questions
    assert {u.split("|")[1] for u, _ in gen.units} == {"mc1_generation"}  # ... never paired across protocols


def qa_question(row):
    return row["prompt"].rsplit("Q: ", 1)[1][:-len("\nA:")]


def test_loglik_rows_feed_the_influence_test_pairs(qa, raw_data, tmp_path, monkeypatch):
    from rlhf_trust.attribution import testpairs

    monkeypatch.setenv("RLHF_TRUST_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    picks = {"old": lambda rec: 1, "new": lambda rec: 0 if len(rec["question"]) % 3 == 0 else 1}
    rows = {}
    for model, pick in picks.items():
        res = run("truthfulness", CallableBackend(lambda p, i: "", loglik=scorer(qa, pick)), data_dir=raw_data,
                  limit=30, n_boot=10, model=model, settings_entry={"protocol": "loglik"})
        rows[model] = res.rows
        fileio.write_jsonl(testpairs.samples_path("truthfulness", model), res.rows)
    pairs, counts = testpairs.build("truthfulness", "new", "old", limit=100)
    changed = [r for r in rows["new"] if r["chosen_index"] == 0]
    assert changed and len(pairs) == counts["test_pairs"] == len(changed)
    assert counts["test_identical_dropped"] == 30 - len(changed)
    for p, r in zip(pairs, changed):  # new chose the true option, old the second: both as scored
        assert p["prompt"] == r["prompt"] and p["chosen"] == " " + r["options"][0]
        assert p["rejected"] == " " + r["options"][1] and p["id"] == f"{r['id']}|mc1_loglik|0"


def test_protocol_must_be_known_and_the_old_key_is_refused():
    assert settings("truthfulness", {"protocol": "loglik"}).protocol == "loglik"
    assert settings("truthfulness", {}).protocol == "generation"  # the study's, as params/paper.yaml
    with pytest.raises(ConfigError) as e:
        settings("truthfulness", {"protocol": "mc2"})
    assert str(e.value) == ("params: eval.verticals.truthfulness.protocol: must be one of "
                            "['generation', 'loglik'], got 'mc2'")
    with pytest.raises(ConfigError) as e:  # the pre-protocol switch: a one-line error naming the new key
        settings("truthfulness", {"loglik": True})
    assert "'eval.verticals.truthfulness.loglik'" in str(e.value) and "protocol" in str(e.value)
    assert "\n" not in str(e.value)


def test_strict_argmax():
    assert truthfulness.strict_argmax([-3.0, -1.0, -2.0]) == 1
    assert truthfulness.strict_argmax([-1.0, -1.0, -2.0]) == -1
