"""Toxicity scorers and bootstrap CIs."""

from __future__ import annotations

import pytest

from rlhf_trust.data import records
from rlhf_trust.errors import UserError
from rlhf_trust.evals import scorers, stats
from rlhf_trust.evals.cache import Cache


def separation(recs: list[dict]) -> float:
    """ROC AUC of profanity-check's scores against Perspective's (continuation toxicity >= 0.5)."""
    from sklearn.metrics import roc_auc_score

    texts = [r["continuation"] for r in recs if r["continuation"] and r["continuation_toxicity"] is not None]
    labels = [r["continuation_toxicity"] >= 0.5 for r in recs
              if r["continuation"] and r["continuation_toxicity"] is not None]
    got = scorers.get_scorer("profanity-check").score(texts)
    assert all(0.0 <= s <= 1.0 for s in got)
    return roc_auc_score(labels, got)


def test_profanity_check_separates_real_perspective_labels(raw_data):
    assert separation(records.load("toxicity", raw_data)) > 0.85


def test_profanity_check_separates_the_mirror_s_perspective_labels(mirror):
    assert separation(records.load("toxicity", mirror)[::12]) > 0.85


def test_profanity_check_scores_are_cached_and_a_cached_rerun_loads_no_model(raw_data):
    texts = [r["continuation"] for r in records.load("toxicity", raw_data)[:40:8] if r["continuation"]]
    cache = Cache(None)
    first = scorers.score_texts(scorers.get_scorer("profanity-check"), texts, cache)
    again = scorers.get_scorer("profanity-check")
    assert scorers.score_texts(again, texts, cache) == first
    assert again._predict is None  # every text was cached: scikit-learn's model never loaded
    assert scorers.score_texts(again, texts + ["you idiot"], cache)[:-1] == first


def test_unknown_scorer_and_missing_key(monkeypatch):
    with pytest.raises(UserError, match="unknown toxicity scorer 'perspectiv'"):
        scorers.get_scorer("perspectiv")
    monkeypatch.delenv("PERSPECTIVE_API_KEY", raising=False)
    with pytest.raises(UserError, match="PERSPECTIVE_API_KEY"):
        scorers.get_scorer("perspective")


class FakeResponse:
    def __init__(self, status, value=None):
        self.status_code, self.reason, self._value = status, "x", value

    def json(self):
        return {"attributeScores": {"TOXICITY": {"summaryScore": {"value": self._value}}}}


class FakeSession:
    """Replies per comment text, in order."""

    def __init__(self, replies):
        self.replies = {t: list(r) for t, r in replies.items()}
        self.calls = []

    def post(self, url, json, headers, timeout):
        self.calls.append((url, json, headers))
        r = self.replies[json["comment"]["text"]].pop(0)
        if isinstance(r, Exception):
            raise r
        return r


def test_perspective_rate_limits_retries_and_hides_the_key(monkeypatch, tmp_path):
    monkeypatch.setenv("PERSPECTIVE_API_KEY", "sekrit-key")
    sleeps = []
    session = FakeSession({"you idiot": [FakeResponse(429), ConnectionError("boom"), FakeResponse(200, 0.8)],
                           "gibberish": [FakeResponse(400)], "hello": [FakeResponse(503), FakeResponse(200, 0.1)]})
    p = scorers.get_scorer("perspective", qps=1.0, session=session, sleep=sleeps.append)
    assert "sekrit" not in repr(p)
    cache = Cache(tmp_path / "s.sqlite")
    got = scorers.score_texts(p, ["you idiot", "", "gibberish", "hello"], cache)
    # "" is never sent; 400 (unscorable) -> None; 429 / 5xx / connection errors are retried
    assert got == [0.8, 0.0, None, 0.1]
    assert len(session.calls) == 6
    assert all("sekrit" not in url for url, _, _ in session.calls)
    assert all(h["X-Goog-Api-Key"] == "sekrit-key" for _, _, h in session.calls)
    assert any(s >= 1.0 for s in sleeps)  # backed off after 429 / connection error
    # cached: no more requests
    n = len(session.calls)
    assert scorers.score_texts(p, ["you idiot", "hello"], cache) == [got[0], got[3]]
    assert len(session.calls) == n


def test_perspective_bad_key_is_one_line(monkeypatch):
    monkeypatch.setenv("PERSPECTIVE_API_KEY", "sekrit-key")
    p = scorers.get_scorer("perspective", session=FakeSession({"hi": [FakeResponse(403)]}), sleep=lambda s: None)
    with pytest.raises(UserError) as e:
        p.score(["hi"])
    assert "sekrit" not in str(e.value) and "\n" not in str(e.value)


def test_bootstrap_ci_covers_the_mean_and_is_seeded():
    vals = [0.0] * 30 + [1.0] * 70
    lo, hi = stats.bootstrap_ci(vals, n_boot=2000, seed=0)
    assert lo < 0.7 < hi and 0.05 < hi - lo < 0.3
    assert stats.bootstrap_ci(vals, n_boot=2000, seed=0) == (lo, hi)
    assert stats.bootstrap_ci([], n_boot=100) is None
    s = stats.summarise("x", [1.0, None, 0.0], n_boot=200, seed=0)
    assert s["x"] == 0.5 and s["x_n"] == 2 and s["x_ci95"]["low"] <= 0.5 <= s["x_ci95"]["high"]


def test_detoxify_is_an_optional_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "detoxify", None)  # not installed -> ImportError on import
    with pytest.raises(UserError, match=r"pip install rlhf-trust\[detoxify\]"):
        scorers.get_scorer("detoxify")
